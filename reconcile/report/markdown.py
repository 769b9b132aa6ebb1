"""Markdown reports: a pure function from ``ModelReport`` to text that reads well on GitHub.

Deterministic: the same report data gives byte-identical text (no timestamps, no timings, stable
ordering). Imports no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Sequence

from reconcile.conventions.base import CAUSES, OUTSIDE
from reconcile.explain.core import LayerExplanation, MetricSummary, ToolExplanation
from reconcile.report import numbers
from reconcile.report.files import file_stem
from reconcile.report.model import ModelReport

MAX_LAYER_ROWS = 400


def _n(x: object) -> str:
    if x is None:
        return "—"
    if isinstance(x, (int, Fraction)):
        return numbers.exact(x)
    return str(x)


def _signed(x: int | Fraction) -> str:
    if x == 0:
        return "0"
    return ("+" if x > 0 else "−") + numbers.exact(abs(x))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> list[str]:
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
    out.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)
    return out


class _Notes:
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


def _share(s: MetricSummary) -> str:
    share = s.explained_share()
    return "—" if share is None else numbers.percent(share, 1)


def _ok(tools: Sequence[ToolExplanation]) -> list[ToolExplanation]:
    return [t for t in tools if t.status == "ok" and t.summaries]


def summary_section(r: ModelReport) -> list[str]:
    rows = []
    notes = _Notes()
    for t in r.tools:
        if t.status != "ok":
            rows.append([t.tool, f"**{t.status}**", "—", "—", "—", "—", "—", "—", "—"])
            continue
        for hkey in [k for k, s in t.summaries.items() if s.is_ops]:
            s = t.summaries[hkey]
            unit = t.run.units.get(hkey, "")
            label = t.tool if hkey == t.main else f"{t.tool} ({hkey})"
            rows.append([
                label, "ok", notes.cell(_n(s.raw_total), unit, label),
                _n(s.normalized.get("macs")), _n(s.normalized.get("flops")),
                _signed(s.raw_total - s.reference) if s.raw_total is not None else "—",
                _share(s), _n(s.residual), numbers.si(s.raw_total) if s.raw_total is not None else "—",
            ])
    head = ["tool", "status", "reported (unit as the tool names it)", "as MACs", "as FLOPs",
            "gap to native MACs", "explained", "residual", "short"]
    out = ["## Summary", "",
           f"Native reference: **{_n(r.native_totals['macs'])} MACs** (torchvision's `_ops` convention), "
           f"{_n(r.native_totals['flops'])} FLOPs, {_n(r.native_totals['params'])} parameters.", ""]
    pub = r.published
    if pub:
        out += [f"Published by torchvision for these weights: `_ops` {pub.get('_ops')} G, `num_params` "
                f"{_n(pub.get('num_params'))}.", ""]
    out += _table(head, rows, "llrrrrrrr") + notes.lines()
    out += ["", "*as MACs*: the tool's total with its convention differences removed (bias, norms, activations, "
            "MAC vs FLOP, per-sample); work it could not see stays missing. *as FLOPs*: the native FLOPs of the "
            "work the tool saw. *explained*: share of the gap to native MACs that named causes account for; "
            "*residual*: what no cause explains, counted once (sum of absolute per-layer residuals, plus any "
            "part of the headline's that no row shows).", ""]
    apart = [(t.tool, t.summaries[t.main].headline_not_rows) for t in _ok(r.tools)
             if t.main in t.summaries and t.summaries[t.main].headline_not_rows]
    for tool, gap in apart:
        out += [f"{tool}'s total is {_signed(gap)} away from the sum of its own per-layer rows "
                "(a fact about the tool, predicted and explained at the headline).", ""]
    return out


def causes_section(r: ModelReport) -> list[str]:
    tools = _ok(r.tools)
    columns = []
    for t in tools:
        for hkey, s in t.summaries.items():
            if s.is_ops:
                columns.append((t, hkey, s))
    amounts: dict[str, dict[int, int | Fraction]] = {}
    for i, (_, _, s) in enumerate(columns):
        for cid, v in s.causes.items():
            if v:
                amounts.setdefault(cid, {})[i] = v
        if s.missed_flops:
            amounts.setdefault("_missed_flops", {})[i] = s.missed_flops
    missed = amounts.pop("_missed_flops", {})
    ranked = sorted(amounts, key=lambda c: (-max(abs(v) for v in amounts[c].values()), c))
    out = ["## Why the totals differ", ""]
    if not ranked and not missed:
        return out + ["Every tool that ran agrees with the native MAC count exactly.", ""]
    head = ["cause"] + [t.tool if h == t.main else f"{t.tool} ({h})" for t, h, _ in columns]
    rows = []
    for cid in ranked:
        rows.append([f"**{cid}**: {CAUSES[cid][1]}"] + [_signed(amounts[cid][i]) if i in amounts[cid] else "" for i in range(len(columns))])
    if missed:
        rows.append(["*FLOPs of work not seen* (not in MACs)"] + [_signed(missed[i]) if i in missed else "" for i in range(len(columns))])
    out += ["Each cell is the cause's amount in that tool's own unit, summed over the model, relative to the "
            "native MAC count. Causes are ranked by their largest amount.", ""]
    out += _table(head, rows, "l" + "r" * len(columns))
    return out + [""]


_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
MAX_NAME = 30  # characters of a group's compressed module names


def _template(text: str) -> str:
    """A cause sentence with its numbers taken out: the same formula on layers of other sizes."""
    return _NUMBER.sub("#", text)


def _tool_text(tool: str, text: str) -> str:
    # texts usually name their tool ("thop has no rule ..."): no second prefix then
    return text if text.startswith(tool + " ") else f"{tool}: {text}"


def _module_label(m: str) -> str:
    return f"`{m}`" if m and m != OUTSIDE else ("(model)" if m == "" else m)


def compress_names(modules: Sequence[str], type_: str) -> str:
    """``features.{1,3,6,...}`` for siblings, ``a.{1,2}, b.{4}`` across a few parents, else
    ``13 ReLU modules``; one module keeps its name."""
    if len(modules) == 1:
        return _module_label(modules[0])
    parents: dict[str, list[str]] = {}
    for m in modules:
        parent, dot, leaf = m.rpartition(".")
        parents.setdefault(parent + dot, []).append(leaf)
    parts = []
    for parent, leaves in parents.items():
        shown = leaves if len(leaves) <= 4 else leaves[:3] + ["..."]
        parts.append(f"{parent}{{{','.join(shown)}}}")
    text = "`" + ", ".join(parts) + "`"
    return text if len(text) <= MAX_NAME else f"{len(modules)} {type_} modules"


@dataclass(frozen=True)
class LayerGroup:
    """Modules whose explanation is the same in every tool column: the same causes with the same
    formula (the sentence with its numbers taken out), no residual. A module with a residual is a
    group of its own."""

    modules: tuple[str, ...]
    type: str
    reference: int | Fraction | None  # native MACs, summed
    raw: tuple[int | Fraction | None, ...]  # per tool column, summed (None: no row in that tool)
    notes: tuple[tuple[str, str, str], ...]  # (cause id, tool, first member's sentence)
    residual: tuple[int | Fraction, ...]  # per tool column


def _per_module(layers: Sequence[LayerExplanation]) -> list[LayerExplanation]:
    """One row per module: a tool that keeps one row per call (torchinfo) has its calls' rows
    merged, numbers summed and causes in call order, at the place of the module's first row."""
    calls: dict[str, list[LayerExplanation]] = {}
    for le in layers:
        if le.call is not None:
            calls.setdefault(le.module, []).append(le)
    out = []
    for le in layers:
        if le.call is None:
            out.append(le)
        elif le is calls[le.module][0]:
            out.append(_merged(calls[le.module]))
    return out


def _merged(les: Sequence[LayerExplanation]) -> LayerExplanation:
    def summed(field: str) -> dict[str, int | Fraction]:
        out: dict[str, int | Fraction] = {}
        for le in les:
            for k, v in getattr(le, field).items():
                if isinstance(v, (int, Fraction)):
                    out[k] = out.get(k, 0) + v
        return out

    causes: dict[str, tuple] = {}
    for le in les:
        for metric, cs in le.causes.items():
            causes[metric] = causes.get(metric, ()) + tuple(cs)
    first = les[0]
    return LayerExplanation(first.module, first.type, first.calls, None, summed("raw"), summed("predicted"),
                            summed("reference"), summed("residual"), causes)


def _layer_table(r: ModelReport) -> tuple[list[ToolExplanation], list[str], dict[str, dict[str, LayerExplanation]],
                                          dict[str, str], dict[str, int | Fraction]]:
    # native is the reference column itself; every other tool gets a column
    tools = [t for t in _ok(r.tools) if t.metric and t.tool != "native"]
    by_module: dict[str, dict[str, LayerExplanation]] = {}
    order: list[str] = []
    types: dict[str, str] = {}
    references: dict[str, int | Fraction] = {}
    for t in tools:
        for le in _per_module(t.layers):
            if le.module not in by_module:
                by_module[le.module] = {}
                order.append(le.module)
            by_module[le.module][t.tool] = le
            types.setdefault(le.module, le.type)
            if t.metric in le.reference and not le.reference.get("_inclusive"):
                references.setdefault(le.module, le.reference[t.metric])
    differing = [m for m in order
                 if any((le.causes.get(_metric(tools, tool)) or le.residual.get(_metric(tools, tool), 0))
                        for tool, le in by_module[m].items())]
    return tools, differing, by_module, types, references


def group_layers(tools: Sequence[ToolExplanation], modules: Sequence[str],
                 by_module: dict[str, dict[str, LayerExplanation]], types: dict[str, str],
                 references: dict[str, int | Fraction]) -> list[LayerGroup]:
    """Differing modules grouped by (type, per tool: has a row, causes and their formulas), in
    order of first appearance; a module with a residual in any column stays alone."""
    keys: dict[object, list[str]] = {}
    for m in modules:
        cells = by_module[m]
        if any(le.residual.get(t.metric, 0) for t in tools if (le := cells.get(t.tool)) is not None):
            key: object = ("residual", m)
        else:
            key = (types.get(m, ""), m in references, tuple(
                (t.tool, None) if (le := cells.get(t.tool)) is None
                else (t.tool, tuple((c.id, _template(c.text)) for c in le.causes.get(t.metric, ())))
                for t in tools))
        keys.setdefault(key, []).append(m)
    groups = []
    for members in keys.values():
        first = by_module[members[0]]
        raw, residual = [], []
        for t in tools:
            present = [by_module[m][t.tool] for m in members if t.tool in by_module[m]]
            vals = [le.raw.get(t.metric) for le in present]
            raw.append(sum(vals, 0) if present and all(v is not None for v in vals) else None)
            residual.append(sum((le.residual.get(t.metric, 0) for le in present), 0))
        notes = tuple((c.id, t.tool, c.text) for t in tools if t.tool in first
                      for c in first[t.tool].causes.get(t.metric, ()))
        ref = sum((references[m] for m in members if m in references), 0) if any(m in references for m in members) else None
        groups.append(LayerGroup(tuple(members), types.get(members[0], ""), ref, tuple(raw), notes, tuple(residual)))
    return groups


def layers_section(r: ModelReport) -> list[str]:
    tools, differing, by_module, types, references = _layer_table(r)
    out = ["## Per-layer differences", ""]
    if not differing:
        return out + ["No layer differs from the native count in any tool.", ""]
    groups = group_layers(tools, differing, by_module, types, references)
    # footnotes keyed by cause, in catalogue order; one per (cause, tool, formula)
    keyed: dict[tuple[str, str, str], int] = {}
    for g in groups:
        for cid, tool, text in g.notes:
            keyed.setdefault((cid, tool, _template(text)), 0)
    ordered = sorted(keyed, key=lambda k: (list(CAUSES).index(k[0]), k[1], k[2]))
    for i, k in enumerate(ordered, 1):
        keyed[k] = i
    out += [f"{len(differing)} modules where at least one tool differs from the native MAC count, in {len(groups)} "
            "groups of modules explained alike (same type, same causes, same formula). A cell is the tool's own "
            "number summed over the group (— : the tool has no row for it); *notes* point to the sentences below, by "
            "cause; a residual is marked **unexplained** and its module is never grouped. Every module's own row is in "
            f"`{file_stem(r.model)}.csv` and `.json`.", ""]
    head = ["modules", "type", "n", "native MACs"] + [t.tool for t in tools] + ["notes"]
    rows = []
    for g in groups[:MAX_LAYER_ROWS]:
        refs = sorted({keyed[(cid, tool, _template(text))] for cid, tool, text in g.notes})
        notes = ",".join(map(str, refs))
        unexplained = [f"**unexplained {t.tool} {_signed(v)}**" for t, v in zip(tools, g.residual) if v]
        rows.append([compress_names(g.modules, g.type), g.type, str(len(g.modules)), _n(g.reference),
                     *(_n(v) if v is not None else "—" for v in g.raw),
                     "<br>".join(([notes] if notes else []) + unexplained)])
    out += _table(head, rows, "llrr" + "r" * len(tools) + "l")
    if len(groups) > MAX_LAYER_ROWS:
        out += ["", f"({len(groups) - MAX_LAYER_ROWS} more groups in the JSON and CSV files.)"]
    out += [""]
    by_cause: dict[str, list[str]] = {}
    for k in ordered:
        cid, tool, _ = k
        example = next(text for g in groups for c, t, text in g.notes if (c, t, _template(text)) == k)
        by_cause.setdefault(cid, []).append(f"[{keyed[k]}] {_tool_text(tool, example)}")
    for cid, items in by_cause.items():
        out.append(f"- **{cid}**: " + "; ".join(items))
    if by_cause:
        out += ["", "(Each note's numbers are those of the first module of its group.)", ""]
    return out


def _metric(tools: Sequence[ToolExplanation], tool: str) -> str:
    for t in tools:
        if t.tool == tool:
            return t.metric
    return ""


def other_metrics_section(r: ModelReport) -> list[str]:
    rows = []
    agree = []
    notes = _Notes()
    for t in _ok(r.tools):
        for hkey, s in t.summaries.items():
            if s.is_ops:
                continue
            unit = t.run.units.get(hkey, "")
            nonzero = sorted(((cid, v) for cid, v in s.causes.items() if v), key=lambda kv: -abs(kv[1]))
            if s.raw_total is not None and s.raw_total == s.reference and not nonzero and not s.residual:
                agree.append(f"{t.tool} {hkey} {_n(s.raw_total)}")
                continue
            causes = "; ".join(f"{cid} {_signed(v)}" for cid, v in nonzero)
            label = f"{t.tool} {hkey}"
            rows.append([t.tool, hkey, notes.cell(_n(s.raw_total), unit, f"{label}, unit"), _n(s.reference),
                         _signed(s.raw_total - s.reference) if s.raw_total is not None else "—",
                         notes.cell("", causes, f"{label}, causes") if len(causes) > 48 else (causes or "—"),
                         _n(s.residual)])
    out = ["## Parameters and memory", "",
           f"Native: {_n(r.native_totals['params'])} parameters ({_n(r.native_totals['params_trainable'])} trainable, "
           f"{_n(r.native_totals['params_frozen'])} frozen, each tied tensor once), {_n(r.native_totals['buffers'])} "
           f"buffer elements; the forward reads {numbers.mib(r.native_totals['bytes_read'])} and writes "
           f"{numbers.mib(r.native_totals['bytes_written'])} ({_n(r.native_totals['activations'])} elements).", ""]
    if agree:
        out += ["Equal to the native figure, no cause: " + ", ".join(agree) + ".", ""]
    if rows:
        out += _table(["tool", "figure", "reported", "native reference", "gap", "causes", "residual"], rows, "llrrrlr")
        out += notes.lines()
    return out + [""]


def failures_section(r: ModelReport) -> list[str]:
    failed = [t for t in r.tools if t.status != "ok"]
    if not failed:
        return []
    out = ["## Tools that did not finish", ""]
    for t in failed:
        run = t.run
        out.append(f"- **{t.tool}** {run.version}: {t.status}. `{run.error_type}`: {run.error_message} "
                   f"(attempted: `{run.attempted}`)")
    return out + [""]


def roofline_section(r: ModelReport) -> list[str]:
    """The native count's roofline (``make report HARDWARE=...``), when the report has one."""
    if r.roofline is None:
        return []
    from reconcile.roofline.render import roofline_markdown

    text = roofline_markdown(r.roofline)
    text = text.replace(f"### Roofline: {r.roofline.model}", "## Roofline: how fast it could run", 1)
    text = text.replace(f"{r.roofline.model}: input", "Input", 1)
    return text.splitlines() + [""]


def notes_section(r: ModelReport) -> list[str]:
    out = ["## How each tool was run", ""]
    for t in r.tools:
        # a run that did not finish has no notes; what was attempted is all that is known
        if t.run.notes:
            notes = "; ".join(t.run.notes)
        elif t.status != "ok":
            notes = f"did not finish ({t.status}, see above); attempted `{t.run.attempted}`"
        else:
            notes = "no notes"
        warn = f" It warned {len(t.run.warnings)} time(s): " + "; ".join(f"`{w}`" for w in t.run.warnings[:5]) if t.run.warnings else ""
        if len(t.run.warnings) > 5:
            warn += f" (+{len(t.run.warnings) - 5} more in the JSON)"
        out.append(f"- **{t.tool}** {t.run.version}: {notes}.{warn}")
    return out + [""]


def _inputs_text(r: ModelReport) -> str:
    if not r.inputs:
        return f"Input {'x'.join(str(d) for d in r.input_shape)} ({r.input_dtype})"
    if len(r.inputs) == 1 and " " in r.inputs[0] and not r.inputs[0].split(" ", 1)[0][0].isalpha():
        shape, _, rest = r.inputs[0].partition(" ")
        return f"Input {shape} ({rest})"
    return "Inputs " + ", ".join(r.inputs)


def regenerate_line(r: ModelReport) -> str:
    """The command that writes this report again, with the options that shaped it."""
    cli = " ".join(["reconcile report", r.model, *r.options])
    make_args = {"--input-shape": "INPUT", "--tools": "TOOLS"}
    if all(o.split(" ", 1)[0] in make_args for o in r.options):
        make = " ".join([f"make report MODELS={r.model}",
                         *(f"{make_args[o.split(' ', 1)[0]]}={o.split(' ', 1)[1]}" for o in r.options)])
        return f"Regenerate with `{make}` (or `{cli}`)."
    return f"Regenerate with `{cli}`."


def model_markdown(r: ModelReport, picture: str = "") -> str:
    """The report; ``picture`` is the file name of the model's PNG beside it ("" : none)."""
    versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
    tool_versions = ", ".join(f"{t.tool} {t.version}" for t in r.tools)
    title = (f"{len(r.tools)} counters ran, native could not count it" if r.error
             else f"one model, {len(r.tools)} counters, every difference explained")
    lines = [f"# {r.model}: {title}", "",
             f"{_inputs_text(r)}, {r.mode} mode, CPU. {versions}.", "",
             f"Tools: {tool_versions}.", ""]
    if r.native_device and r.native_device != "meta":
        why = r.native_notes[0] if r.native_notes and "--device" not in r.options else "as asked (--device cpu)"
        lines += [f"Native counted on the {r.native_device} device: {why}.", ""]
    if r.error:
        lines += [f"**Could not be counted:** {r.error}", ""]
        ran = [t for t in r.tools if t.status == "ok"]
        if ran:
            lines += ["Nothing can be explained without the native count, so each tool that ran is "
                      "shown as it reported itself:", ""]
            lines += _table(["tool", "version", "what it reported"],
                            [[t.tool, t.version, ", ".join(f"{k} {_n(v)}" for k, v in t.run.headline.items()
                                                           if not isinstance(v, str))] for t in ran], "lll")
            lines += [""]
        lines += failures_section(r)
        return "\n".join(lines).rstrip() + "\n"
    if picture:
        lines += [f"![{r.model}: each tool's gap to the native MAC count, split into named causes]({picture})", ""]
    lines += summary_section(r)
    lines += causes_section(r)
    lines += layers_section(r)
    lines += other_metrics_section(r)
    lines += failures_section(r)
    lines += roofline_section(r)
    lines += notes_section(r)
    lines += [regenerate_line(r)]
    return "\n".join(lines).rstrip() + "\n"


def index_entry(r: ModelReport, stem: str) -> dict:
    """One model's row of ``index.md``, as plain data (kept in its JSON, so an index can be
    rebuilt from the reports in a folder)."""
    cells = {}
    for t in r.tools:
        if t.status != "ok":
            cells[t.tool] = t.status
        elif not t.summaries:
            cells[t.tool] = "ran (unexplained)"
        elif t.raw_total is None:
            cells[t.tool] = "ok" if t.residual == 0 else f"residual {_n(t.residual)}"
        else:
            mark = "" if t.residual == 0 else f" (residual {_n(t.residual)})"
            cells[t.tool] = f"{numbers.si(t.raw_total)}{mark}"
    return {
        "model": r.model,
        "file": f"{stem}.md",
        "input": _inputs_text(r).split(" ", 1)[1],
        "macs": _n(r.native_totals.get("macs")) if not r.error else "—",
        "params": _n(r.native_totals.get("params")) if not r.error else "—",
        "tools": cells,
    }


def index_markdown(entries: Sequence[dict]) -> str:
    """``index.md`` from index entries (``index_entry``), one row per model, sorted by model."""
    tools: list[str] = []
    for e in entries:
        for tool in e["tools"]:
            if tool not in tools:
                tools.append(tool)
    head = ["model", "input", "native MACs", "native params"] + tools
    rows = []
    for e in sorted(entries, key=lambda e: e["model"]):
        model = e["model"].replace("|", "\\|")
        rows.append([f"[{model}]({e['file']})", e["input"].replace("|", "\\|"), e["macs"], e["params"]]
                    + [e["tools"].get(name, "") for name in tools])
    out = ["# reconcile: all models", "",
           "Each tool's main total as it reports it (MACs for most; torchstat MAdd; torchsummary reports no "
           "operations). Every number is explained per layer in the model's own report; a residual means a "
           "difference no named cause accounts for.", ""]
    out += _table(head, rows, "llrr" + "r" * len(tools))
    return "\n".join(out) + "\n"
