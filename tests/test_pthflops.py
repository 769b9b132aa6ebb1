"""pthflops 0.4.2 (fx mode): its adapter against the real tool (``count_ops``), its convention on
hand-counted models and on resnet18 (zero residual).

pthflops labels everything FLOPs: conv and linear as MACs plus bias (Linear's bias once per call),
ReLU and BatchNorm 2 per element, pools per output element, ``add`` / ``mul`` functions
``numel x 2``, ``matmul`` its MACs; other leaves, methods and functions 0.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reconcile import models
from reconcile.counter import count
from tests.harness import adapter, assert_explained, explain


def _run(model: nn.Module, inputs: tuple):
    run = adapter("pthflops").run(model, inputs)
    assert run.status == "ok", f"{run.error_type}: {run.error_message}"
    return run, explain("pthflops", run, count(model, inputs))


def _causes(ex) -> dict[str, int]:
    return {k: v for k, v in ex.causes.items() if v}


def _rows(run) -> dict[str, int]:
    return {layer.module: layer.raw["flops"] for layer in run.layers if layer.raw["flops"]}


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        y = y + y
        return self.fc(torch.flatten(self.gap(self.pool(y)), 1))


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(6)
        self.act = nn.GELU()
        self.proj = nn.Linear(6, 3)

    def forward(self, x):
        x = self.act(self.ln(x))
        return torch.cat([self.proj(x), x @ x.transpose(-1, -2)], -1)


def test_small_by_hand():
    # 1x3x8x8. conv 9 * 3 * 4 * 64 positions = 6,912 + bias 4 * 64 = 256 -> 7,168; bn 2 * 256 = 512;
    # relu 2 * 256 = 512; y + y in the root: 256 * 2 args = 512; MaxPool2d(2) to 4x4: 64 outputs
    # * (4 - 1) = 192; gap 4x4 -> 1x1: 16 * 4 outputs = 64; torch.flatten 0; fc 4 * 2 = 8 + bias
    # once 2 = 10. Total 7,168 + 512 + 512 + 512 + 192 + 64 + 10 = 8,970.
    run, ex = _run(Small().eval(), (torch.randn(1, 3, 8, 8),))
    assert run.headline == {"flops": 8970}
    assert _rows(run) == {"": 512, "conv": 7168, "bn": 512, "relu": 512, "pool": 192, "gap": 64, "fc": 10}
    assert _causes(ex) == {"bias": 258, "norm": 512, "activation": 512, "elementwise": 512, "pool": 256}
    assert_explained(ex)


def test_tokens_by_hand():
    # 1x5x6. LayerNorm and GELU: fx leaves without a rule, 0 (native MACs 0 too); proj 5 * 6 * 3
    # = 90 + bias once 3 = 93 (not 5 * 3 = 15: once per call, not per token); x @ x^T:
    # 30 elements * 5 = 150 (the MACs 5 * 6 * 5); torch.cat 0. Total 243.
    run, ex = _run(Tokens().eval(), (torch.randn(1, 5, 6),))
    assert run.headline == {"flops": 243}
    assert _rows(run) == {"": 150, "proj": 93}
    assert _causes(ex) == {"bias": 3}
    assert_explained(ex)


class RmsThenAdd(nn.Module):
    """timm's RmsNorm (F.rms_norm in its own forward), then an in-place add of two tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(6))

    def forward(self, x):
        y = nn.functional.rms_norm(x, (6,), self.weight)
        y += x
        return y


def test_rms_norm_is_one_fx_node_by_hand():
    # 1x5x6 = 30 elements. F.rms_norm is one call_function node, no rule: 0, though eager CPU ran
    # its add of eps in place (5 elements, one per row) among its decomposition; y += x is an add
    # node: 30 x 2 args = 60. Total 60; native MACs 0.
    run, ex = _run(RmsThenAdd().eval(), (torch.randn(1, 5, 6),))
    assert run.headline == {"flops": 60}
    assert _causes(ex) == {"elementwise": 60}
    assert_explained(ex)


def test_a_tuple_output_is_a_recorded_failure():
    # pthflops' interpreter reads any tuple a node returns as (value, flops, params): a model
    # returning a pair fails in the output node (IndexError), a run recorded as failed
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    run = adapter("pthflops").run(Pair(), (torch.randn(2),))
    assert run.status == "failed" and run.error_type == "IndexError"


def test_a_size_call_is_a_recorded_failure_that_says_why():
    # torchvision's shufflenet_v2 (channel_shuffle): x.size() is a call_method node whose result,
    # a torch.Size of 4 numbers, pthflops takes for its (value, flops, params) triple and keeps its
    # first number (1); indexing that int then fails
    class Shuffle(nn.Module):
        def forward(self, x):
            b, c, h, w = x.size()
            return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)

    run = adapter("pthflops").run(Shuffle(), (torch.randn(1, 4, 2, 2),))
    assert run.status == "failed" and run.error_type == "TypeError"
    assert run.error_message.startswith("pthflops takes any tuple a traced node returns for its own (output, FLOPs, "
                                        "params): this forward's x.size() returns a torch.Size")


def test_two_inputs_is_a_recorded_failure():
    class Two(nn.Module):
        def forward(self, x, y):
            return x + y

    run = adapter("pthflops").run(Two(), (torch.randn(2), torch.randn(2)))
    assert run.status == "failed" and "one input tensor" in run.error_message


def test_python_int_arithmetic_is_a_recorded_failure():
    class Sizes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            n = x.shape[0] * x.shape[1]  # symbolic_trace: a mul node whose result is an int
            return self.fc(x).reshape(n)

    run = adapter("pthflops").run(Sizes(), (torch.randn(2, 4),))
    assert run.status == "failed" and "Python ints" in run.error_message


def test_adapter_leaves_the_model_as_it_was():
    model = Small().train()
    adapter("pthflops").run(model, (torch.randn(1, 3, 8, 8),))
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture(scope="module")
def resnet18_run():
    model = models.build(models.resolve("resnet18"), device="cpu")
    return _run(model, (torch.zeros(1, 3, 224, 224),))


def test_resnet18_total_and_zero_residual(resnet18_run):
    # Native 1,814,073,344 MACs. BatchNorm 2 * 2,483,712 = 4,967,424. ReLU 2 per element: stem
    # 802,816 + two per block 2 * (2 * 200,704 + 2 * 100,352 + 2 * 50,176 + 2 * 25,088) = 1,505,280,
    # 2,308,096 elements -> 4,616,192. maxpool (9 - 1) * 200,704 = 1,605,632; avgpool 49 * 512 =
    # 25,088 -> pool 1,630,720. The 8 residual += as fx add nodes: 2 * 2 * (200,704 + 100,352 +
    # 50,176 + 25,088) = 1,505,280. fc bias once: 1,000. Sum 1,826,793,960 (issue 20's figure).
    run, ex = resnet18_run
    assert run.headline == {"flops": 1826793960}
    assert _causes(ex) == {"norm": 4967424, "activation": 4616192, "pool": 1630720, "elementwise": 1505280,
                           "bias": 1000}
    assert_explained(ex)


def test_swin_v2_relative_position_bias_counted_outside_the_wrapped_attention():
    # SwinV2's attention calls shifted_window_attention (fx-wrapped: one node, 0 for pthflops) but first
    # computes 16 * torch.sigmoid(bias) in get_relative_position_bias: a mul node, out.numel() x len(args).
    # Stage 1 of swin_v2_t: 3 heads, window 8 x 8 = 64 tokens: bias 1 x 3 x 64 x 64 = 12,288 elements,
    # x 2 = 24,576; stage 3 (6 heads) 49,152, stage 5 (12) 98,304, stage 7 (24) 196,608
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.swin_v2_t().eval()
    run, ex = _run(model, (torch.zeros(1, 3, 256, 256),))
    rows = _rows(run)
    assert (rows["features.1.0.attn"], rows["features.3.0.attn"], rows["features.5.0.attn"],
            rows["features.7.0.attn"]) == (24_576, 49_152, 98_304, 196_608)
    assert_explained(ex)
