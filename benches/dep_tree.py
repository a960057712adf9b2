#!/usr/bin/env python3
"""Sandbox setup cost of a large dependency tree (issue 13): how long an action that runs
`true`-like work takes when it depends on an output directory of FILES files (a
`node_modules`), against the same action with no dependency.

It builds the tree once, then re-runs the dependent action RUNS times (each time with a new
command, so it misses the cache while the tree stays cached) and reports the median of its
`duration_ms` from `--json` (hashing, sandbox setup, run, capture). Same for an action without
the dependency.

Usage: python3 benches/dep_tree.py [--cairn target/release/cairn] [--files 5000] [--runs 7]
                                   [--sandbox namespace] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cairn: str, ws: str, store: str, sandbox: str) -> dict:
    env = dict(os.environ, CAIRN_STORE=store, NO_COLOR="1")
    p = subprocess.run(
        [cairn, "-C", ws, "--sandbox", sandbox, "--json", "build"],
        env=env, capture_output=True, text=True,
    )
    if p.returncode != 0:
        sys.exit("cairn failed:\n" + p.stderr[-3000:])
    return {t["label"]: t for t in json.loads(p.stdout)["targets"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cairn", default=os.path.join(REPO, "target", "release", "cairn"))
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sandbox", default="namespace")
    ap.add_argument("--scratch", default=None)
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="cairn-dep-tree-", dir=args.scratch)
    try:
        ws, store = os.path.join(scratch, "ws"), os.path.join(scratch, "store")
        os.makedirs(ws)
        open(os.path.join(ws, "cairn.toml"), "w").close()
        dirs = max(1, args.files // 16)
        tree = (
            'action(name = "tree", out_dirs = ["node_modules"], cmd = "for i in $(seq %d); do '
            'mkdir -p node_modules/p$((i %% %d)) && echo $i > node_modules/p$((i %% %d))/f$i.js; '
            'done")\n' % (args.files, dirs, dirs)
        )
        results = {}
        for name, deps in (("with the tree", '[":tree"]'), ("without", "[]")):
            samples = []
            for i in range(args.runs + 1):
                with open(os.path.join(ws, "BUILD.star"), "w") as f:
                    f.write(tree)
                    f.write('action(name = "use", deps = %s, cmd = "echo %d > $OUT", '
                            'outs = ["o.txt"])\n' % (deps, i))
                t = run(args.cairn, ws, store, args.sandbox)["//:use"]
                assert t["status"] == "executed", t
                if i > 0:  # the first run also builds the tree (and makes its shared copy)
                    samples.append(t["duration_ms"])
            results[name] = samples
            print("%-14s median %5.1f ms  samples %s" % (name, statistics.median(samples), samples))
        extra = statistics.median(results["with the tree"]) - statistics.median(results["without"])
        print("a %d-file dependency tree adds %.1f ms (%s sandbox)" % (args.files, extra, args.sandbox))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
