"""Layer grouping for the per-layer table: which modules are explained alike in every tool column.

Groups compare data, never rendered text: the cause ids and, per cause, its rule and values with
their numbers left out (``sentences.shape``), so that the same formula on layers of other sizes is
one group. A module with a residual in any column stays alone. Pure functions over explanations.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from reconcile.explain.core import Cause, LayerExplanation, ToolExplanation
from reconcile.report.model import ModelReport
from reconcile.report.sentences import shape


def ran(tools: Sequence[ToolExplanation]) -> list[ToolExplanation]:
    """The tools that finished with something explained."""
    return [t for t in tools if t.status == "ok" and t.summaries]


@dataclass(frozen=True)
class LayerGroup:
    """Modules whose explanation is the same in every tool column: the same causes with the same
    rule with the same values apart from numbers (``sentences.shape``), no residual. A module with a residual is a
    group of its own."""

    modules: tuple[str, ...]
    type: str
    reference: int | Fraction | None  # native MACs, summed
    raw: tuple[int | Fraction | None, ...]  # per tool column, summed (None: no row in that tool)
    measured_against: tuple[int | Fraction | None,
                            ...]  # per tool column: the native MACs its rows are explained against
    notes: tuple[tuple[str, str, Cause], ...]  # (cause id, tool, cause) of the first member
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


TOTAL_ONLY_ROW = "(in the total only) "  # + a label: work a tool counts in its total outside any row


def _total_only(t: ToolExplanation) -> list[LayerExplanation]:
    """A tool's record of work counted in its total but in no row (ptflops' patched functionals,
    keyed by label "functional:F.relu"), as one pseudo-row per label in the tool's metric, so that
    its causes (double_count) get rows and sentences like every other cause."""
    u = t.unattributed
    if u is None:
        return []
    def one(values: dict, label: str) -> dict:
        return {t.metric: values[label]} if label in values else {}

    return [LayerExplanation(TOTAL_ONLY_ROW + label.split(":", 1)[-1], "functional", 0, None, one(u.raw, label),
                             one(u.predicted, label), one(u.reference, label), one(u.residual, label),
                             {t.metric: tuple(u.causes.get(label, ()))})
            for label in dict.fromkeys([*u.predicted, *u.raw])]


def layer_table(r: ModelReport) -> tuple[list[ToolExplanation], list[str], dict[str, dict[str, LayerExplanation]],
                                          dict[str, str], dict[str, int | Fraction]]:
    # native is the reference column itself; every other tool gets a column
    tools = [t for t in ran(r.tools) if t.metric and t.tool != "native"]
    by_module: dict[str, dict[str, LayerExplanation]] = {}
    order: list[str] = []
    types: dict[str, str] = {}
    references: dict[str, int | Fraction] = {}
    for t in tools:
        for le in _per_module(t.layers) + _total_only(t):
            if le.module not in by_module:
                by_module[le.module] = {}
                order.append(le.module)
            by_module[le.module][t.tool] = le
            types.setdefault(le.module, le.type)
            if t.metric in le.reference and not le.reference.get("_inclusive"):
                references.setdefault(le.module, le.reference[t.metric])
    native = next((t for t in ran(r.tools) if t.tool == "native" and t.metric), None)
    if native is not None:  # each module's own MACs, from the reference count itself
        own = {le.module: le.reference.get(native.metric) for le in native.layers if le.call is None}
        references = {m: own[m] for m in order if isinstance(own.get(m), (int, Fraction))}
        # a total-only row is measured against what its tool's record holds (native counts it in no module)
        references.update({le.module: le.reference[t.metric] for t in tools for le in _total_only(t)
                           if isinstance(le.reference.get(t.metric), (int, Fraction))})
    differing = [m for m in order
                 if any((le.causes.get(_metric(tools, tool)) or le.residual.get(_metric(tools, tool), 0))
                        for tool, le in by_module[m].items())]
    return tools, differing, by_module, types, references


def group_layers(tools: Sequence[ToolExplanation], modules: Sequence[str],
                 by_module: dict[str, dict[str, LayerExplanation]], types: dict[str, str],
                 references: dict[str, int | Fraction]) -> list[LayerGroup]:
    """Differing modules grouped by (type, per tool: has a row, causes and their rules and values
    with the numbers left out), in
    order of first appearance; a module with a residual in any column stays alone."""
    keys: dict[object, list[str]] = {}
    for m in modules:
        cells = by_module[m]
        if any(le.residual.get(t.metric, 0) for t in tools if (le := cells.get(t.tool)) is not None):
            key: object = ("residual", m)
        elif m.startswith(TOTAL_ONLY_ROW):  # a tool's work outside its rows: one row, every sentence kept
            key = ("total only", tuple(sorted(cells)))
        else:
            key = (types.get(m, ""), m in references, tuple(
                (t.tool, None) if (le := cells.get(t.tool)) is None
                else (t.tool, tuple((c.id, shape(c)) for c in le.causes.get(t.metric, ())))
                for t in tools))
        keys.setdefault(key, []).append(m)
    groups = []
    for members in keys.values():
        first = by_module[members[0]]
        raw, against, residual = [], [], []
        for t in tools:
            present = [by_module[m][t.tool] for m in members if t.tool in by_module[m]]
            vals = [le.raw.get(t.metric) for le in present]
            refs = [le.reference.get(t.metric) for le in present]
            raw.append(sum(vals, 0) if present and all(v is not None for v in vals) else None)
            against.append(sum(refs, 0) if present and all(isinstance(v, (int, Fraction)) for v in refs) else None)
            residual.append(sum((le.residual.get(t.metric, 0) for le in present), 0))
        sources = [by_module[m] for m in members] if members[0].startswith(TOTAL_ONLY_ROW) else [first]
        notes = tuple((c.id, t.tool, c) for cells in sources for t in tools if t.tool in cells
                      for c in cells[t.tool].causes.get(t.metric, ()))
        ref = sum((references[m] for m in members if m in references),
                  0) if any(m in references for m in members) else None
        groups.append(LayerGroup(tuple(members), types.get(members[0], ""), ref, tuple(raw), tuple(against), notes,
                                 tuple(residual)))
    return groups




def _metric(tools: Sequence[ToolExplanation], tool: str) -> str:
    for t in tools:
        if t.tool == tool:
            return t.metric
    return ""
