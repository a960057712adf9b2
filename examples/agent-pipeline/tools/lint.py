"""The quality gate (a stand-in for ruff or pylint, which need PyPI): every file compiles,
has no tabs, no trailing whitespace, no line over 100 characters, and ends with a newline.
Prints `path:line: problem` for each finding and exits 1 if there is any."""
import sys

MAX_LINE = 100


def check(path):
    problems = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        compile(text, path, "exec")
    except SyntaxError as e:
        problems.append((e.lineno or 0, "syntax error: %s" % e.msg))
    for number, line in enumerate(text.split("\n"), 1):
        if "\t" in line:
            problems.append((number, "tab character"))
        if line != line.rstrip():
            problems.append((number, "trailing whitespace"))
        if len(line) > MAX_LINE:
            problems.append((number, "line longer than %d characters" % MAX_LINE))
    if text and not text.endswith("\n"):
        problems.append((text.count("\n") + 1, "no newline at the end of the file"))
    return ["%s:%d: %s" % (path, n, p) for n, p in problems]


def main():
    findings = [p for path in sys.argv[1:] for p in check(path)]
    for finding in findings:
        print(finding)
    print("quality: %d files, %d findings" % (len(sys.argv) - 1, len(findings)))
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
