"""torchprofile 0.1.0: its adapter against the real tool, and its convention on hand-counted models
and torchvision models (zero residual).

torchprofile counts MACs over a jit trace: conv / linear / matmul / SDPA as their MACs, an affine
norm 1 per element, mean and average pools 1 per output element, ``mul`` 1 per output element
(a size multiply on 0-dim tensors: 1), the rest 0. The rows are each module's own traced nodes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from reconcile import models
from reconcile.counter import count
from tests.harness import adapter, assert_explained, explain


def _run(model: nn.Module, inputs: tuple, traced: bool = True):
    """The real tool on ``model`` and its explanation (the native count with reconcile's own trace
    when ``traced``, as the pipeline gives it: ``Tool.traced``)."""
    run = adapter("torchprofile").run(model, inputs)
    assert run.status == "ok", f"{run.error_type}: {run.error_message}"
    native = count(model, inputs)
    if traced:
        trace = adapter("native-trace").run(model, inputs)
        native = replace(native, traced=trace.detail)
    return run, explain("torchprofile", run, native)


def _rows(run) -> dict[str, int]:
    return {layer.module: layer.raw["macs"] for layer in run.layers}


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


class Tokens(nn.Module):
    """LayerNorm with and without a weight, a multiply and a Linear on 1x5x6 tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(6)
        self.plain = nn.LayerNorm(6, elementwise_affine=False)
        self.proj = nn.Linear(6, 3)

    def forward(self, x):
        return self.proj(self.plain(self.ln(x)) * 2)


class Dead(nn.Module):
    """``b``'s result is unused: the trace drops it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        self.b(x)
        return self.a(x)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class Resample(nn.Module):
    def forward(self, x):
        y = nn.functional.leaky_relu(x)
        return nn.functional.interpolate(y, scale_factor=2, mode="bilinear") + nn.functional.avg_pool2d(
            nn.functional.interpolate(y, scale_factor=4, mode="bilinear"), 2)


class WithNone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x, skip=None, mask=None):
        return self.fc(x * mask)


def test_conv_net_by_hand():
    # 1x3x8x8: conv 4*8*8 outputs * 3*9 = 6,912 MACs (bias not counted); BatchNorm (affine) 1 per
    # element: 4*8*8 = 256; ReLU 0; 1x1 adaptive pool 1 per output element: 4; fc 4*2 = 8.
    # Total 6,912 + 256 + 4 + 8 = 7,180; native MACs 6,912 + 8 = 6,920.
    run, ex = _run(ConvNet().eval(), (torch.randn(1, 3, 8, 8),))
    assert run.headline == {"macs": 7180}
    assert _rows(run) == {"": 0, "conv": 6912, "bn": 256, "relu": 0, "pool": 4, "fc": 8}
    assert ex.causes == {"norm": 256, "pool": 4}
    assert_explained(ex)


@pytest.mark.parametrize("cin, cout, groups, tp, exact", [
    # 1xCinx3x3 -> 1xCoutx6x6 (k2, stride 2). Native: 9 input positions x Cin x Cout/g x 4 taps.
    # torchprofile: output elements x (Cin, or Cout/g when Cout == Cin) x 4
    (4, 8, 1, 288 * 4 * 4, 36 * 8 * 4),  # 4,608 against 1,152 (lowformer's upsampling: 4x)
    (4, 4, 1, 144 * 4 * 4, 36 * 4 * 4),  # 2,304 against 576
    (4, 4, 2, 144 * 2 * 4, 36 * 2 * 4),  # 1,152 against 288
])
def test_transposed_conv_by_hand(cin, cout, groups, tp, exact):
    model = nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2, groups=groups, bias=False)).eval()
    run, ex = _run(model, (torch.randn(1, cin, 3, 3),))
    assert run.headline == {"macs": tp}
    assert ex.causes == {"formula": tp - exact}
    assert_explained(ex)


def test_norms_and_multiply_by_hand():
    # 1x5x6: ln (weight) 1 per element 30; plain (no weight) 0; x * 2 1 per output element 30
    # (in the root's forward); proj 5 tokens * 6 * 3 = 90. Total 150; native MACs 90.
    run, ex = _run(Tokens().eval(), (torch.randn(1, 5, 6),))
    assert _rows(run) == {"": 30, "ln": 30, "plain": 0, "proj": 90}
    assert ex.causes == {"norm": 30, "elementwise": 30}
    assert_explained(ex)


class StdConv(nn.Conv2d):
    """timm's StdConv2d: the weight standardised by ``F.batch_norm`` without a weight, in the
    conv's own forward; and a second standardisation with a weight (nfnet's ScaledStdConv2d)."""

    def __init__(self, gain: bool) -> None:
        super().__init__(3, 4, 3, padding=1, bias=False)
        self.gain = nn.Parameter(torch.ones(4)) if gain else None

    def forward(self, x):
        w = nn.functional.batch_norm(self.weight.reshape(1, 4, -1), None, None, weight=self.gain,
                                     training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return nn.functional.conv2d(x, w, None, 1, 1)


@pytest.mark.parametrize("gain, norm", [(False, 0), (True, 108)])
def test_standardised_conv_weight_by_hand(gain, norm):
    # 1x3x8x8: conv 4*8*8 outputs * 3*9 = 6,912 MACs. The weight 4x3x3x3 = 108 elements goes
    # through F.batch_norm: torchprofile counts it 1 per element only when a weight is passed
    # (timm's StdConv2d passes none: 0; a gain: 108), whatever the conv module's own weight.
    run, ex = _run(nn.Sequential(StdConv(gain)).eval(), (torch.randn(1, 3, 8, 8),))
    assert run.headline == {"macs": 6912 + norm}
    assert ex.causes == ({"norm": norm} if norm else {})
    assert_explained(ex)


class RmsTokens(nn.Module):
    """F.rms_norm with and without a weight (timm's RmsNorm), torch's nn.RMSNorm, then the same
    arithmetic by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(6))
        self.rms = nn.RMSNorm(6)

    def forward(self, x):
        a = nn.functional.rms_norm(x, (6,), self.weight)
        b = nn.functional.rms_norm(x, [6])
        by_hand = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return a + b + by_hand + self.rms(x)


def test_rms_norm_is_one_traced_node_by_hand():
    # 1x5x6 = 30 elements. Each F.rms_norm is one traced aten::rms_norm node, no handler: 0, though
    # eager CPU ran a mean (5 outputs) and 2 + 1 multiplies (90 elements) for the two calls, and
    # for nn.RMSNorm's (a mean and 2 multiplies, 60 elements). The same arithmetic by hand is
    # traced op by op: mean 1 per output element, 5; the multiply 30. Total 35; native MACs 0.
    run, ex = _run(RmsTokens().eval(), (torch.randn(1, 5, 6),))
    assert run.headline == {"macs": 35}
    assert ex.causes == {"formula": 5, "elementwise": 30}
    assert_explained(ex)


def test_dead_module_by_hand():
    # a: 2 rows * 4 * 4 = 32 MACs; b's 32 are not in the trace (nothing returned uses them).
    run, ex = _run(Dead().eval(), (torch.randn(2, 4),))
    assert run.headline == {"macs": 32}
    assert _rows(run)["b"] == 0
    assert ex.causes == {"dead_code": -32}
    assert_explained(ex)


@pytest.mark.parametrize("traced", [True, False])
def test_attention_size_multiplies(traced):
    # 1x4x8, 2 heads of 4: packed in-projection 4*8*24 = 768; SDPA QK 2*4*4*4 = 128 and AV 128;
    # out-projection 4*8*8 = 256: 1,280 MACs. F.multi_head_attention_forward's size arithmetic
    # (bsz * num_heads twice, tgt_len * bsz, head_dim's product) is traced as 4 aten::mul on 0-dim
    # tensors: 1 MAC each. The q / k scaling inside SDPA is one traced op: no mul. Total 1,284.
    # Without the trace record the 4 are MultiheadAttention's modelled size multiplies.
    run, ex = _run(Attention().eval(), (torch.randn(1, 4, 8),), traced=traced)
    assert run.headline == {"macs": 1284}
    assert ex.causes == {"trace_size_arithmetic": 4}
    assert_explained(ex)


def test_leaky_relu_interpolate_avg_pool_by_hand():
    # 1x2x4x4 = 32 elements: leaky_relu 1 per element 32; bilinear x2 to 1x2x8x8 = 128 outputs * 4
    # = 512; bilinear x4 to 1x2x16x16 = 512 outputs * 4 = 2,048; avg_pool2d(2) to 1x2x8x8: 128
    # outputs, 1 each; the add 0. Total 32 + 512 + 2,048 + 128 = 2,720; native MACs 0.
    run, ex = _run(Resample().eval(), (torch.randn(1, 2, 4, 4),))
    assert run.headline == {"macs": 2720}
    assert ex.causes == {"activation": 32, "interpolate": 2560, "pool": 128}
    assert_explained(ex)


def test_none_input_through_the_wrapper():
    # x * mask on 1x4: 4; fc 4 * 2 = 8. Total 12. profile_macs takes positional tensors only: the
    # None between them is put back by the wrapper.
    model = WithNone().eval()
    inputs = (torch.randn(1, 4), None, torch.ones(1, 4))
    run, ex = _run(model, inputs)
    assert run.headline == {"macs": 12}
    assert _rows(run) == {"": 4, "fc": 8}
    assert_explained(ex)


def test_adapter_leaves_the_model_as_it_was():
    model = ConvNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter("torchprofile").run(model, (torch.randn(1, 3, 8, 8),))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_tool_failure_is_a_recorded_run():
    class Raises(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    run = adapter("torchprofile").run(Raises(), (torch.randn(2),))
    assert run.status == "failed" and run.error_type == "RuntimeError" and "boom" in run.error_message


@pytest.fixture(scope="module")
def resnet18_run():
    model = models.build(models.resolve("resnet18"), device="cpu")
    return _run(model, (torch.zeros(1, 3, 224, 224),))


def test_resnet18_total_and_zero_residual(resnet18_run):
    # Native 1,814,073,344 MACs; 20 affine BatchNorms 1 per element: 802,816 (bn1, 64*112*112)
    # + 4 * 200,704 (layer1) + 5 * 100,352 + 5 * 50,176 + 5 * 25,088 = 2,483,712; the 1x1 average
    # pool 512 outputs: 512. 1,814,073,344 + 2,483,712 + 512 = 1,816,557,568 (issue 20's figure).
    run, ex = resnet18_run
    assert run.headline == {"macs": 1816557568}
    assert sum(_rows(run).values()) == 1816557568
    assert ex.causes == {"norm": 2483712, "pool": 512}
    assert_explained(ex)
