#!/usr/bin/env python3
"""Bundles an app: its sources (sorted, comment lines stripped) plus its platform's tokens.

Deterministic: the same inputs always give byte-identical bundles (no timestamps, sorted
inputs), so a rebuild with unchanged inputs lets cairn stop the rebuild wave early.
"""
import argparse
import json
import pathlib
import re

COMMENT = re.compile(r"^\s*(//|/\*|\*)")


def strip_comments(text):
    return "\n".join(line for line in text.splitlines() if not COMMENT.match(line)) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out-js", required=True)
    parser.add_argument("--out-css")
    parser.add_argument("--tokens", action="append", default=[])
    parser.add_argument("srcs", nargs="+")
    args = parser.parse_args()

    js = [f"// {args.name} bundle, built by cairn from {len(args.srcs)} sources\n"]
    css = []
    for token_file in args.tokens:
        path = pathlib.Path(token_file)
        text = path.read_text()
        if path.suffix == ".css":
            css.append(text)
        elif path.suffix == ".json":
            js.append(f"const TOKENS = {json.dumps(json.loads(text), sort_keys=True)};\n")
        else:
            js.append(strip_comments(text).replace("export const ", "const "))
    for src in sorted(args.srcs):
        text = pathlib.Path(src).read_text()
        if src.endswith(".css"):
            css.append(f"/* {src} */\n{text}")
        elif src.endswith((".js", ".ts", ".json")):
            js.append(f";// module {src}\n{strip_comments(text)}")
    pathlib.Path(args.out_js).write_text("".join(js))
    if args.out_css:
        pathlib.Path(args.out_css).write_text("".join(css))
    elif css:
        parser.error("CSS sources given but no --out-css")


if __name__ == "__main__":
    main()
