"""Model sources beyond torchvision (timm, transformers), several inputs, the model a tool sees.

Counts here are worked out by hand or read from a published table; a transformers model's
parameter count is checked against ``sum(p.numel() for p in model.parameters())`` of the same
class built by transformers itself (which shares tied tensors once).
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from reconcile import models
from reconcile.counter import count
from reconcile.errors import ReconcileError
from reconcile.inputs import InputSpec, bind, make_inputs, parse_input


# ---------------------------------------------------------------------------------------------
# timm


def test_timm_table_is_timms_own():
    sys.path.insert(0, "scripts")
    try:
        import timm_table
    finally:
        sys.path.remove("scripts")
    from pathlib import Path

    assert Path("reconcile/sources/timm_table.py").read_text() == timm_table.render(), \
        "regenerate with `.venv/bin/python scripts/timm_table.py`"


def test_timm_spec_resolves_without_torch_and_builds():
    spec = models.resolve("timm:ResNet18")
    assert spec.name == "timm:resnet18" and spec.kind == "timm"
    assert models.default_inputs(spec) == (InputSpec((1, 3, 224, 224)),)
    # timm's resnet18 is torchvision's architecture: torchvision publishes 11,689,512 parameters
    model = models.build(spec, device="meta")
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    # and 1.814 GMACs (torchvision's _ops for resnet18)
    assert round(count(model, models.make_inputs(models.default_inputs(spec), "meta")).totals["macs"] / 1e9, 3) == 1.814


def test_timm_default_input_follows_the_pretrained_config():
    # crossvit_tiny_240's default config is 240 px, maxvit_nano_rw_256's 256 px
    assert models.default_inputs(models.resolve("timm:crossvit_tiny_240"))[0].shape == (1, 3, 240, 240)
    assert models.default_inputs(models.resolve("timm:maxvit_nano_rw_256"))[0].shape == (1, 3, 256, 256)


def test_timm_unknown_tag_is_one_line_naming_the_tags(capsys):
    from reconcile.cli import main

    # timm raises RuntimeError for an unknown tag of a known model; resnet18's tags in timm 1.0.31
    # (timm.list_pretrained("resnet18.*")): a1_in1k, a2_in1k, a3_in1k, fb_ssl_yfcc100m_ft_in1k,
    # fb_swsl_ig1b_ft_in1k, gluon_in1k, tv_in1k
    assert main(["tools", "timm:resnet18.nosuchtag", "--tools", "native"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "'resnet18.nosuchtag'" in err and "a1_in1k" in err and "tv_in1k" in err


# ---------------------------------------------------------------------------------------------
# transformers: tied weights, several inputs


@pytest.mark.parametrize("spec, params, tied", [
    # GPT-2 small: 124,439,808 with lm_head.weight tied to transformer.wte.weight
    # (untied it would be 124,439,808 + 50257 * 768 = 163,037,184)
    ("hf:GPT2LMHeadModel", 124_439_808, ("lm_head.weight", "transformer.wte.weight")),
    # t5-small: 60,506,624 with shared, encoder.embed_tokens and decoder.embed_tokens one tensor
    # (and lm_head tied too); untied it would be 109,855,232
    ("hf:T5ForConditionalGeneration", 60_506_624, ("shared.weight", "encoder.embed_tokens.weight")),
])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_tied_weights_stay_tied_on_every_device(spec, params, tied, device):
    model = models.build(models.resolve(spec), device=device)
    assert sum(p.numel() for p in model.parameters()) == params
    named = dict(model.named_parameters(remove_duplicate=False))
    assert named[tied[0]] is named[tied[1]]
    assert all(p.device.type == device for p in model.parameters())


def test_cpu_and_meta_counts_agree_on_a_tied_decoder():
    spec = models.resolve("hf:GPT2LMHeadModel:n_layer=2")
    inputs = models.default_inputs(spec)
    got = {}
    for device in ("meta", "cpu"):
        # on meta, transformers' mask code reads the mask: its values come with the input
        model, args = models.prepare(models.build(spec, device), inputs, device)
        got[device] = count(model, args).totals
    assert got["meta"] == got["cpu"]
    # 2 layers: wte 50257*768 + wpe 1024*768 + 2 * (12 * 768^2 + 13 * 768) + ln_f 2*768
    # = 38,597,376 + 786,432 + 2 * 7,087,872 + 1,536 = 53,561,088 (lm_head is wte)
    assert got["meta"]["params"] == got["cpu"]["params"] == 53_561_088


def test_hf_default_inputs():
    bert = models.default_inputs(models.resolve("hf:BertModel"))
    assert bert == (InputSpec((1, 128), "long", 30522, "input_ids"),
                    InputSpec((1, 128), "long", None, "attention_mask", "ones"))
    t5 = models.default_inputs(models.resolve("hf:T5ForConditionalGeneration"))
    assert [i.name for i in t5] == ["input_ids", "attention_mask", "decoder_input_ids"]
    vit = models.default_inputs(models.resolve("hf:ViTForImageClassification:image_size=32"))
    assert vit == (InputSpec((1, 3, 32, 32), name="pixel_values"),)


def test_hf_overrides_are_canonical_and_checked():
    spec = models.resolve("hf:LlamaForCausalLM:num_hidden_layers=2:tie_word_embeddings=True")
    assert spec.name == "hf:LlamaForCausalLM:num_hidden_layers=2:tie_word_embeddings=true"
    model = models.build(spec, "meta")
    assert model.config.num_hidden_layers == 2 and model.config.use_cache is False


# ---------------------------------------------------------------------------------------------
# inputs


@pytest.mark.parametrize("text, expected", [
    ("1x3x224x224", InputSpec((1, 3, 224, 224))),
    ("input_ids=1x128:long:30522", InputSpec((1, 128), "long", 30522, "input_ids")),
    ("attention_mask=1x128:long:ones", InputSpec((1, 128), "long", None, "attention_mask", "ones")),
    ("pixel_values=2,3,32,32:bf16", InputSpec((2, 3, 32, 32), "bfloat16", None, "pixel_values")),
])
def test_parse_input(text, expected):
    assert parse_input(text) == expected
    assert parse_input(expected.option()) == expected


@pytest.mark.parametrize("text, message", [
    ("ids=1x0", "bad --input 'ids=1x0': the shape '1x0' is not positive integers separated by 'x'"),
    ("1x2:float32:5", "bad --input '1x2:float32:5': an upper bound only applies to integer dtypes"),
    ("1x2:long:many", "bad --input '1x2:long:many': 'many' is neither a positive upper bound nor ones/zeros"),
    ("9-x=1x2", "bad --input '9-x=1x2': '9-x' is not a parameter name"),
    ("1x99999999999x99999999999", "input shape 1x99999999999x99999999999 has"),
])
def test_parse_input_errors(text, message):
    with pytest.raises(ReconcileError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        parse_input(text)


class TwoInputs(nn.Module):
    """forward(x, mask=None, scale=None, y=None): a keyword input skips the parameters between."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, mask=None, scale=None, y=None):
        out = self.fc(x)
        return out if y is None else out + self.fc(y)


def test_named_inputs_are_put_in_forward_order():
    m = TwoInputs()
    x, y = torch.zeros(1, 4), torch.ones(1, 4)
    assert bind(m, [], {"y": y, "x": x}) == (x, None, None, y)
    assert bind(m, [x], {"y": y}) == (x, None, None, y)
    with pytest.raises(ReconcileError, match="has no positional parameter 'z'"):
        bind(m, [x], {"z": y})
    with pytest.raises(ReconcileError, match="input 'x' is also given positionally"):
        bind(m, [x], {"x": y})
    # both inputs reach the model: 2 Linear calls of 4*4 MACs = 32
    args = make_inputs((InputSpec((1, 4), name="x"), InputSpec((1, 4), name="y")), "meta", m)
    assert count(m.to("meta"), args).totals["macs"] == 32


def make_two_inputs():
    return TwoInputs()


make_two_inputs.example_inputs = lambda: {"x": torch.zeros(2, 4), "y": torch.zeros(2, 4)}


def test_example_inputs_of_a_factory(monkeypatch):
    monkeypatch.setitem(sys.modules, "two_inputs_mod", sys.modules[__name__])
    spec = models.resolve("two_inputs_mod:make_two_inputs")
    assert models.default_inputs(spec) == (InputSpec((2, 4), name="x"), InputSpec((2, 4), name="y"))


def test_half_precision_runs_the_model_in_that_dtype():
    spec = models.resolve("resnet18")
    inputs = models.with_dtype(models.default_inputs(spec), "bfloat16", None)
    assert inputs == (InputSpec((1, 3, 224, 224), "bfloat16"),)
    model, args = models.prepare(models.build(spec, "meta"), inputs, "meta")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    half = count(model, args).totals
    full = count(*models.prepare(models.build(spec, "meta"), models.default_inputs(spec), "meta")).totals
    assert half["macs"] == full["macs"] == 1_814_073_344
    # every tensor is 2 bytes instead of 4: bytes read and written halve exactly
    assert 2 * half["bytes_read"] == full["bytes_read"] and 2 * half["bytes_written"] == full["bytes_written"]
