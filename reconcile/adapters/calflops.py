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

from reconcile.adapters.base import Adapter, capture_output, profiled, profiled_run
from reconcile.records import ToolRun


class CalflopsAdapter(Adapter):
    name = "calflops"
    distribution = "calflops"

    def attempted(self) -> str:
        return ("calflops.calculate_flops(deepcopy(model), args=list(inputs), forward_mode='forward', "
                "print_results=False, output_as_string=False)")

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        work = copy.deepcopy(model)  # calflops calls eval() and leaves attributes when the model raises
        args, kwargs, input_notes = _arguments(work, inputs)
        with capture_output() as cap:
            from calflops import calculate_flops
            from calflops.calculate_pipline import CalFlopsPipline

            with profiled(work, CalFlopsPipline, "end_flops_calculate") as (snap, calls):
                totals = calculate_flops(work, args=args, kwargs=kwargs, forward_mode="forward", print_results=False,
                                         output_as_string=False)
        notes = (
            "run on a deepcopy: calculate_flops calls eval() and, if the model raises, leaves its hooks and "
            "attributes on the model and its patches on torch.nn.functional and tensor methods (the job's worker "
            "process is thrown away)",
            "print_results=False and output_as_string=False: the exact numbers, not the printed strings",
            "per-module __macs__/__flops__/__params__ read just before end_flops_calculate deletes them",
            *input_notes,
        )
        return profiled_run(self, work, snap, calls, 1, totals, cap, notes)


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
