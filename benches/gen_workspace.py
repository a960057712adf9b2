#!/usr/bin/env python3
"""Generate a synthetic cairn workspace for the macro benchmark (issue 6).

The workspace is a layered DAG of N packages, deterministic for a given seed:

* one root package ``tokens/`` with a single source ``src/tokens.json`` whose ``#`` comment
  lines are ignored by its transform (``grep -v '^#' ... | sha256sum``), so editing a comment
  re-runs the transform but leaves its output byte-identical (early cutoff);
* about 10% libraries ``libs/libNNNN/``, each depending on ``tokens`` and on 0-2 earlier
  libraries;
* the rest apps ``apps/appNNNN/``, each depending on 1-3 libraries.

Every package except ``tokens`` has F source files (about 2 KB each) in ``src/``. Each package
has a ``build`` action (concatenate its sources and its dependencies' outputs, then hash:
``cat $SRCS $DEPS | sha256sum > $OUT``, output ``out/build.txt``) and a ``test`` (the build
output is non-empty). Commands use only ``sh`` and coreutils. ``out/`` is gitignored.

With ``--turbo`` the same directory also gets an npm-workspaces ``package.json`` per package
(``build``/``test`` scripts doing the same work on the same inputs and outputs, workspace
dependencies declared so Turborepo orders them), a root ``package.json`` and a ``turbo.json``,
so that ``turbo run build test`` does exactly the work ``cairn test //...`` does.

Usage:
    python3 benches/gen_workspace.py OUT_DIR [--packages 1000] [--files 20] [--seed 1] [--turbo]

``generate()`` can also be imported (the macro benchmark does); it returns a ``Workspace``
describing the packages and the files the benchmark edits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass, field

TOKENS_DIR = "tokens"
OUT_FILE = "out/build.txt"
# Lines of the tokens source that the benchmark rewrites (see edit_* in macro.py).
TOKENS_COMMENT_LINE = 0  # "# revision: ..." (a comment: the transform ignores it)
TOKENS_VALUE_PREFIX = '  "revision": '  # a real value: changes the transform's output


@dataclass
class Package:
    name: str  # npm workspace name, e.g. "lib0003"
    path: str  # directory relative to the workspace root, e.g. "libs/lib0003"
    kind: str  # "tokens", "lib" or "app"
    deps: list[str] = field(default_factory=list)  # paths of the packages it depends on
    srcs: list[str] = field(default_factory=list)  # source files relative to the package


@dataclass
class Workspace:
    root: str
    seed: int
    packages: list[Package]

    @property
    def tokens_source(self) -> str:
        """The root's single source file, relative to the workspace root."""
        return os.path.join(TOKENS_DIR, "src", "tokens.json")

    @property
    def leaf_source(self) -> str:
        """A source file of the last app (a leaf: nothing depends on it)."""
        leaf = [p for p in self.packages if p.kind == "app"] or [
            p for p in self.packages if p.kind == "lib"
        ]
        pkg = leaf[-1]
        return os.path.join(pkg.path, pkg.srcs[0])

    @property
    def targets(self) -> int:
        """Number of targets (one build and one test per package)."""
        return 2 * len(self.packages)


def _plan(packages: int, files: int, seed: int) -> list[Package]:
    """Chooses the DAG: tokens, ~10% libraries, the rest apps."""
    if packages < 3:
        raise ValueError("need at least 3 packages (tokens, a library, an app)")
    rng = random.Random(seed)
    n_libs = max(1, round(packages * 0.10))
    n_apps = packages - 1 - n_libs
    width = max(4, len(str(max(n_libs, n_apps))))
    pkgs = [Package(name="tokens", path=TOKENS_DIR, kind="tokens", srcs=["src/tokens.json"])]
    src_names = ["src/mod%02d.js" % i for i in range(files)]
    libs: list[Package] = []
    for i in range(1, n_libs + 1):
        name = "lib%0*d" % (width, i)
        earlier = rng.sample(libs, k=min(len(libs), rng.randint(0, 2)))
        deps = [TOKENS_DIR] + sorted(p.path for p in earlier)
        lib = Package(name=name, path="libs/" + name, kind="lib", deps=deps, srcs=src_names)
        libs.append(lib)
    pkgs.extend(libs)
    for i in range(1, n_apps + 1):
        name = "app%0*d" % (width, i)
        chosen = rng.sample(libs, k=min(len(libs), rng.randint(1, 3)))
        deps = sorted(p.path for p in chosen)
        pkgs.append(Package(name=name, path="apps/" + name, kind="app", deps=deps, srcs=src_names))
    return pkgs


def _source_text(seed: int, pkg: str, index: int, size: int = 2048) -> str:
    """About `size` bytes of deterministic, code-like text."""
    lines = ["// %s/src/mod%02d.js (generated, seed %d)" % (pkg, index, seed)]
    total = len(lines[0]) + 1
    h = hashlib.sha256(("%d:%s:%d" % (seed, pkg, index)).encode()).digest()
    n = 0
    while total < size:
        h = hashlib.sha256(h).digest()
        line = 'export const v%d = "%s";' % (n, h.hex())
        lines.append(line)
        total += len(line) + 1
        n += 1
    return "\n".join(lines) + "\n"


def tokens_text(seed: int, comment_rev: int = 0, value_rev: int = 0) -> str:
    """The tokens source. Line TOKENS_COMMENT_LINE is a comment the transform ignores."""
    rng = random.Random(seed * 7919 + 17)
    lines = [
        "# revision: %d (comment: the tokens transform ignores lines starting with '#')"
        % comment_rev,
        "# Design tokens of the generated benchmark workspace.",
        "{",
        TOKENS_VALUE_PREFIX + "%d," % value_rev,
    ]
    groups = ["color", "space", "radius", "font", "shadow", "motion"]
    body = []
    for g in groups:
        for i in range(8):
            body.append('  "%s.%d": "#%06x",' % (g, i, rng.randrange(1 << 24)))
    body[-1] = body[-1].rstrip(",")
    return "\n".join(lines + body + ["}"]) + "\n"


def _label(path: str) -> str:
    return "//%s:build" % path


def _build_star(pkg: Package) -> str:
    if pkg.kind == "tokens":
        return (
            "# The root of the DAG. The transform ignores '#' comment lines, so editing a\n"
            "# comment re-runs it but leaves its output (and every dependent) unchanged.\n"
            "action(\n"
            '    name = "build",\n'
            '    srcs = ["src/tokens.json"],\n'
            "    cmd = \"grep -v '^#' $SRCS | sha256sum > $OUT\",\n"
            '    outs = ["%s"],\n'
            ")\n\n"
            "test(\n"
            '    name = "test",\n'
            '    deps = [":build"],\n'
            '    cmd = "test -s $DEPS",\n'
            ")\n" % OUT_FILE
        )
    deps = ",\n".join('        "%s"' % _label(d) for d in pkg.deps)
    return (
        "# Generated %s package.\n"
        "action(\n"
        '    name = "build",\n'
        '    srcs = glob(["src/**"]),\n'
        "    deps = [\n%s,\n    ],\n"
        '    cmd = "cat $SRCS $DEPS | sha256sum > $OUT",\n'
        '    outs = ["%s"],\n'
        ")\n\n"
        "test(\n"
        '    name = "test",\n'
        '    deps = [":build"],\n'
        '    cmd = "test -s $DEPS",\n'
        ")\n" % (pkg.kind, deps, OUT_FILE)
    )


def _package_json(pkg: Package, by_path: dict[str, Package]) -> dict:
    """The npm workspace of a package: the same commands on the same inputs and outputs."""
    if pkg.kind == "tokens":
        build = "mkdir -p out && grep -v '^#' src/tokens.json | sha256sum > %s" % OUT_FILE
    else:
        up = "/".join([".."] * pkg.path.count("/") + [".."])
        dep_outs = " ".join("%s/%s/%s" % (up, d, OUT_FILE) for d in pkg.deps)
        build = "mkdir -p out && cat %s %s | sha256sum > %s" % (
            " ".join(pkg.srcs),
            dep_outs,
            OUT_FILE,
        )
    return {
        "name": pkg.name,
        "version": "0.0.0",
        "private": True,
        "scripts": {"build": build, "test": "test -s %s" % OUT_FILE},
        "dependencies": {by_path[d].name: "*" for d in pkg.deps},
    }


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def generate(
    out_dir: str, packages: int = 1000, files: int = 20, seed: int = 1, turbo: bool = False
) -> Workspace:
    """Writes the workspace into `out_dir` (created; must not hold another workspace)."""
    if os.path.exists(os.path.join(out_dir, "cairn.toml")):
        raise FileExistsError("%s already holds a workspace" % out_dir)
    os.makedirs(out_dir, exist_ok=True)
    pkgs = _plan(packages, files, seed)
    by_path = {p.path: p for p in pkgs}
    _write(
        os.path.join(out_dir, "cairn.toml"),
        "# Generated by benches/gen_workspace.py (packages=%d files=%d seed=%d).\n"
        % (packages, files, seed),
    )
    ignore = ["out/"] + (["node_modules/", ".turbo/"] if turbo else [])
    _write(os.path.join(out_dir, ".gitignore"), "\n".join(ignore) + "\n")
    for pkg in pkgs:
        base = os.path.join(out_dir, pkg.path)
        _write(os.path.join(base, "BUILD.star"), _build_star(pkg))
        if pkg.kind == "tokens":
            _write(os.path.join(base, "src", "tokens.json"), tokens_text(seed))
        else:
            for i, src in enumerate(pkg.srcs):
                _write(os.path.join(base, src), _source_text(seed, pkg.path, i))
        if turbo:
            _write(
                os.path.join(base, "package.json"),
                json.dumps(_package_json(pkg, by_path), indent=2) + "\n",
            )
    if turbo:
        _write_turbo_root(out_dir)
    return Workspace(root=out_dir, seed=seed, packages=pkgs)


def _write_turbo_root(out_dir: str) -> None:
    npm_version = _npm_version()
    root = {
        "name": "cairn-bench-workspace",
        "private": True,
        "workspaces": [TOKENS_DIR, "libs/*", "apps/*"],
    }
    if npm_version:
        root["packageManager"] = "npm@" + npm_version
    _write(os.path.join(out_dir, "package.json"), json.dumps(root, indent=2) + "\n")
    turbo = {
        "$schema": "https://turborepo.com/schema.json",
        "tasks": {
            "build": {"dependsOn": ["^build"], "inputs": ["src/**"], "outputs": ["out/**"]},
            "test": {"dependsOn": ["build"], "inputs": ["src/**"], "outputs": []},
        },
    }
    _write(os.path.join(out_dir, "turbo.json"), json.dumps(turbo, indent=2) + "\n")


def _npm_version() -> str | None:
    import shutil
    import subprocess

    npm = shutil.which("npm")
    if not npm:
        return None
    try:
        out = subprocess.run([npm, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (head -30 benches/gen_workspace.py) for the layout.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to create the workspace in")
    parser.add_argument("--packages", type=int, default=1000, help="number of packages (1000)")
    parser.add_argument("--files", type=int, default=20, help="source files per package (20)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument(
        "--turbo", action="store_true", help="also emit package.json files and turbo.json"
    )
    args = parser.parse_args(argv)
    try:
        ws = generate(args.out_dir, args.packages, args.files, args.seed, args.turbo)
    except (ValueError, FileExistsError) as e:
        print("gen_workspace: %s" % e, file=sys.stderr)
        return 2
    kinds = {k: sum(1 for p in ws.packages if p.kind == k) for k in ("tokens", "lib", "app")}
    n_files = sum(len(p.srcs) for p in ws.packages)
    print(
        "%s: %d packages (%d tokens, %d libraries, %d apps), %d source files, %d targets%s"
        % (
            args.out_dir,
            len(ws.packages),
            kinds["tokens"],
            kinds["lib"],
            kinds["app"],
            n_files,
            ws.targets,
            ", turbo workspace" if args.turbo else "",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
