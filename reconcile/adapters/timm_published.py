"""Not a counter: one row of timm's published table predicted, in a worker.

The model is built the way timm's ``benchmark.py`` built it for the table
(``reconcile.sources.timm_published``): attention on the non-fused path, re-parameterized, eval,
at the row's square input; reconcile counts it on the meta device and fvcore's convention predicts
what ``FlopCountAnalysis`` / ``ActivationCountAnalysis`` printed. Each switch the table's run took
is also undone once, for its exact amount: the model as timm builds it by default (fused
attention), and before re-parameterizing. fvcore itself never runs.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from reconcile.adapters.base import Adapter
from reconcile.records import ToolRun


@contextlib.contextmanager
def _fused_attention(enabled: bool) -> Iterator[None]:
    """timm's attention path for the models built inside (``TIMM_FUSED_ATTN``), put back on exit."""
    from timm.layers import config

    saved = config._USE_FUSED_ATTN
    config.set_fused_attn(enabled)
    try:
        yield
    finally:
        config._USE_FUSED_ATTN = saved


def _reparameterizable(model: Any) -> bool:
    """Whether ``timm.utils.reparameterize_model`` changes anything: a child with ``fuse``,
    ``reparameterize`` or ``switch_to_deploy`` (the methods it calls)."""
    return any(hasattr(m, a) for m in model.modules() if m is not model
               for a in ("fuse", "reparameterize", "switch_to_deploy"))


def _fused(model: Any) -> bool:
    return any(getattr(m, "fused_attn", False) is True for m in model.modules())


def _numbers(model: Any, size: int, name: str) -> dict[str, int]:
    import torch

    from reconcile.conventions.fvcore import CONVENTION
    from reconcile.counter import count

    x = torch.empty(1, 3, size, size, device="meta")
    native = count(model, (x,), name=name)
    head = CONVENTION.predict(native).headline
    return {"flops": int(head["flops"]), "activations": int(head["activations"]), "params": int(head["params"]),
            "native_macs": int(native.totals["macs"])}


def _build(name: str, reparam: bool, **kwargs: Any) -> tuple[Any, bool]:
    """The model on meta (``reconcile.models``' builders: init skipped, CPU where meta cannot
    build), re-parameterized when ``reparam`` and it has something to fuse (built on CPU for that,
    since fusing computes new weights, then moved to meta), and whether it had."""
    from reconcile import models

    spec = models.resolve("timm:" + name)

    def factory() -> Any:
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)

    with models._BUILD_LOCK:
        model = models._build_meta(spec.name, factory)
    if not (reparam and _reparameterizable(model)):
        return model.eval(), False
    from timm.utils.model import reparameterize_model

    with models._BUILD_LOCK:
        cpu = models._build_cpu(spec.name, factory)
    return reparameterize_model(cpu.eval(), inplace=True).to("meta").eval(), True


def predict_row(name: str, size: int):
    """``timm_published.Prediction`` of the table's row (``name``, ``size``)."""
    from reconcile.sources.timm_published import CHANGED, Prediction

    with _fused_attention(False):
        model, reparam = _build(name, reparam=True)
        table = _numbers(model, size, name)
        del model
        changed = CHANGED.get(name)
        then = {}
        if changed is not None and changed.kwargs:
            old, _ = _build(name, reparam=True, **changed.kwargs)
            then = _numbers(old, size, name)
            del old
        unfused = {}
        if reparam:
            plain, _ = _build(name, reparam=False)
            unfused = _numbers(plain, size, name)
            del plain
    fused = {}
    default, _ = _build(name, reparam=False)
    if _fused(default):
        fused = _numbers(default, size, name)
    del default

    def delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {k: a[k] - b[k] for k in ("flops", "activations", "params") if a[k] != b[k]}

    return Prediction(table["flops"], table["activations"], table["params"], table["native_macs"],
                      # timm's default (fused attention, not re-parameterized) minus the same model with
                      # the non-fused path only, so the attention path's amount is apart from reparam's
                      fused_attention=delta(fused, unfused or table) if fused else {},
                      not_reparameterized=delta(unfused, table) if unfused else {},
                      as_at_table={k: then[k] for k in ("flops", "activations", "params")} if then else {})


class TimmPublished(Adapter):
    name = "timm-published"
    distribution = "reconcile"
    needs_model = False  # builds the model itself, in the ways the table's run did

    def __init__(self, size: int = 0) -> None:
        self.size = size

    def version(self) -> str:
        from reconcile._version import __version__

        return __version__

    def attempted(self) -> str:
        return "fvcore's convention on the native count of the model as timm's benchmark.py built it"

    def probe(self, model: str) -> ToolRun:
        body = model.partition(":")[2] if model.startswith("timm:") else model
        return ToolRun(tool=self.name, version=self.version(), status="ok", detail=predict_row(body, self.size))
