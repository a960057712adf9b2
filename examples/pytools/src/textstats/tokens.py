"""Splitting text into lower-case word tokens."""

import re

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def tokens(text):
    """The words of `text`, lower-cased, in order; apostrophes inside a word are kept."""
    return [m.group(0).lower().replace("’", "'") for m in _WORD.finditer(text)]


def sentences(text):
    """The non-empty sentences of `text`, split after `.`, `!` or `?`."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return [p for p in parts if p]
