"""Unit tests of the mobile bundle: every theme path the screens read exists in the mobile
tokens, and dimensions are unitless numbers as React Native expects."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.environ["ROOT"], "tools"))
from check_bundle import fail, json_token_names  # noqa: E402

bundle_path, tokens_path = sys.argv[1:3]
bundle = open(bundle_path).read()
names = json_token_names(tokens_path)
tokens = json.load(open(tokens_path))

used = set()
for path in re.findall(r"theme((?:\.[a-z]+|\[\"[0-9]+\"\])+)", bundle):
    used.add(".".join(re.findall(r"[a-z]+|[0-9]+", path)))
missing = sorted(u for u in used if u not in names)
if missing:
    fail(f"screens read undefined tokens: {missing}")
for key, value in tokens["spacing"].items():
    if not isinstance(value, (int, float)):
        fail(f"spacing.{key} must be a number for React Native, found {value!r}")
if "export default function App" not in bundle:
    fail("bundle lacks the App entry point")
print(f"mobile: {len(used)} theme paths check out")
