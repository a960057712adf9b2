"""Unit tests of the desktop bundle: the Tauri config's theme names and the tokens the front
end reads exist in the desktop tokens."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.environ["ROOT"], "tools"))
from check_bundle import fail  # noqa: E402

bundle_path, tokens_path = sys.argv[1:3]
bundle = open(bundle_path).read()
tokens = json.load(open(tokens_path))

config = json.load(open("src/tauri.conf.json"))
for role, name in config["theme"].items():
    if name not in tokens:
        fail(f"tauri.conf.json theme.{role} names undefined token {name!r}")
for name in re.findall(r'TOKENS\["([a-z0-9-]+)"\]', bundle):
    if name not in tokens:
        fail(f"bundle reads undefined token {name!r}")
if "function applyTheme" not in bundle:
    fail("bundle lacks applyTheme")
print(f"desktop: {len(tokens)} tokens, config theme checks out")
