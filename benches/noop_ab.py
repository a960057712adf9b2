#!/usr/bin/env python3
"""Compare the no-op build of several cairn binaries, interleaved, on one generated workspace
(with --edit: the build after a leaf edit, scenario c of the macro benchmark).

Each binary gets its own copy of the workspace and its own store (a store's file states know
the outputs it wrote: two binaries sharing a workspace would keep rewriting each other's
outputs), is warmed up, and then every round runs each binary once, so a machine that slows
down or speeds up during the run affects them all alike. Prints the median wall time (spawn
to exit, output to /dev/null) and the median CPU time (user + system) per binary.

Usage:
    python3 benches/noop_ab.py [--packages 1000] [--runs 21] [--json] [--edit] BINARY [BINARY ...]

Copy a binary aside before rebuilding (`cp target/release/cairn /tmp/cairn-before`): the
path is the binary's identity for the key memo, so each path keeps its own memo.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_workspace  # noqa: E402


def run(binary: str, ws: str, store: str, json_out: bool) -> tuple[float, float]:
    env = dict(os.environ, CAIRN_STORE=store, NO_COLOR="1")
    argv = [binary, "-C", ws] + (["--json"] if json_out else []) + ["test", "//..."]
    began = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = (time.perf_counter() - began) * 1000.0
    if status != 0:
        raise SystemExit("%s failed on %s (status %d)" % (binary, ws, status))
    return wall, (usage.ru_utime + usage.ru_stime) * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binaries", nargs="+", help="cairn binaries to compare")
    parser.add_argument("--packages", type=int, default=1000, help="workspace size N (1000)")
    parser.add_argument("--runs", type=int, default=21, help="rounds (21)")
    parser.add_argument("--json", action="store_true", help="run with --json, as macro.py")
    parser.add_argument("--edit", action="store_true",
                        help="append a line to a leaf app's source before every timed run")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="cairn-ab-")
    try:
        base = os.path.join(scratch, "base")
        leaf = [p for p in gen_workspace.generate(base, args.packages).packages
                if p.kind == "app"][-1]
        setups = []
        for i, binary in enumerate(args.binaries):
            ws, store = os.path.join(scratch, "ws%d" % i), os.path.join(scratch, "store%d" % i)
            shutil.copytree(base, ws)
            setups.append((os.path.abspath(binary), ws, store))
        for binary, ws, store in setups:
            run(binary, ws, store, args.json)  # cold build
        time.sleep(1.1)  # past the racy window: the warm-up remembers every state
        for binary, ws, store in setups:
            run(binary, ws, store, args.json)
        samples: dict[str, tuple[list[float], list[float]]] = {b: ([], []) for b, _, _ in setups}
        for _ in range(args.runs):
            for binary, ws, store in setups:
                if args.edit:
                    with open(os.path.join(ws, leaf.path, leaf.srcs[0]), "a") as f:
                        f.write("// edit\n")
                wall, cpu = run(binary, ws, store, args.json)
                samples[binary][0].append(wall)
                samples[binary][1].append(cpu)
        for binary, (wall, cpu) in samples.items():
            print("%-40s wall median %6.1f ms (min %6.1f)   cpu median %6.1f ms"
                  % (binary, statistics.median(wall), min(wall), statistics.median(cpu)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
