"""Counting what `tokens` finds."""

from collections import Counter

from textstats.tokens import sentences, tokens


def frequencies(text):
    """Each word with how often it occurs, most frequent first, ties alphabetical."""
    counts = Counter(tokens(text))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def summary(text):
    """Word, distinct word and sentence counts, and the mean words per sentence."""
    words = tokens(text)
    said = sentences(text)
    return {
        "words": len(words),
        "distinct": len(set(words)),
        "sentences": len(said),
        "words_per_sentence": round(len(words) / len(said), 2) if said else 0.0,
    }
