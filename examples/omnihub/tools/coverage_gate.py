"""Runs unittest files under a line tracer (the standard library's sys.settrace: a stand-in for
coverage.py) and fails when the share of executable lines of SRC_DIR they ran is below MIN:
python3 coverage_gate.py --src SRC_DIR --min PERCENT TEST_FILES..."""
import argparse
import os
import sys
import unittest


def executable_lines(path):
    lines = set()
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    todo = [code]
    while todo:
        c = todo.pop()
        lines.update(line for _, _, line in c.co_lines() if line is not None)
        todo.extend(k for k in c.co_consts if hasattr(k, "co_lines"))
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", required=True)
    parser.add_argument("--min", type=float, required=True)
    parser.add_argument("tests", nargs="+")
    args = parser.parse_args()
    src = os.path.abspath(args.src)
    hit = {}

    def tracer(frame, event, _arg):
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(src + os.sep):
            return None
        if event == "line":
            hit.setdefault(path, set()).add(frame.f_lineno)
        return tracer

    # Traced from before the imports: module-level lines run when the tests import them.
    sys.settrace(tracer)
    suite = unittest.TestSuite()
    for test in args.tests:
        sys.path.insert(0, os.path.dirname(os.path.abspath(test)))
        name = os.path.splitext(os.path.basename(test))[0]
        suite.addTests(unittest.defaultTestLoader.loadTestsFromName(name))
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=0).run(suite)
    sys.settrace(None)
    if not result.wasSuccessful():
        sys.exit(1)
    total = covered = 0
    for root, _, files in os.walk(src):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                lines = executable_lines(path)
                ran = lines & hit.get(path, set())
                total += len(lines)
                covered += len(ran)
                print("%s: %d/%d lines" % (os.path.relpath(path, src), len(ran), len(lines)))
    percent = 100.0 * covered / total if total else 100.0
    print("coverage: %.1f%% (minimum %.1f%%)" % (percent, args.min))
    sys.exit(0 if percent >= args.min else 1)


if __name__ == "__main__":
    main()
