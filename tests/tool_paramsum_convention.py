"""The convention of the registry's test counter (``tests/tool_paramsum_adapter.py``): it counts
every parameter tensor once, as native does, and reports no rows."""

from __future__ import annotations

from reconcile.conventions.base import Convention, Prediction, RuleDoc
from reconcile.records import NativeCount


class ParamSum(Convention):
    tool = "paramsum"
    unit = "params"
    metric = "params"
    headline_metric = "params"
    metrics = {"params": ""}  # headline-only: explained against headline_reference
    rules = (RuleDoc("parameters", "each tensor once, as native"),)

    def predict(self, native: NativeCount) -> Prediction:
        total = native.totals["params"]
        return Prediction(self.tool, self.metric, self.unit, (), {"params": total},
                          headline_reference={"params": total})


CONVENTION = ParamSum()
