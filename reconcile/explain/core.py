"""Explain a tool's numbers: align its rows with the convention's predictions, split every gap
into named causes, and keep whatever is left as an unexplained residual.

Guarantees: for every row and metric, ``raw == reference + sum(causes) + residual`` exactly;
a nonzero residual is reported, never hidden; rows the tool has and the prediction lacks (or the
reverse) still appear, with the whole difference as residual. Pure functions over records.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Mapping

from reconcile.conventions.base import CAUSES, INCLUSIVE, Convention, LayerPrediction, Prediction, Term, whole
from reconcile.records import NativeCount, Phrase, ToolRun

Number = int | Fraction


@dataclass(frozen=True)
class Cause:
    id: str
    kind: str  # "convention" or "coverage"
    amount: Number
    rule: str  # the Term's rule and sentence (``reconcile.report.sentences`` renders it)
    sentence: Phrase
    flops: Number = 0
    macs: Number | None = None  # coverage causes: the MAC part of ``amount`` (None: all of it)


@dataclass(frozen=True)
class LayerExplanation:
    module: str
    type: str
    calls: int
    call: int | None
    raw: Mapping[str, Number]
    predicted: Mapping[str, Number]
    reference: Mapping[str, Number]
    residual: Mapping[str, Number]
    causes: Mapping[str, tuple[Cause, ...]]  # metric -> causes

    def gap(self, metric: str) -> Number:
        return self.raw.get(metric, 0) - self.reference.get(metric, 0)


@dataclass(frozen=True)
class MetricSummary:
    """One explained metric of one tool over the whole model (e.g. thop "macs" from rows "ops")."""

    headline_key: str
    row_key: str
    raw_total: Number | None
    reference: Number  # native value of the same quantity (macs for op counts, params for params)
    causes: Mapping[str, Number]  # cause id -> amount, summed over non-nesting rows + headline
    # what no cause explains, counted once: sum of |residual| over rows and the total-only record,
    # plus the part of the headline's residual that no row shows
    residual: Number
    missed_flops: Number = 0  # FLOPs of work the tool did not see (coverage causes), <= 0
    non_mac_coverage: Number = 0  # coverage amounts that are not MACs (an activation counted twice)
    normalized: Mapping[str, Number] = field(default_factory=dict)  # op metrics: "macs", "flops"
    is_ops: bool = False  # an operation count (normalizable), not params or memory
    rows_total: Number | None = None  # the tool's rows (and total-only record) added up
    headline_residual: Number = 0  # headline minus its prediction, signed (may repeat row residuals)

    @property
    def headline_not_rows(self) -> Number:
        """How far the tool's headline is from the sum of its own rows: a fact about the tool
        (it totals work it lists nowhere, or lists work it does not total), not a residual."""
        if self.raw_total is None or self.rows_total is None or not self.row_key:
            return 0
        return self.raw_total - self.rows_total

    def explained_share(self) -> Fraction | None:
        """Share of the gap to the native reference that named causes account for."""
        if self.raw_total is None:
            return None
        gap = abs(Fraction(self.raw_total) - self.reference)
        if gap == 0:
            return Fraction(1) if self.residual == 0 else Fraction(0)
        return max(Fraction(0), 1 - Fraction(self.residual) / gap)


@dataclass(frozen=True)
class ToolExplanation:
    tool: str
    version: str
    status: str
    metric: str
    unit: str
    run: ToolRun
    layers: tuple[LayerExplanation, ...] = ()
    unattributed: LayerExplanation | None = None
    headline: LayerExplanation | None = None  # headline numbers against prediction
    summaries: Mapping[str, MetricSummary] = field(default_factory=dict)  # headline key -> summary
    main: str = ""  # headline key of the main op count
    native_macs: int = 0

    @property
    def normalized(self) -> Mapping[str, Number]:
        return self.summaries[self.main].normalized if self.main in self.summaries else {}

    @property
    def causes(self) -> Mapping[str, Number]:
        return self.summaries[self.main].causes if self.main in self.summaries else {}

    @property
    def residual(self) -> Number:
        """Sum of absolute residuals over every explained metric."""
        return sum((abs(s.residual) for s in self.summaries.values()), 0)

    @property
    def raw_total(self) -> Number | None:
        return self.summaries[self.main].raw_total if self.main in self.summaries else None

    @property
    def explained(self) -> bool:
        return self.status == "ok" and self.residual == 0

    def explained_share(self) -> Fraction | None:
        """Share of the main total's gap to native macs that named causes account for."""
        return self.summaries[self.main].explained_share() if self.main in self.summaries else None


def _causes(terms: tuple[Term, ...]) -> tuple[Cause, ...]:
    return tuple(Cause(t.cause, CAUSES[t.cause][0], t.amount, t.rule, t.sentence, t.flops, t.macs)
                 for t in terms if t.amount or t.flops)


def _explain_row(raw: Mapping[str, Number], pred: LayerPrediction | None, module: str, type_: str,
                 calls: int, call: int | None) -> LayerExplanation:
    predicted = dict(pred.predicted) if pred else {}
    reference = dict(pred.reference) if pred else {}
    keys = list(dict.fromkeys([*predicted, *(k for k in raw if isinstance(raw[k], (int, Fraction)))]))
    residual = {k: raw.get(k, 0) - predicted.get(k, 0) for k in keys if k in raw or k in predicted}
    causes = {m: _causes(ts) for m, ts in (pred.terms.items() if pred else ())}
    return LayerExplanation(module, type_, calls, call, dict(raw), predicted, reference, residual, causes)


def explain_run(run: ToolRun, prediction: Prediction | None, convention: Convention | None,
                native: NativeCount | None) -> ToolExplanation:
    """Explain one tool run against its convention's prediction (None: the tool failed/has none,
    or there is no native count to predict from)."""
    metric = prediction.metric if prediction else (convention.metric if convention else "")
    unit = prediction.unit if prediction else (convention.unit if convention else "")
    main = convention.headline_metric if convention else ""
    native_macs = native.totals["macs"] if native is not None else 0
    if run.status != "ok" or prediction is None or convention is None or native is None:
        return ToolExplanation(run.tool, run.version, run.status, metric, unit, run, main=main,
                               native_macs=native_macs)

    preds = {(p.module, p.call): p for p in prediction.layers}
    layers = []
    seen = set()
    for row in run.layers:
        key = (row.module, row.call)
        seen.add(key)
        layers.append(_explain_row(row.raw, preds.get(key), row.module, row.type, row.calls, row.call))
    for key, p in preds.items():
        if key not in seen:  # predicted a row the tool did not report (or the OUTSIDE pseudo-row)
            layers.append(_explain_row({}, p, p.module, p.type, p.calls, p.call))

    unattributed = None
    if run.unattributed or prediction.unattributed:
        up = LayerPrediction("(total only)", "", 0, {k: 0 for k in prediction.unattributed},
                             dict(prediction.unattributed), dict(prediction.unattributed_terms))
        unattributed = _explain_row(run.unattributed, up, "(total only)", "", 0, None)

    hp = LayerPrediction("(headline)", "", 0, dict(prediction.headline_reference), dict(prediction.headline),
                         dict(prediction.headline_terms))
    numeric_headline = {k: v for k, v in run.headline.items() if isinstance(v, (int, Fraction))}
    headline = _explain_row(numeric_headline, hp, "(headline)", "", 0, None)

    summaries = {}
    op_metrics = convention.operation_metrics()
    for hkey, rkey in convention.metrics.items():
        causes: dict[str, Number] = defaultdict(int)
        residual: Number = 0
        signed: Number = 0  # the same residuals with their signs: what the headline repeats
        rows_total: Number = 0
        reference: Number = 0
        missed_flops: Number = 0
        non_mac: Number = 0

        def add(c: Cause) -> None:
            nonlocal missed_flops, non_mac
            causes[c.id] += c.amount
            missed_flops += c.flops
            if c.macs is not None and c.kind == "coverage":
                non_mac += c.amount - c.macs

        for le in layers:
            if le.reference.get(INCLUSIVE):
                continue
            reference += le.reference.get(rkey, 0)
            for c in le.causes.get(rkey, ()):
                add(c)
            residual += abs(le.residual.get(rkey, 0))
            signed += le.residual.get(rkey, 0)
            raw_row = le.raw.get(rkey, 0)
            rows_total += raw_row if isinstance(raw_row, (int, Fraction)) else 0
        if not rkey:  # a headline-only figure (row key ""): its native reference is the prediction's
            reference = headline.reference.get(hkey, 0)
        if unattributed is not None and hkey == convention.headline_metric:
            # the total-only record is keyed by label ("functional:F.relu"); all of it adds into
            # the main total
            reference += sum(unattributed.reference.values(), 0)
            for cs in unattributed.causes.values():
                for c in cs:
                    add(c)
            residual += sum((abs(v) for v in unattributed.residual.values()), 0)
            signed += sum(unattributed.residual.values(), 0)
            rows_total += sum((v for v in unattributed.raw.values() if isinstance(v, (int, Fraction))), 0)
        for c in headline.causes.get(hkey, ()):
            add(c)
        # When the tool's headline is the sum of its own rows, the headline's residual repeats the
        # rows': count only the part no row shows, so that each unexplained unit counts once. A
        # headline in another unit (torchsummary's bytes from element rows) is its own figure.
        headline_residual = headline.residual.get(hkey, 0)
        raw = run.headline.get(hkey)
        sums_rows = bool(rkey) and isinstance(raw, (int, Fraction)) and raw == rows_total
        residual += abs(headline_residual - signed) if sums_rows else abs(headline_residual)
        raw_total = raw if isinstance(raw, (int, Fraction)) else None
        is_ops = hkey in op_metrics
        normalized = (_normalize(raw_total, causes, missed_flops, non_mac, convention.flops_reference(native))
                      if is_ops and raw_total is not None else {})
        summaries[hkey] = MetricSummary(hkey, rkey, raw_total, reference, dict(causes), residual,
                                        missed_flops, non_mac, normalized, is_ops,
                                        rows_total if rkey else None, headline_residual)
    return ToolExplanation(
        run.tool, run.version, run.status, metric, unit, run, tuple(layers), unattributed, headline,
        summaries, main, native_macs,
    )


def _normalize(raw_total: Number, causes: Mapping[str, Number], missed_flops: Number, non_mac: Number,
               native_flops: int) -> dict[str, Number | None]:
    """The tool's total in the ``macs`` and ``flops`` conventions: convention causes removed,
    coverage gaps in MACs (work it did not see, or saw twice) kept, coverage of non-MAC work
    (a ReLU counted twice) removed. ``flops`` is the native FLOPs of the work the tool saw:
    ``native_flops`` (``Convention.flops_reference``) plus the (negative) FLOPs of coverage causes."""
    convention_part = sum((v for k, v in causes.items() if CAUSES[k][0] == "convention"), Fraction(0))
    macs = Fraction(raw_total) - convention_part - non_mac
    flops = Fraction(native_flops) + missed_flops
    return {"macs": whole(macs), "flops": whole(flops)}
