#!/usr/bin/env python3
"""Watch-mode latency (issue 4): time from a one-file write to the start and to the end of the
cycle `cairn watch --json --test` runs for it, in a generated workspace of N packages.

    python3 benches/watch_bench.py [--packages 1000] [--edits 10] [--cairn PATH] [--debounce 50]

End latency is measured by the driver (write -> the cycle's JSON line arrives). Start latency
is end latency minus the cycle's own `cycle_ms` (which cairn reports from the moment the batch
settled), i.e. debounce + event delivery. Prints medians and writes nothing else.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import queue
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_workspace  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--packages", type=int, default=1000)
    p.add_argument("--edits", type=int, default=10)
    p.add_argument("--debounce", type=int, default=50)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default = os.path.join(root, "target", "release", "cairn")
    if not os.path.exists(default):
        default = os.path.join(root, "target", "debug", "cairn")
    p.add_argument("--cairn", default=default)
    args = p.parse_args()

    scratch = tempfile.mkdtemp(prefix="cairn-watch-bench-")
    ws = gen_workspace.generate(os.path.join(scratch, "ws"), packages=args.packages)
    env = dict(os.environ, CAIRN_STORE=os.path.join(scratch, "store"), NO_COLOR="1")
    subprocess.run([args.cairn, "-C", ws.root, "test"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen([args.cairn, "-C", ws.root, "watch", "--json", "--test",
                             "--debounce", str(args.debounce)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put((time.monotonic(), l)) for l in proc.stdout], daemon=True).start()
    lines.get(timeout=600)  # the initial cycle
    leaf = os.path.join(ws.root, ws.leaf_source)
    starts, ends, executed = [], [], []
    try:
        for i in range(args.edits):
            with open(leaf, "a") as f:
                f.write("// watch edit %d\n" % i)
            written = time.monotonic()
            arrived, line = lines.get(timeout=120)
            cycle = json.loads(line)
            end_ms = (arrived - written) * 1000
            ends.append(end_ms)
            starts.append(end_ms - cycle.get("cycle_ms", 0))
            executed.append(cycle["counts"]["executed"])
            time.sleep(0.3)
    finally:
        proc.send_signal(2)
        proc.wait(timeout=30)
    print("N=%d packages, %d edits of one leaf source, debounce %d ms, binary %s"
          % (args.packages, args.edits, args.debounce, args.cairn))
    print("write -> cycle start: median %.1f ms (min %.1f, max %.1f)" % (statistics.median(starts), min(starts), max(starts)))
    print("write -> cycle end:   median %.1f ms (min %.1f, max %.1f)" % (statistics.median(ends), min(ends), max(ends)))
    print("executed per cycle: %s" % sorted(set(executed)))


if __name__ == "__main__":
    main()
