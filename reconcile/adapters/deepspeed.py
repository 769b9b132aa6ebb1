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

from reconcile.adapters.base import Adapter, capture_output, counting_calls, exact_number, module_names
from reconcile.records import Number, ToolLayer, ToolRun


class DeepspeedAdapter(Adapter):
    name = "deepspeed"
    distribution = "deepspeed"

    def attempted(self) -> str:
        return ("deepspeed.profiling.flops_profiler.get_model_profile(deepcopy(model), args=list(inputs), "
                "print_profile=False, as_string=False)")

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        work = copy.deepcopy(model)  # the profiler calls eval() and leaves attributes when it raises
        names = module_names(work)
        snap: dict[int, tuple[int, int, int]] = {}
        with capture_output(loggers=("DeepSpeed",)) as cap:
            from deepspeed.profiling.flops_profiler import profiler

            original_end = profiler.FlopsProfiler.end_profile

            def end_profile(prof: Any) -> None:
                for m in prof.model.modules():
                    if hasattr(m, "__flops__"):
                        snap[id(m)] = (m.__macs__, m.__flops__, m.__params__)
                original_end(prof)

            profiler.FlopsProfiler.end_profile = end_profile
            try:
                with counting_calls(work) as calls:
                    flops, macs, params = profiler.get_model_profile(
                        work, args=list(inputs), print_profile=False, as_string=False)
            finally:
                profiler.FlopsProfiler.end_profile = original_end
        warm_up = 1  # get_model_profile's default: one forward before the profiled one
        layers = []
        for mod in work.modules():  # each module object once, as DeepSpeed's totals
            m_macs, m_flops, m_params = snap[id(mod)]
            raw: dict[str, Number] = {"macs": exact_number(m_macs), "flops": exact_number(m_flops),
                                      "params": int(m_params)}
            layers.append(ToolLayer(module=names[id(mod)], type=type(mod).__name__,
                                    calls=calls[id(mod)] // (warm_up + 1), raw=raw, key=names[id(mod)]))
        notes = (
            "run on a deepcopy: get_model_profile calls eval() and, if the model raises, leaves its hooks and "
            "attributes on the model and its patches on torch.nn.functional and tensor methods (the job's worker "
            "process is thrown away)",
            "print_profile=False and as_string=False: the exact numbers, not the printed strings",
            "per-module __macs__/__flops__/__params__ read just before end_profile deletes them",
            "calls: forward calls counted over the warm-up and the profiled forward, halved",
        )
        return ToolRun(
            tool=self.name,
            version=self.version(),
            status="ok",
            headline={"macs": exact_number(macs), "flops": exact_number(flops), "params": int(params)},
            units={"macs": "MACs", "flops": "FLOPs", "params": "params"},
            layers=tuple(layers),
            warnings=tuple([*cap.warnings, *(ln.strip() for ln in (cap.stdout + cap.stderr).splitlines() if ln.strip()),
                            *cap.log]),
            notes=notes,
        )
