"""Packs a Python package into a runnable zip application, byte for byte the same on every run
(sorted entries, fixed timestamps and permissions): python3 bundle.py --out OUT --root DIR FILES..."""
import argparse
import os
import zipfile

MAIN = "from agent.server import main\nmain()\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    entries = {"__main__.py": MAIN.encode()}
    for path in args.files:
        name = os.path.relpath(path, args.root).replace(os.sep, "/")
        with open(path, "rb") as f:
            entries[name] = f.read()
    with zipfile.ZipFile(args.out, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, entries[name])


if __name__ == "__main__":
    main()
