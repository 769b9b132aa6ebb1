"""A zoo page's rows: what the page and its picture show of each model, small enough to keep.

A ``ModelReport`` holds every tool's layers and explanations (a kept run of a model is about
40 KB gzip-ed); the page shows, per model, its input, native MACs and parameters, and per tool
its share explained, its main total (for the picture) and, if it did not finish, why. That is a
``PageRow``: about a kilobyte as JSON.

A zoo run appends each model's row, with the key it was run with (``zoo.run_key``), to
``rows.jsonl`` in its runs folder as the model completes (``append_row``), so that ``--resume``
can go on from rows alone (``read_rows``): the whole timm zoo takes longer than one sitting on a
small machine, and its rows (1,371 lines) are small enough to carry from one sitting to the next
where its kept runs (tens of MB) are not. A line is JSON, read into these two records only, each
field checked; a line that does not check (a write cut short by a kill, an edit) is skipped with
a note, and that model runs again.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from reconcile.explain.core import ToolExplanation
    from reconcile.report.model import ModelReport

ROWS_FILE = "rows.jsonl"  # in a zoo run's runs folder (``zoo.runs_folder``)
_LINE_LIMIT = 1 << 20  # bytes: a longer line is not one of ours
_RATIO = re.compile(r"-?[0-9]{1,400}(/[1-9][0-9]{0,400})?")
_CODE = re.compile(r"([0-9a-f]{12})?")


@dataclass(frozen=True)
class Share:
    explained: int  # rows with zero residual on every metric
    rows: int
    status: str
    # the main count's residual (counted once) over the tool's main total, when it has one: a
    # count of rows can hide its size (coat_tiny's one unexplained row of 312 was ptflops' total,
    # off by half of it)
    unexplained: Fraction | None = None

    @property
    def complete(self) -> bool:
        return self.status == "ok" and self.explained == self.rows

    def text(self) -> str:
        if self.status != "ok":
            return self.status
        if self.explained == self.rows:
            return f"100% ({self.rows})"
        pct = 100 * self.explained // self.rows  # rounded down: 311 of 312 is 99%, never "100%"
        size = f"; {_percent(self.unexplained)} of its total unexplained" if self.unexplained else ""
        return f"{pct}% ({self.explained}/{self.rows}{size})"


def _percent(x: Fraction) -> str:
    """A share as a percentage: whole from 10% up (a residual may exceed the total: "240%"), else
    two significant digits ("0.012%"), and "under 0.001%" below that."""
    v = float(100 * x)
    return f"{v:.0f}%" if v >= 10 else f"{v:.2g}%" if v >= 0.001 else "under 0.001%"


def share(t: ToolExplanation) -> Share:
    """Rows (plus the total-only record and the headline) whose every metric has zero residual,
    and the main count's residual over the tool's main total."""
    if t.status != "ok":
        return Share(0, 0, t.status)
    rows = list(t.layers) + [r for r in (t.unattributed, t.headline) if r is not None]
    ok = sum(1 for le in rows if not any(le.residual.values()))
    s = t.summaries.get(t.main)
    unexplained = (Fraction(s.residual) / abs(Fraction(s.raw_total))
                   if s is not None and s.residual and s.raw_total else None)
    return Share(ok, len(rows), "ok" if t.summaries else "no convention", unexplained)


@dataclass(frozen=True)
class ToolCell:
    tool: str
    share: Share
    total: Fraction | None  # the tool's main op count as it printed it (the picture's dot), None if none


@dataclass(frozen=True)
class PageRow:
    model: str
    input: str  # "1x3x224x224", or the named inputs of a model with several
    macs: int | None  # native
    params: int | None
    tools: tuple[ToolCell, ...]
    unfinished: tuple[str, ...]  # "tool, tool: ErrorType: first line" for the tools that did not finish
    # the reconcile code that explained it (``_version.code_version``); "" in a row kept from
    # before rows carried it
    code: str = ""

    def ratios(self) -> dict[str, float]:
        """Each tool's main total divided by native MACs (the zoo picture's dots)."""
        if not self.macs:
            return {}
        return {c.tool: float(Fraction(c.total) / self.macs) for c in self.tools if c.total is not None}


def _unfinished(r: ModelReport) -> tuple[str, ...]:
    """Why each tool that did not finish on ``r`` stopped: "tool, tool: ErrorType: first line",
    tools with the same reason together."""
    why: dict[str, list[str]] = {}
    for t in r.tools:
        if t.status == "ok":
            continue
        run = t.run
        said = (run.error_message or "").strip().splitlines()
        first = said[0] if said else ""
        if len(first) > 160:
            first = first[:157] + "..."
        reason = t.status if not run.error_type else f"`{run.error_type}`" + (f": {first}" if first else "")
        why.setdefault(reason, []).append(t.tool)
    return tuple(f"{', '.join(tools)}: {reason}" for reason, tools in why.items())


def _total(r: ModelReport, t: ToolExplanation) -> Fraction | None:
    if r.error or t.status != "ok" or t.main not in t.summaries:
        return None
    s = t.summaries[t.main]
    return Fraction(s.raw_total) if s.is_ops and s.raw_total is not None else None


def page_row(r: ModelReport) -> PageRow:
    from reconcile._version import code_version

    shape = ", ".join(r.inputs) if len(r.inputs) > 1 else "x".join(map(str, r.input_shape))
    return PageRow(r.model, shape, r.native_totals.get("macs"), r.native_totals.get("params"),
                   tuple(ToolCell(t.tool, share(t), _total(r, t)) for t in r.tools), _unfinished(r), code_version())


def rows_of(items: Sequence[PageRow | ModelReport]) -> list[PageRow]:
    return [x if isinstance(x, PageRow) else page_row(x) for x in items]


# ----- one line per row, with the key its model was run with ---------------------------------


def row_line(key: dict, row: PageRow) -> str:
    """The JSON line of ``row`` (no newline inside), for ``append_row`` and ``read_rows``."""
    d = {"key": key, "model": row.model, "input": row.input, "macs": row.macs, "params": row.params,
         "tools": [[c.tool, c.share.status, c.share.explained, c.share.rows, None if c.total is None else str(c.total)]
                   + ([str(c.share.unexplained)] if c.share.unexplained is not None else [])
                   for c in row.tools],
         "unfinished": list(row.unfinished)}
    if row.code:
        d["code"] = row.code
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def append_row(folder, key: dict, row: PageRow) -> None:
    """Append ``row``'s line to ``folder``'s rows file in one write (O_APPEND), so that a kill
    leaves at most a cut last line, which ``read_rows`` skips (and a line appended after it starts
    a line of its own)."""
    os.makedirs(folder, exist_ok=True)
    data = (row_line(key, row) + "\n").encode("utf-8")
    fd = os.open(os.path.join(folder, ROWS_FILE), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut short by a kill stays a line of its own
            data = b"\n" + data
        if os.write(fd, data) != len(data):  # a full disk can take part of it: the cut line is skipped
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    finally:
        os.close(fd)


def compact_rows(folder, kept: dict[str, tuple[dict, PageRow]]) -> None:
    """Rewrite ``folder``'s rows file as ``kept`` (``read_rows``: the last line of each model), one
    line per model, when it holds more lines than that; atomically (the old file stays whole until
    the new one replaces it). Lines that did not check go with it: their models run again anyway."""
    from pathlib import Path

    from reconcile.atomic import write_files

    try:
        with open(os.path.join(folder, ROWS_FILE), "rb") as fh:
            lines = sum(1 for raw in fh if raw.strip())
    except FileNotFoundError:
        return
    if lines != len(kept):
        write_files(Path(folder), {ROWS_FILE: "".join(row_line(key, row) + "\n" for key, row in kept.values())})


def _int(value, what: str, none: bool = False) -> int | None:
    if value is None and none:
        return None
    if type(value) is not int:
        raise ValueError(f"{what} is not an integer")
    return value


def _fraction(value) -> Fraction | None:
    """A total as ``row_line`` writes it: None, or "123" / "7/2" (an exact ratio of integers)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _RATIO.fullmatch(value):
        raise ValueError("a total is not an exact number")
    return Fraction(value)


def _str(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string")
    return value


def parse_line(line: str) -> tuple[dict, PageRow]:
    """The key and row of one line; ``ValueError`` saying why if it is not one of ours."""
    if len(line) > _LINE_LIMIT:
        raise ValueError(f"longer than {_LINE_LIMIT:,} characters")
    try:
        d = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({str(exc)[:80]})") from None
    fields = {"key", "model", "input", "macs", "params", "tools", "unfinished"}
    if not isinstance(d, dict) or set(d) - {"code"} != fields:
        raise ValueError("not a zoo row (expected " + ", ".join(sorted(fields)) + ", and optionally code)")
    code = _str(d.get("code", ""), "code")
    if not _CODE.fullmatch(code):
        raise ValueError("its code is not a fingerprint")
    if not isinstance(d["key"], dict):
        raise ValueError("its key is not an object")
    if not isinstance(d["tools"], list) or not isinstance(d["unfinished"], list):
        raise ValueError("tools and unfinished are not lists")
    cells = []
    for cell in d["tools"]:
        if not isinstance(cell, list) or len(cell) not in (5, 6):
            raise ValueError("a tool cell is not [tool, status, explained, rows, total(, unexplained)]")
        tool, status, explained, rows, total = cell[:5]
        unexplained = _fraction(cell[5]) if len(cell) == 6 else None
        if len(cell) == 6 and (unexplained is None or unexplained <= 0):
            raise ValueError("a tool cell's unexplained share is not a positive ratio")
        cells.append(ToolCell(_str(tool, "a tool"), Share(_int(explained, "explained"), _int(rows, "rows"),
                                                          _str(status, "a status"), unexplained), _fraction(total)))
    row = PageRow(_str(d["model"], "model"), _str(d["input"], "input"), _int(d["macs"], "macs", True),
                  _int(d["params"], "params", True), tuple(cells),
                  tuple(_str(u, "a reason") for u in d["unfinished"]), code)
    return d["key"], row


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def read_rows(folder) -> tuple[dict[str, tuple[dict, PageRow]], list[str]]:
    """The rows kept in ``folder`` by model spec (the last line of a model wins) with their keys, and a
    note for each line that does not check (its number and why)."""
    path = os.path.join(folder, ROWS_FILE)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}, []
    kept: dict[str, tuple[dict, PageRow]] = {}
    notes = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            key, row = parse_line(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            notes.append(f"{ROWS_FILE} line {number} is not a valid row ({str(exc)[:120]}): skipped")
            continue
        if not isinstance(key.get("spec"), str):
            notes.append(f"{ROWS_FILE} line {number} is not a valid row (its key names no model): skipped")
            continue
        kept[key["spec"]] = (key, row)
    return kept, notes
