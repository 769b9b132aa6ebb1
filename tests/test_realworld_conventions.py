"""Real-world models (timm, transformers): every tool's rows predicted with zero residual.

One small hand-counted model per rule that real-world models need (the arithmetic in comments);
these run in a few seconds. The sample of issue #8 itself (30 timm and 6 transformers models,
every tool, through the pipeline as a user runs it) is ``tests/test_zoo_realworld.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.harness import assert_explained, explain_in_process
from tests.models_small import BiasedAttention, Fn



def explained(tool: str, model: nn.Module, *inputs: torch.Tensor):
    ex = explain_in_process(tool, model.eval(), inputs)
    assert_explained(ex)
    return ex


def total_only(ex) -> dict:
    return dict(ex.run.unattributed)


# ----- ptflops: which Python names it patches --------------------------------------------------


@pytest.mark.parametrize("op, seen", [
    (lambda a, b: torch.matmul(a, b), True),
    (lambda a, b: a.matmul(b), True),
    (lambda a, b: a @ b, False),  # Tensor.__matmul__ is not patched
    (lambda a, b: torch.einsum("bij,jk->bik", a, b), False),
])
def test_ptflops_matmul_operator_vs_function(op, seen):
    # 1x4x8 times 8x3: prod(A) x B[-1] = 32 x 3 = 96 MACs, in the total only when the name is patched
    w = nn.Parameter(torch.randn(8, 3))
    ex = explained("ptflops", _WithWeight(op, w), torch.randn(1, 4, 8))
    assert total_only(ex) == ({"tensor_op:matmul": 96} if seen else {})
    assert ex.raw_total == (96 if seen else 0)
    assert ex.native_macs == 96


class _WithWeight(nn.Module):
    def __init__(self, op, w: nn.Parameter) -> None:
        super().__init__()
        self.op = op
        self.w = w

    def forward(self, x):
        return self.op(x, self.w)


@pytest.mark.parametrize("method, seen", [(False, True), (True, False)])
def test_ptflops_softmax_method_vs_functional(method, seen):
    # softmax over 1x4x8 = 32 elements: F.softmax counts numel = 32; x.softmax(-1) is not patched
    fn = (lambda self, x: x.softmax(-1)) if method else (lambda self, x: F.softmax(x, -1))
    ex = explained("ptflops", Fn(fn), torch.randn(1, 4, 8))
    assert total_only(ex) == ({"functional:F.softmax": 32} if seen else {})


def test_ptflops_addmm_counts_the_bias_tensor_once():
    # GPT-2's Conv1D: torch.addmm(bias(3), x(4x8), w(8x3)): 4*8*3 = 96 MACs + numel(bias) = 3
    # (ptflops adds the bias tensor's size, not the 4*3 = 12 bias adds native counts)
    b, w = nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(8, 3))
    model = _WithWeight(lambda x, p: torch.addmm(p[0], x, p[1]), nn.ParameterList([b, w]))  # type: ignore[arg-type]
    ex = explained("ptflops", model, torch.randn(4, 8))
    assert total_only(ex) == {"tensor_op:addmm": 99}
    assert ex.native_macs == 96


@pytest.mark.parametrize("call, count", [
    (lambda x, g: x.mul(g), 16),  # convnext layer scale: 1x4x2x2 * 1x4x1x1: the larger dim each = 16
    (lambda x, g: torch.mul(x, g), 16),
    (lambda x, g: x * g, None),  # the operator is not patched
])
def test_ptflops_layer_scale_mul(call, count):
    g = nn.Parameter(torch.randn(1, 4, 1, 1))
    ex = explained("ptflops", _WithWeight(call, g), torch.randn(1, 4, 2, 2))
    assert total_only(ex) == ({"tensor_op:mul": count} if count else {})


def test_ptflops_elementwise_aligns_dimensions_from_the_left():
    # ptflops' elementwise hook takes the larger size per dimension counting from the left:
    # 1x4x8 + 8 -> [max(1, 8), 4, 8] = 8*4*8 = 256, though the sum has 32 elements
    b = nn.Parameter(torch.randn(8))
    ex = explained("ptflops", _WithWeight(lambda x, p: torch.add(x, p), b), torch.randn(1, 4, 8))
    assert total_only(ex) == {"tensor_op:add": 256}


def test_ptflops_gelu_bound_at_build_time_is_not_seen():
    # transformers' GELUActivation holds nn.functional.gelu from before ptflops patches it: 0 counted;
    # nn.GELU looks F.gelu up at call time: its hook counts 2x5 = 10 and the patched F.gelu 10 more
    from transformers.activations import GELUActivation

    ex = explained("ptflops", nn.Sequential(GELUActivation()), torch.randn(2, 5))
    assert ex.raw_total == 0 and total_only(ex) == {}
    ex = explained("ptflops", nn.Sequential(nn.GELU()), torch.randn(2, 5))
    assert total_only(ex) == {"functional:F.gelu": 10}


def test_ptflops_timm_attention_hook_skips_its_linears():
    # timm Attention(8, heads 2) on 1x4x8, head_dim 4. ptflops' hook (timm importable):
    #   q scaling N*hd*h = 4*4*2 = 32; per head QK^T N*N*hd = 64, softmax N*N = 16, AV 64 -> 144 x 2 = 288
    #   = 320; the module is atomic, so qkv (4*8*24 = 768 MACs) and proj (4*8*8 = 256 + 32 bias) are skipped
    from timm.layers import Attention

    ex = explained("ptflops", nn.Sequential(Attention(8, num_heads=2)), torch.randn(1, 4, 8))
    assert ex.raw_total == 320
    (row,) = [le for le in ex.layers if le.module == "0"]
    assert {c.id: c.amount for c in row.causes["macs"]} == {"nested_skipped": -1024, "elementwise": 32,
                                                             "softmax": 32}


# ----- ptflops-aten: which scaled-dot-product attention path CPU takes ---------------------------



@pytest.mark.parametrize("learned", [True, False])
def test_ptflops_aten_sdpa_with_a_mask_that_requires_grad_runs_unfused(learned):
    # QK^T: 2 heads x 4 x 4 scores x 8 = 256 MACs, AV the same: 512. The tools run with grad on:
    # a mask made from a parameter requires grad, CPU leaves the flash kernel for the math path,
    # and ptflops-aten counts its two bmm (512); a constant mask keeps the fused kernel: 0
    ex = explained("ptflops-aten", BiasedAttention(learned), torch.randn(1, 2, 4, 8))
    assert ex.raw_total == (512 if learned else 0)
    assert ex.native_macs == 512


# ----- adapters: forwards that take None or return a dict / ModelOutput ----------------------------


class _DictOut(nn.Module):
    """forward(x, past=None, mask) -> {"logits": fc(x * mask), "hidden": x}: the shape of a
    transformers forward called positionally."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x, past=None, mask=None):
        return {"logits": self.fc(x * mask), "hidden": x}


def test_fvcore_traces_a_forward_with_none_inputs_and_dict_output():
    # torch.jit traces neither None inputs nor dict outputs: the adapter traces a wrapper taking the
    # tensors only and returning every output tensor. fc on 2x4: 2*4*3 = 24 flops (MACs)
    ex = explained("fvcore", _DictOut(), torch.randn(2, 4), None, torch.ones(2, 4))
    assert ex.run.headline["flops"] == 24
    assert {le.module for le in ex.layers} >= {"", "fc"}
    assert any("wrapper" in n for n in ex.run.notes)


# ----- fvcore: what its jit trace records ---------------------------------------------------------


@pytest.mark.parametrize("padding, traced", [(1, True), ("same", False)])
def test_fvcore_padding_same_conv_is_convolution_mode(padding, traced):
    # Conv2d(2, 4, 3) on 1x2x5x5, output 1x4x5x5 = 100 elements x (2 x 9) = 1800 MACs. padding="same"
    # traces as aten::_convolution_mode, which fvcore has no handle for: 0 flops, 0 activations
    ex = explained("fvcore", nn.Sequential(nn.Conv2d(2, 4, 3, padding=padding, bias=False)), torch.randn(1, 2, 5, 5))
    assert ex.run.headline["flops"] == (1800 if traced else 0)
    assert ex.run.headline["activations"] == (100 if traced else 0)
    assert ex.run.headline.get("unsupported:aten::_convolution_mode", 0) == (0 if traced else 1)


class _StdConv(nn.Conv2d):
    """nfnet's ScaledStdConv2d in short: the weight standardised by F.batch_norm(training=True)."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                         momentum=0.0).reshape_as(self.weight)
        return F.conv2d(x, w)


def test_fvcore_functional_batch_norm_counted_by_its_training_flag():
    # weight 4x2x3x3 = 72 elements standardised with batch statistics: fvcore's training rule,
    # 4 per element without an affine weight = 288, though the module is in eval mode;
    # conv 1x4x3x3 outputs = 36 x (2 x 9) = 648 MACs. reshape_as is traced (unsupported), 1 call
    ex = explained("fvcore", nn.Sequential(_StdConv(2, 4, 3, bias=False)), torch.randn(1, 2, 5, 5))
    assert ex.run.headline["flops"] == 648 + 288
    assert ex.run.headline["unsupported:aten::reshape_as"] == 1


@pytest.mark.parametrize("learned", [True, False])
def test_fvcore_attention_mask_add_is_inside_the_traced_call(learned):
    # one aten::scaled_dot_product_attention, unsupported: its mask add is not a traced aten::add
    ex = explained("fvcore", BiasedAttention(learned), torch.randn(1, 2, 4, 8))
    assert ex.run.headline["unsupported:aten::scaled_dot_product_attention"] == 1
    assert "unsupported:aten::add" not in ex.run.headline


class _LastHidden(nn.Module):
    """A wrapper that returns only the encoder's hidden states: its pooler's result goes unused."""

    def __init__(self) -> None:
        super().__init__()
        import transformers as T

        cfg = T.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=16)
        self.bert = T.BertModel(cfg)

    def forward(self, ids):
        return self.bert(ids).last_hidden_state


def test_fvcore_drops_a_pooler_whose_output_is_unused():
    # the trace keeps only what the output depends on: the pooler's dense on the [CLS] token,
    # 1 x 16 x 16 = 256 MACs, and its tanh are gone from fvcore's count (0 flops, 0 activations)
    # (BertEmbeddings' traced size arithmetic, one aten::add, is the one unsupported-op count left)
    ex = explain_in_process("fvcore", _LastHidden().eval(), (torch.randint(0, 100, (1, 8)),))
    pooler = next(le for le in ex.layers if le.module == "bert.pooler")
    assert pooler.raw["flops"] == 0 and pooler.raw["activations"] == 0
    assert not any(pooler.residual.values())
    assert all(not le.residual.get(m) for le in ex.layers for m in ("flops", "activations", "params"))
    dense = next(le for le in ex.layers if le.module == "bert.pooler.dense")
    assert {c.id: c.amount for c in dense.causes["flops"]} == {"dead_code": -256}
