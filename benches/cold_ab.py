#!/usr/bin/env python3
"""Compare the cold build (`cairn --json test //...`, macro.py's scenario a) of several cairn
binaries at N packages, interleaved: every round runs each binary once, so a machine that
drifts affects them alike. Every run gets a fresh copy of one generated workspace (all copies
made up front, before any timed run) and a fresh, empty CAIRN_STORE; nothing is deleted during
the runs (ext4 without a journal slows inode creation after mass deletes). A run waits until
no compiler has run for 15 s, and rounds during which one ran anyway are reported apart
("clean" medians). Prints median wall (spawn to exit) and CPU (user + system) per binary.

Usage: python3 benches/cold_ab.py [--packages 1000] [--rounds 5] [--scratch DIR]
           [--sandbox namespace|directory] [--settle S] [--json FILE] BINARY [BINARY ...]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_workspace  # noqa: E402


# Processes that mean someone is compiling on the machine meanwhile.
FOREIGN = {"cargo", "rustc", "cc1", "cc", "ld", "rust-lld", "clippy-driver", "rustdoc", "cc1plus"}


def foreign() -> list[str]:
    """Compiler processes of someone else on the machine (we run none)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/comm" % pid) as f:
                    c = f.read().strip()
            except OSError:
                continue
            if c in FOREIGN:
                out.append("%s:%s" % (pid, c))
    return out


def wait_quiet(quiet_s: float = 15.0) -> float:
    t0 = time.time()
    last_busy = time.time() if foreign() else 0.0
    while time.time() - last_busy < quiet_s:
        time.sleep(0.5)
        if foreign():
            last_busy = time.time()
    return time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--packages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scratch", default=None)
    ap.add_argument("--sandbox", default=None)
    ap.add_argument("--settle", type=float, default=5.0,
                    help="pause (after os.sync) before every timed run")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="cairn-cold-ab-", dir=a.scratch)
    print("scratch", scratch, flush=True)
    base = os.path.join(scratch, "base")
    gen_workspace.generate(base, a.packages)
    bins = [os.path.abspath(b) for b in a.binaries]
    plan = []
    for r in range(a.rounds):
        for i, b in enumerate(bins):
            ws = os.path.join(scratch, "ws-r%d-b%d" % (r, i))
            shutil.copytree(base, ws)
            plan.append((r, b, ws, os.path.join(scratch, "store-r%d-b%d" % (r, i))))
    print("copies made; settling 60 s", flush=True)
    os.sync()
    time.sleep(60)
    samples = {b: [] for b in bins}
    for r, b, ws, store in plan:
        os.sync()
        time.sleep(a.settle)
        waited = wait_quiet(float(os.environ.get("QUIET_S", "15")))
        argv = [b, "-C", ws, "--color", "never"]
        if a.sandbox:
            argv += ["--sandbox", a.sandbox]
        argv += ["--json", "test", "//..."]
        env = dict(os.environ, CAIRN_STORE=store, NO_COLOR="1")
        out = open(os.path.join(scratch, "out-%s-r%d.json" % (os.path.basename(b), r)), "w+")
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.DEVNULL)
        seen = set()
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            seen.update(foreign())
            time.sleep(0.25)
        wall = (time.perf_counter() - t0) * 1000.0
        cpu = (ru.ru_utime + ru.ru_stime) * 1000.0
        out.seek(0)
        summary = json.load(out)
        counts = summary["counts"]
        samples[b].append({"round": r, "wall_ms": wall, "cpu_ms": cpu,
                           "user_ms": ru.ru_utime * 1000, "sys_ms": ru.ru_stime * 1000,
                           "status": status, "counts": counts, "targets": summary["targets"],
                           "inner_wall_ms": summary.get("wall_ms"),
                           "foreign": sorted(seen), "waited_s": waited,
                           "started": time.strftime("%H:%M:%S", time.localtime(time.time() - wall / 1000))})
        print("round %d %-28s wall %8.0f ms  cpu %8.0f ms (user %.0f sys %.0f)  exec %d cached %d  status %d  waited %.0fs  foreign %s"
              % (r, b, wall, cpu, ru.ru_utime * 1000, ru.ru_stime * 1000, counts["executed"],
                 counts["cached"], status, waited, len(seen)), flush=True)
    print()
    clean = [r for r in range(a.rounds) if all(not samples[b][r]["foreign"] for b in bins)]
    print("rounds with no foreign compiler during either run:", clean)
    for b, s in samples.items():
        w = [s[r]["wall_ms"] for r in clean]
        c = [s[r]["cpu_ms"] for r in clean]
        if w:
            print("CLEAN %-22s wall median %8.0f ms (min %.0f, max %.0f)   cpu median %8.0f ms (min %.0f, max %.0f)"
                  % (b, statistics.median(w), min(w), max(w), statistics.median(c), min(c), max(c)))
    for b, s in samples.items():
        w = [x["wall_ms"] for x in s]
        c = [x["cpu_ms"] for x in s]
        print("%-28s wall median %8.0f ms (min %.0f, max %.0f)   cpu median %8.0f ms (min %.0f, max %.0f)"
              % (b, statistics.median(w), min(w), max(w), statistics.median(c), min(c), max(c)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"scratch": scratch, "packages": a.packages, "samples": samples}, f,
                      indent=2)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
