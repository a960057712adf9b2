#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (debug profile), and a
# smoke run of the macro benchmark (N = 20, checks executed counts, not speed).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --workspace --locked
python3 benches/macro.py --smoke --cairn target/debug/cairn
