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
        from reconcile._version import __version__

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


class TracedAdapter(Adapter):
    """The same forward as ``torch.jit`` traces it (``counter.traced``), recorded for the native
    count when a tool that traces (fvcore) is compared: a job of its own beside the native count,
    so the native count costs nothing more and the trace runs in parallel with the tools. It runs
    on CPU (meta kernels check shapes in Python, which a trace turns into tensors), traced the way
    fvcore traces it: a model with a non-tensor input or output through the same flattening
    wrapper. ``detail`` is a ``records.TracedOps``; the pipeline attaches it to the native count."""

    name = "native-trace"
    distribution = "reconcile"
    device = "cpu"

    def version(self) -> str:
        from reconcile._version import __version__

        return __version__

    def attempted(self) -> str:
        return "torch.jit._get_trace_graph(model, inputs) with module scopes"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        import torch

        from reconcile.adapters.base import ToolFailure, flat_io
        from reconcile.counter.traced import trace_ops

        inputs = tuple(inputs)
        if all(isinstance(a, torch.Tensor) for a in inputs):
            try:
                traced = trace_ops(model, inputs)
            except RuntimeError:  # a dict or ModelOutput out: through the wrapper, as fvcore retries
                traced = None
        else:
            traced = None
        if traced is None:
            wrapper, tensors = flat_io(model, inputs)
            try:
                traced = trace_ops(wrapper, tensors, prefix="model")
            except RuntimeError as exc:
                raise ToolFailure("torch.jit could not trace this model", exc) from exc
        return ToolRun(tool=self.name, version=self.version(), status="ok", detail=traced,
                       headline={"nodes": sum(n for ops in traced.ops.values() for n in ops.values())},
                       units={"nodes": "nodes"})
class NativeTrainingAdapter(NativeAdapter):
    """The native counter with ``training=True`` (``--training``): the same forward rows and
    headline, and the count's ``training`` record (backward per module) in ``detail``."""

    training = True

    def attempted(self) -> str:
        return "reconcile.count(model, inputs, training=True)"
