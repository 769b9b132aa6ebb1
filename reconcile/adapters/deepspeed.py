"""Adapter for DeepSpeed's flops profiler (``deepspeed==0.19.8``, installed with ``DS_BUILD_OPS=0``):
``deepspeed.profiling.flops_profiler.get_model_profile`` as its users call it (``args`` the model's
inputs, its default ``warm_up=1`` forward before the profiled one, ``mode='forward'``), with
``print_profile=False`` and ``as_string=False`` so that the numbers come back exact.

Rows: every module of ``named_modules()`` (root ``""``), each holding what DeepSpeed stores on it:
``__macs__`` and ``__flops__``, the module's *own* work (the patched functionals and tensor
methods called while it was the innermost hooked module, summed over its calls), and
``__params__``, ``sum(p.numel() for p in module.parameters())`` (its whole subtree). The totals
are ``sum over model.modules()`` (a module registered twice once). The per-module attributes are
read just before ``end_profile`` deletes them.

DeepSpeed patches ``torch.nn.functional``, ``torch``/``Tensor`` methods and ``einops.einsum`` for
the profiled forward and leaves them patched if the model raises: like every job, this runs in a
throwaway worker process (``reconcile.runner``), on a deep copy of the model.
"""

from __future__ import annotations

import copy
from typing import Any

from reconcile.adapters.base import Adapter, capture_output, profiled, profiled_run
from reconcile.records import ToolRun


class DeepspeedAdapter(Adapter):
    name = "deepspeed"
    distribution = "deepspeed"

    def attempted(self) -> str:
        return ("deepspeed.profiling.flops_profiler.get_model_profile(deepcopy(model), args=list(inputs), "
                "print_profile=False, as_string=False)")

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        work = copy.deepcopy(model)  # the profiler calls eval() and leaves attributes when it raises
        with capture_output(loggers=("DeepSpeed",)) as cap:
            from deepspeed.profiling.flops_profiler import profiler

            with profiled(work, profiler.FlopsProfiler, "end_profile") as (snap, calls):
                totals = profiler.get_model_profile(work, args=list(inputs), print_profile=False, as_string=False)
        warm_up = 1  # get_model_profile's default: one forward before the profiled one
        notes = (
            "run on a deepcopy: get_model_profile calls eval() and, if the model raises, leaves its hooks and "
            "attributes on the model and its patches on torch.nn.functional and tensor methods (the job's worker "
            "process is thrown away)",
            "print_profile=False and as_string=False: the exact numbers, not the printed strings",
            "per-module __macs__/__flops__/__params__ read just before end_profile deletes them",
            "calls: forward calls counted over the warm-up and the profiled forward, halved",
        )
        return profiled_run(self, work, snap, calls, warm_up + 1, totals, cap, notes)
