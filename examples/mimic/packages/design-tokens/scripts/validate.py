#!/usr/bin/env python3
"""Validates token files against the token schema: every token has a known $type and a
$value of the right shape, and names are lowercase. Exits 1 listing every problem."""
import json
import re
import sys

NAME = re.compile(r"^[a-z0-9]+$")
CHECKS = {
    "color": lambda v: isinstance(v, str) and re.fullmatch(r"#[0-9a-f]{6}", v),
    "dimension": lambda v: isinstance(v, str) and re.fullmatch(r"\d+(\.\d+)?(px|rem)", v),
    "fontFamily": lambda v: isinstance(v, str) and v.strip() != "",
    "fontWeight": lambda v: isinstance(v, int) and 100 <= v <= 900 and v % 100 == 0,
}


def check(node, path, problems):
    if "$value" in node:
        kind = node.get("$type")
        if kind not in CHECKS:
            problems.append(f"{path}: unknown $type {kind!r} (expected one of {sorted(CHECKS)})")
        elif not CHECKS[kind](node["$value"]):
            problems.append(f"{path}: invalid {kind} value {node['$value']!r}")
        return
    for key, child in node.items():
        if key.startswith("$"):
            continue
        if not NAME.match(key):
            problems.append(f"{path}.{key}: token names are lowercase letters and digits")
        if not isinstance(child, dict):
            problems.append(f"{path}.{key}: expected a group or a token, found {child!r}")
            continue
        check(child, f"{path}.{key}" if path else key, problems)


def main():
    problems = []
    count = 0
    for path in sys.argv[1:]:
        with open(path) as f:
            text = "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("//"))
        data = json.loads(text)
        before = len(problems)
        check(data, "", problems)
        count += 1
        if len(problems) == before:
            print(f"ok   {path}")
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    print(f"{count} token files, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
