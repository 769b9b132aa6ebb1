"""A tool the runner tries on meta first (``Adapter.shapes_device``, ``worker._on_shapes``) makes
there the run it makes on CPU, field for field (numbers, per-layer rows, warnings, notes; only the
seconds differ), on every zoo sample: torchvision's CI models, the timm sample and the transformers
sample. A model it cannot run on meta is counted on CPU by the runner, so only the models where the
meta run is ``ok`` are compared, and the CPU run must then be ``ok`` too (a meta run that succeeds
where the CPU run fails would change the tool's result).

Found by measuring (2026-12-04), not assumed: thop and ultralytics-thop also gave equal runs on the
five models tried, but the fault tests use thop as the tool that meets a fault on real tensors, and
an input too large for CPU memory would count on meta where thop itself fails; torchscan's module
view and operator view differ on meta for models with SDPA (the aten op meta dispatches is
``_scaled_dot_product_attention_math``'s decomposition, not ``_scaled_dot_product_flash_attention_for_cpu``:
vit_tiny_patch16_224's operator total 2,507,366,400 on meta against 2,149,702,656 on CPU).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from reconcile import models, tools, zoo
from reconcile.runner import Job, run_jobs
from reconcile.worker import _resolve

SHAPES_TOOLS = tuple(name for name, t in tools.all_tools().items() if getattr(_resolve(t.adapter), "shapes_device", None))


def test_the_tools_tried_on_meta_are_the_ones_this_file_proves():
    # the proof below covers these; a tool given a shapes_device must be added here and proven
    assert SHAPES_TOOLS == ("pthflops",)


SAMPLES = {"torchvision": zoo.ZOO_CI, "timm": zoo.TIMM_SAMPLE, "transformers": zoo.TRANSFORMERS_SAMPLE}


@pytest.mark.parametrize("source", list(SAMPLES))
def test_a_run_on_meta_is_the_run_on_cpu(source):
    jobs = []
    for name in SAMPLES[source]:
        spec = models.resolve(name)
        inputs = tuple(models.default_inputs(spec))
        jobs += [Job(name, tool, inputs=inputs, device=device) for tool in SHAPES_TOOLS for device in ("cpu", "meta")]
    runs = run_jobs(jobs, workers=2, timeout=600)
    compared, differ = 0, []
    for job, cpu, meta in zip(jobs[::2], runs[::2], runs[1::2]):
        if meta.status != "ok":
            continue  # counted on CPU by the runner: nothing to prove
        compared += 1
        if replace(cpu, seconds=0.0) != replace(meta, seconds=0.0):
            differ.append(f"{job.tool} on {job.model}: cpu {cpu.status} {cpu.headline} / meta {meta.headline}")
    assert not differ, "\n".join(differ)
    print(f"{source}: {compared} of {len(jobs) // 2} runs on meta compared equal")
    # the proof is not empty: meta runs on some of the sample, or the tool runs on none of it at all
    # (pthflops takes one input tensor: none of the transformers sample)
    assert compared > 0 or all(r.status != "ok" for r in runs[::2])


class ReadsValues(nn.Module):
    """conv 3->4 k3 on 8x8, then ``torch.nonzero`` of its output, which meta cannot compute (the
    count of nonzero values is data) but fx traces as one call."""

    example_input_shape = (1, 3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        torch.nonzero(y)
        return y


def reads_values() -> nn.Module:
    return ReadsValues()


reads_values.example_input_shape = ReadsValues.example_input_shape  # type: ignore[attr-defined]


def test_a_model_meta_cannot_run_is_counted_on_cpu_with_nothing_said():
    name = f"{__name__}:reads_values"
    shape = ReadsValues.example_input_shape
    meta, cpu, chosen = run_jobs([Job(name, "pthflops", input_shape=shape, device="meta"),
                                  Job(name, "pthflops", input_shape=shape, device="cpu"),
                                  Job(name, "pthflops", input_shape=shape)], workers=2)
    assert meta.status == "failed" and cpu.status == "ok"
    # pthflops' conv: 4 x 6 x 6 outputs x 3 x 9 = 3,888 (no bias); nonzero has no rule (0)
    assert cpu.headline == {"flops": 3888}
    assert replace(chosen, seconds=0.0) == replace(cpu, seconds=0.0)
