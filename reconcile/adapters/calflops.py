"""Adapter for calflops 0.3.2: ``calflops.calculate_flops`` as its users call it (``args`` the
model's inputs, ``forward_mode='forward'``, no warm-up), with ``print_results=False`` and
``output_as_string=False`` so that the numbers come back exact.

Rows: every module of ``named_modules()`` (root ``""``), each holding what calflops stores on it:
``__macs__`` and ``__flops__``, the module's *own* work (patched functionals and tensor methods
called while it was the innermost hooked module, summed over its calls), and ``__params__``,
the ``requires_grad`` parameters of ``module.parameters()`` (its whole subtree). Totals are summed
recursively over ``children()`` (a module reached by two paths counts twice there). The
attributes are read just before ``end_flops_calculate`` deletes them.

calflops patches ``torch.nn.functional`` and ``torch``/``Tensor`` methods and leaves them patched
when the model raises: like every job, this runs in a throwaway worker process, on a deep copy.
NEVER install calflops2 beside it: it installs the same ``calflops`` package.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from reconcile.adapters.base import Adapter, capture_output, counting_calls, exact_number, module_names
from reconcile.records import Number, ToolLayer, ToolRun


class CalflopsAdapter(Adapter):
    name = "calflops"
    distribution = "calflops"

    def attempted(self) -> str:
        return ("calflops.calculate_flops(deepcopy(model), args=list(inputs), forward_mode='forward', "
                "print_results=False, output_as_string=False)")

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        work = copy.deepcopy(model)  # calflops calls eval() and leaves attributes when the model raises
        args, kwargs, input_notes = _arguments(work, inputs)
        names = module_names(work)
        snap: dict[int, tuple[int, int, int]] = {}
        with capture_output() as cap:
            from calflops import calculate_flops
            from calflops.calculate_pipline import CalFlopsPipline

            original_end = CalFlopsPipline.end_flops_calculate

            def end_flops_calculate(pipe: Any) -> None:
                for m in pipe.model.modules():
                    if hasattr(m, "__flops__"):
                        snap[id(m)] = (m.__macs__, m.__flops__, m.__params__)
                original_end(pipe)

            CalFlopsPipline.end_flops_calculate = end_flops_calculate
            try:
                with counting_calls(work) as calls:
                    flops, macs, params = calculate_flops(
                        work, args=args, kwargs=kwargs, forward_mode="forward", print_results=False,
                        output_as_string=False)
            finally:
                CalFlopsPipline.end_flops_calculate = original_end
        layers = []
        for mod in work.modules():
            m_macs, m_flops, m_params = snap[id(mod)]
            raw: dict[str, Number] = {"macs": exact_number(m_macs), "flops": exact_number(m_flops),
                                      "params": int(m_params)}
            layers.append(ToolLayer(module=names[id(mod)], type=type(mod).__name__, calls=calls[id(mod)], raw=raw,
                                    key=names[id(mod)]))
        notes = (
            "run on a deepcopy: calculate_flops calls eval() and, if the model raises, leaves its hooks and "
            "attributes on the model and its patches on torch.nn.functional and tensor methods (the job's worker "
            "process is thrown away)",
            "print_results=False and output_as_string=False: the exact numbers, not the printed strings",
            "per-module __macs__/__flops__/__params__ read just before end_flops_calculate deletes them",
            *input_notes,
        )
        return ToolRun(
            tool=self.name,
            version=self.version(),
            status="ok",
            headline={"macs": exact_number(macs), "flops": exact_number(flops), "params": int(params)},
            units={"macs": "MACs", "flops": "FLOPs", "params": "params"},
            layers=tuple(layers),
            warnings=tuple([*cap.warnings, *(ln.strip() for ln in (cap.stdout + cap.stderr).splitlines() if ln.strip())]),
            notes=notes,
        )


def _arguments(model: Any, inputs: tuple[Any, ...]) -> tuple[list[Any], dict[str, Any], tuple[str, ...]]:
    """calflops calls ``.to(device)`` on every positional input, so a ``None`` between them (a
    transformers model's unused ``past_key_values``) breaks it: then the inputs go in as keywords
    of ``forward``, the ``None`` ones left out, as calflops' README passes a transformers batch."""
    if all(a is not None for a in inputs):
        return list(inputs), {}, ()
    bound = inspect.signature(model.forward).bind(*inputs)
    kwargs = {k: v for k, v in bound.arguments.items() if v is not None}
    return [], kwargs, (f"inputs passed as keywords {sorted(kwargs)} (calflops calls .to() on each positional "
                        "input, and one of them is None)",)
