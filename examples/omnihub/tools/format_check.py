"""The pre-build format check (a stand-in for black --check): files end with one newline and
have no tabs or trailing whitespace. Exits 1 naming each offending line."""
import sys

bad = []
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for n, line in enumerate(text.split("\n"), 1):
        if "\t" in line or line != line.rstrip():
            bad.append("%s:%d: tab or trailing whitespace" % (path, n))
    if not text.endswith("\n") or text.endswith("\n\n"):
        bad.append("%s: must end with exactly one newline" % path)
print("\n".join(bad) or "format: %d files clean" % (len(sys.argv) - 1))
sys.exit(1 if bad else 0)
