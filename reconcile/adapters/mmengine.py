"""Adapter for mmengine 0.10.7's ``mmengine.analysis.get_model_complexity_info``, run the way its
users run it: one call on the model as it is, which traces it twice with ``torch.jit`` (a
``FlopAnalyzer`` and an ``ActivationAnalyzer``, mmengine's copies of fvcore 0.1.5's analyses) and
formats ``out_table`` and ``out_arch`` from them. It never calls ``eval()``: the model is analysed
in the mode it is in, which is training mode for a freshly built model, as in mmengine's own
documentation (ResNet-50 "4.145G" flops). reconcile's ``--mode`` decides that mode, as for
every tool.

Guarantees, for a run with status ``ok``:

* ``headline``: ``flops``, ``activations``, ``params``, the three integers the call returns
  (mmengine's "flop" is one fused multiply-add, so flops are MACs), plus the unsupported operators
  as data: ``"unsupported:aten::add_": 8`` is ``FlopAnalyzer.unsupported_ops()`` (calls, unit
  ``"calls"``), ``"unsupported_activations:<op>"`` the same for the activation analysis.
* ``layers``: one row per module, named by its ``named_modules()`` (canonical) name, **inclusive**
  of its descendants: ``raw = {"flops", "activations", "params"}`` are the numbers behind
  ``out_table`` and ``out_arch``, read from the two analyzer objects the call built (their
  ``by_module()``, cached from the call's own traces, not traced again) and mmengine's
  ``parameter_count``, plus ``"unsupported:<op>"`` call counts for the module's subtree. Ops run in
  a parent's own ``forward`` are charged to the parent. ``calls`` counts forward calls per trace.
* Reconciliation: row ``""`` holds the whole model, so ``layers[""].raw["flops"] +
  sum(unattributed.values()) == headline["flops"]`` (``unattributed`` is empty unless the root
  row ever fell short, then the difference is ``"no_module"``).
* ``warnings``: what mmengine logged through its ``MMLogger`` ("Unsupported operator aten::X
  encountered N time(s)", uncalled modules), Python warnings and anything printed, prefixed
  ``"get_model_complexity_info: "`` (``"import: "`` for import-time noise).

Nothing is left behind: the call runs on a deep copy (in training mode each trace updates the
copy's BatchNorm running statistics; a failed trace leaves its scope hooks), the ``MMLogger``
handlers and the two analyzer names in ``mmengine.analysis.print_helper`` are restored, and a
logger instance mmengine creates on its first message is removed again.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

from reconcile.adapters.base import (
    FLAT_IO_NOTE, ONE_TRACE_NOTE, Adapter, ListHandler, ToolFailure, capture_output, counting_calls, flat_io,
    jit_analysis_headline, jit_analysis_rows, one_trace, prefixed_messages, unattributed,
)
from reconcile.records import ToolRun

_CALL = "get_model_complexity_info"


@contextlib.contextmanager
def _mmlogger_into(sink: list[str]) -> Iterator[None]:
    """mmengine's analyses log through ``print_log(..., "current")``: the latest ``MMLogger``,
    created on first use with a handler bound to ``sys.stdout``. Its handlers are swapped for one
    that keeps the messages as data; a logger created here is dropped again on exit."""
    from mmengine.logging import MMLogger

    instances = getattr(MMLogger, "_instance_dict", {})  # ManagerMixin's registry of named instances
    existed = bool(instances)
    logger = MMLogger.get_current_instance()
    saved = list(logger.handlers)
    logger.handlers[:] = [ListHandler(sink)]
    try:
        yield
    finally:
        logger.handlers[:] = saved
        if not existed:
            instances.pop(logger.instance_name, None)


@contextlib.contextmanager
def _analyzers_kept(print_helper: Any, kept: dict[str, Any]) -> Iterator[None]:
    """The ``FlopAnalyzer`` and ``ActivationAnalyzer`` that ``get_model_complexity_info`` builds,
    kept in ``kept`` (same classes, same arguments), so their per-module results can be read."""
    saved = {name: getattr(print_helper, name) for name in ("FlopAnalyzer", "ActivationAnalyzer")}

    def keeper(name: str, cls: Any) -> Any:
        def make(*args: Any, **kwargs: Any) -> Any:
            kept[name] = cls(*args, **kwargs)
            return kept[name]

        return make

    try:
        for name, cls in saved.items():
            setattr(print_helper, name, keeper(name, cls))
        yield
    finally:
        for name, cls in saved.items():
            setattr(print_helper, name, cls)


def _raised_in(exc: BaseException, function: str) -> bool:
    """Whether ``function`` is on the traceback of ``exc``."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False


class MmengineAdapter(Adapter):
    name = "mmengine"
    distribution = "mmengine"

    def attempted(self) -> str:
        return f"mmengine.analysis.{_CALL}(deepcopy(model), inputs=inputs)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        work = copy.deepcopy(model)
        inputs = tuple(inputs)
        warnings: list[str] = []

        with capture_output() as cap:
            from mmengine.analysis import complexity_analysis, get_model_complexity_info, jit_analysis, print_helper
        warnings += prefixed_messages("import", cap)

        import torch

        traced, traced_inputs, prefix = work, inputs, ""
        if any(not isinstance(a, torch.Tensor) for a in inputs):
            traced, traced_inputs = flat_io(work, inputs)
            prefix = "model"
        show_arch, notes = True, []
        while True:
            kept: dict[str, Any] = {}
            logged: list[str] = []
            try:
                with _mmlogger_into(logged), _analyzers_kept(print_helper, kept), capture_output() as cap:
                    with one_trace(jit_analysis, work) as traced_once, counting_calls(work) as calls:
                        result = get_model_complexity_info(traced, inputs=traced_inputs, show_arch=show_arch)
                break
            except AttributeError as exc:
                if not (show_arch and _raised_in(exc, "_model_stats_str")):
                    raise
                # out_arch walks module._modules and fails on a child registered as None: a user
                # gets nothing but this error, and calls again with show_arch=False (same counts)
                nones = [f"{name}.{key}" if name else key for name, mod in work.named_modules()
                         for key, child in mod._modules.items() if child is None]
                notes.append(f"{_CALL}'s out_arch (show_arch=True, the default) fails on this model ("
                             f"{type(exc).__name__}: {exc}; a child registered as None: {', '.join(nones) or '?'}), "
                             "so it was called again with show_arch=False, as its users must; the counts do not "
                             "depend on it")
                show_arch = False
            except RuntimeError as exc:
                # torch.jit traces tensors, tuples and lists in and out: any failure is retried once
                # through the wrapper that passes only the tensor inputs and flattens the outputs
                if prefix:
                    raise ToolFailure("mmengine runs the forward under torch.jit tracing, which could not trace "
                                      "this model", exc) from exc
                traced, traced_inputs = flat_io(work, inputs)
                prefix = "model"
        warnings += prefixed_messages(_CALL, cap, logged)
        flops, acts = kept["FlopAnalyzer"], kept["ActivationAnalyzer"]
        traces = calls[id(work)]  # the model runs once per trace (one, shared; two: flops, then activations)
        if traced_once["traces"] == 1:
            notes.append(ONE_TRACE_NOTE)

        # the table and the architecture are formatted from these, cached from the call's traces
        flop_by_module, act_by_module = flops.by_module(), acts.by_module()
        params = complexity_analysis.parameter_count(work)
        layers = jit_analysis_rows(work, prefix, flop_by_module, act_by_module, params, flops.unsupported_ops,
                                   calls, traces)
        headline, units = jit_analysis_headline(result["flops"], result["activations"], result["params"],
                                                flops.unsupported_ops(), acts.unsupported_ops())
        notes[:0] = [
            f"{_CALL}(model, inputs=...) with the same inputs as every tool (its documented input_shape=(3, 224, 224) "
            "builds torch.randn(1, 3, 224, 224): the same shapes, so the same counts)",
            f"run on a deepcopy in the model's {'training' if work.training else 'eval'} mode: mmengine never calls "
            "eval(), and in training mode each of its traces updates BatchNorm running statistics",
            "per-module rows from the FlopAnalyzer / ActivationAnalyzer objects the call built (the numbers behind "
            "out_table and out_arch); temporary forward hooks on the copy count each module's calls",
        ]
        if prefix:
            notes.append(FLAT_IO_NOTE)
        return self.ok(
                        headline=headline,
            units=units,
            layers=tuple(layers),
            unattributed=unattributed(layers, headline["flops"]),
            warnings=tuple(warnings),
            notes=tuple(notes),
        )
