"""Shared checks for the apps' unit tests: every token an app references must exist."""
import json
import pathlib
import re


def css_token_names(path):
    return set(re.findall(r"^\s*(--[a-z0-9-]+):", pathlib.Path(path).read_text(), re.M))


def json_token_names(path, sep="."):
    names = set()

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, prefix + [key])
        else:
            names.add(sep.join(prefix))

    walk(json.loads(pathlib.Path(path).read_text()), [])
    return names


def fail(message):
    raise SystemExit(f"FAIL: {message}")
