#!/usr/bin/env python3
"""The cairn macro benchmark (issue 6), optionally side by side with Turborepo.

For each N in --packages it generates a fresh workspace (benches/gen_workspace.py) in a temp
dir with its own empty store (CAIRN_STORE), and measures wall-clock time (medians over --runs):

  a  cold build, empty store            cairn test //...     (per-action overhead in notes)
  b  no-op                              cairn test //...     (one untimed warm-up first)
  g  peak RSS of the no-op              /usr/bin/time -f %M  (else getrusage of a child)
  c  one leaf file edited               cairn test //...     (cairn overhead in notes)
  e  tokens comment edited (output unchanged: early cutoff; with `test`, exactly 1 executed:
     the transform; its test stays cached since its input, the output, is unchanged)
  d  tokens value edited (output changes: everything rebuilds and re-tests)
  f  restore: `cairn clean` (not timed) then `cairn build` (timed)
  h  load + analysis alone: `cairn graph --format json //...`, warm analysis cache; cold after
     editing every BUILD.star; and with a fresh, empty store

With --remote URL (a running REAPI server, HTTP cache or file:// directory), the remote-cache
scenarios of issue 14 run too (r-cold, r-upload, r-local, r-hit, r-min: see bench_remote);
--remote-only runs only those. With --remote-exec JOBS as well (the server executes), the
remote-execution scenarios of issue 17 run instead (x-local, x-exec-jJ, x-hit: see
bench_remote_exec).

Every scenario except (f) and (h) runs `cairn test //...` (build and test every package), the
same work as `turbo run build test`. (a) and (d) rebuild everything, so they run --heavy-runs
times (default: --runs when N <= 200, else 1). Edits are unique (a counter), so an edit never
returns to content cairn has already built.

With --vs-turbo, Turborepo 2 is installed from npm into --turbo-dir (once), the generator's
turbo flavour of the same workspace is set up (git init + commit, npm install), and the same
scenarios are run with `turbo run build test` (restore: delete out/ dirs, `turbo run build`;
analysis: `turbo run build test --dry=json`, which also hashes inputs: only an analogue).
The table shows the ratio cairn/turbo.

Overheads are given two ways. "overhead" subtracts the executed targets' duration_ms from
cairn's --json summary; that duration covers the whole target (hashing its sources, staging
the sandbox, running, storing outputs), so this is a lower bound of cairn's overhead.
"vs raw cmds" subtracts instead the time of the same commands run directly with sh outside
any tool (measured on the leaf app). Cold per-action overhead is
(wall - sum of command times / jobs) / targets, with jobs = -j or the number of cores.

Expected executed counts are checked (no-op 0, leaf 2, cutoff 1, root 2N, restore 0); a
mismatch is printed as a WARNING, and fails the run with --strict (implied by --smoke, the
N = 20 mode meant for the test suite).

Examples:
    python3 benches/macro.py --packages 100,1000 --runs 5 --json bench.json
    python3 benches/macro.py --packages 100 --runs 3 --vs-turbo
    python3 benches/macro.py --smoke
    scripts/test-servers/buildbox_install.sh && scripts/test-servers/buildbox_start.sh 50052
    python3 benches/macro.py --packages 1000 --runs 3 --remote grpc://127.0.0.1:50052 --remote-only
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.dont_write_bytecode = True  # no benches/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_workspace  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_BIN = "/usr/bin/time"


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    scenario: str  # "a".."h" plus a suffix for variants, e.g. "h-cold"
    title: str
    packages: int
    tool: str  # "cairn" or "turbo"
    unit: str  # "ms" or "MB"
    samples: list[float]
    executed: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "packages": self.packages,
            "tool": self.tool,
            "unit": self.unit,
            "median": round(self.median, 2),
            "samples": [round(s, 2) for s in self.samples],
            "executed": self.executed,
            "extra": self.extra,
        }


class Bench:
    """Collects results and expectation failures."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.warnings: list[str] = []

    def add(self, r: Result) -> Result:
        self.results.append(r)
        shown = "%.1f %s" % (r.median, r.unit)
        ex = " executed=%s" % r.executed if r.executed else ""
        notes = " " + _notes(r) if _notes(r) else ""
        log("  %-5s %-6s %-40s %s%s%s" % (r.tool, r.scenario, r.title, shown, ex, notes))
        return r

    def expect(self, what: str, got, want) -> None:
        if got != want:
            msg = "%s: expected %s, got %s" % (what, want, got)
            self.warnings.append(msg)
            log("  WARNING " + msg)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _notes(r: Result) -> str:
    e = r.extra
    parts = []
    if "overhead_ms" in e:
        parts.append("overhead %.1f ms (%.1f vs raw cmds)"
                     % (e["overhead_ms"], e["overhead_vs_raw_ms"]))
    if "per_action_overhead_ms" in e:
        parts.append("overhead/action %.2f ms (%.2f vs raw cmds)"
                     % (e["per_action_overhead_ms"], e["per_action_overhead_vs_raw_ms"]))
    if "warmup_ms" in e:
        parts.append("first no-op %.0f ms" % e["warmup_ms"])
    if "evaluated" in e:
        parts.append("%s evaluated" % e["evaluated"])
    if "clean_ms" in e:
        parts.append("clean %.0f ms" % e["clean_ms"])
    if "targets" in e and r.scenario.startswith("a"):
        parts.append("%d targets" % e["targets"])
    if "note" in e:
        parts.append(e["note"])
    return ", ".join(parts)


# --------------------------------------------------------------------------- processes


@dataclass
class Run:
    wall_ms: float
    stdout: str
    stderr: str


# Seconds to wait after a cold build before the no-op is measured (--settle).
SETTLE_S = 30.0


def settle() -> None:
    """Lets the machine recover from a cold build before the no-op is timed: right after the
    N = 1000 cold build (20,000 sandboxes made and removed, thousands of files written) every
    phase of cairn's no-op, the kernel's `stat` path included, ran about 1.5x slower for some
    20 seconds (81-94 ms, then 53-61 ms), with the file system already synced. A developer's
    no-op rarely follows a cold build within seconds; both tools get the same pause."""
    if SETTLE_S > 0:
        log("  settling %.0f s before the no-op" % SETTLE_S)
        time.sleep(SETTLE_S)


def run(argv: list[str], env: dict, cwd: str | None = None, check: bool = True) -> Run:
    """Runs argv, timing the wall clock from spawn to exit. The file system is synced first
    (untimed): the write-back of what the previous command wrote would otherwise run during
    this one (right after the N = 1000 cold build it made cairn's no-op 75 ms instead of 52)."""
    os.sync()
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    wall = (time.perf_counter() - t0) * 1000.0
    if check and p.returncode != 0:
        raise RuntimeError(
            "command failed (exit %d): %s\n--- stderr (tail) ---\n%s\n--- stdout (tail) ---\n%s"
            % (p.returncode, " ".join(argv), p.stderr[-4000:], p.stdout[-2000:])
        )
    return Run(wall, p.stdout, p.stderr)


def peak_rss_mb(argv: list[str], env: dict, cwd: str | None = None) -> float:
    """Peak RSS of one fresh run of argv, in MB (10^6 bytes)."""
    if os.access(TIME_BIN, os.X_OK):
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as f:
            run([TIME_BIN, "-f", "%M", "-o", f.name] + argv, env, cwd)
            kb = int(f.read().strip().splitlines()[-1])
    else:
        # A fresh interpreter, so RUSAGE_CHILDREN holds only this command.
        code = (
            "import resource,subprocess,sys;"
            "subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,"
            "check=True);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        kb = int(run([sys.executable, "-c", code] + argv, env, cwd).stdout.strip())
    return kb * 1024 / 1e6


# --------------------------------------------------------------------------- edits


class Editor:
    """Unique edits of the generated workspace (a global counter, so never old content)."""

    def __init__(self, ws: gen_workspace.Workspace) -> None:
        self.ws = ws
        self.counter = 1000

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def leaf(self) -> None:
        path = os.path.join(self.ws.root, self.ws.leaf_source)
        with open(path, "a") as f:
            f.write("export const edit%d = %d;\n" % (self._next(), self.counter))

    def _tokens_lines(self) -> tuple[str, list[str]]:
        path = os.path.join(self.ws.root, self.ws.tokens_source)
        with open(path) as f:
            return path, f.read().split("\n")

    def tokens_comment(self) -> None:
        path, lines = self._tokens_lines()
        i = gen_workspace.TOKENS_COMMENT_LINE
        assert lines[i].startswith("#")
        lines[i] = re.sub(r"revision: \d+", "revision: %d" % self._next(), lines[i])
        with open(path, "w") as f:
            f.write("\n".join(lines))

    def tokens_value(self) -> None:
        path, lines = self._tokens_lines()
        for i, line in enumerate(lines):
            if line.startswith(gen_workspace.TOKENS_VALUE_PREFIX):
                lines[i] = gen_workspace.TOKENS_VALUE_PREFIX + "%d," % self._next()
                break
        else:
            raise RuntimeError("no revision value in " + path)
        with open(path, "w") as f:
            f.write("\n".join(lines))

    def all_build_files(self) -> None:
        n = self._next()
        for pkg in self.ws.packages:
            with open(os.path.join(self.ws.root, pkg.path, "BUILD.star"), "a") as f:
                f.write("# bench edit %d\n" % n)

    def remove_outputs(self) -> None:
        for pkg in self.ws.packages:
            shutil.rmtree(os.path.join(self.ws.root, pkg.path, "out"), ignore_errors=True)

    def outputs_present(self) -> int:
        return sum(
            os.path.isfile(os.path.join(self.ws.root, p.path, gen_workspace.OUT_FILE))
            for p in self.ws.packages
        )


# --------------------------------------------------------------------------- cairn


class Cairn:
    def __init__(
        self,
        binary: str,
        ws: gen_workspace.Workspace,
        store: str,
        jobs: int | None,
        sandbox: str | None = None,
    ):
        self.binary = binary
        self.ws = ws
        self.store = store
        self.jobs = jobs
        self.sandbox = sandbox

    def env(self, store: str | None = None) -> dict:
        env = dict(os.environ)
        env["CAIRN_STORE"] = store or self.store
        env["NO_COLOR"] = "1"
        return env

    def argv(self, *args: str, runs_actions: bool = False,
             sandbox: str | None = None) -> list[str]:
        base = [self.binary, "-C", self.ws.root, "--color", "never"]
        if self.jobs:
            base += ["-j", str(self.jobs)]
        sandbox = sandbox or self.sandbox
        if sandbox and runs_actions:
            base += ["--sandbox", sandbox]
        return base + list(args)

    def build(self, cmd: str = "test", store: str | None = None,
              sandbox: str | None = None) -> tuple[Run, dict]:
        r = run(self.argv("--json", cmd, "//...", runs_actions=True, sandbox=sandbox),
                self.env(store))
        return r, json.loads(r.stdout)


def raw_command_ms(ws: gen_workspace.Workspace, runs: int = 5) -> dict:
    """The leaf app's build and test commands run directly with sh, outside any build tool
    (median ms each, including the sh spawn): the "actions' own run time" baseline.
    cairn's duration_ms covers the whole target (hashing, staging, storing), not just this."""
    app = [p for p in ws.packages if p.kind == "app"][-1]
    pkg_dir = os.path.join(ws.root, app.path)
    up = "/".join([".."] * (app.path.count("/") + 1))
    deps = " ".join("%s/%s/%s" % (up, d, gen_workspace.OUT_FILE) for d in app.deps)
    build = "cat %s %s | sha256sum > /dev/null" % (" ".join(app.srcs), deps)
    test = "test -s " + gen_workspace.OUT_FILE
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}
    out = {}
    for name, cmd in (("build", build), ("test", test)):
        out[name] = statistics.median(
            run(["/bin/sh", "-c", cmd], env, cwd=pkg_dir).wall_ms for _ in range(runs)
        )
    return out


def executed_targets(summary: dict) -> list[dict]:
    return [t for t in summary["targets"] if t["status"] == "executed"]


def cold_build(b: Bench, cairn: Cairn, n: int, heavy: int, scenario: str, title: str,
               sandbox: str | None = None, store_prefix: str | None = None) -> None:
    """Scenario (a): `heavy` cold builds, each with an empty store and no outputs. The last
    one's store is `store_prefix` (default: the store the later scenarios use)."""
    ws, ed = cairn.ws, Editor(cairn.ws)
    jobs = cairn.jobs or os.cpu_count() or 1
    targets = ws.targets
    last = store_prefix or cairn.store
    samples, execd, per_action = [], [], []
    for i in range(heavy):
        store = last if i == heavy - 1 else last + ".cold%d" % i
        shutil.rmtree(store, ignore_errors=True)
        ed.remove_outputs()
        r, s = cairn.build(store=store, sandbox=sandbox)
        samples.append(r.wall_ms)
        ex = executed_targets(s)
        execd.append(len(ex))
        cmd_ms = sum(t["duration_ms"] for t in ex)
        per_action.append((r.wall_ms - cmd_ms / jobs) / max(1, len(ex)))
    b.expect("cairn %s N=%d executed" % (scenario, n), execd[-1], targets)
    raw = raw_command_ms(ws)
    raw_total = len(ws.packages) * (raw["build"] + raw["test"])
    b.add(
        Result(
            scenario, title, n, "cairn", "ms", samples, execd,
            {
                "per_action_overhead_ms": statistics.median(per_action),
                "per_action_overhead_vs_raw_ms":
                    (statistics.median(samples) - raw_total / jobs) / targets,
                "raw_command_ms": raw,
                "jobs": jobs,
                "targets": targets,
                "sum_duration_ms": cmd_ms,
                "cairn_wall_ms": s.get("wall_ms"),
                "sandbox": sandbox or cairn.sandbox or "default (namespace)",
            },
        )
    )


def bench_cairn(b: Bench, cairn: Cairn, n: int, runs: int, heavy: int, full: bool) -> None:
    ws, ed = cairn.ws, Editor(cairn.ws)
    jobs = cairn.jobs or os.cpu_count() or 1
    targets = ws.targets

    # (a) cold build, empty store: first with the directory sandbox (its own stores), then
    # with the sandbox asked for, whose store the later scenarios use (the last store to
    # write the outputs must be theirs, or their first run rewrites every output).
    if cairn.sandbox is None:
        cold_build(b, cairn, n, heavy, "a-directory", "cold build, directory sandbox",
                   sandbox="directory", store_prefix=cairn.store + ".directory")
    cold_build(b, cairn, n, heavy, "a", "cold build, empty store")

    # (b) no-op
    settle()
    warm, _ = cairn.build()
    samples, execd, inner = [], [], []
    for _ in range(runs):
        r, s = cairn.build()
        samples.append(r.wall_ms)
        execd.append(s["counts"]["executed"])
        inner.append(s.get("wall_ms"))
    b.expect("cairn no-op N=%d executed" % n, max(execd), 0)
    b.add(
        Result(
            "b", "no-op", n, "cairn", "ms", samples, execd,
            {"warmup_ms": warm.wall_ms, "cairn_wall_ms": inner},
        )
    )

    # (g) peak RSS of the no-op
    rss = [peak_rss_mb(cairn.argv("test", "//...", runs_actions=True), cairn.env()) for _ in range(min(runs, 3))]
    b.add(Result("g", "no-op peak RSS", n, "cairn", "MB", rss))

    if not full:
        return

    # (c) one leaf file edited
    samples, execd, overhead = [], [], []
    for _ in range(runs):
        ed.leaf()
        r, s = cairn.build()
        ex = executed_targets(s)
        samples.append(r.wall_ms)
        execd.append(len(ex))
        overhead.append(r.wall_ms - sum(t["duration_ms"] for t in ex))
    b.expect("cairn leaf edit N=%d executed" % n, max(execd), 2)
    raw = raw_command_ms(ws)
    b.add(
        Result(
            "c", "leaf file edited", n, "cairn", "ms", samples, execd,
            {
                "overhead_ms": statistics.median(overhead),
                "overhead_samples": [round(o, 2) for o in overhead],
                "overhead_vs_raw_ms": statistics.median(samples) - raw["build"] - raw["test"],
                "raw_command_ms": raw,
                "executed_labels": sorted(t["label"] for t in ex),
            },
        )
    )

    # (e) tokens comment edited: early cutoff
    samples, execd = [], []
    for _ in range(runs):
        ed.tokens_comment()
        r, s = cairn.build()
        samples.append(r.wall_ms)
        ex = executed_targets(s)
        execd.append(len(ex))
    b.expect("cairn cutoff N=%d executed" % n, execd, [1] * runs)
    b.add(
        Result(
            "e", "tokens comment edited (early cutoff)", n, "cairn", "ms", samples, execd,
            {"executed_labels": sorted(t["label"] for t in ex)},
        )
    )

    # (d) tokens value edited: everything rebuilds
    samples, execd = [], []
    for _ in range(heavy):
        ed.tokens_value()
        r, s = cairn.build()
        samples.append(r.wall_ms)
        execd.append(s["counts"]["executed"])
    b.expect("cairn root edit N=%d executed" % n, execd, [targets] * heavy)
    b.add(Result("d", "tokens value edited (all rebuild)", n, "cairn", "ms", samples, execd))

    # (f) clean, then build: restore from the store
    samples, execd, clean = [], [], []
    for _ in range(runs):
        c = run(cairn.argv("clean"), cairn.env())
        clean.append(c.wall_ms)
        b.expect("outputs left after cairn clean N=%d" % n, ed.outputs_present(), 0)
        r, s = cairn.build("build")
        samples.append(r.wall_ms)
        execd.append(s["counts"]["executed"])
        b.expect("outputs restored N=%d" % n, ed.outputs_present(), len(ws.packages))
    b.expect("cairn restore N=%d executed" % n, max(execd), 0)
    b.add(
        Result(
            "f", "clean, then build (restore)", n, "cairn", "ms", samples, execd,
            {"clean_ms": statistics.median(clean)},
        )
    )

    # (h) load + analysis alone
    graph = cairn.argv("-v", "graph", "--format", "json", "//...")
    run(graph, cairn.env())
    samples, evaluated = [], []
    for _ in range(runs):
        r = run(graph, cairn.env())
        samples.append(r.wall_ms)
        evaluated.append(_evaluated(r.stderr))
    b.add(
        Result(
            "h-warm", "analysis (graph), warm cache", n, "cairn", "ms", samples, [],
            {"evaluated": evaluated[-1], "graph_json_bytes": len(r.stdout)},
        )
    )
    samples, evaluated = [], []
    for _ in range(runs):
        ed.all_build_files()
        r = run(graph, cairn.env())
        samples.append(r.wall_ms)
        evaluated.append(_evaluated(r.stderr))
    b.expect("cairn analysis, BUILD files edited, N=%d evaluated" % n, evaluated, [n] * runs)
    b.add(
        Result(
            "h-cold", "analysis (graph), all BUILD edited", n, "cairn", "ms", samples, [],
            {"evaluated": evaluated[-1]},
        )
    )
    samples, evaluated = [], []
    for i in range(runs):
        store = cairn.store + ".fresh%d" % i
        shutil.rmtree(store, ignore_errors=True)
        r = run(graph, cairn.env(store))
        samples.append(r.wall_ms)
        evaluated.append(_evaluated(r.stderr))
    b.add(
        Result(
            "h-fresh", "analysis (graph), fresh store", n, "cairn", "ms", samples, [],
            {"evaluated": evaluated[-1]},
        )
    )


# --------------------------------------------------------------------------- remote


def fresh_copy(ws: gen_workspace.Workspace, dest: str) -> gen_workspace.Workspace:
    """A second checkout of `ws` (what a fresh CI machine clones): its sources, no outputs."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ws.root, dest, ignore=shutil.ignore_patterns("out"), symlinks=True)
    return gen_workspace.Workspace(dest, ws.seed, ws.packages)


def bench_remote(b: Bench, cairn: Cairn, n: int, runs: int, heavy: int, url: str) -> None:
    """The remote-cache scenarios (issue 14), against the server at `url`:

      r-cold    cold build, no remote (the baseline of r-upload)
      r-upload  cold build uploading every result (`--remote-upload`): CI's first run
      r-local   full local hit: `cairn clean` (untimed), then `cairn test //...`
      r-hit     full remote hit: a fresh copy of the workspace, an empty store
      r-min     the same with `--remote-download minimal` (a fresh CI machine that only tests)

    Each cold round first edits the tokens' value, so every action is new to the remote too;
    the two cold kinds alternate, so drift on the machine hits both alike."""
    ws, ed = cairn.ws, Editor(cairn.ws)
    # The remote outlives this run: edits must be new to it too, not only to this workspace.
    ed.counter = int(time.time() * 1000)
    targets = ws.targets
    remote = ["--remote", url]
    cold = {"r-cold": [], "r-upload": []}
    execd = {"r-cold": [], "r-upload": []}
    notes = {"r-cold": {}, "r-upload": {}}
    for i in range(heavy):
        for sc in ("r-cold", "r-upload"):
            ed.tokens_value()
            ed.remove_outputs()
            store = cairn.store + ".%s%d" % (sc, i)
            shutil.rmtree(store, ignore_errors=True)
            extra = remote + ["--remote-upload"] if sc == "r-upload" else []
            r = run(cairn.argv(*extra, "--json", "test", "//...", runs_actions=True),
                    cairn.env(store))
            s = json.loads(r.stdout)
            cold[sc].append(r.wall_ms)
            execd[sc].append(len(executed_targets(s)))
            b.expect("cairn %s N=%d executed" % (sc, n), execd[sc][-1], targets)
            notes[sc] = {"bytes_uploaded": s.get("bytes_uploaded", 0), "store": store}
    for sc, title in (("r-cold", "cold build, no remote"),
                      ("r-upload", "cold build, uploading")):
        b.add(Result(sc, title, n, "cairn", "ms", cold[sc], execd[sc], notes[sc]))
    uploaded = notes["r-upload"]["store"]

    # The full local hit, on the store and workspace that uploaded.
    samples = []
    for _ in range(runs):
        run(cairn.argv("clean"), cairn.env(uploaded))
        r = run(cairn.argv("--json", "test", "//...", runs_actions=True), cairn.env(uploaded))
        s = json.loads(r.stdout)
        samples.append(r.wall_ms)
        b.expect("cairn r-local N=%d executed" % n, len(executed_targets(s)), 0)
    b.add(Result("r-local", "full local hit after clean", n, "cairn", "ms", samples, [0] * runs))

    for sc, title, extra in (
        ("r-hit", "full remote hit, fresh store + checkout", []),
        ("r-min", "same, --remote-download minimal", ["--remote-download", "minimal"]),
    ):
        samples, got = [], {}
        for i in range(runs):
            copy = fresh_copy(ws, cairn.ws.root + ".%s%d" % (sc, i))
            store = cairn.store + ".%s%d" % (sc, i)
            shutil.rmtree(store, ignore_errors=True)
            other = Cairn(cairn.binary, copy, store, cairn.jobs, cairn.sandbox)
            r = run(other.argv(*remote, *extra, "--json", "test", "//...", runs_actions=True),
                    other.env())
            s = json.loads(r.stdout)
            samples.append(r.wall_ms)
            counts = s.get("counts", {})
            b.expect("cairn %s N=%d executed" % (sc, n), len(executed_targets(s)), 0)
            b.expect("cairn %s N=%d remote_cached" % (sc, n), counts.get("remote_cached"),
                     targets)
            got = {"bytes_downloaded": s.get("bytes_downloaded", 0),
                   "cairn_wall_ms": s.get("wall_ms")}
            # Kept until the end: deleting here would slow the next run's file creation
            # (ext4 without a journal skips recently freed inodes: see BENCHMARKS.md).
        b.add(Result(sc, title, n, "cairn", "ms", samples, [0] * runs, got))


def bench_remote_exec(b: Bench, cairn: Cairn, n: int, heavy: int, url: str,
                      remote_jobs: list[int]) -> None:
    """The remote-execution scenarios (issue 17), against the executing server at `url`:

      x-local       cold build here, no remote (the baseline)
      x-exec-jJ     cold build with `--remote-exec --remote-jobs J`: every action remote_executed
      x-hit         a fresh checkout and store after x-exec: every action remote_cached

    Each cold round first edits the tokens' value, so every action is new to the server.
    Per remote action: the median of its `duration_ms` (upload, queue, run, download) against
    the same action's local `duration_ms`."""
    ws, ed = cairn.ws, Editor(cairn.ws)
    ed.counter = int(time.time() * 1000)
    targets = ws.targets
    remote = ["--remote", url]
    kinds = [("x-local", [])] + [
        ("x-exec-j%d" % j, remote + ["--remote-exec=strict", "--remote-jobs", str(j)])
        for j in remote_jobs
    ]
    samples = {k: [] for k, _ in kinds}
    durations = {k: [] for k, _ in kinds}
    for i in range(heavy):
        for sc, extra in kinds:
            ed.tokens_value()
            ed.remove_outputs()
            store = cairn.store + ".%s.%d" % (sc, i)
            shutil.rmtree(store, ignore_errors=True)
            r = run(cairn.argv(*extra, "--json", "test", "//...", runs_actions=True),
                    cairn.env(store))
            s = json.loads(r.stdout)
            want = "executed" if sc == "x-local" else "remote_executed"
            ran = [t for t in s["targets"] if t["status"] == want]
            b.expect("cairn %s N=%d %s" % (sc, n, want), len(ran), targets)
            samples[sc].append(r.wall_ms)
            durations[sc].extend(t["duration_ms"] for t in ran)
    local_ms = statistics.median(durations["x-local"])
    for sc, _ in kinds:
        med = statistics.median(durations[sc])
        b.add(Result(sc, "cold build, " + ("here" if sc == "x-local" else
                                           "remote-executed, --remote-jobs " + sc.split("-j")[1]),
                     n, "cairn", "ms", samples[sc], [targets] * len(samples[sc]),
                     {"median_action_ms": med,
                      "overhead_per_remote_action_ms": med - local_ms,
                      "targets": targets}))
    # A second machine after the last remote-executed build: everything from the server.
    hits = []
    for i in range(heavy):
        copy = fresh_copy(ws, cairn.ws.root + ".x-hit%d" % i)
        store = cairn.store + ".x-hit%d" % i
        shutil.rmtree(store, ignore_errors=True)
        other = Cairn(cairn.binary, copy, store, cairn.jobs, cairn.sandbox)
        r = run(other.argv(*remote, "--remote-exec", "--json", "test", "//...",
                           runs_actions=True), other.env())
        s = json.loads(r.stdout)
        counts = s.get("counts", {})
        b.expect("cairn x-hit N=%d remote_cached" % n, counts.get("remote_cached"), targets)
        b.expect("cairn x-hit N=%d executed" % n,
                 counts.get("executed", 0) + counts.get("remote_executed", 0), 0)
        hits.append(r.wall_ms)
    b.add(Result("x-hit", "fresh store after remote execution", n, "cairn", "ms", hits,
                 [0] * len(hits)))


def _evaluated(stderr: str):
    m = re.search(r"loaded (\d+) packages: (\d+) evaluated", stderr)
    return int(m.group(2)) if m else None


# --------------------------------------------------------------------------- turbo


def install_turbo(turbo_dir: str) -> str:
    """Installs turbo@2 into turbo_dir (once) and returns its native binary."""
    binary = _find_turbo(turbo_dir)
    if binary:
        return binary
    npm = shutil.which("npm")
    if not npm:
        raise RuntimeError("--vs-turbo needs npm on PATH")
    log("installing turbo@2 into %s" % turbo_dir)
    os.makedirs(turbo_dir, exist_ok=True)
    run([npm, "install", "--prefix", turbo_dir, "--no-audit", "--no-fund", "turbo@2"], dict(os.environ))
    binary = _find_turbo(turbo_dir)
    if not binary:
        raise RuntimeError("turbo installed but no binary found under " + turbo_dir)
    return binary


def _find_turbo(turbo_dir: str) -> str | None:
    # The platform package holds the native binary; calling it directly skips a node shim.
    nm = os.path.join(turbo_dir, "node_modules")
    for pattern in ("@turbo/*/bin/turbo", "turbo-*/bin/turbo", ".bin/turbo"):
        hits = sorted(glob.glob(os.path.join(nm, pattern)))
        if hits:
            return hits[0]
    return None


class Turbo:
    def __init__(self, binary: str, ws: gen_workspace.Workspace, cache: str, jobs: int | None):
        self.binary = binary
        self.ws = ws
        self.cache = cache
        self.jobs = jobs

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            TURBO_TELEMETRY_DISABLED="1",
            DO_NOT_TRACK="1",
            TURBO_NO_UPDATE_NOTIFIER="1",
            TURBO_DAEMON="false",
            NO_COLOR="1",
            FORCE_COLOR="0",
        )
        return env

    def argv(self, *tasks: str, extra: tuple[str, ...] = ()) -> list[str]:
        a = [self.binary, "run", *tasks, "--output-logs=none", "--ui=stream",
             "--cache-dir", self.cache]
        if self.jobs:
            a += ["--concurrency", str(self.jobs)]
        return a + list(extra)

    def build(self, *tasks: str) -> tuple[Run, int, int]:
        """Runs the tasks; returns the run, tasks executed and tasks total."""
        r = run(self.argv(*(tasks or ("build", "test"))), self.env(), cwd=self.ws.root)
        m = re.search(r"Cached:\s+(\d+) cached, (\d+) total", r.stdout)
        if not m:
            raise RuntimeError("cannot find turbo's 'Cached:' line in:\n" + r.stdout[-2000:])
        cached, total = int(m.group(1)), int(m.group(2))
        return r, total - cached, total


def setup_turbo_workspace(root: str) -> None:
    env = dict(os.environ)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
           "-c", "commit.gpgsign=false"]
    run(git + ["init", "-q"], env, cwd=root)
    run(git + ["add", "-A"], env, cwd=root)
    run(git + ["commit", "-q", "-m", "generated workspace"], env, cwd=root)
    # No external dependencies: this only links the workspaces and writes the lockfile.
    run(["npm", "install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts"],
        env, cwd=root)


def bench_turbo(
    b: Bench, turbo: Turbo, n: int, runs: int, heavy: int, rebuilds: bool = True
) -> None:
    """Turbo's scenarios; with rebuilds=False, (d) and (e) (full rebuilds: turbo has no
    early cutoff, so both re-run every task) are skipped."""
    ws, ed = turbo.ws, Editor(turbo.ws)
    targets = ws.targets

    samples, execd = [], []
    base_cache = turbo.cache
    for i in range(heavy):
        # A fresh cache dir per cold run; the last one stays for the other scenarios.
        turbo.cache = base_cache if i == heavy - 1 else base_cache + ".cold%d" % i
        shutil.rmtree(turbo.cache, ignore_errors=True)
        ed.remove_outputs()
        r, ex, total = turbo.build()
        samples.append(r.wall_ms)
        execd.append(ex)
    b.expect("turbo cold N=%d total tasks" % n, total, targets)
    b.add(Result("a", "cold build, empty store", n, "turbo", "ms", samples, execd))

    settle()
    warm, _, _ = turbo.build()
    samples, execd = [], []
    for _ in range(runs):
        r, ex, _ = turbo.build()
        samples.append(r.wall_ms)
        execd.append(ex)
    b.expect("turbo no-op N=%d executed" % n, max(execd), 0)
    full_turbo = "FULL TURBO" in r.stdout
    b.expect("turbo no-op N=%d says FULL TURBO" % n, full_turbo, True)
    b.add(
        Result(
            "b", "no-op", n, "turbo", "ms", samples, execd,
            {"warmup_ms": warm.wall_ms, "full_turbo": full_turbo},
        )
    )

    rss = [peak_rss_mb(turbo.argv("build", "test"), turbo.env(), ws.root)
           for _ in range(min(runs, 3))]
    b.add(Result("g", "no-op peak RSS", n, "turbo", "MB", rss))

    samples, execd = [], []
    for _ in range(runs):
        ed.leaf()
        r, ex, _ = turbo.build()
        samples.append(r.wall_ms)
        execd.append(ex)
    b.add(Result("c", "leaf file edited", n, "turbo", "ms", samples, execd))

    if rebuilds:
        samples, execd = [], []
        for _ in range(heavy):
            ed.tokens_comment()
            r, ex, _ = turbo.build()
            samples.append(r.wall_ms)
            execd.append(ex)
        b.add(Result("e", "tokens comment edited (early cutoff)", n, "turbo", "ms", samples,
                     execd, {"note": "no early cutoff"}))

        samples, execd = [], []
        for _ in range(heavy):
            ed.tokens_value()
            r, ex, _ = turbo.build()
            samples.append(r.wall_ms)
            execd.append(ex)
        b.add(Result("d", "tokens value edited (all rebuild)", n, "turbo", "ms", samples, execd))
    else:
        log("  turbo d, e skipped at N=%d (--turbo-rebuilds-max-n)" % n)

    samples, execd = [], []
    for _ in range(runs):
        ed.remove_outputs()
        r, ex, _ = turbo.build("build")
        samples.append(r.wall_ms)
        execd.append(ex)
        b.expect("turbo outputs restored N=%d" % n, ed.outputs_present(), len(ws.packages))
    b.expect("turbo restore N=%d executed" % n, max(execd), 0)
    b.add(Result("f", "clean, then build (restore)", n, "turbo", "ms", samples, execd))

    dry = turbo.argv("build", "test", extra=("--dry=json",))
    samples = [run(dry, turbo.env(), cwd=ws.root).wall_ms for _ in range(runs)]
    b.add(Result("h-warm", "analysis (graph), warm cache", n, "turbo", "ms", samples, [],
                 {"note": "turbo run --dry=json (also hashes inputs)"}))


# --------------------------------------------------------------------------- report


def filesystem_of(path: str) -> str | None:
    """The file system type holding path (from /proc/mounts), e.g. "ext4" or "tmpfs"."""
    path = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mnt = parts[1]
                    inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
                    if inside and len(mnt) >= len(best):
                        best, fstype = mnt, parts[2]
    except OSError:
        return None
    return fstype


def machine() -> dict:
    info = {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            info["cpu"] = m.group(1).strip() if m else None
        with open("/proc/meminfo") as f:
            m = re.search(r"^MemTotal:\s*(\d+) kB", f.read(), re.M)
            info["memory_gb"] = round(int(m.group(1)) / 1024 / 1024, 1) if m else None
    except OSError:
        pass
    return info


def table(b: Bench, with_turbo: bool) -> str:
    rows = [["scenario", "N", "cairn", "exec"]]
    if with_turbo:
        rows[0] += ["turbo", "exec", "cairn/turbo"]
    rows[0].append("notes")
    keyed = {(r.scenario, r.packages, r.tool): r for r in b.results}
    order = ["a-directory", "a", "b", "c", "d", "e", "f", "g", "h-warm", "h-cold", "h-fresh",
             "r-cold", "r-upload", "r-local", "r-hit", "r-min"]
    ns = sorted({r.packages for r in b.results})
    for sc in order:
        for n in ns:
            c = keyed.get((sc, n, "cairn"))
            t = keyed.get((sc, n, "turbo")) if with_turbo else None
            if not c and not t:
                continue
            title = (c or t).title
            row = ["%s %s" % (sc, title), str(n)]
            row += [_fmt(c.median, c.unit), _ex(c)] if c else ["", ""]
            if with_turbo:
                if t:
                    ratio = "%.3f" % (c.median / t.median) if c else ""
                    row += [_fmt(t.median, t.unit), _ex(t), ratio]
                else:
                    row += ["", "", ""]
            row.append(_notes(c) if c else "")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(v: float, unit: str) -> str:
    return ("%.1f" % v if v < 100 else "%.0f" % v) + " " + unit


def _ex(r: Result) -> str:
    if not r.executed:
        return ""
    lo, hi = min(r.executed), max(r.executed)
    return str(lo) if lo == hi else "%d-%d" % (lo, hi)


# --------------------------------------------------------------------------- main


def default_cairn() -> str:
    for profile in ("release", "debug"):
        p = os.path.join(REPO, "target", profile, "cairn")
        if os.access(p, os.X_OK):
            return p
    return os.path.join(REPO, "target", "release", "cairn")


def main(argv: list[str] | None = None) -> int:
    global SETTLE_S
    parser = argparse.ArgumentParser(
        description="The cairn macro benchmark (issue 6); see the docstring of benches/macro.py.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--packages", default="100,1000",
                        help="comma-separated package counts N (default 100,1000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per cheap scenario (5)")
    parser.add_argument("--heavy-runs", type=int, default=None,
                        help="runs of the full rebuilds (a, d; e for turbo); "
                             "default --runs when N <= 200, else 1")
    parser.add_argument("--files", type=int, default=20, help="source files per package (20)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    parser.add_argument("--cairn", default=default_cairn(),
                        help="cairn binary (default target/release/cairn if built, "
                             "else target/debug/cairn)")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="pass -j / --concurrency to both tools (default: their own)")
    parser.add_argument("--sandbox", choices=["namespace", "directory", "none"],
                        help="pass --sandbox to cairn build/test (default: cairn's own)")
    parser.add_argument("--vs-turbo", action="store_true",
                        help="also run the scenarios with Turborepo 2 (installed from npm)")
    parser.add_argument("--turbo-dir", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cairn-bench", "turbo"),
        help="where turbo@2 is installed (default ~/.cache/cairn-bench/turbo)")
    parser.add_argument("--turbo-rebuilds-max-n", type=int, default=None, metavar="M",
                        help="skip turbo's full rebuilds (d, e) above N = M; each takes about "
                             "as long as turbo's cold build (~24 min at N = 1000 on 2 cores)")
    parser.add_argument("--settle", type=float, default=SETTLE_S, metavar="S",
                        help="seconds to wait after a cold build before timing the no-op "
                             "(default 30; 0 to skip)")
    parser.add_argument("--turbo-only", action="store_true",
                        help="with --vs-turbo: run only Turborepo's scenarios (to add them to a "
                             "cairn run of the same day without repeating it)")
    parser.add_argument("--noop-5000", action="store_true",
                        help="also measure the no-op (and its RSS) at N = 5000")
    parser.add_argument("--remote", metavar="URL",
                        help="also run the remote-cache scenarios (r-*) against URL, e.g. "
                             "grpc://127.0.0.1:50052 (scripts/test-servers/buildbox_start.sh)")
    parser.add_argument("--remote-exec", metavar="JOBS",
                        help="with --remote (a server that executes): the remote-execution "
                             "scenarios (x-*), one remote-executed cold build per "
                             "comma-separated --remote-jobs value, e.g. 2,8,32")
    parser.add_argument("--remote-only", action="store_true",
                        help="with --remote: skip the local scenarios (a-h)")
    parser.add_argument("--json", metavar="OUT.json", help="write all results as JSON")
    parser.add_argument("--scratch",
                        help="parent dir of the temp workspaces and stores (default $TMPDIR); "
                             "its file system matters, see BENCHMARKS.md")
    parser.add_argument("--keep", action="store_true", help="keep the temp workspaces")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if an expected executed count does not match")
    parser.add_argument("--smoke", action="store_true",
                        help="quick self-check: N = 20, 1 run, --strict (for the test suite)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.packages, args.runs, args.strict, args.settle = "20", 1, True, 0.0
    SETTLE_S = args.settle

    ns = [int(x) for x in args.packages.split(",") if x.strip()]
    cairn_bin = os.path.abspath(args.cairn)
    if not os.access(cairn_bin, os.X_OK):
        log("no cairn binary at %s (build it: cargo build --release)" % cairn_bin)
        return 2
    version = run([cairn_bin, "--version"], dict(os.environ)).stdout.strip()
    log("cairn: %s (%s)" % (cairn_bin, version))
    turbo_bin = turbo_version = None
    if args.vs_turbo:
        turbo_bin = install_turbo(os.path.abspath(args.turbo_dir))
        turbo_version = run([turbo_bin, "--version"], dict(os.environ)).stdout.strip()
        log("turbo: %s (%s)" % (turbo_bin, turbo_version))

    scratch = tempfile.mkdtemp(prefix="cairn-bench-", dir=args.scratch)
    scratch_fs = filesystem_of(scratch)
    log("scratch: %s (%s)" % (scratch, scratch_fs))
    b = Bench()
    try:
        plan = [(n, True) for n in ns]
        if args.noop_5000 and 5000 not in ns:
            plan.append((5000, False))
        # Every cairn scenario first, then every turbo one: turbo's runs delete caches and
        # outputs between its heavy runs, and on ext4 without a journal file creation is slow
        # for minutes after mass deletes (see BENCHMARKS.md), so interleaving the tools by N
        # would charge turbo's deletes to cairn's next cold build.
        def heavy_runs(n: int) -> int:
            return args.heavy_runs or (args.runs if n <= 200 else 1)

        if not args.turbo_only:
            for n, full in plan:
                log("N=%d: generating (files=%d, seed=%d)" % (n, args.files, args.seed))
                ws = gen_workspace.generate(
                    os.path.join(scratch, "cairn-%d" % n), n, args.files, args.seed
                )
                cairn = Cairn(cairn_bin, ws, os.path.join(scratch, "store-%d" % n), args.jobs,
                              args.sandbox)
                if not args.remote_only:
                    bench_cairn(b, cairn, n, args.runs, heavy_runs(n), full)
                if args.remote and full and not args.remote_exec:
                    bench_remote(b, cairn, n, args.runs, heavy_runs(n), args.remote)
                if args.remote and full and args.remote_exec:
                    jobs = [int(j) for j in args.remote_exec.split(",")]
                    bench_remote_exec(b, cairn, n, heavy_runs(n), args.remote, jobs)
        if turbo_bin:
            for n, full in plan:
                if not full:
                    continue
                log("N=%d: turbo workspace (git init, npm install)" % n)
                tws = gen_workspace.generate(
                    os.path.join(scratch, "turbo-%d" % n), n, args.files, args.seed, turbo=True
                )
                setup_turbo_workspace(tws.root)
                turbo = Turbo(turbo_bin, tws, os.path.join(scratch, "turbo-cache-%d" % n),
                              args.jobs)
                rebuilds = args.turbo_rebuilds_max_n is None or n <= args.turbo_rebuilds_max_n
                bench_turbo(b, turbo, n, args.runs, heavy_runs(n), rebuilds)
    finally:
        # Deleted only at the end: on some file systems (ext4 without a journal) mass deletes
        # slow down the file creations that follow them for minutes (see BENCHMARKS.md).
        if args.keep:
            log("kept %s" % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    out = table(b, bool(turbo_bin))
    print(out)
    for w in b.warnings:
        print("WARNING: " + w)
    if args.json:
        doc = {
            "machine": dict(machine(), scratch=scratch, scratch_fs=scratch_fs),
            "cairn": {"path": cairn_bin, "version": version},
            "turbo": {"path": turbo_bin, "version": turbo_version} if turbo_bin else None,
            "config": {k: v for k, v in vars(args).items()},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "results": [r.to_json() for r in b.results],
            "warnings": b.warnings,
            "table": out,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        log("wrote %s" % args.json)
    return 1 if (args.strict and b.warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
