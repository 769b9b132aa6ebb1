"""The native counter's own convention: its rows are exclusive per-module counts, so its
prediction is itself (a zero-residual identity that keeps native in every table)."""

from __future__ import annotations

from reconcile.conventions.base import Convention, LayerPrediction, Prediction, RuleDoc
from reconcile.counter.formulas import COSTS
from reconcile.records import NativeCount


class NativeConvention(Convention):
    tool = "native"
    unit = "MAC"
    metric = "macs"
    headline_metric = "macs"
    metrics = {"macs": "macs", "flops": "flops", "params": "params"}
    op_metrics = ("macs",)
    rules = (
        RuleDoc("unit", "MACs of conv / transposed conv / linear / matmul / bmm / einsum / attention / RNN gates "
                "(torchvision's _ops convention); FLOPs = 2 per MAC + every other arithmetic op below"),
        RuleDoc("matching", "every aten op that runs, charged to the innermost module executing it"),
        *(RuleDoc(family, doc) for family, (_, doc) in COSTS.items()),
        RuleDoc("params", "each tensor once (tied groups named), trainable and frozen apart, buffers apart"),
        RuleDoc("batch", "whole batch"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        layers = []
        for r in native.rows:
            if not (r.calls or r.params or r.components):
                continue
            values = {"macs": r.macs, "flops": r.flops, "params": r.params,
                      **{k: v for k, v in r.components.items() if k != "macs"}}
            layers.append(LayerPrediction(r.name, r.type, r.calls, dict(values), dict(values)))
        totals = dict(native.totals)
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline=totals, headline_reference=totals)


CONVENTION = NativeConvention()
