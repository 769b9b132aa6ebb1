"""The native counter against counts worked out by hand, on the meta device and on CPU.

Every expected number has its arithmetic beside it. Each case runs on both devices and the two
results must be identical (counts depend on shapes only).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reconcile import ReconcileError, count
from reconcile.counter import modules as module_rules

DEVICES = ("meta", "cpu")


class Fn(nn.Module):
    """Wraps a function of the inputs so functional ops run inside a module's own forward."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _case(model: nn.Module, *shapes, dtype=torch.float32):
    return model, shapes, dtype


# name -> (model factory, input shapes, expected components of the whole forward)
CASES = {
    # out 1x8x32x32 = 8192; macs 8192 * 3 * 9 = 221184; bias 8192
    "conv2d_bias": (lambda: nn.Conv2d(3, 8, 3, padding=1), [(1, 3, 32, 32)], {"macs": 221184, "bias": 8192}),
    # out 2x16x16x16 = 8192; Cin/g = 8/4 = 2; macs 8192 * 2 * 9 = 147456
    "conv2d_grouped": (lambda: nn.Conv2d(8, 16, 3, groups=4, padding=1, bias=False), [(2, 8, 16, 16)], {"macs": 147456}),
    # depthwise: out 1x16x8x8 = 1024; Cin/g = 1; macs 1024 * 1 * 9 = 9216; bias 1024
    "conv2d_depthwise": (lambda: nn.Conv2d(16, 16, 3, groups=16, padding=1), [(1, 16, 8, 8)], {"macs": 9216, "bias": 1024}),
    # dilation 2: out side 10 - 2*(3-1) = 6; out 1x4x6x6 = 144; macs 144 * 4 * 9 = 5184; bias 144
    "conv2d_dilated": (lambda: nn.Conv2d(4, 4, 3, dilation=2), [(1, 4, 10, 10)], {"macs": 5184, "bias": 144}),
    # transposed: N_in = 16*8*8 = 1024; macs 1024 * (Cout/g = 16) * 9 = 147456;
    # out side (8-1)*2 + 3 = 17; bias 16 * 17 * 17 = 4624
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(16, 16, 3, stride=2), [(1, 16, 8, 8)], {"macs": 147456, "bias": 4624}),
    # grouped transposed: N_in = 8*5*5 = 200; weight (8, 6/2=3, 2, 2); macs 200 * 3 * 4 = 2400
    "conv_transpose2d_grouped": (lambda: nn.ConvTranspose2d(8, 6, 2, groups=2, bias=False), [(1, 8, 5, 5)], {"macs": 2400}),
    # out length 20 - 5 + 1 = 16; out 2x8x16 = 256; macs 256 * 4 * 5 = 5120
    "conv1d": (lambda: nn.Conv1d(4, 8, 5, bias=False), [(2, 4, 20)], {"macs": 5120}),
    # out 1x4x4x4x4 = 256; macs 256 * 2 * 27 = 13824; bias 256
    "conv3d": (lambda: nn.Conv3d(2, 4, 3, padding=1), [(1, 2, 4, 4, 4)], {"macs": 13824, "bias": 256}),
    # transposed 1d: N_in = 4*6 = 24; macs 24 * 2 * 3 = 144; out length (6-1)+3 = 8 -> bias 2*8 = 16
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(4, 2, 3), [(1, 4, 6)], {"macs": 144, "bias": 16}),
    # 2-D input: macs 4 * 64 * 32 = 8192; bias 4 * 32 = 128
    "linear_2d": (lambda: nn.Linear(64, 32), [(4, 64)], {"macs": 8192, "bias": 128}),
    # 3-D input: macs 1 * 10 * 64 * 32 = 20480; bias 10 * 32 = 320
    "linear_3d": (lambda: nn.Linear(64, 32), [(1, 10, 64)], {"macs": 20480, "bias": 320}),
    # no bias: macs 3 * 5 * 8 * 2 = 240
    "linear_no_bias": (lambda: nn.Linear(8, 2, bias=False), [(3, 5, 8)], {"macs": 240}),
    # batched matmul 2x3x4x5 @ 2x3x5x6: macs 2*3*4*5*6 = 720
    "matmul": (lambda: Fn(torch.matmul), [(2, 3, 4, 5), (2, 3, 5, 6)], {"macs": 720}),
    # the @ operator, 2-D: 7x3 @ 3x2 = 7*3*2 = 42
    "matmul_operator": (lambda: Fn(lambda a, b: a @ b), [(7, 3), (3, 2)], {"macs": 42}),
    # einsum bij,bjk->bik with 2x3x4 and 2x4x5: 2*3*4*5 = 120
    "einsum": (lambda: Fn(lambda a, b: torch.einsum("bij,bjk->bik", a, b)), [(2, 3, 4), (2, 4, 5)], {"macs": 120}),
    # BN eval on 2x8x4x4 = 256 elements: 2 per element = 512
    "batch_norm": (lambda: nn.BatchNorm2d(8), [(2, 8, 4, 4)], {"norm": 512}),
    # LayerNorm(16) on 2x5x16 = 160 elements, affine (weight + bias): (5 + 2) * 160 = 1120
    "layer_norm": (lambda: nn.LayerNorm(16), [(2, 5, 16)], {"norm": 1120}),
    # GroupNorm(2, 8) on 2x8x4x4 = 256 elements, affine: (5 + 2) * 256 = 1792
    "group_norm": (lambda: nn.GroupNorm(2, 8), [(2, 8, 4, 4)], {"norm": 1792}),
    # MaxPool2d(2) 1x4x8x8 -> out 1x4x4x4 = 64; (4 - 1) compares each = 192
    "max_pool": (lambda: nn.MaxPool2d(2), [(1, 4, 8, 8)], {"pool": 192}),
    # AvgPool2d(2) -> 64 outputs * 4 = 256
    "avg_pool": (lambda: nn.AvgPool2d(2), [(1, 4, 8, 8)], {"pool": 256}),
    # AdaptiveAvgPool2d(3) on 7x7: windows per dim [0,3) [2,5) [4,7) -> 3+3+3 = 9; 9*9 = 81 per
    # channel; 2 channels -> 162
    "adaptive_avg_pool": (lambda: nn.AdaptiveAvgPool2d(3), [(1, 2, 7, 7)], {"pool": 162}),
    # AdaptiveMaxPool2d(3): same windows, 162 - 18 outputs = 144 compares
    "adaptive_max_pool": (lambda: nn.AdaptiveMaxPool2d(3), [(1, 2, 7, 7)], {"pool": 144}),
    # AdaptiveAvgPool2d(1) runs as mean over H, W: 2 * 7 * 7 = 98 reduction ops
    "global_avg_pool": (lambda: nn.AdaptiveAvgPool2d(1), [(1, 2, 7, 7)], {"reduction": 98}),
    # bilinear x2: out 1x2x8x8 = 128; 2 * 4 taps - 1 = 7 each -> 896
    "interpolate_bilinear": (
        lambda: Fn(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)),
        [(1, 2, 4, 4)], {"interpolate": 896}),
    # nearest: a gather, no arithmetic (known, not unknown)
    "interpolate_nearest": (lambda: nn.Upsample(scale_factor=2), [(1, 2, 4, 4)], {}),
    # ReLU on 10 elements: 10 activation ops
    "relu": (lambda: nn.ReLU(), [(1, 10)], {"activation": 10}),
    # softmax on 3x4: 5 per element = 60
    "softmax": (lambda: nn.Softmax(dim=-1), [(3, 4)], {"softmax": 60}),
}


def _run(name: str, device: str):
    factory, shapes, _ = CASES[name]
    torch.manual_seed(0)
    model = factory().eval()
    inputs = tuple(torch.randn(s) for s in shapes)
    if device == "meta":
        model = model.to("meta")
        inputs = tuple(t.to("meta") for t in inputs)
    return count(model, inputs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_counts(name):
    expected = CASES[name][2]
    results = {dev: _run(name, dev) for dev in DEVICES}
    for dev, result in results.items():
        assert dict(result.components) == expected, dev
        assert result.totals["unknown_ops"] == 0
    assert results["meta"].totals == results["cpu"].totals


class _TokensThroughConv(nn.Module):
    """timm's pvt_v2 *_li Mlp: tokens viewed as an image (channels-last strides), a depthwise conv
    or a GroupNorm, back to tokens, then a Linear."""

    def __init__(self, norm: bool) -> None:
        super().__init__()
        self.mix = nn.GroupNorm(2, 8) if norm else nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        b, n, c = x.shape
        y = self.mix(x.transpose(1, 2).view(b, c, 4, 4))
        return self.fc(y.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("norm", [False, True])
def test_layout_after_a_conv_is_the_cpus_on_meta(norm):
    # 2x16x8 tokens viewed as 2x8x4x4 with channels-last strides (128, 1, 32, 8). CPU's conv and
    # group_norm keep that layout, so the tokens made from the result are contiguous and fc is one
    # addmm; meta's kernels return a contiguous NCHW result, which would make fc an mm and an add.
    # Counted as on CPU on both: fc 32 tokens x 8 x 4 = 1,024 MACs as one addmm; the depthwise conv
    # 2 x 8 x 16 x 9 = 2,304.
    results = {}
    for dev in DEVICES:
        model = _TokensThroughConv(norm).eval().to(dev)
        results[dev] = count(model, (torch.randn(2, 16, 8, device=dev),))
    for dev, result in results.items():
        fc = next(r for r in result.rows if r.name == "fc")
        assert dict(fc.ops) == {"aten::addmm": 1}, dev
        assert fc.macs == 1024
        assert sum(r.macs for r in result.rows) == 1024 + (0 if norm else 2304)
    assert results["meta"].totals == results["cpu"].totals


MHA_E, MHA_H, MHA_L, MHA_B = 64, 4, 10, 2
# in-proj: B*L tokens * E * 3E = 20 * 64 * 192 = 245760; QK^T and AV: B*h*L*S*d = 2*4*10*10*16 = 12800 each;
# out-proj: 20 * 64 * 64 = 81920; total 245760 + 2*12800 + 81920 = 353280 (torch's FlopCounterMode
# reports 706560 FLOPs = 2 * 353280 with grad enabled, and 0 on the eval fast path)
MHA_MACS = 353280
# bias: in-proj 20 * 192 = 3840, out-proj 20 * 64 = 1280
MHA_BIAS = 5120


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("train", [False, True])
def test_multihead_attention(device, train):
    mha = nn.MultiheadAttention(MHA_E, MHA_H, batch_first=True, dropout=0.0)
    x = torch.randn(MHA_B, MHA_L, MHA_E)
    if device == "meta":
        mha, x = mha.to("meta"), x.to("meta")
    model = Fn(lambda t: mha(t, t, t, need_weights=False)[0])
    model.mha = mha
    r = count(model, (x,), mode="train" if train else "eval")
    assert r.components["macs"] == MHA_MACS
    assert r.components["bias"] == MHA_BIAS
    assert r.totals["unknown_ops"] == 0


@pytest.mark.parametrize("device", DEVICES)
def test_transformer_encoder_layer_fast_path(device):
    # d=16, h=4, ff=32, B=2, L=10 -> 20 tokens. in-proj 20*16*48 = 15360; QK^T, AV 2*4*10*10*4 = 3200
    # each; out-proj 20*16*16 = 5120; ff 20*16*32 + 20*32*16 = 20480; total 15360+6400+5120+20480 = 47360
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0)
    x = torch.randn(2, 10, 16)
    if device == "meta":
        layer, x = layer.to("meta"), x.to("meta")
    r = count(layer, (x,))
    assert r.components["macs"] == 47360
    assert r.totals["unknown_ops"] == 0


@pytest.mark.parametrize("device", DEVICES)
def test_sdpa(device):
    # q, k, v 2x4x10x16: QK^T and AV 2*4*10*10*16 = 12800 each -> 25600 MACs; softmax 5 * 800 = 4000;
    # the math path scales q and k by sqrt(scale): 1280 + 1280 = 2560 multiplies
    q = torch.randn(2, 4, 10, 16)
    if device == "meta":
        q = q.to("meta")
    r = count(Fn(F.scaled_dot_product_attention), (q, q, q))
    assert dict(r.components) == {"macs": 25600, "softmax": 4000, "elementwise": 2560}


RNN_CASES = {
    # LSTM(8, 16), batch_first 2x5x8 -> 10 steps. per step: macs 4*16*(8+16) = 1536; bias 2*4*16 = 128;
    # elementwise 8*16 = 128; activation 5*16 = 80
    "lstm": (lambda: nn.LSTM(8, 16, batch_first=True), (2, 5, 8),
             {"macs": 15360, "bias": 1280, "elementwise": 1280, "activation": 800}),
    # GRU(8, 16, 2 layers, bidirectional), 5x2x8 -> 10 steps. per step: layer 0: 3*16*(8+16) = 1152 per
    # direction; layer 1 (input 32): 3*16*(32+16) = 2304 per direction; (1152 + 2304) * 2 = 6912;
    # bias 2*3*16 * 4 = 384; elementwise 7*16*4 = 448; activation 3*16*4 = 192
    "gru": (lambda: nn.GRU(8, 16, num_layers=2, bidirectional=True), (5, 2, 8),
            {"macs": 69120, "bias": 3840, "elementwise": 4480, "activation": 1920}),
    # RNN(4, 6, no bias), 3x1x4 -> 3 steps: 6*(4+6) = 60 MACs, 6 adds, 6 tanh per step
    "rnn": (lambda: nn.RNN(4, 6, bias=False), (3, 1, 4), {"macs": 180, "elementwise": 18, "activation": 18}),
    # LSTM with proj_size 3: per step 4*8*(5+3) = 256 + projection 8*3 = 24 -> 280; 4 steps -> 1120;
    # bias 2*4*8*4 = 256; elementwise 8*8*4 = 256; activation 5*8*4 = 160
    "lstm_proj": (lambda: nn.LSTM(5, 8, proj_size=3), (4, 1, 5),
                  {"macs": 1120, "bias": 256, "elementwise": 256, "activation": 160}),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(RNN_CASES))
def test_recurrent(name, device):
    factory, shape, expected = RNN_CASES[name]
    rnn, x = factory().eval(), torch.randn(shape)
    if device == "meta":
        rnn, x = rnn.to("meta"), x.to("meta")
    r = count(rnn, (x,))
    assert dict(r.components) == expected
    assert r.row("").ops == {f"module::{type(rnn).__name__}": 1}


@pytest.mark.parametrize("name", sorted(RNN_CASES))
def test_recurrent_rule_equals_meta_decomposition(name, monkeypatch):
    """The module-level rule is exactly the sum of the cell ops torch runs on meta."""
    factory, shape, expected = RNN_CASES[name]
    rnn, x = factory().eval().to("meta"), torch.randn(shape, device="meta")
    monkeypatch.setattr(module_rules, "module_rule", lambda *a: None)
    from reconcile.counter import core

    monkeypatch.setattr(core.modules, "module_rule", lambda *a: None)
    decomposed = count(rnn, (x,))
    assert dict(decomposed.components) == expected


@pytest.mark.parametrize("device", DEVICES)
def test_embedding(device):
    # a gather: no arithmetic; 100 * 16 = 1600 parameters
    emb = nn.Embedding(100, 16)
    ids = torch.randint(0, 100, (2, 7))
    if device == "meta":
        emb, ids = emb.to("meta"), ids.to("meta")
    r = count(emb, (ids,))
    assert dict(r.components) == {}
    assert r.totals["params"] == 1600
    assert r.totals["unknown_ops"] == 0
    assert r.row("").zero_cost_ops == {"aten::embedding": 1}


class TwiceAndResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.act(self.fc(x))
        y = self.act(self.fc(y))
        return y + x  # residual add in the parent's own forward


@pytest.mark.parametrize("device", DEVICES)
def test_module_called_twice_and_parent_work(device):
    model, x = TwiceAndResidual(), torch.randn(3, 4)
    if device == "meta":
        model, x = model.to("meta"), x.to("meta")
    r = count(model, (x,))
    fc, act, root = r.row("fc"), r.row("act"), r.row("")
    assert fc.calls == 2 and act.calls == 2 and root.calls == 1
    # fc: 2 calls * 3 * 4 * 4 = 96 MACs, 2 * 12 = 24 bias adds; per call 48 / 12
    assert dict(fc.components) == {"macs": 96, "bias": 24}
    assert [dict(c.components) for c in fc.call_records] == [{"macs": 48, "bias": 12}] * 2
    assert dict(act.components) == {"activation": 24}
    # the residual add (3 * 4 = 12) belongs to the root's own forward
    assert dict(root.components) == {"elementwise": 12}
    assert r.totals["flops"] == 2 * 96 + 24 + 24 + 12


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def forward(self, ids):
        return self.head(self.frozen(self.emb(ids)))


def test_tied_and_frozen_parameters():
    r = count(Tied(), (torch.randint(0, 10, (2, 3)),))
    # tied 10x4 = 40 counted once; frozen 4*4 + 4 = 20
    assert r.totals["params"] == 60
    assert r.totals["params_frozen"] == 20
    assert r.totals["params_trainable"] == 40
    assert r.tied == (("emb.weight", "head.weight"),)
    assert r.row("emb").params == 40 and r.row("head").params == 0


def test_unknown_ops_are_listed_not_dropped():
    model = Fn(lambda x: torch.fft.rfft(x).real)
    r = count(model, (torch.randn(4, 8),))
    assert r.totals["unknown_ops"] >= 1
    assert any("fft" in op for op in r.row("").unknown_ops)


def test_leaves_the_model_as_found():
    model = TwiceAndResidual().train()
    model.fc.eval()
    hooks_before = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    count(model, (torch.randn(3, 4),))
    assert [m.training for m in model.modules()] == flags
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks_before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.backends.mha.get_fastpath_enabled()


def test_train_mode_restores_batch_norm_statistics():
    bn = nn.BatchNorm2d(3)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    r = count(bn, (torch.randn(2, 3, 4, 4),), mode="train")
    # training batch norm: 5 per element + 2 affine = 7 * 96 = 672; num_batches_tracked += 1 is 1 add
    assert dict(r.components) == {"norm": 672, "elementwise": 1}
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())
    assert bn.training  # the flag it had before counting


def test_forward_error_is_one_line_reconcile_error():
    with pytest.raises(ReconcileError) as exc:
        count(nn.Linear(4, 4), (torch.randn(2, 5),), name="tiny")
    msg = str(exc.value)
    assert "\n" not in msg and "tiny" in msg and "RuntimeError" in msg


def test_bytes_and_activations_of_a_linear():
    # Linear(4, 3) on 2x4 float32: addmm reads bias 3 + input 8 + weight^T 12 = 23 floats = 92 bytes,
    # writes 2x3 = 6 floats = 24 bytes; the transpose is a view (no bytes)
    r = count(nn.Linear(4, 3), (torch.randn(2, 4),))
    assert r.totals["bytes_read"] == 92
    assert r.totals["bytes_written"] == 24
    assert r.totals["activations"] == 6
    # flops 2 * 24 MACs + 6 bias = 54; intensity 54 / 116
    assert r.totals["flops"] == 54
    assert r.intensity == pytest.approx(54 / 116)
