"""The benchmarks' tables, printed as Markdown so that they paste into docs/performance.md as they are."""
from __future__ import annotations

from collections.abc import Collection, Sequence


def markdown_table(rows: Sequence[Sequence[str]], left: Collection[int]) -> list[str]:
    """`rows` (the header first) as the lines of a Markdown table, padded to line up in plain text;
    the columns in `left` are aligned left (names, lists of runs), every other right (figures)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(w) if i in left else cell.rjust(w)
                                       for i, (cell, w) in enumerate(zip(row, widths))) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 1) + ("-" if i in left else ":")
                                        for i, w in enumerate(widths)) + "|")
    return lines
