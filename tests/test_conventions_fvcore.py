"""fvcore's convention against real fvcore runs: zero residual on every row, and hand-worked amounts.

fvcore's "flops" are multiply-adds, so the reference is native MACs; its rows nest (every row but
the root is marked inclusive, and the root's causes cover the whole model).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reconcile import models
from reconcile.conventions.base import INCLUSIVE
from reconcile.counter import count
from reconcile.report.sentences import sentence
from tests.harness import adapter, assert_explained, explain, explain_in_process
from tests.models_small import SMALL_MODELS


class Wrap(nn.Module):
    """Runs ``fn(self, x)``: functional calls in the root's own forward."""

    def __init__(self, fn, **children: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, child in children.items():
            setattr(self, name, child)

    def forward(self, x):
        return self.fn(self, x)


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_fully_explained(name):
    model, inputs = SMALL_MODELS[name]()
    assert_explained(explain_in_process("fvcore", model, inputs))


def test_functional_work_in_a_parent_forward():
    # Functional (1x3x4x4): conv 8*4*4 * 3*9 = 3456; proj on 1x8x16: 8*16*16 = 2048; z @ z^T,
    # 1x8x16 @ 1x16x8: 8*16*8 = 1024; bilinear to 1x8x8x8 = 512 outputs * 4 = 2048 (native 0 MACs);
    # total 3456 + 2048 + 1024 + 2048 = 8576. Activations: conv 128 + proj 128 + the matmul's
    # 1x8x8 = 64 output elements (read from the native per-op element counts) = 320.
    model, inputs = SMALL_MODELS["functional"]()
    ex = explain_in_process("fvcore", model, inputs)
    assert ex.raw_total == 8576
    assert ex.causes == {"interpolate": 2048, "unsupported_op": 0}
    assert ex.summaries["activations"].raw_total == 320
    assert_explained(ex)


def _torchvision(name: str):
    model = models.build(models.resolve(name), device="cpu")
    return model, (torch.zeros(1, 3, 224, 224),)


@pytest.mark.parametrize("name, total, causes, unsupported, missed, activations, params", [
    # resnet18: native MACs 1,814,073,344. BN eval 2 per element over 20 BNs:
    # bn1 64*112*112 = 802,816; layer1 4 * 64*56*56 = 802,816; layer2 5 * 128*28*28 = 501,760;
    # layer3 5 * 256*14*14 = 250,880; layer4 5 * 512*7*7 = 125,440; sum 2,483,712, x2 = 4,967,424.
    # avgpool (native aten::mean) 1 per input element: 512*7*7 = 25,088.
    # 1,814,073,344 + 4,967,424 + 25,088 = 1,819,065,856.
    # Not counted: maxpool 64*56*56 outputs * (9 - 1) = 1,605,632 FLOPs; 8 residual add_:
    # 2 * (200,704 + 100,352 + 50,176 + 25,088) = 752,640 FLOPs.
    # Activations: conv outputs 802,816 + 802,816 + 501,760 + 250,880 + 125,440 + fc 1,000 = 2,484,712.
    ("resnet18", 1819065856, {"norm": 4967424, "pool": 25088, "unsupported_op": 0},
     {"aten::add_": 8, "aten::max_pool2d": 1}, -(1605632 + 752640), 2484712, 11689512),
    # vgg16: native MACs 15,470,264,320 + avgpool input 512*7*7 = 25,088 -> 15,470,289,408.
    # 5 max pools, 2x2 -> 3 compares per output: 3 * (802,816 + 401,408 + 200,704 + 100,352 + 25,088)
    # = 4,591,104 FLOPs not counted. Activations: conv outputs 2*3,211,264 + 2*1,605,632 + 3*802,816
    # + 3*401,408 + 3*100,352 = 13,547,520, plus fc 4096 + 4096 + 1000 = 13,556,712.
    ("vgg16", 15470289408, {"pool": 25088, "unsupported_op": 0},
     {"aten::max_pool2d": 5}, -4591104, 13556712, 138357544),
])
def test_torchvision_totals(name, total, causes, unsupported, missed, activations, params):
    model, inputs = _torchvision(name)
    ex = explain_in_process("fvcore", model, inputs)
    assert_explained(ex)
    assert ex.raw_total == total
    assert ex.causes == causes
    assert ex.summaries["flops"].missed_flops == missed
    assert {k.removeprefix("unsupported:"): v for k, v in ex.run.headline.items() if k.startswith("unsupported:")} == unsupported
    assert ex.run.headline["activations"] == activations and ex.run.headline["params"] == params


def test_a_bmm_beside_an_attention_call_is_its_own():
    # LookupAttention (1x2x4x8): the mask's bmm, 2 x 4 x 4 x 4 = 128 MACs, is a handled aten::bmm to
    # fvcore; the attention call (512 MACs on native's math path: its own two bmm) is one traced
    # op with no handle. Shared out pro rata, the three bmm calls gave the attention 2/3 of 640
    from tests.models_small import LookupAttention

    ex = explain_in_process("fvcore", nn.Sequential(LookupAttention(learned=False)).eval(), (torch.randn(1, 2, 4, 8),))
    assert ex.run.headline["flops"] == 128
    assert ex.run.headline["unsupported:aten::scaled_dot_product_attention"] == 1
    assert_explained(ex)


def test_einsum_is_numpys_optimized_count_as_printed():
    from reconcile.conventions.fvcore_ops import fvcore_einsum

    # maxvit_tf's relative-position lookups: 2 x 13 x 13 x 7 x 7 = 16,562 and 2 x 7 x 7 x 7 x 7 x 13 =
    # 62,426 MACs. numpy prints the optimized FLOP count (twice those) as 3.312e+04 and 1.249e+05,
    # which fvcore halves: 16,560 and 62,450
    assert fvcore_einsum("nhw,ixh->nixw", [(2, 13, 13), (7, 7, 13)]) == 16560
    assert fvcore_einsum("nixw,jyw->nijxy", [(2, 7, 7, 13), (7, 7, 13)]) == 62450
    # an equation fvcore special-cases ("abc,abd->acd" once renamed) is exact: 2 x 5 x 7 x 3 = 210
    assert fvcore_einsum("bij,bik->bjk", [(2, 3, 5), (2, 3, 7)]) == 210


def test_nested_rows_carry_their_subtree():
    # resnet18 layer1: 4 convs 64->64 3x3 on 56x56 = 4 * 200,704 * 64 * 9 = 462,422,016 MACs;
    # 4 BN * 2 * 200,704 = 1,605,632; its 2 residual add_ (2 * 200,704 FLOPs) are not counted.
    model, inputs = _torchvision("resnet18")
    ex = explain_in_process("fvcore", model, inputs)
    layer1 = next(le for le in ex.layers if le.module == "layer1")
    assert layer1.reference[INCLUSIVE] == 1
    assert layer1.raw["flops"] == 462422016 + 1605632
    assert {c.id: (c.amount, c.flops) for c in layer1.causes["flops"]} == {"norm": (1605632, 0), "unsupported_op": (0, -401408)}
    assert layer1.raw["unsupported:aten::add_"] == 2
    root = next(le for le in ex.layers if le.module == "")
    assert INCLUSIVE not in root.reference


@pytest.mark.parametrize("affine, per", [(True, 2), (False, 1)])
def test_batch_norm_eval(affine, per):
    # BatchNorm2d(8) on 1x8x4x4 = 128 elements, eval: 2 per element with affine, 1 without; 0 MACs
    ex = explain_in_process("fvcore", nn.Sequential(nn.BatchNorm2d(8, affine=affine)).eval(), (torch.randn(1, 8, 4, 4),))
    assert_explained(ex)
    assert ex.raw_total == per * 128
    assert ex.causes == {"norm": per * 128}
    assert f"{per} x 128" in sentence(ex.layers[0].causes["flops"][0])


def test_batch_norm_train_five_per_element():
    # BatchNorm2d(8) in training on 2x8x4x4 = 256 elements: 5 * 256 = 1280, of which 2 * 256 = 512
    # is the eval count (norm) and 3 * 256 = 768 the batch statistics (train_mode).
    # num_batches_tracked += 1 is a traced aten::add_ with no handle (native: 1 elementwise FLOP).
    model = nn.Sequential(nn.BatchNorm2d(8)).train()
    x = torch.randn(2, 8, 4, 4)
    run = adapter("fvcore").run(model, (x,))
    ex = explain("fvcore", run, count(model, (x,), mode="train"))
    assert_explained(ex)
    assert ex.raw_total == 1280
    assert ex.causes == {"norm": 512, "train_mode": 768, "unsupported_op": 0}
    assert ex.summaries["flops"].missed_flops == -1
    assert run.headline["unsupported:aten::add_"] == 1


def test_conv_bias_ignored():
    # Conv2d(3, 4, 3) on 1x3x8x8: 4*6*6 = 144 outputs * 3*9 = 3888 MACs, exactly fvcore's count; the
    # 144 bias adds are in neither, so no cause. In FLOPs: 2 * 3888 + 144 = 7920.
    ex = explain_in_process("fvcore", nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), (torch.randn(1, 3, 8, 8),))
    assert_explained(ex)
    assert ex.raw_total == 3888 and ex.causes == {}
    assert ex.normalized == {"macs": 3888, "flops": 7920}
    assert ex.run.headline["activations"] == 144


def test_unsupported_max_pool():
    # MaxPool2d(2) on 1x4x8x8: 4*4*4 = 64 outputs, native 3 compares each = 192 FLOPs, fvcore 0
    ex = explain_in_process("fvcore", nn.Sequential(nn.MaxPool2d(2)).eval(), (torch.randn(1, 4, 8, 8),))
    assert_explained(ex)
    assert ex.raw_total == 0
    assert ex.run.headline["unsupported:aten::max_pool2d"] == 1
    (term,) = ex.layers[0].causes["flops"]
    assert (term.id, term.amount, term.flops) == ("unsupported_op", 0, -192)
    assert sentence(term).startswith("fvcore has no handle for aten::max_pool2d (1 call)")


def test_scaled_dot_product_attention_not_counted():
    # SDPA of q = k = v, 1x2x4x8: scores 1*2*4*4 = 32; MACs 32 * (8 + 8) = 512, all unsupported.
    # Native FLOPs: 2 * 512 + q and k scaled (64 + 64) + softmax 5 * 32 = 1312.
    # Activations: the two products' outputs 32 + 1*2*4*8 = 96, none counted.
    model = Wrap(lambda self, x: F.scaled_dot_product_attention(x, x, x)).eval()
    ex = explain_in_process("fvcore", model, (torch.randn(1, 2, 4, 8),))
    assert_explained(ex)
    assert ex.raw_total == 0
    assert ex.causes == {"unsupported_op": -512}
    assert ex.summaries["flops"].missed_flops == -1312
    assert ex.summaries["activations"].causes == {"unsupported_op": -96}


def test_multihead_attention_with_weights():
    # MHA E=32 h=4 on 2x10x32, a, _ = mha(x, x, x): in_proj 20*32*96 = 61,440; out_proj 20*32*32 = 20,480;
    # two bmm of 8 heads*batch: 8*10*8*10 = 6,400 each; total 94,720 = native MACs. Traced size
    # arithmetic: 4 tensor muls + q scaling = 5 aten::mul, 1 aten::div, 1 unflatten; softmax has no
    # handle (5 * 800 = 4000 FLOPs), q scaling 20*32 = 640 FLOPs, and the unused head average
    # (aten::mean over 2*4*10*10 = 800) is dropped from the trace: 4000 + 640 + 800 = 5440 FLOPs.
    # Activations: linears (10 + 2*10) * 2 * 32 + 10*2*32 = 2560; bmm 800 + 640 = 1440; 4000.
    model = Wrap(lambda self, x: self.mha(x, x, x)[0], mha=nn.MultiheadAttention(32, 4, batch_first=True)).eval()
    ex = explain_in_process("fvcore", model, (torch.randn(2, 10, 32),))
    assert_explained(ex)
    assert ex.raw_total == 94720
    assert ex.summaries["flops"].missed_flops == -5440
    assert ex.run.headline["activations"] == 4000
    unsupported = {k: v for k, v in ex.run.headline.items() if k.startswith("unsupported:")}
    assert unsupported == {"unsupported:aten::mul": 5, "unsupported:aten::div": 1,
                           "unsupported:aten::unflatten": 1, "unsupported:aten::softmax": 1}


@pytest.mark.parametrize("layer, shape, expected, cause", [
    # AdaptiveAvgPool2d(1) on 1x8x4x4 (native: aten::mean): 1 per input element = 128
    (nn.AdaptiveAvgPool2d(1), (1, 8, 4, 4), 128, "pool"),
    # Upsample x2 nearest, 1x3x4x4 -> 1x3x8x8 = 192 outputs at 1 each (native: 0 ops)
    (nn.Upsample(scale_factor=2), (1, 3, 4, 4), 192, "interpolate"),
    # GroupNorm(2, 4) without affine on 2x4x5x5 = 200 elements: 4 each = 800
    (nn.GroupNorm(2, 4, affine=False), (2, 4, 5, 5), 800, "norm"),
    # LayerNorm(8) on 2x3x8 = 48 elements: 5 each = 240
    (nn.LayerNorm(8), (2, 3, 8), 240, "norm"),
])
def test_elementwise_handles(layer, shape, expected, cause):
    ex = explain_in_process("fvcore", nn.Sequential(layer).eval(), (torch.randn(*shape),))
    assert_explained(ex)
    assert ex.raw_total == expected and ex.causes == {cause: expected}


def test_inplace_dropout_traced_unsupported():
    # nn.Dropout(inplace=True) in eval: native sees no op, the trace records aten::dropout_, which
    # (unlike aten::dropout) is not in fvcore's ignore list. Linear 2x16 -> 4: 2*16*4 = 128.
    model = nn.Sequential(nn.Linear(16, 4), nn.Dropout(0.5, inplace=True)).eval()
    ex = explain_in_process("fvcore", model, (torch.randn(2, 16),))
    assert_explained(ex)
    assert ex.raw_total == 128
    assert ex.run.headline["unsupported:aten::dropout_"] == 1


def test_convention_imports_neither_torch_nor_fvcore():
    code = "import sys, reconcile.conventions.fvcore; print('torch' in sys.modules, 'fvcore' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.split() == ["False", "False"]
