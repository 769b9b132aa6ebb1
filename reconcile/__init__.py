"""reconcile: run every PyTorch cost counter on one model and explain every difference.

The Python API (none of these imports torch until it has to count):

- ``count(model, inputs)`` -> ``NativeCount``: the exact native count, per module.
- ``compare("resnet18,vgg16", tools=None)`` -> one ``ModelReport`` per model: every tool run in
  its own process, predicted from the native count and explained layer by layer.
- ``conventions()`` -> each tool's ``Convention`` (its rules as data, and ``predict``).
- ``predict(native, "thop")`` -> what a tool would report, from the native count alone.
- ``normalize(explanation, to="macs")`` -> a tool's total in another convention.
- ``explain(a, b)`` -> why two tools disagree, per module and per cause.
- ``roofline(native, "a100-80gb,local")`` -> ``Roofline``: bytes, intensity, bound and time lower
  bound per layer on each hardware (``reconcile.roofline.render`` / ``.plot`` draw it).
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any, Sequence

from reconcile import conventions  # a callable module: reconcile.conventions() is the table
from reconcile import explain  # a callable module too: importing its submodules cannot unbind it
from reconcile import roofline  # callable as well: reconcile.roofline(native, hardware)
from reconcile._version import __version__
from reconcile.errors import ReconcileError

if TYPE_CHECKING:  # pragma: no cover
    from reconcile.conventions.base import Prediction
    from reconcile.explain.core import ToolExplanation
    from reconcile.records import NativeCount
    from reconcile.report.model import ModelReport

__all__ = ["ReconcileError", "compare", "conventions", "count", "explain", "normalize", "predict", "roofline", "__version__"]


def count(model: Any, inputs: Any, **kwargs: Any) -> "NativeCount":
    """Count ``model(*inputs)`` with the native counter (see ``reconcile.counter.core.count``).

    The model runs in this process, by design (it is your object). What its forward changes in
    torch's process-wide settings is put back afterwards, even when it raises: the default dtype
    and device, grad mode, the deterministic-algorithms flags, the number of threads, the float32
    matmul precision, anomaly detection, the CPU random generator's state and the
    ``torch.backends`` flags (cudnn, cuda matmul and attention backends, mkldnn, opt_einsum).
    What cannot be put back: ``torch.set_num_interop_threads`` (settable once), ``set_flush_denormal``
    (no getter), other devices' random generators, functions or classes the model patched, modules
    it imported, environment variables, processes or threads it started. To keep all of that
    away, count in a worker process: ``reconcile count`` on the command line, or
    ``reconcile.compare(spec, tools="native")``."""
    from reconcile.counter import count as _count
    from reconcile.torch_state import kept

    with kept():
        return _count(model, inputs, **kwargs)


def predict(native: "NativeCount", tool: str) -> "Prediction":
    """What ``tool`` would report for the counted model, per layer and in total, without running it.
    Raises ``ReconcileError`` when the tool cannot run on the model at all (and says why)."""
    conv = conventions.get(tool)
    why = conv.cannot_run(native)
    if why:
        raise ReconcileError(f"{conv.tool} cannot run on this model: {why}")
    return conv.predict(native)


def compare(specs: str | Sequence[str], tools: str | Sequence[str] | None = None, *,
            input_shape: tuple[int, ...] | None = None, input_dtype: str = "float32",
            input_high: int | None = None, timeout: float = 300.0) -> list["ModelReport"]:
    """Run the tools on each model spec (torchvision name or ``package.module:callable``), each in
    its own worker process, and explain every number. Nothing is written to disk."""
    from reconcile import models, pipeline
    from reconcile.config import RunConfig

    names = models.split_specs(specs) if isinstance(specs, str) else list(specs)
    config = RunConfig(tools=pipeline.parse_tools(tools), input_shape=input_shape, input_dtype=input_dtype,
                       input_high=input_high, timeout=timeout)
    runs = pipeline.collect(names, config)
    return [pipeline.reconcile_model(mr) for mr in runs]


def normalize(explanation: "ToolExplanation", to: str = "macs") -> int | Fraction:
    """A tool's main total converted to ``to``: "macs" (its convention differences removed; work
    it did not see stays missing), "flops" (the native FLOPs of the work it saw), or another
    tool's name (what that tool reports for the same model, from its convention)."""
    if explanation.status != "ok":
        raise ReconcileError(f"{explanation.tool} did not finish ({explanation.status}): nothing to normalize")
    if to in ("macs", "flops"):
        value = explanation.normalized.get(to)
        if value is None:
            raise ReconcileError(f"{explanation.tool} reports no operation count to normalize")
        return value
    raise ReconcileError(f"normalize to 'macs' or 'flops', got {to!r}; to see another tool's number, "
                         "use that tool's explanation (or reconcile.predict(native, tool))")
