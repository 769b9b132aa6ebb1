"""Adapter for fvcore 0.1.5 (``FlopCountAnalysis``, ``ActivationCountAnalysis``,
``parameter_count``), run the way its users run it: one analysis object each, queried after
the trace, on a copy of the model in the mode the caller gave (eval). In eval mode the activation
analysis reads the flop analysis's trace (``base.one_trace``: the same graph, so the same
records, ``tests/test_one_trace.py``) instead of tracing the forward a second time.

Guarantees, for a run with status ``ok``:

* ``headline``: ``flops`` (``FlopCountAnalysis.total()``; fvcore's "flop" is one fused
  multiply-add, so these are MACs), ``activations`` (``ActivationCountAnalysis.total()``),
  ``params`` (``parameter_count(model)[""]``), each an exact int (a ``Fraction`` only if a handle
  returns a non-integral float, e.g. fvcore's einsum path estimate). Unsupported operators are
  data too: ``"unsupported:aten::add_": 8`` is ``FlopCountAnalysis.unsupported_ops()`` (calls, unit
  ``"calls"``), ``"unsupported_activations:aten::batch_norm": 20`` the same for the activation
  analysis. These are op-call counts, not part of any total.
* ``layers``: one row per module of ``by_module()`` (every ``named_modules()`` module, named by
  fvcore's canonical = first name), **inclusive** of descendants, as fvcore reports them:
  ``raw = {"flops", "activations", "params"}`` from the three analyses' per-module views, plus
  ``"unsupported:<op>"`` call counts for that module's subtree. Ops run in a parent's own
  ``forward`` (the residual ``add_`` in a ``BasicBlock``) are charged to the parent.
  ``calls`` counts forward calls during the flop trace (hooks on the copy; 0 = uncalled).
* Reconciliation: row ``""`` holds the whole model, so ``layers[""].raw["flops"] +
  sum(unattributed.values()) == headline["flops"]``; equivalently the exclusive values (a row
  minus its direct children) sum to the total. fvcore charges every traced op at least to the
  root, so ``unattributed`` is empty; if the root row ever fell short of the total, the
  difference would be recorded there as ``"no_module"``.
* ``warnings``: fvcore's logger records ("Unsupported operator aten::X encountered N time(s)",
  uncalled submodules) and Python warnings, each prefixed with the analysis that raised it
  (``"FlopCountAnalysis: "``, ``"ActivationCountAnalysis: "``, ``"import: "``).
"""

from __future__ import annotations

import copy
from typing import Any

from reconcile.adapters.base import (
    FLAT_IO_NOTE, ONE_TRACE_NOTE, Adapter, ToolFailure, capture_output, counting_calls, flat_io, jit_analysis_headline,
    jit_analysis_rows, one_trace, prefixed_messages, unattributed,
)
from reconcile.records import ToolRun

_LOGGERS = ("fvcore",)


class FvcoreAdapter(Adapter):
    name = "fvcore"
    distribution = "fvcore"

    def attempted(self) -> str:
        return "fvcore.nn.FlopCountAnalysis / ActivationCountAnalysis / parameter_count on deepcopy(model)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        # fvcore removes its scope hooks after a successful trace only; a copy keeps a failed
        # trace from leaving them on the caller's model.
        work = copy.deepcopy(model)
        inputs = tuple(inputs)
        warnings: list[str] = []

        with capture_output(loggers=_LOGGERS) as cap:
            # import fvcore.nn scripts functions at import time, which warns on recent torch
            from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis, jit_analysis, parameter_count
        warnings += prefixed_messages("import", cap)

        import torch

        traced, traced_inputs, prefix = work, inputs, ""
        notes: list[str] = []
        if any(not isinstance(a, torch.Tensor) for a in inputs):
            traced, traced_inputs = flat_io(work, inputs)
            prefix = "model"
        while True:
            with one_trace(jit_analysis, work) as traces:  # the activation analysis reuses the flop trace
                try:
                    with capture_output(loggers=_LOGGERS) as cap:
                        flops = FlopCountAnalysis(traced, traced_inputs)
                        with counting_calls(work) as calls:
                            flop_total = flops.total()  # the trace runs here, lazily
                        flop_by_module = flops.by_module()
                        unsupported = {name: flops.unsupported_ops(name) for name in flop_by_module}
                except RuntimeError as exc:
                    # torch.jit takes tensors, tuples and lists out (dicts only with string keys): any
                    # failure is retried once through the flattening wrapper
                    if prefix:
                        raise ToolFailure("fvcore runs the forward under torch.jit tracing, which could not trace "
                                          "this model", exc) from exc
                    traced, traced_inputs = flat_io(work, inputs)
                    prefix = "model"
                    continue
                warnings += prefixed_messages("FlopCountAnalysis", cap)
                with capture_output(loggers=_LOGGERS) as cap:
                    acts = ActivationCountAnalysis(traced, traced_inputs)
                    act_total = acts.total()
                    act_by_module = acts.by_module()
                    act_unsupported = acts.unsupported_ops()
                warnings += prefixed_messages("ActivationCountAnalysis", cap)
            break
        if prefix:
            notes.append(FLAT_IO_NOTE)
        if traces["traces"] == 1:
            notes.append(ONE_TRACE_NOTE)

        with capture_output(loggers=_LOGGERS) as cap:
            params = parameter_count(work)
        warnings += prefixed_messages("parameter_count", cap)

        layers = jit_analysis_rows(work, prefix, flop_by_module, act_by_module, params,
                                   lambda key: unsupported[key], calls)
        headline, units = jit_analysis_headline(flop_total, act_total, params[""], flops.unsupported_ops(),
                                                act_unsupported)
        return self.ok(
                        headline=headline,
            units=units,
            layers=tuple(layers),
            unattributed=unattributed(layers, headline["flops"]),
            warnings=tuple(warnings),
            notes=(
                "run on a deepcopy: a failed fvcore trace leaves its scope hooks on every module",
                "temporary forward hooks on the copy count each module's calls during the flop trace",
                *notes,
            ),
        )
