"""torchscan 0.2.0, module view: its adapter against the real tool (``summary``), its convention on
hand-counted models and on resnet18 (zero residual).

torchscan's MACs are per metric leaf (a module without children, or MultiheadAttention): Linear
and Conv their MACs, BatchNorm ``in x (1 + affine)``, MaxPool ``out x (k - 1)`` with an integer
kernel read as ``k`` (not ``k x k``), adaptive pools from the shapes; other leaf types 0. The
per-layer "Param #" adds buffers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reconcile import models
from reconcile.counter import count
from tests.harness import adapter, assert_explained, explain


def _run(model: nn.Module, inputs: tuple):
    run = adapter("torchscan").run(model, inputs)
    assert run.status == "ok", f"{run.error_type}: {run.error_message}"
    return run, explain("torchscan", run, count(model, inputs))


def _causes(ex) -> dict[str, int]:
    """Causes with a MAC amount (a cause of MACs 0, FLOPs only, is left out)."""
    return {k: v for k, v in ex.causes.items() if v}


def _rows(run, key: str) -> dict[str, int]:
    return {layer.module: layer.raw[key] for layer in run.layers if key in layer.raw}


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.pool(self.bn(self.conv(x)))
        return self.fc(self.gap(y + 1).flatten(1))


class WithNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.ln(x))


def test_small_by_hand():
    # 1x3x8x8. conv 4*8*8 * 3*9 = 6,912 (native's MACs); bn (affine) 2 per element 2 * 256 = 512;
    # pool: MaxPool2d(3) on 8x8 -> 4x4, 4*16 = 64 outputs; kernel_size=3 read as 3, so (3 - 1) * 64
    # = 128 (a 3x3 window would be (9 - 1) * 64 = 512: pool 512, pool_kernel_1d -384);
    # gap 4x4 -> 1x1: kernel (4, 4), (16 - 1 + 2) * 4 = 68; fc 4 * 2 = 8. The root's y + 1 is not
    # seen (0 MACs natively). Total 6,912 + 512 + 128 + 68 + 8 = 7,628.
    run, ex = _run(Small().eval(), (torch.randn(1, 3, 8, 8),))
    assert run.headline == {"macs": 7628, "params": 4 * 27 + 4 + 8 + 8 + 2}
    assert _rows(run, "macs") == {"conv": 6912, "bn": 512, "pool": 128, "gap": 68, "fc": 8}
    assert _causes(ex) == {"norm": 512, "pool": 512 + 68, "pool_kernel_1d": -384}
    # Param #: conv 4*27 + 4 = 112; bn weight + bias 8 plus running mean and var 4 + 4 and
    # num_batches_tracked 1 = 17; fc 8 + 2 = 10; the rest 0
    assert _rows(run, "params") == {"": 0, "conv": 112, "bn": 17, "pool": 0, "gap": 0, "fc": 10}
    assert_explained(ex)


class FillsBuffer(nn.Module):
    """timm's convit GPSA: a placeholder buffer that the first forward replaces by one sized to
    the input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.register_buffer("rel", torch.zeros(1, 1, 3), persistent=False)

    def forward(self, x):
        if self.rel.shape[1] != x.shape[1]:
            self.rel = torch.zeros(1, x.shape[1], 3)
        return self.fc(x) + self.rel


def test_a_buffer_the_forward_replaces_is_counted_as_it_was():
    # Param # is read in the module's pre-forward hook: the root's buffer is still the 1x1x3
    # placeholder (3 elements), not the 1x5x3 = 15 its forward puts there; fc 6 * 3 + 3 = 21.
    run, ex = _run(FillsBuffer().eval(), (torch.randn(1, 5, 6),))
    assert _rows(run, "params") == {"": 3, "fc": 21}
    assert ex.summaries["layer_params"].causes == {"params_buffers": 3}
    assert_explained(ex)


def test_unsupported_leaf_is_zero():
    # 1x5x6: LayerNorm has no formula ("Module type not supported"): 0, where native's MAC count is
    # also 0 (its 5 x 30 + ... is FLOPs); fc 5 * 6 * 3 = 90. Total 90, partial.
    run, ex = _run(WithNorm().eval(), (torch.randn(1, 5, 6),))
    assert run.headline["macs"] == 90
    assert any("Module type not supported: LayerNorm" in w for w in run.warnings)
    assert_explained(ex)


def test_multihead_attention_is_one_leaf():
    # MultiheadAttention(8, 2) on 1x4x8 is a metric leaf without a formula: 0 of its 1,280 MACs
    # (in-projection 4*8*24 = 768, scores 2*4*4*4 = 128, weighted sum 128, out-projection 256);
    # its Param # is its subtree's: in_proj 8*24 + 24 = 216, out_proj 8*8 + 8 = 72 = 288.
    model = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True)).eval()

    class Call(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = model[0]

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    run, ex = _run(Call().eval(), (torch.randn(1, 4, 8),))
    assert run.headline["macs"] == 0
    assert _rows(run, "params")["mha"] == 288
    assert _causes(ex) == {"unsupported_module": -1280}
    assert_explained(ex)


def test_adapter_leaves_the_model_as_it_was():
    model = Small().train()
    adapter("torchscan").run(model, (torch.randn(1, 3, 8, 8),))
    assert model.training and model.bn.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert int(model.bn.num_batches_tracked) == 0


@pytest.fixture(scope="module")
def resnet18_run():
    model = models.build(models.resolve("resnet18"), device="cpu")
    return _run(model, (torch.zeros(1, 3, 224, 224),))


def test_resnet18_total_and_zero_residual(resnet18_run):
    # Native 1,814,073,344 MACs. 20 affine BatchNorms 2 per element: 2 * 2,483,712 = 4,967,424.
    # maxpool MaxPool2d(3, 2, 1): 64*56*56 = 200,704 outputs * (3 - 1) = 401,408 (issue 20: the
    # integer kernel read as 3; a 3x3 window is 8 * 200,704 = 1,605,632, so pool_kernel_1d is
    # -1,204,224). avgpool 7x7 -> 1x1: 512 * (49 - 1 + 2) = 25,600. 1,814,073,344 + 4,967,424 +
    # 401,408 + 25,600 = 1,819,467,776.
    run, ex = resnet18_run
    assert run.headline == {"macs": 1819467776, "params": 11689512}
    assert _causes(ex) == {"norm": 4967424, "pool": 1605632 + 25600, "pool_kernel_1d": -1204224}
    # Param # per layer adds the 20 BatchNorms' buffers: running mean and var 2 * C plus 1 each,
    # 2 * (64 * 5 + 128 * 5 + 256 * 5 + 512 * 5) + 20 = 9,620
    assert ex.summaries["layer_params"].causes == {"params_buffers": 9620}
    assert_explained(ex)


# ---- the operator view, row torchscan-ops: "Operator forward FLOPs" --------------------------------
# torchscan runs FlopCounterMode(display=False) around its own forward, under eval() and no_grad:
# 2 FLOPs per MAC of the ops with a formula (convolution, addmm, mm, bmm), 0 for the rest; rows
# by module, inclusive. Under no_grad a self-attention nn.MultiheadAttention runs torch's fused
# fast path, one aten._native_multi_head_attention with no formula: 0 for the whole module.


def _ops_run(model: nn.Module, inputs: tuple):
    run = adapter("torchscan-ops").run(model, inputs)
    assert run.status == "ok", f"{run.error_type}: {run.error_message}"
    return run, explain("torchscan-ops", run, count(model, inputs))


def test_ops_small_by_hand():
    # 1x3x8x8. conv 4*8*8 * 3*9 = 6,912 MACs -> 13,824 FLOPs; fc 4 * 2 = 8 MACs -> 16 FLOPs (its bias
    # add not counted). bn, pool, gap, y + 1, flatten: no formula, 0. Total 13,840; the root's row
    # holds both (inclusive); bn, pool and gap ran no formula op, so they have no row.
    run, ex = _ops_run(Small().eval(), (torch.randn(1, 3, 8, 8),))
    assert run.headline == {"flops": 13840, "aten.convolution": 13824, "aten.addmm": 16}
    assert run.units["flops"] == "FLOPs"
    assert _rows(run, "flops") == {"": 13840, "conv": 13824, "fc": 16}
    assert _causes(ex) == {"mac_vs_flop": 6912 + 8}
    assert_explained(ex)


class Attend(nn.Module):
    """nn.MultiheadAttention(8, heads, batch_first) then Linear(8, 3); ``cross``: the query is
    another tensor than key and value (x + 1), which keeps the slow path."""

    def __init__(self, heads: int, cross: bool) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, heads, batch_first=True)
        self.fc = nn.Linear(8, 3)
        self.cross = cross

    def forward(self, x):
        q = x + 1 if self.cross else x
        return self.fc(self.mha(q, x, x, need_weights=False)[0])


# 1x4x8 (4 tokens, E = 8). fc 4 * 8 * 3 = 96 MACs -> 192 FLOPs. MultiheadAttention's 1,280 MACs:
# in-projection 4 * 8 * 24 = 768, scores and weighted sum 4 * 4 * 8 = 128 each (heads x 4 x 4 x
# E/heads, whatever the heads), out-projection 4 * 8 * 8 = 256.
ATTEND = {
    # self-attention, 2 heads: the fast path, 0 of the 1,280 MACs; total 192
    "self, 2 heads": (2, False, 192, {"": 192, "fc": 192}, {"mac_vs_flop": 96, "unsupported_op": -1280}),
    # 1 head (odd): the slow path; in- and out-projection addmm (768 + 256) * 2 = 2,048 FLOPs; the
    # attention itself runs CPU's fused scaled_dot_product_attention (no formula): -256 MACs.
    # Total 2,048 + 192 = 2,240
    "self, 1 head": (1, False, 2240, {"": 2240, "mha": 2048, "fc": 192},
                     {"mac_vs_flop": 96 + 1024, "unsupported_op": -256}),
    # cross-attention, 2 heads: the slow path, as above (query 4 * 8 * 8 = 256 and key-value
    # 4 * 8 * 16 = 512 MACs: the same 768)
    "cross, 2 heads": (2, True, 2240, {"": 2240, "mha": 2048, "fc": 192},
                       {"mac_vs_flop": 96 + 1024, "unsupported_op": -256}),
}


@pytest.mark.parametrize("case", list(ATTEND))
def test_ops_multihead_attention_fast_path(case):
    heads, cross, total, rows, causes = ATTEND[case]
    run, ex = _ops_run(Attend(heads, cross).eval(), (torch.randn(1, 4, 8),))
    assert run.headline["flops"] == total
    assert _rows(run, "flops") == rows
    assert _causes(ex) == causes
    fused = any("aten._native_multi_head_attention" in w for w in run.warnings)
    assert fused == (case == "self, 2 heads")
    assert_explained(ex)


class MaskedAttention(nn.Module):
    """scaled_dot_product_attention with a float mask computed from a parameter (as T5's position
    bias is), then Linear(4, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.mask = nn.Parameter(torch.zeros(4, 4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=self.mask * 2))


def test_ops_sdpa_mask_needs_no_grad():
    # q = k = v 1x2x4x4 (2 heads, 4 tokens, d = 4): scores and weighted sum 2 * 4 * 4 * 4 = 128 MACs
    # each, 256. With grad enabled the mask requires grad and CPU runs the math path (bmm, counted:
    # FlopCounterMode's own row); under torchscan's no_grad the computed mask does not, so CPU runs
    # the fused kernel, no formula: 0 (unsupported_op -256). fc: 8 rows * 4 * 3 = 96 MACs -> 192 FLOPs.
    run, ex = _ops_run(MaskedAttention().eval(), (torch.randn(1, 2, 4, 4),))
    assert run.headline["flops"] == 192
    assert _causes(ex) == {"mac_vs_flop": 96, "unsupported_op": -256}
    assert_explained(ex)


def test_ops_adapter_leaves_the_model_as_it_was():
    model = Small().train()
    adapter("torchscan-ops").run(model, (torch.randn(1, 3, 8, 8),))
    assert model.training and model.bn.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert int(model.bn.num_batches_tracked) == 0


def test_ops_resnet18_total_and_zero_residual():
    # every MAC of resnet18 is a convolution or the fc's addmm: 2 * 1,814,073,344 = 3,628,146,688
    model = models.build(models.resolve("resnet18"), device="cpu")
    run, ex = _ops_run(model, (torch.zeros(1, 3, 224, 224),))
    assert run.headline["flops"] == 3628146688
    assert _causes(ex) == {"mac_vs_flop": 1814073344}
    assert_explained(ex)


def test_ops_vit_b_16_fast_path_and_zero_residual():
    # Native 17,563,828,224 MACs (torchvision's _ops 17.564 G). Each of the 12 encoder layers'
    # self-attention runs the fast path under no_grad and counts 0: 197 tokens, E = 768, 12 heads:
    # in-projection 197 * 768 * 2304 = 348,585,984, scores and weighted sum 2 * 12 * 197 * 197 * 64
    # = 59,610,624, out-projection 197 * 768 * 768 = 116,195,328: 524,391,936 per layer, 12 x =
    # 6,292,703,232. The rest (patch conv, MLPs, head) 17,563,828,224 - 6,292,703,232 =
    # 11,271,124,992 MACs -> 22,542,249,984 FLOPs.
    model = models.build(models.resolve("vit_b_16"), device="cpu")
    run, ex = _ops_run(model, (torch.zeros(1, 3, 224, 224),))
    assert run.headline["flops"] == 22542249984
    assert _causes(ex) == {"mac_vs_flop": 11271124992, "unsupported_op": -6292703232}
    assert any("aten._native_multi_head_attention was observed 12 time(s)" in w for w in run.warnings)
    assert_explained(ex)


def _transformer() -> nn.Module:
    # d_model 8, 2 heads, feed-forward 16, one encoder and one decoder layer, batch_first
    torch.manual_seed(0)
    return nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16,
                          dropout=0.0, batch_first=True).eval()


# nn.Transformer on src 1x4x8 (S = 4) and tgt 1x3x8 (T = 3), E = 8, F = 16, native MACs:
# encoder layer: self-attention in-projection 4*8*24 = 768, scores and weighted sum 4*4*8 = 128
#   each, out-projection 4*8*8 = 256 (1,280); linear1 4*8*16 = 512, linear2 4*16*8 = 512: 2,304
# decoder layer: self-attention 3*8*24 = 576 + 3*3*8 = 72 twice + 3*8*8 = 192 (912); cross-attention
#   query 3*8*8 = 192, key-value 4*8*16 = 512, scores and weighted sum 3*4*8 = 96 each, out 192
#   (1,088); linear1 3*8*16 = 384, linear2 384: 2,768.  Total 2,304 + 2,768 = 5,072 MACs.
# Parameters: encoder layer in_proj 24*8 + 24 = 216, out_proj 72, linear1 144, linear2 136, two
# norms 32: 600; decoder layer two attentions 576, linears 280, three norms 48: 904; the two
# stacks' final norms 16 each: 600 + 16 + 904 + 16 = 1,536.
TRANSFORMER_MACS = 5072
TRANSFORMER_INPUTS = (torch.randn(1, 4, 8), torch.randn(1, 3, 8))


def test_transformer_model_is_one_leaf():
    # torchscan crawls an nn.Transformer model as one module (the root alone is hooked): one row
    # holding all 1,536 parameters, no MAC formula for Transformer: 0 MACs, all 5,072 unsupported
    run, ex = _run(_transformer(), TRANSFORMER_INPUTS)
    assert run.headline == {"macs": 0, "params": 1536}
    assert _rows(run, "params") == {"": 1536}
    assert count(_transformer(), TRANSFORMER_INPUTS).totals["macs"] == TRANSFORMER_MACS
    assert _causes(ex) == {"unsupported_module": -TRANSFORMER_MACS}
    assert_explained(ex)


def test_ops_transformer_encoder_layer_fast_path():
    # torchscan hooks only the nn.Transformer root, so the encoder layer (unhooked, batch_first,
    # even heads, ReLU, equal norm eps) runs torch's fused aten._transformer_encoder_layer_fwd
    # under no_grad: 0 of its 2,304 MACs. The decoder layer has no such path; its self-attention
    # (query = key = value) takes MultiheadAttention's fast path: 0 of 912. Its cross-attention
    # keeps the slow path: in-projections 192 + 512 and out-projection 192 MACs as addmm, but CPU's
    # fused scaled_dot_product_attention (no formula) hides scores and weighted sum, 96 + 96.
    # Counted: (704 + 192 + 768) MACs * 2 = 3,328 FLOPs; unsupported 2,304 + 912 + 192 = 3,408.
    run, ex = _ops_run(_transformer(), TRANSFORMER_INPUTS)
    assert run.headline["flops"] == 3328
    assert _causes(ex) == {"mac_vs_flop": 1664, "unsupported_op": -3408}
    assert any("aten._transformer_encoder_layer_fwd" in w for w in run.warnings)
    assert_explained(ex)
    # the same layers inside a model of one's own are hooked by torchscan: no layer fast path
    wrapped = nn.Sequential(_transformer().encoder)
    run, ex = _ops_run(wrapped, (TRANSFORMER_INPUTS[0],))
    assert not any("aten._transformer_encoder_layer_fwd" in w for w in run.warnings)
    assert_explained(ex)


def test_a_pool_whose_kernel_size_is_a_list_counts_nothing():
    # MaxPool2d with kernel_size=[2, 2] (a list, as timm's mvitv2 builds its pools) on 1x1x4x4:
    # torchscan's math.prod(k) if isinstance(k, tuple) else k keeps the list, "k - 1" raises
    # TypeError, and the module's MACs are left unavailable: 0, where a (2, 2) tuple gives
    # (4 - 1) x 4 = 12. Native records the list (as a tuple named in "lists"); the explanation
    # predicts torchscan's 0 (explaining it used to raise KeyError and end a whole zoo run)
    pool = nn.MaxPool2d(2)
    pool.kernel_size = [2, 2]
    model, x = nn.Sequential(pool).eval(), torch.randn(1, 1, 4, 4)
    native = count(model, (x,))
    assert native.row("0").attrs["lists"] == ("kernel_size",) and native.row("0").attrs["kernel_size"] == (2, 2)
    run = adapter("torchscan").run(model, (x,))
    assert [layer.raw["macs"] for layer in run.layers if layer.module == "0"] == [0]
    assert_explained(explain("torchscan", run, native))
    pool.kernel_size = (2, 2)
    run = adapter("torchscan").run(model, (x,))
    assert [layer.raw["macs"] for layer in run.layers if layer.module == "0"] == [12]
    assert_explained(explain("torchscan", run, count(model, (x,))))
