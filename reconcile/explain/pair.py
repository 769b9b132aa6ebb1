"""Why two tools disagree: both are explained against the same native reference, so their gap
on every module is the difference of their causes plus the difference of their residuals.

``raw_a - raw_b == sum(a's causes) - sum(b's causes) + residual_a - residual_b`` on every module
both report, because each side is ``reference + causes + residual`` with the same reference.
Amounts are in each tool's own unit (as both tools report them); compare tools of one unit, or
normalize first.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping

from reconcile.explain.core import LayerExplanation, ToolExplanation

Number = int | Fraction


@dataclass(frozen=True)
class PairLayer:
    module: str
    type: str
    a: Number | None  # tool a's raw main number for the module (None: no row)
    b: Number | None
    causes: Mapping[str, Number]  # cause id -> a's amount minus b's amount
    residual: Number  # a's residual minus b's


@dataclass(frozen=True)
class PairExplanation:
    a: str
    b: str
    total_a: Number | None
    total_b: Number | None
    causes: Mapping[str, Number]  # over the whole model, main metric, a minus b
    residual: Number
    layers: tuple[PairLayer, ...]

    @property
    def gap(self) -> Number | None:
        if self.total_a is None or self.total_b is None:
            return None
        return self.total_a - self.total_b


def _main_rows(t: ToolExplanation) -> dict[str, LayerExplanation]:
    return {le.module: le for le in t.layers if le.call is None}


def explain_pair(a: ToolExplanation, b: ToolExplanation) -> PairExplanation:
    """Explain ``a - b`` per module and per cause (both must be explanations of the same model)."""
    rows_a, rows_b = _main_rows(a), _main_rows(b)
    layers = []
    for module in list(dict.fromkeys([*rows_a, *rows_b])):
        la, lb = rows_a.get(module), rows_b.get(module)
        causes: dict[str, Number] = defaultdict(int)
        for le, sign, metric in ((la, 1, a.metric), (lb, -1, b.metric)):
            if le is None:
                continue
            for c in le.causes.get(metric, ()):
                causes[c.id] += sign * c.amount
        raw_a = la.raw.get(a.metric) if la else None
        raw_b = lb.raw.get(b.metric) if lb else None
        res = (la.residual.get(a.metric, 0) if la else 0) - (lb.residual.get(b.metric, 0) if lb else 0)
        causes = {k: v for k, v in causes.items() if v}
        if causes or res or raw_a != raw_b:
            layers.append(PairLayer(module, (la or lb).type, raw_a, raw_b, causes, res))
    total: dict[str, Number] = defaultdict(int)
    for cid, v in a.causes.items():
        total[cid] += v
    for cid, v in b.causes.items():
        total[cid] -= v
    residual = (a.summaries[a.main].residual if a.main in a.summaries else 0) - (
        b.summaries[b.main].residual if b.main in b.summaries else 0)
    return PairExplanation(a.tool, b.tool, a.raw_total, b.raw_total, {k: v for k, v in total.items() if v}, residual,
                           tuple(layers))
