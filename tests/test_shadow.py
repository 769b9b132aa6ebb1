"""A forward that reads its inputs' values counts on meta exactly as on CPU (counter/shadow.py);
a value that cannot be known exactly still fails, with an error that says what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reconcile import models
from reconcile.counter import count
from reconcile.errors import ReconcileError
from reconcile.inputs import InputSpec, make_inputs


class SkipsAllOnesMask(nn.Module):
    """As transformers does: a mask of all ones is dropped; else it is applied (one more mul)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8, bias=False)

    def forward(self, x, mask):
        keep = mask.to(torch.bool)
        if keep.all():  # a value read: fails on plain meta tensors
            return self.fc(x)
        return self.fc(x) * keep.unsqueeze(-1)


def test_a_value_read_on_meta_gives_the_cpu_count():
    flops = {}
    for fill in ("ones", "zeros"):
        specs = (InputSpec((2, 4, 8), name="x"), InputSpec((2, 4), "long", name="mask", fill=fill))
        got = {}
        for device in ("meta", "cpu"):
            m = SkipsAllOnesMask().to(device)
            got[device] = count(m, make_inputs(specs, device, m)).totals
        assert got["meta"] == got["cpu"]
        # fc: 2 * 4 rows * 8 * 8 = 512 MACs, whichever branch runs
        assert got["meta"]["macs"] == 512
        flops[fill] = got["meta"]["flops"]
    # the branch taken follows the mask's values: a mask of zeros is applied, 2 * 4 * 8 = 64 multiplies
    assert flops["zeros"] - flops["ones"] == 64


class ReadsAWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if self.fc.weight.sum() > 0:  # depends on a weight: no value on meta
            return self.fc(x)
        return x


def test_a_value_that_depends_on_weights_still_fails_on_meta():
    m = ReadsAWeight().to("meta")
    with pytest.raises(ReconcileError, match="reads tensor values .* count it on real tensors with --device cpu"):
        count(m, make_inputs(InputSpec((1, 4)), "meta"))


class OverwritesItsMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, mask):
        mask = mask.clone()
        mask.add_(self.fc.weight[0, :1].to(mask.dtype))  # now unknown: its shadow must go
        if mask.all():
            return self.fc(x)
        return x


def test_an_in_place_write_from_an_unknown_tensor_forgets_the_value():
    m = OverwritesItsMask().to("meta")
    specs = (InputSpec((1, 4)), InputSpec((1, 4), "long", fill="ones"))
    with pytest.raises(ReconcileError, match="reads tensor values"):
        count(m, make_inputs(specs, "meta"))


def test_a_transformers_decoder_counts_on_meta():
    # transformers reads the attention mask (all ones?) and the position ids (packed?) on meta
    spec = models.resolve("hf:LlamaForCausalLM:hidden_size=64:intermediate_size=128:num_hidden_layers=1"
                          ":num_attention_heads=4:num_key_value_heads=2:vocab_size=100")
    inputs = models.default_inputs(spec)
    meta = count(*models.prepare(models.build(spec, "meta"), inputs, "meta")).totals
    cpu = count(*models.prepare(models.build(spec, "cpu"), inputs, "cpu")).totals
    assert meta == cpu
