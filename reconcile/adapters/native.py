"""The native counter as a tool run, so reports list it beside the other tools.

Rows are exclusive (only the work done while that module was innermost), one per module that
ran or owns parameters, so rows sum exactly to the headline totals. It asks the runner for a
model built on the meta device (``device = "meta"``): shapes decide every number, so it needs
neither a CPU forward nor weights. A model whose forward reads data cannot run on meta: the
runner then builds it on CPU (``fallback_device``) and counts there, with the same numbers.
"""

from __future__ import annotations

from typing import Any

from reconcile.adapters.base import Adapter
from reconcile.records import ToolLayer, ToolRun


class NativeAdapter(Adapter):
    name = "native"
    distribution = "reconcile"
    device = "meta"
    fallback_device = "cpu"  # a forward that reads data (`if x.mean() > 0`) runs on real tensors

    def version(self) -> str:
        from reconcile import __version__

        return __version__

    def attempted(self) -> str:
        return "reconcile.count(model, inputs)"

    training = False  # NativeTrainingAdapter: forward + backward

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        from reconcile.counter import count

        # the runner set the mode
        result = count(model, inputs, name="model", mode="as-is", training=self.training)
        layers = []
        for r in result.rows:
            if not (r.calls or r.params or r.components):
                continue
            raw = {"macs": r.macs, "flops": r.flops, "params": r.params, **{k: v for k, v in r.components.items() if k != "macs"}}
            layers.append(ToolLayer(module=r.name, type=r.type, calls=r.calls, raw=raw, key=r.name))
        headline = {k: v for k, v in result.totals.items()}
        units = {"macs": "MAC", "flops": "FLOP", "params": "parameters", "activations": "elements",
                 "bytes_read": "bytes", "bytes_written": "bytes"}
        if result.training is not None:
            for k in ("backward_macs", "training_macs", "training_flops"):
                headline[k] = result.training.totals[k]
                units[k] = "MAC" if k.endswith("macs") else "FLOP"
        unknown = sorted({op for r in result.rows for op in r.unknown_ops})
        warnings = tuple(f"no rule for {op}: not counted" for op in unknown)
        return ToolRun(tool=self.name, version=self.version(), status="ok", headline=headline, units=units,
                       layers=tuple(layers), warnings=warnings, detail=result,
                       notes=(f"counted on the {result.device} device: counts depend on shapes only",))


class NativeTrainingAdapter(NativeAdapter):
    """The native counter with ``training=True`` (``--training``): the same forward rows and
    headline, and the count's ``training`` record (backward per module) in ``detail``."""

    training = True

    def attempted(self) -> str:
        return "reconcile.count(model, inputs, training=True)"
