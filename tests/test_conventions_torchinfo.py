"""torchinfo's convention against real torchinfo runs: zero residual on every row and headline
figure, and hand-worked amounts.

torchinfo counts from parameters: a Conv's weight and bias times the batch and output positions,
anything else's weight and bias times the batch only, leaf modules only. References: native MACs
of each call, native parameters (each tensor once, at the row of its owner), native bytes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reconcile import conventions, models
from reconcile.counter import count
from tests.harness import assert_explained, explain_in_process
from tests.models_small import SMALL_MODELS, Fn


def causes(ex, metric: str) -> dict:
    return {k: v for k, v in ex.summaries[metric].causes.items() if v}


def run(model: nn.Module, *inputs: torch.Tensor):
    ex = explain_in_process("torchinfo", model.eval(), inputs)
    assert_explained(ex)
    return ex


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_fully_explained(name):
    model, inputs = SMALL_MODELS[name]()
    assert_explained(explain_in_process("torchinfo", model, inputs))


# ----- why attention counts are tiny --------------------------------------------------------------


class Attention(nn.Module):
    """One head, timm style: a qkv Linear, q @ k.T and attn @ v in the forward, a proj Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj((q @ k.transpose(-2, -1)).softmax(-1) @ v)


def test_attention_counts_tiny_and_why():
    # 1 x 4 tokens x 8: native MACs qkv 4*8*24 = 768, q @ k.T 4*4*8 = 128, attn @ v 128, proj 4*8*8 = 256:
    # 1,280. torchinfo: qkv output_size[0] 1 x (192 + 24) = 216, proj 1 x (64 + 8) = 72: 288.
    ex = run(Attention(8), torch.randn(1, 4, 8))
    assert ex.raw_total == 288 and ex.native_macs == 1280
    # the Linears count one row of 4 tokens: 192 - 768 and 64 - 256; the matmuls are in the container's
    # own forward (0); the biases 24 + 8 are counted
    assert causes(ex, "Total mult-adds") == {"per_batch_row": -576 - 192, "functional_not_seen": -256, "bias": 32}
    rows = {le.module: le for le in ex.layers}
    assert [c.id for c in rows[""].causes["macs"]] == ["functional_not_seen"]


def test_multihead_attention_is_no_leaf():
    # MHA E=64 h=4 L=10 B=2: 353,280 MACs (see test_counter), all in MHA's own forward: it has a child
    # (out_proj, used functionally and never called), so it is no leaf and torchinfo counts 0
    mha = nn.MultiheadAttention(64, 4, batch_first=True)
    ex = run(Fn(lambda self, x: self.mha(x, x, x, need_weights=False)[0], mha=mha), torch.randn(2, 10, 64))
    assert ex.raw_total == 0
    assert causes(ex, "Total mult-adds") == {"unsupported_module": -353_280}
    # parameters: in_proj 64*192 + 192 = 12,480 and out_proj 64*64 + 64 = 4,160, all in MHA's leftover
    assert ex.run.headline["Total params"] == 16_640 and causes(ex, "Total params") == {}
    # Params size adds up leaf records only: none ran, 16,640 x 4 B left out
    assert ex.run.headline["Params size (bytes)"] == 0
    assert causes(ex, "Params size (bytes)") == {"params_missed": -66_560}


# ----- layer rules --------------------------------------------------------------------------------


def test_linear_on_a_sequence_counts_one_row():
    # Linear(16, 4) on 2x5x16: output_size[0] 2 x (64 + 4) = 136; native 2*5*16*4 = 640
    ex = run(nn.Sequential(nn.Linear(16, 4)), torch.randn(2, 5, 16))
    assert ex.raw_total == 136
    assert causes(ex, "Total mult-adds") == {"per_batch_row": 2 * 64 - 640, "bias": 8}
    # pass size: the 2x5x4 float32 output (160 B), x2 for gradients
    assert ex.run.headline["Forward/backward pass size (bytes)"] == 320
    assert causes(ex, "Forward/backward pass size (bytes)") == {"memory_model": 160}


def test_transposed_conv_uses_output_positions():
    # ConvTranspose2d(16, 16, 3, stride 2) on 1x16x8x8 -> 17x17: weight 16*16*9 = 2,304 x 289 = 665,856,
    # bias 16 x 289 = 4,624; native N_in * (Cout/g) * K = 64 * 16 * 16 * 9 = 147,456
    ex = run(nn.Sequential(nn.ConvTranspose2d(16, 16, 3, stride=2)), torch.randn(1, 16, 8, 8))
    assert ex.raw_total == 665_856 + 4_624
    assert causes(ex, "Total mult-adds") == {"formula": 665_856 - 147_456, "bias": 4_624}


def test_norm_and_embedding_counted_from_parameters():
    # Embedding(10, 4) on 3x5 ids: output_size[0] 3 x 40 = 120 (native 0: a lookup);
    # LayerNorm(4) on 3x5x4: 3 x (4 + 4) = 24 (native MACs 0)
    ex = run(nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4)), torch.randint(0, 10, (3, 5)))
    assert ex.raw_total == 144
    assert causes(ex, "Total mult-adds") == {"formula": 120, "norm": 24}


def test_recurrent_weights_times_steps():
    # LSTM(8, 16) on 2x5x8: weights 4*16*(8 + 16) = 1,536 and biases 2 * 64 = 128, each x batch 2 x 5 steps:
    # 15,360 (= native MACs) + 1,280 bias
    ex = run(Fn(lambda self, x: self.lstm(x)[0], lstm=nn.LSTM(8, 16, batch_first=True)), torch.randn(2, 5, 8))
    assert ex.raw_total == 16_640 and ex.native_macs == 15_360
    assert causes(ex, "Total mult-adds") == {"bias": 1_280}
    # pass size: only the first output (2x5x16 float32 = 640 B) is sized, h and c (2 x 1x2x16 = 256 B) left out
    assert ex.run.headline["Forward/backward pass size (bytes)"] == 2 * 640
    assert causes(ex, "Forward/backward pass size (bytes)") == {"memory_model": 640 - 256}


# ----- parameters -------------------------------------------------------------------------------


def test_tied_weight_counted_twice_where_the_leftover_clips():
    # tiny Tied: emb 50x16 = 800 (= head.weight), frozen Linear 16*16 + 16 = 272, root-owned scale 16.
    # Leaves count 800 + 272 + 800; the root's leftover 1,088 - 1,872 = -784 is clipped to 0: 1,872
    # (native 1,088): the tie's +800 minus the scale's 16 that the clipped leftover would have held
    model, inputs = SMALL_MODELS["tied"]()
    ex = explain_in_process("torchinfo", model, inputs)
    assert_explained(ex)
    h = ex.run.headline
    assert (h["Total params"], h["Trainable params"], h["Non-trainable params"]) == (1_872, 1_600, 272)
    assert causes(ex, "Total params") == {"params_tied": 784}
    assert causes(ex, "Trainable params") == {"params_tied": 784}  # native trainable 816, frozen 272
    assert causes(ex, "Non-trainable params") == {}
    rows = {le.module: [(c.id, c.amount) for c in le.causes.get("params", ())] for le in ex.layers}
    assert rows["head"] == [("params_tied", 800)]
    assert rows[""] == [("params_tied", -800), ("params_tied", 784)]  # compensation, then the clip at 0
    # Params size: leaves only, 4 B x 1,872; native 4 x 1,088: +3,200 for the tie, -64 for the root's scale
    assert h["Params size (bytes)"] == 7_488
    assert causes(ex, "Params size (bytes)") == {"params_tied": 3_200, "params_missed": -64}
    # mult-adds: emb output_size[0] 2 x 800 = 1,600 for a lookup; frozen 2 x 256 vs 2*7*256 = 3,584,
    # head 2 x 800 vs 2*7*800 = 11,200; bias 2 x 16
    assert causes(ex, "Total mult-adds") == {"formula": 1_600, "per_batch_row": (512 - 3_584) + (1_600 - 11_200),
                                             "bias": 32}


@pytest.mark.parametrize("own, total", [(0, 40), (20, 44)])
def test_tie_compensated_by_the_containers_own_parameters(own, total):
    # b.weight is a.weight (16): leaves a 16 + 4 and b 16 + 4 = 40. The root holds 24 (+ own): its
    # leftover 24 + own - 40 is -16 (clipped: total 40, the tie counted twice) or 4 with own = 20
    # (total 44 = native: the tie taken back)
    model = Fn(lambda self, x: self.b(self.a(x)), a=nn.Linear(4, 4), b=nn.Linear(4, 4))
    model.b.weight = model.a.weight
    if own:
        model.w = nn.Parameter(torch.zeros(own))
    ex = run(model, torch.randn(1, 4))
    assert ex.run.headline["Total params"] == total
    assert causes(ex, "Total params") == ({"params_tied": 16} if total == 40 else {})


class Interleaved(nn.Module):
    """A never-called container holding a parameter and two Linears that the root calls with
    another Linear in between: torchinfo inserts the container's record twice (one object)."""

    def __init__(self) -> None:
        super().__init__()
        self.group = nn.Module()
        self.group.w = nn.Parameter(torch.zeros(3))
        self.group.a = nn.Linear(2, 2)
        self.group.b = nn.Linear(2, 2)
        self.other = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.b(self.other(self.group.a(x))) + self.group.w[:2]


def test_inserted_containers_predicted():
    model = Interleaved().eval()
    x = torch.zeros(1, 2)
    ex = run(model, x)
    pred = conventions.get("torchinfo").predict(count(model, (x,)))
    assert [(p.module, p.call) for p in pred.layers] == [
        ("", 0), ("group", 0), ("group.a", 0), ("other", 0), ("group", 1), ("group.b", 0)]
    # 3 + 3 x 6 = 21 counted (group.w by the root's leftover); Params size: leaves 18 x 4 B, group.w's
    # 12 B left out (held by a module that never ran)
    assert ex.run.headline["Total params"] == 21 and causes(ex, "Total params") == {}
    assert causes(ex, "Params size (bytes)") == {"params_missed": -12}


def test_shared_module_takes_its_last_path():
    # one Linear registered as a.lin and b.lin (b first in the forward): torchinfo hooks it under its
    # last path, b.lin; each call is a record, the second recursive
    shared = nn.Linear(3, 3)
    a, b = nn.Module(), nn.Module()
    a.lin, b.lin = shared, shared
    model = Fn(lambda self, x: self.a.lin(self.b.lin(x)), a=a, b=b)
    ex = run(model, torch.randn(1, 3))
    # 2 calls x (9 + 3); parameters once: 12
    assert ex.raw_total == 24 and ex.run.headline["Total params"] == 12
    assert [(le.module, le.call) for le in ex.layers] == [("", 0), ("b", 0), ("a.lin", 0), ("a.lin", 1)]


# ----- torchvision ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tv():
    out = {}
    for name in ("resnet18", "vgg16"):
        model = models.build(models.resolve(name), device="cpu")
        inputs = (torch.zeros(1, 3, 224, 224),)
        out[name] = (explain_in_process("torchinfo", model, inputs), count(model, inputs))
    return out


@pytest.mark.parametrize("name, macs, extra, outputs", [
    # resnet18: 20 BatchNorm2d, 4,800 channels: 1 x 2 x 4,800 = 9,600; fc bias 1,000. Pass size: conv and
    # BN outputs 2 x 2,483,712 + fc 1,000 elements
    ("resnet18", 1_814_073_344, {"norm": 9_600, "bias": 1_000}, 2 * 2_483_712 + 1_000),
    # vgg16: conv bias one per output, 13,547,520; fc biases 4,096 + 4,096 + 1,000
    ("vgg16", 15_470_264_320, {"bias": 13_547_520 + 9_192}, 13_547_520 + 9_192),
])
def test_torchvision_fully_explained(tv, name, macs, extra, outputs):
    ex, native = tv[name]
    assert_explained(ex)
    assert native.totals["macs"] == macs
    assert ex.raw_total == macs + sum(extra.values())
    assert causes(ex, "Total mult-adds") == extra
    s = ex.summaries
    # float32, batch 1: native output bytes 4 x outputs, doubled "for gradients"
    assert s["Forward/backward pass size (bytes)"].reference == 4 * outputs
    assert causes(ex, "Forward/backward pass size (bytes)") == {"memory_model": 4 * outputs}
    assert causes(ex, "Input size (bytes)") == {"memory_model": 64}
    assert causes(ex, "Total params") == {} and causes(ex, "Params size (bytes)") == {}
    if name == "resnet18":  # the residual adds in BasicBlock.forward: 8 blocks, 752,640 elements
        assert s["Total mult-adds"].missed_flops == -752_640


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_predicted_rows_in_torchinfo_order_and_meta_prediction(tv, name):
    ex, native = tv[name]
    pred = conventions.get("torchinfo").predict(native)
    assert [(p.module, p.call) for p in pred.layers] == [(le.module, le.call) for le in ex.layers]
    # what `reconcile predict` does: count on meta, predict: the real run's numbers
    model = models.build(models.resolve(name), device="meta")
    meta = conventions.get("torchinfo").predict(count(model, (torch.zeros(1, 3, 224, 224, device="meta"),)))
    assert dict(meta.headline) == {k: v for k, v in ex.run.headline.items() if isinstance(v, int)}


def test_vit_attention_counted_tiny_for_named_causes():
    # the README's figures. vit_b_32 at 224: 50 tokens, 12 blocks of E = 768, MLP 3072.
    # Each MLP Linear (768*3072 = 2,359,296 weights) counted for 1 of 50 tokens: 2 x 12 x -49 x 2,359,296.
    # Each MultiheadAttention, no leaf: in_proj 50*768*2304 = 88,473,600 + q@k.T and attn@v 2 x 12 heads x
    # 50*50*64 = 3,840,000 + out_proj 50*768*768 = 29,491,200 = 121,804,800, x 12 blocks.
    # Biases: conv_proj 768 x 7*7 positions = 37,632 + 12 x (3,072 + 768) + head 1,000 = 84,712;
    # 25 LayerNorms x (768 + 768) = 38,400.
    model = models.build(models.resolve("vit_b_32"), device="cpu")
    ex = explain_in_process("torchinfo", model, (torch.zeros(1, 3, 224, 224),))
    assert_explained(ex)
    assert ex.native_macs == 4_409_186_304
    assert causes(ex, "Total mult-adds") == {"per_batch_row": 2 * 12 * -49 * 2_359_296,
                                             "unsupported_module": -12 * 121_804_800,
                                             "bias": 84_712, "norm": 38_400}
    assert ex.raw_total == 173_119_720


class Conv1D(nn.Module):
    """transformers' GPT-2 ``Conv1D``: a Linear with its weight stored (in, out), named like a conv."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], -1)


def test_a_class_named_conv_gets_the_conv_rule():
    # Conv1D(6, 8) on 1x4x8 -> 1x4x6: "Conv" in its class name, so weight 48 x prod(output_size[:1] +
    # output_size[2:]) = 48 x (1 * 6) = 288 and bias 6 x 6 = 36; native MACs 4*8*6 = 192 (GPT-2's 163 G)
    ex = run(nn.Sequential(Conv1D(6, 8)), torch.randn(1, 4, 8))
    assert ex.raw_total == 288 + 36
    assert causes(ex, "Total mult-adds") == {"formula": 288 - 192, "bias": 36}
