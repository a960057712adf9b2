"""Word statistics of plain text: tokens, counts, and a printable report."""
