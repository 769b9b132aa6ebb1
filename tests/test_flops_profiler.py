"""flops-profiler 0.1.2, the older standalone DeepSpeed profiler: DeepSpeed's rules without SDPA and
``@``, with mm/bmm and Tensor.baddbmm; add/mul with dimensions aligned from the left; every
parameter. The small models and their arithmetic are ``tests/test_deepspeed.py``'s."""

from __future__ import annotations

import pytest
import torch

from reconcile.counter import count
from tests.harness import adapter, assert_explained, explain
from tests.test_deepspeed import Attn, Misc, attn_input, check_adapter, check_rows, misc_input

pytest.importorskip("flops_profiler")

# get_model_profile calls model.forward(*args) itself: the root's hooks never run, so what the
# model's own forward does (here everything but the child Linears) is counted nowhere.
# Attn: qkv 768 MACs / 1,536 FLOPs, proj 256 / 512; root 0 (its torch.matmul and F.softmax lost;
# q @ k^T and SDPA are not patched anyway): 1,024 MACs, 2,048 FLOPs; params 216 + 72 = 288
ATTN = {"qkv": (768, 1536, 216), "proj": (256, 512, 72), "": (0, 0, 288)}
ATTN_TOTAL = (1024, 2048, 288)

# Misc: the root's addmm and mul lost; frozen 4 x 6 x 2 = 48 MACs, 96 FLOPs; every parameter:
# 8 x 6 + 6 + 14 = 68
MISC = {"": (0, 0, 68), "frozen": (48, 96, 14)}
MISC_TOTAL = (48, 96, 68)


def test_convention_attention():
    check_rows("flops-profiler", Attn(), attn_input(), ATTN, ATTN_TOTAL)


def test_convention_misc():
    check_rows("flops-profiler", Misc(), misc_input(), MISC, MISC_TOTAL)


def test_adapter_attention():
    check_adapter("flops-profiler", Attn(), attn_input(), ATTN, ATTN_TOTAL)


def test_adapter_misc():
    check_adapter("flops-profiler", Misc(), misc_input(), MISC, MISC_TOTAL)


class _Bmm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(2, 4, 5))

    def forward(self, x):
        return torch.bmm(x, self.w)


def test_bmm_counted_unlike_calflops():
    class Bmm(torch.nn.Module):  # one level down: the root's own work is lost (see above)
        def __init__(self) -> None:
            super().__init__()
            self.inner = _Bmm()

        def forward(self, x):
            return self.inner(x)

    # torch.bmm of (2, 3, 4) by (2, 4, 5): 2 x 3 x 4 x 5 = 120 MACs, 240 FLOPs
    inputs = (torch.randn(2, 3, 4),)
    run = adapter("flops-profiler").run(Bmm().eval(), inputs)
    assert (run.headline["macs"], run.headline["flops"]) == (120, 240)
    assert_explained(explain("flops-profiler", run, count(Bmm().eval(), inputs)))


@pytest.fixture(scope="module")
def small_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=1000)
    return transformers.BertModel(cfg).eval(), (torch.randint(0, 1000, (1, 16)),)


def test_small_bert_explained(small_bert):
    model, inputs = small_bert
    run = adapter("flops-profiler").run(model, inputs)
    # as calflops: 1,118,208 less SDPA's 65,536 = 1,052,672
    assert run.headline["macs"] == 1_052_672
    assert_explained(explain("flops-profiler", run, count(model, inputs)))


def test_same_padding_is_a_failed_run_with_its_reason():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding="same"))
    inputs = (torch.randn(1, 3, 8, 8),)
    from reconcile import conventions

    # counted first: the failed run leaves flops-profiler's patches on torch (a job's process is thrown away)
    assert "padding='same'" in conventions.get("flops-profiler").cannot_run(count(conv.eval(), inputs))
    run = adapter("flops-profiler").run(conv.eval(), inputs)
    assert run.status == "failed" and run.error_type == "TypeError"
    assert "padding='same'" in run.error_message


def test_lstm_weights_once_per_step():
    from tests.test_deepspeed import lstm_model

    # flops-profiler's _rnn_flops, per step: |W_ih| 24 + |W_hh| 16 + 10 x 2 gate ops + 8 + 8 bias = 76;
    # x 5 steps = 380 FLOPs (DeepSpeed 0.19.8: 500), 0 MACs; params 56
    rows = {"0": (0, 380, 56)}
    check_rows("flops-profiler", lstm_model(), (torch.randn(1, 5, 3),), rows, (0, 380, 56))
    check_adapter("flops-profiler", lstm_model(), (torch.randn(1, 5, 3),), rows, (0, 380, 56))
