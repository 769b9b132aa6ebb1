"""calflops 0.3.2: DeepSpeed's rules without SDPA, ``@``, mm/bmm; add/mul sized with dimensions
aligned from the left; only ``requires_grad`` parameters. The small models and their arithmetic
are ``tests/test_deepspeed.py``'s."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reconcile.counter import count
from tests.harness import adapter, assert_explained, explain
from tests.test_deepspeed import Attn, Misc, attn_input, check_adapter, check_rows, misc_input

pytest.importorskip("calflops")

# Attn: qkv and proj as DeepSpeed (768 / 1,536 / 216 and 256 / 512 / 72); the root keeps only
# torch.matmul 32 x 4 = 128 MACs, FLOPs 2 x 128 + F.softmax 32 = 288 (q @ k^T and SDPA not patched)
# totals 768 + 256 + 128 = 1,152 MACs; 1,536 + 512 + 288 = 2,336 FLOPs; 288 params
ATTN = {"qkv": (768, 1536, 216), "proj": (256, 512, 72), "": (128, 288, 288)}
ATTN_TOTAL = (1152, 2336, 288)

# Misc: addmm 192 MACs, 2 x 192 + 6 FLOPs; torch.mul of (4, 6) by (6,) with dimensions aligned from
# the left: max(4, 6) x max(6, 1) = 36 -> 426 FLOPs; params trainable only: 8 x 6 + 6 = 54 (the frozen
# Linear's 14 left out); frozen: 48 MACs, 96 FLOPs, 0 params
MISC = {"": (192, 426, 54), "frozen": (48, 96, 0)}
MISC_TOTAL = (240, 522, 54)


def test_convention_attention():
    check_rows("calflops", Attn(), attn_input(), ATTN, ATTN_TOTAL)


def test_convention_addmm_captured_gelu_left_aligned_mul_trainable_params():
    check_rows("calflops", Misc(), misc_input(), MISC, MISC_TOTAL)


def test_adapter_attention():
    check_adapter("calflops", Attn(), attn_input(), ATTN, ATTN_TOTAL)


def test_adapter_addmm_captured_gelu_left_aligned_mul_trainable_params():
    check_adapter("calflops", Misc(), misc_input(), MISC, MISC_TOTAL)


def _fail_then_count() -> tuple:
    """In a fresh process: calflops on a model without parameters, then on Linear(4, 3)."""
    import torch as t

    failed = adapter("calflops").run(nn.ReLU().eval(), (t.randn(2, 3),))
    after = adapter("calflops").run(nn.Linear(4, 3).eval(), (t.randn(2, 4),))
    return failed.status, failed.error_type, after.headline.get("macs")


def test_a_model_without_parameters_is_a_failed_run_and_leaves_its_patches():
    import multiprocessing

    # calculate_flops patches torch, then reads next(model.parameters()).device: StopIteration on a
    # model with none, and its patches stay. The next run in that process counts every F.linear
    # twice (two wrappers): 2 x (2 x 4 x 3 = 24) = 48, which is why each job has its own process.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        status, error_type, macs_after = pool.apply(_fail_then_count)
    assert (status, error_type) == ("failed", "StopIteration")
    assert macs_after == 48


def test_none_input_goes_in_as_keywords():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x, cache=None, y=None):
            return self.fc(x + y)

    run = adapter("calflops").run(Two().eval(), (torch.randn(2, 4), None, torch.randn(2, 4)))
    assert run.status == "ok", run.error_message
    assert run.headline["macs"] == 2 * 4 * 3  # 24
    assert any("keywords" in n for n in run.notes)


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
    run = adapter("calflops").run(model, inputs)
    # MACs as torchvision's 1,814,073,344; FLOPs as issue 20 measured: 3,636,250,112
    assert (run.headline["macs"], run.headline["flops"]) == (1_814_073_344, 3_636_250_112)
    assert_explained(explain("calflops", run, count(model, inputs)))


def test_small_bert_explained(small_bert):
    model, inputs = small_bert
    run = adapter("calflops").run(model, inputs)
    # DeepSpeed's 1,118,208 less SDPA's 2 layers x 32,768 = 65,536: 1,052,672
    assert run.headline["macs"] == 1_052_672
    assert_explained(explain("calflops", run, count(model, inputs)))
