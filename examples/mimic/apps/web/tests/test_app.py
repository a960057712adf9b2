"""Unit tests of the web bundle: components are present and every CSS custom property and JS
token the app uses exists in the web tokens."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.environ["ROOT"], "tools"))
from check_bundle import css_token_names, fail  # noqa: E402

app_js, app_css, tokens_css, tokens_js = sys.argv[1:5]
bundle = open(app_js).read()
styles = open(app_css).read()

for component in ["function App", "function Button", "function Card"]:
    if component not in bundle:
        fail(f"{app_js} lacks `{component}`")

defined = css_token_names(tokens_css)
used = set(re.findall(r"var\((--[a-z0-9-]+)\)", styles))
missing = sorted(used - defined)
if missing:
    fail(f"styles use undefined tokens: {missing}")

js_tokens = set(re.findall(r"export const (\w+) =", open(tokens_js).read()))
for name in re.findall(r"\b(color[A-Z]\w*|spacing[A-Z]\w*|font[A-Z]\w*)\b", bundle):
    if name not in js_tokens:
        fail(f"bundle uses undefined JS token {name}")
print(f"web: {len(used)} CSS tokens and all components check out")
