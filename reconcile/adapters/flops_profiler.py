"""Adapter for flops-profiler 0.1.2, the standalone copy of DeepSpeed's profiler taken before
DeepSpeed counted ``scaled_dot_product_attention`` and ``@`` (its own rules: see its convention):
``flops_profiler.profiler.get_model_profile`` as its users call it (``args`` the model's inputs,
its default ``warm_up=3`` forwards, ``func_name='forward'``: it calls ``model.forward`` directly, so the
root's hooks never run and its ``calls`` here read 0), with ``print_profile=False`` and
``as_string=False`` (its default).

Rows: every module of ``named_modules()`` (root ``""``): ``__macs__``/``__flops__`` are the
module's own work summed over its calls, ``__params__`` every parameter of its subtree; totals are
summed recursively over ``children()``. Read just before ``end_profile`` deletes them. It patches
``torch.nn.functional`` and tensor methods: a throwaway worker process, on a deep copy.
"""

from __future__ import annotations

import copy
from typing import Any

from reconcile.adapters.base import Adapter, ToolFailure, capture_output, profiled, profiled_run
from reconcile.records import ToolRun

WARM_UP = 3  # get_model_profile's default
SAME_PADDING = ("flops-profiler cannot cost a convolution with padding='same' or 'valid': its conv formula "
                "adds the padding string to the input size")


class FlopsProfilerAdapter(Adapter):
    name = "flops-profiler"
    distribution = "flops-profiler"

    def attempted(self) -> str:
        return "flops_profiler.profiler.get_model_profile(deepcopy(model), args=list(inputs), print_profile=False)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        work = copy.deepcopy(model)
        with capture_output() as cap:
            from flops_profiler import profiler

            with profiled(work, profiler.FlopsProfiler, "end_profile") as (snap, calls):
                try:
                    totals = profiler.get_model_profile(work, args=list(inputs), print_profile=False)
                except TypeError as exc:
                    if "'int' and 'str'" in str(exc):
                        raise ToolFailure(SAME_PADDING, exc) from exc
                    raise
        notes = (
            "run on a deepcopy: get_model_profile calls eval() and leaves hooks, attributes and patched "
            "functionals behind when the model raises (the job's worker process is thrown away)",
            "print_profile=False: the numbers, not the printed table",
            "per-module __macs__/__flops__/__params__ read just before end_profile deletes them",
            f"calls: forward calls counted over the {WARM_UP} warm-up forwards and the profiled one, divided by {WARM_UP + 1}",
        )
        return profiled_run(self, work, snap, calls, WARM_UP + 1, totals, cap, notes)
