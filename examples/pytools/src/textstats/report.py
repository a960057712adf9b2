"""A plain-text report of a text's statistics."""

from textstats.stats import frequencies, summary


def report(text, top=3):
    """The summary line and the `top` most frequent words, one per line."""
    s = summary(text)
    lines = [
        "{words} words ({distinct} distinct) in {sentences} sentences, "
        "{words_per_sentence} per sentence".format(**s)
    ]
    for word, count in frequencies(text)[:top]:
        lines.append("{:>4}  {}".format(count, word))
    return "\n".join(lines)
