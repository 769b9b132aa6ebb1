"""Markdown tables for the reports: a table with its columns aligned and ``|`` escaped in cells,
one too wide split into several that each repeat the leading columns (``tables``), and long cell
texts moved under the table behind a letter (``Notes``). Pure text; imports no torch."""

from __future__ import annotations

from typing import Iterable, Sequence


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> list[str]:
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
    out.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)
    return out


WIDTH = 160  # characters a rendered table row may take


def tables(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str, keep: int, tail: int = 0,
            width: int = WIDTH) -> list[str]:
    """``table``, split into as few tables as keep every row within ``width`` characters: each
    repeats the first ``keep`` columns (and the last ``tail``) beside a share of the others (one
    column per tool, so many tools do not make a row wider than a screen)."""
    rows = [list(r) for r in rows]
    n = len(headers)
    fixed_head, fixed_tail = list(range(keep)), list(range(n - tail, n))
    middle = list(range(keep, n - tail))

    def line_width(cols: list[int]) -> int:
        return max(2 + sum(len(str(row[c]).replace("|", "\\|")) + 3 for c in cols) for row in [headers, *rows])

    chunks: list[list[int]] = []
    for c in middle:
        if chunks and line_width(fixed_head + chunks[-1] + [c] + fixed_tail) <= width:
            chunks[-1].append(c)
        else:
            chunks.append([c])
    out: list[str] = []
    for k, chunk in enumerate(chunks or [[]]):
        cols = fixed_head + chunk + fixed_tail
        if k:
            out.append("")
        # a row with nothing in this share of the columns (a cause of other tools only) is left out
        shown = [row for row in rows if not chunk or any(str(row[c]).strip() for c in chunk)]
        out += table([headers[c] for c in cols], [[row[c] for c in cols] for row in shown],
                      "".join(align[c] for c in cols))
    return out


class Notes:
    """Long cell texts moved under a table, each behind a letter, so that rows stay narrow."""

    LIMIT = 24

    def __init__(self) -> None:
        self.items: list[str] = []

    def cell(self, short: str, long: str, label: str) -> str:
        """``short`` plus ``long`` when ``long`` is short, else ``short`` and a letter for ``long``."""
        if len(long) <= self.LIMIT:
            return f"{short} {long}".strip()
        letter = chr(ord("a") + len(self.items)) if len(self.items) < 26 else str(len(self.items))
        self.items.append(f"({letter}) {label}: {long}")
        return f"{short} ({letter})".strip()

    def lines(self) -> list[str]:
        return ["", *(f"- {i}" for i in self.items)] if self.items else []
