"""A tool the runner tries on meta first (``Adapter.shapes_device``, ``worker._on_shapes``) makes
there the run it makes on CPU, field for field (numbers, per-layer rows, warnings, notes; only the
seconds differ), on every zoo sample: the proof is in the zoo files, which compare their own
records (made on meta wherever the model runs there) with the tool's run on CPU
(``tests/meta_proof.py``, from ``tests/test_zoo_tools.py``: torchvision's CI models, and
``tests/test_zoo_realworld.py``: the timm and transformers samples). Here: the runner does build
and count on meta first once another tool of the model's group ran the model on CPU to its end
(never alone: meta knows no memory and no values, ``tests/test_memory.py``), keeps that run only
where the tool's path through the model (``Adapter.path``: pthflops' fx graph) is the same on the
CPU build (a forward may branch on where its weights are), and a model it cannot run on meta is
counted on CPU with nothing said.

Found by measuring (2026-12-04), not assumed: thop and ultralytics-thop also gave equal runs on the
five models tried, but the fault tests use thop as the tool that meets a fault on real tensors, and
an input too large for CPU memory would count on meta where thop itself fails. Tried again with the
rule above (2026-12-07; equal on 356 of 356 runs of 178 timm models and on the zoo samples), a
forward that differs on real tensors still defeats it: thop's hooks see the eager forward, and a
model that branches on its input's device (``tests.fault_models:changes_global_torch_state``)
gives thop 3,888 MACs on meta against 27 on CPU (``tests/test_model_group.py``), while pthflops'
fx trace cannot branch on a traced value and fails on both; it can branch on a real tensor
(``BranchesOnWeights`` below), which is why its meta run is kept only where the graph is the
same. torchscan's module
view and operator view differ on meta for models with SDPA (the aten op meta dispatches is
``_scaled_dot_product_attention_math``'s decomposition, not ``_scaled_dot_product_flash_attention_for_cpu``:
vit_tiny_patch16_224's operator total 2,507,366,400 on meta against 2,149,702,656 on CPU).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace

import pytest
import torch
from torch import nn

from reconcile.runner import Job, build_model, run_jobs
from tests.meta_proof import SHAPES_TOOLS


def test_the_tools_tried_on_meta_are_the_ones_the_zoo_files_prove():
    # tests/meta_proof.py covers these; a tool given a shapes_device is proven there on every sample
    assert SHAPES_TOOLS == ("pthflops",)


BUILDS = os.path.join(tempfile.gettempdir(), "reconcile-shapes-builds")
RAN = os.path.join(tempfile.gettempdir(), "reconcile-shapes-ran")


def logged_build(name: str, device: str):
    """``build_model``, each device it builds on appended to ``BUILDS`` (the workers share the
    temporary folder of the process that started them), and each device its first module with
    no children is run on (a forward hook, kept by a tool's deepcopy) appended to ``RAN``."""
    with open(BUILDS, "a") as f:
        f.write(device + "\n")
    model = build_model(name, device)
    first = next(m for m in model.modules() if not list(m.children()))
    first.register_forward_hook(_log_run)
    return model


def _log_run(module, args, output) -> None:
    with open(RAN, "a") as f:
        f.write(output.device.type + "\n")


def _devices_built(*jobs: Job, share: bool = False):
    """The runs of ``jobs`` on one worker (in one group with ``share``), the devices their
    models were built on and the devices they were run on, in order."""
    try:
        runs = run_jobs(list(jobs), workers=1, share=share, build=f"{__name__}:logged_build")
        with open(BUILDS) as f:
            built = f.read().split()
        with open(RAN) as f:
            return runs, built, f.read().split()
    finally:
        for path in (BUILDS, RAN):
            if os.path.exists(path):
                os.remove(path)


@pytest.mark.parametrize("tool", SHAPES_TOOLS)
def test_after_a_tool_ran_the_model_on_cpu_it_is_counted_on_meta(tool):
    # squeezenet1_1 at 1x3x224x224, in one group with thop: the group builds it on CPU for thop,
    # whose run ends ok, then on meta for the tool (run after thop, though it costs more), which
    # counts there without touching the CPU build (so the proof of tests/meta_proof.py compares a
    # meta run, not a CPU run with itself) and reports the run it makes on CPU
    shape = (1, 3, 224, 224)
    (thop, run), devices, ran = _devices_built(Job("squeezenet1_1", "thop", input_shape=shape),
                                               Job("squeezenet1_1", tool, input_shape=shape), share=True)
    assert thop.status == "ok" and run.status == "ok" and devices == ["cpu", "meta"]
    # thop's forward on CPU, then the tool's on meta alone: its path (the fx graph) is the same on
    # the CPU build, so its meta run is kept
    assert ran == ["cpu", "meta"]
    (on_cpu,) = run_jobs([Job("squeezenet1_1", tool, input_shape=shape, device="cpu")], workers=1)
    assert replace(run, seconds=0.0) == replace(on_cpu, seconds=0.0)


@pytest.mark.parametrize("tool", SHAPES_TOOLS)
def test_alone_it_is_counted_on_cpu_where_its_users_run_it(tool):
    # no other tool ran the model for real, so meta, which knows no memory and no values, cannot
    # stand for the CPU run (tests/test_memory.py: a model too large for the share fails there)
    (run,), devices, _ = _devices_built(Job("squeezenet1_1", tool, input_shape=(1, 3, 224, 224)))
    assert run.status == "ok" and devices == ["cpu"]


class _Conv(nn.Module):
    """conv 3->4 k3 (no bias) on 1x3x8x8: 4 x 6 x 6 = 144 outputs, 144 x 3 x 9 = 3,888 MACs,
    which pthflops counts as its FLOPs; each subclass adds a step after it."""

    example_input_shape = (1, 3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)


class ReadsValues(_Conv):
    """then ``torch.nonzero`` of its output, which meta cannot compute (the count of nonzero
    values is data) but fx traces as one call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        torch.nonzero(y)
        return y


class BranchesOnWeights(_Conv):
    """then ``y + y`` only where its weights are not on meta: a forward that runs on meta and on
    CPU alike, but not the same forward. fx traces the branch at once (a parameter reached
    through ``parameters()`` is a real tensor, not a traced value)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if next(self.parameters()).device.type != "meta":
            y = y + y
        return y


def reads_values() -> nn.Module:
    return ReadsValues()


def branches_on_weights() -> nn.Module:
    return BranchesOnWeights()


for _factory in (reads_values, branches_on_weights):
    _factory.example_input_shape = _Conv.example_input_shape  # type: ignore[attr-defined]


def _pthflops_three_ways(factory: str):
    """pthflops on the model ``factory`` makes: alone on meta, alone on CPU, and in a group after
    thop (which runs it on CPU to its end), with the devices that group built and ran it on."""
    name, shape = f"{__name__}:{factory}", _Conv.example_input_shape
    meta, cpu = run_jobs([Job(name, "pthflops", input_shape=shape, device="meta"),
                          Job(name, "pthflops", input_shape=shape, device="cpu")], workers=2)
    (thop, chosen), built, ran = _devices_built(Job(name, "thop", input_shape=shape),
                                                Job(name, "pthflops", input_shape=shape), share=True)
    assert thop.status == "ok" and built == ["cpu", "meta"]
    return meta, cpu, chosen, ran


def test_a_model_meta_cannot_run_is_counted_on_cpu_with_nothing_said():
    meta, cpu, chosen, ran = _pthflops_three_ways("reads_values")
    assert meta.status == "failed" and cpu.status == "ok"
    # in the group: tried on meta first (the conv ran there, then nonzero failed), then counted
    # on the CPU build thop had; the conv's 3,888, nonzero has no rule (0)
    assert cpu.headline == {"flops": 3888} and ran == ["cpu", "meta", "cpu"]
    assert replace(chosen, seconds=0.0) == replace(cpu, seconds=0.0)


def test_a_model_that_takes_another_path_on_meta_is_counted_on_cpu():
    meta, cpu, chosen, ran = _pthflops_three_ways("branches_on_weights")
    # the conv's 3,888; on CPU its add too: output numel 144 x 2 arguments = 288 (pthflops counts
    # an add as numel times its arguments): 4,176
    assert (meta.headline, cpu.headline) == ({"flops": 3888}, {"flops": 3888 + 144 * 2})
    # in the group its run on meta is ok, but the graph it traces there is not the one the CPU
    # build gives: counted on CPU
    assert ran == ["cpu", "meta", "cpu"]
    assert replace(chosen, seconds=0.0) == replace(cpu, seconds=0.0)
