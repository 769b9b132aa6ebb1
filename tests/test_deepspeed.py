"""DeepSpeed's flops profiler (0.19.8): its convention on small models counted by hand, the adapter
against the real tool, and zero residual on resnet18 and a small BERT.

The small models (``Attn``, ``Misc``) are shared with ``test_calflops.py`` and
``test_flops_profiler.py``: the same arithmetic, each copy of the profiler its own switches.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reconcile import conventions
from reconcile.counter import count
from tests.harness import adapter, assert_explained, explain

pytest.importorskip("deepspeed")


class Attn(nn.Module):
    """x (1, 4, 8): qkv Linear, then q @ k^T, SDPA, F.softmax and torch.matmul by hand, proj Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.view(1, 4, 2, 4).transpose(1, 2) for t in self.qkv(x).split(8, dim=-1))  # (1, 2, 4, 4) each
        s = q @ k.transpose(-2, -1)
        o = F.scaled_dot_product_attention(q, k, v)
        m = torch.matmul(F.softmax(s, dim=-1), v)
        return self.proj((o + m).transpose(1, 2).reshape(1, 4, 8))


class Misc(nn.Module):
    """x (4, 8): torch.addmm with a bias vector, a GELU taken before any patching, a broadcast
    torch.mul, and a frozen Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 6))
        self.b = nn.Parameter(torch.randn(6))
        self.act = F.gelu  # held from build time, as transformers' GELUActivation holds it
        self.frozen = nn.Linear(6, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(torch.addmm(self.b, x, self.w))
        return self.frozen(torch.mul(h, self.b))


def attn_input() -> tuple[torch.Tensor, ...]:
    return (torch.randn(1, 4, 8),)


def misc_input() -> tuple[torch.Tensor, ...]:
    return (torch.randn(4, 8),)


# Attn, DeepSpeed (rows are each module's own work):
# qkv: F.linear 4 x 8 x 24 = 768 MACs, 2 x 768 = 1,536 FLOPs (bias never counted); 8 x 24 + 24 = 216 params
# proj: 4 x 8 x 8 = 256 MACs, 512 FLOPs; 72 params
# root: q @ k^T prod(1,2,4,4) x 4 = 128 MACs; SDPA 32 x 4 + 8 x 4 x 4 = 256 MACs; torch.matmul 32 x 4 = 128
#   MACs: 512 MACs; FLOPs 2 x 512 + F.softmax 32 = 1,056; the operator + is not patched
# totals 768 + 256 + 512 = 1,536 MACs; 1,536 + 512 + 1,056 = 3,104 FLOPs; 216 + 72 = 288 params
ATTN = {"qkv": (768, 1536, 216), "proj": (256, 512, 72), "": (512, 1056, 288)}
ATTN_TOTAL = (1536, 3104, 288)

# Misc, DeepSpeed:
# root: torch.addmm 4 x 8 x 6 = 192 MACs, FLOPs 2 x 192 + 6 (the bias vector, once per call) = 390;
#   self.act is the original F.gelu: 0; torch.mul of (4, 6) by (6,): broadcast 24 FLOPs -> 414 FLOPs;
#   params 8 x 6 + 6 + (6 x 2 + 2) = 68 (frozen ones too)
# frozen: 4 x 6 x 2 = 48 MACs, 96 FLOPs, 14 params
MISC = {"": (192, 414, 68), "frozen": (48, 96, 14)}
MISC_TOTAL = (240, 510, 68)


def _predicted(tool: str, model: nn.Module, inputs: tuple) -> tuple[dict, dict]:
    pred = conventions.get(tool).predict(count(model.eval(), inputs))
    rows = {p.module: (p.predicted["macs"], p.predicted["flops"], p.predicted["params"]) for p in pred.layers}
    return rows, pred.headline


def check_rows(tool: str, model: nn.Module, inputs: tuple, rows: dict, total: tuple) -> None:
    got, headline = _predicted(tool, model, inputs)
    assert {k: got[k] for k in rows} == rows
    assert (headline["macs"], headline["flops"], headline["params"]) == total


def check_adapter(tool: str, model: nn.Module, inputs: tuple, rows: dict, total: tuple) -> None:
    run = adapter(tool).run(model.eval(), inputs)
    assert run.status == "ok", run.error_message
    got = {layer.module: (layer.raw["macs"], layer.raw["flops"], layer.raw["params"]) for layer in run.layers}
    assert {k: got[k] for k in rows} == rows
    assert (run.headline["macs"], run.headline["flops"], run.headline["params"]) == total
    assert_explained(explain(tool, run, count(model, inputs)))


def test_convention_attention():
    check_rows("deepspeed", Attn(), attn_input(), ATTN, ATTN_TOTAL)


def test_convention_addmm_captured_gelu_broadcast():
    check_rows("deepspeed", Misc(), misc_input(), MISC, MISC_TOTAL)


def test_convention_names_the_causes():
    pred = conventions.get("deepspeed").predict(count(Misc().eval(), misc_input()))
    root = next(p for p in pred.layers if p.module == "")
    causes = {t.cause: t.amount for t in root.terms["flops"]}
    # 2 per MAC: +192; the bias vector once: +6; the broadcast mul: +24; the captured GELU: not seen
    assert causes["mac_vs_flop"] == 192 and causes["bias"] == 6 and causes["elementwise"] == 24
    assert "functional_not_seen" in causes


def test_adapter_attention():
    check_adapter("deepspeed", Attn(), attn_input(), ATTN, ATTN_TOTAL)


def test_adapter_addmm_captured_gelu_broadcast():
    check_adapter("deepspeed", Misc(), misc_input(), MISC, MISC_TOTAL)


def test_adapter_restores_torch():
    before = (F.linear, F.scaled_dot_product_attention, torch.Tensor.__matmul__, torch.matmul)
    adapter("deepspeed").run(Attn().eval(), attn_input())
    assert (F.linear, F.scaled_dot_product_attention, torch.Tensor.__matmul__, torch.matmul) == before


def test_a_model_that_raises_is_a_failed_run():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x)

    run = adapter("deepspeed").run(Broken().eval(), (torch.randn(2, 3),))  # 3 features into Linear(4, 4)
    assert run.status == "failed" and run.error_type == "RuntimeError"


# ----- zero residual on real models (one run each, shared) ------------------------------------------


@pytest.fixture(scope="module")
def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18().eval(), (torch.randn(1, 3, 224, 224),)


@pytest.fixture(scope="module")
def small_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=1000)
    return transformers.BertModel(cfg).eval(), (torch.randint(0, 1000, (1, 16)),)


def test_resnet18_explained(resnet18):
    model, inputs = resnet18
    run = adapter("deepspeed").run(model, inputs)
    # resnet18: torchvision's published 1.81 GFLOPs (MACs): every conv and the fc, nothing else
    assert run.headline["macs"] == 1_814_073_344
    assert_explained(explain("deepspeed", run, count(model, inputs)))


def test_small_bert_explained(small_bert):
    model, inputs = small_bert
    run = adapter("deepspeed").run(model, inputs)
    # per layer: 4 projections 16 x 64 x 64 = 65,536 each, FFN 2 x 16 x 64 x 128 = 262,144, SDPA
    # QK and AV 2 x 4 heads x 16 x 16 x 16 = 32,768: 262,144 + 262,144 + 32,768 = 557,056; x 2 layers =
    # 1,114,112; pooler 64 x 64 = 4,096 -> 1,118,208
    assert run.headline["macs"] == 1_118_208
    assert_explained(explain("deepspeed", run, count(model, inputs)))


def lstm_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.LSTM(3, 2, batch_first=True))


def test_lstm_module_hook_flops_only():
    # nn.LSTM(3, 2), input (1, 5, 3): DeepSpeed's _rnn_forward_hook, per step: 2 x |W_ih| (8 x 3) - 8
    # + 2 x |W_hh| (8 x 2) - 8 + 10 x 2 gate ops + |b_ih| + |b_hh| (8 + 8) = 40 + 24 + 20 + 16 = 100;
    # x 1 x 5 steps = 500 FLOPs, 0 MACs; params 24 + 16 + 16 = 56
    rows = {"0": (0, 500, 56)}
    check_rows("deepspeed", lstm_model(), (torch.randn(1, 5, 3),), rows, (0, 500, 56))
    check_adapter("deepspeed", lstm_model(), (torch.randn(1, 5, 3),), rows, (0, 500, 56))


class _Einsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 5))

    def forward(self, x):
        return torch.einsum("ij,jk->ik", x, self.w)


def test_einsum_by_numpy_path():
    # torch.einsum("ij,jk->ik") of (3, 4) by (4, 5): numpy's count 3 x 4 x 5 = 60 index combinations x 2
    # (j is summed) = 120, + 1 (numpy's opt_cost = sum(cost_list) + 1; its printed "Optimized FLOP
    # count: 1.210e+02") = 121 FLOPs, 0 MACs (the profiler returns (flops, 0) for einsum)
    model = nn.Sequential(_Einsum())
    rows = {"0": (0, 121, 20)}
    check_rows("deepspeed", model, (torch.randn(3, 4),), rows, (0, 121, 20))
    check_adapter("deepspeed", model, (torch.randn(3, 4),), rows, (0, 121, 20))
