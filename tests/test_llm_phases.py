"""Language-model phases (reconcile.llm): prefill, decode with a KV cache, generation, on meta.

Every expected figure is worked by hand from the model code (transformers 5.23's LlamaForCausalLM:
q/k/v/o projections, a gated MLP of three linears, SDPA on its math path: Q K^T and A V each
heads x head_dim x keys MACs per new token, lm_head hidden x vocab per position with logits). The
four figures of issue #22 (DeepSpeed's, in ../shared/reference/more-counters.md) agree with them.

Llama-2-7B dimensions (LlamaConfig() defaults): d = hidden 4096, 32 layers, 32 heads of 128,
intermediate 11008, vocabulary 32000, float32 parameters.
  per layer per token, linears: q, k, v, o 4 x 4096 x 4096 = 67,108,864
                                 gate, up, down 3 x 4096 x 11008 = 135,266,304   -> 202,375,168
  32 layers: 6,476,005,376; lm_head 4096 x 32000 = 131,072,000; together 6,607,077,376
  a decode step at KV length N attends to N + 1 keys: QK + AV = 2 x (N + 1) x 4096 per layer,
  x 32 layers = 262,144 x (N + 1)
  KV cache: 2 (K and V) x 32 KV heads x 128 x 4 bytes = 32,768 bytes per token per layer,
  x 32 layers = 1,048,576 bytes per token
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from reconcile.errors import ReconcileError
from reconcile.llm import phases

LLAMA = "hf:LlamaForCausalLM"
# grouped-query attention at 7B dimensions: 8 KV heads serve the 32 query heads
GQA = "hf:LlamaForCausalLM:num_key_value_heads=8"
SLICE = "hf:LlamaForCausalLM:num_hidden_layers=2"
SMALL = ":num_hidden_layers=2:hidden_size=64:intermediate_size=128:num_attention_heads=4:num_key_value_heads=2:vocab_size=100"
MISTRAL = "hf:MistralForCausalLM" + SMALL + ":sliding_window=16"
MIXTRAL = "hf:MixtralForCausalLM" + SMALL + ":num_local_experts=8:num_experts_per_tok=2"


@pytest.fixture(scope="session")
def lm():
    """Models built once on meta, by spec."""
    from reconcile import models

    cache: dict = {}

    def get(spec: str):
        if spec not in cache:
            cache[spec] = models.build(models.resolve(spec), "meta")
        return cache[spec]

    return get


def _count(lm, spec, phase, fit=False):
    from reconcile import llm

    return llm.count_phase(lm(spec), phase, fit=fit)


# ----- the four figures of the issue ------------------------------------------------------------

def test_prefill_128_llama2_7b(lm):
    # 128 x 6,476,005,376 = 828,928,688,128 (linears) + QK and AV 2 x 128 x 128 x 4096 x 32 layers
    # = 4,294,967,296 + lm_head 128 x 131,072,000 = 16,777,216,000 -> 850,000,871,424
    pc = _count(lm, LLAMA, "prefill:128")
    assert pc.totals["macs"] == 850_000_871_424
    assert pc.totals["kv_read"] == 0
    assert pc.totals["kv_appended"] == 128 * 1_048_576  # the prompt's keys and values written


# decode at N: 6,607,077,376 + 262,144 x (N + 1)
#   N = 128:  262,144 x 129  =    33,816,576 -> 6,640,893,952   (DeepSpeed's figure)
#   N = 1024: 262,144 x 1025 =   268,697,600 -> 6,875,774,976   (DeepSpeed's figure)
#   N = 4096: 262,144 x 4097 = 1,074,003,968 -> 7,681,081,344
# KV cache read: N x 1,048,576 bytes; appended: 1,048,576 bytes (one token in 32 layers)
@pytest.mark.parametrize("n, macs", [(128, 6_640_893_952), (1024, 6_875_774_976), (4096, 7_681_081_344)])
def test_decode_llama2_7b(lm, n, macs):
    pc = _count(lm, LLAMA, f"decode:{n}")
    assert pc.totals["macs"] == macs
    assert pc.totals["kv_read"] == n * 1_048_576
    assert pc.totals["kv_appended"] == 1_048_576
    assert pc.kv.bytes_per_token == 1_048_576
    assert pc.kv.total_bytes == (n + 1) * 1_048_576
    # 4097 positions is more than LlamaConfig's max_position_embeddings (2048): said, still counted
    assert bool(pc.notes) == (n + 1 > 2048)


# GQA: k and v project to 8 x 128 = 1024: q, o 2 x 4096 x 4096 = 33,554,432; k, v 2 x 4096 x 1024
# = 8,388,608; MLP 135,266,304 -> 177,209,344 per layer, x 32 = 5,670,699,008, + lm_head
# 131,072,000 = 5,801,771,008. Attention still has 32 query heads over N + 1 keys: 262,144 x (N + 1).
#   N = 128:  5,801,771,008 +    33,816,576 = 5,835,587,584
#   N = 1024: 5,801,771,008 +   268,697,600 = 6,070,468,608
#   N = 4096: 5,801,771,008 + 1,074,003,968 = 6,875,774,976
# KV cache: 2 x 8 x 128 x 4 = 8,192 bytes per token per layer, x 32 = 262,144 bytes per token
@pytest.mark.parametrize("n, macs", [(128, 5_835_587_584), (1024, 6_070_468_608), (4096, 6_875_774_976)])
def test_decode_gqa(lm, n, macs):
    pc = _count(lm, GQA, f"decode:{n}")
    assert pc.totals["macs"] == macs
    assert pc.kv.bytes_per_token == 262_144
    assert pc.totals["kv_read"] == n * 262_144
    assert pc.kv.total_bytes == (n + 1) * 262_144


def test_generate_2_layer_slice(lm):
    # transformers' generate for 4 new tokens runs 4 forwards: the prompt with logits_to_keep=1,
    # then 3 decode steps at N = 128, 129, 130 (the 4th token is never fed back).
    # per token, 2 layers: 2 x 202,375,168 = 404,750,336; lm_head 131,072,000
    # prefill: 128 x 404,750,336 = 51,808,043,008 + QK, AV 2 x 128 x 128 x 4096 x 2 = 268,435,456
    #          + lm_head on the last position 131,072,000 = 52,207,550,464
    # decode at N: 535,822,336 + 2 x 2 x (N + 1) x 4096 = 535,822,336 + 16,384 (N + 1):
    #          N = 128: 537,935,872; 129: 537,952,256; 130: 537,968,640
    # sum: 52,207,550,464 + 1,613,856,768 = 53,821,407,232 (DeepSpeed's figure)
    pc = _count(lm, SLICE, "generate:128+4", fit=True)
    assert [s.totals["macs"] for s in pc.steps] == [52_207_550_464, 537_935_872, 537_952_256, 537_968_640]
    assert [(s.step.tokens, s.step.past, s.step.logits) for s in pc.steps] == [(128, 0, 1), (1, 128, 1), (1, 129, 1),
                                                                                (1, 130, 1)]
    assert pc.totals["macs"] == 53_821_407_232
    # one decode step = a + b N: a = 535,822,336 + 16,384 = 535,838,720, b = 16,384; fitted on two
    # counted steps and checked on the third
    macs = pc.decode_cost["macs"]
    assert macs.coefficients == (Fraction(535_838_720), Fraction(16_384))
    assert macs.holds and macs.checks
    # the bytes add up: read + written = weights + KV read + KV appended + the rest
    t = pc.totals
    assert t["bytes_read"] + t["bytes_written"] == (t["weight_bytes"] + t["kv_read"] + t["kv_appended"]
                                                    + t["other_bytes"])


def test_kv_cache_from_config_matches_dynamic_cache(lm):
    # the memory formula (kv.py) against the bytes a real DynamicCache holds after update()
    from reconcile.llm import inputs, kv

    model = lm(GQA)
    cache = inputs.filled_cache(model, 2, 100)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == kv.kv_cache(inputs.dims(model), 100, "float32", 2).total_bytes == 2 * 100 * 262_144
    # bfloat16 halves it: 2 x 8 x 128 x 2 x 32 = 131,072 bytes per token
    assert kv.kv_cache(inputs.dims(model), 100, "bfloat16").bytes_per_token == 131_072


# Mistral-style sliding window W = 16 on every layer (2 layers, 2 KV heads of 16, hidden 64):
# an entry is 2 x 2 x 16 x 4 = 256 bytes per layer. A layer holds min(N, W - 1 = 15) tokens and a
# decode step attends to those plus the new one.
def test_sliding_window(lm):
    short, long, longer = (_count(lm, MISTRAL, f"decode:{n}") for n in (8, 100, 200))
    assert short.totals["kv_read"] == 2 * 8 * 256  # 4,096
    assert long.totals["kv_read"] == longer.totals["kv_read"] == 2 * 15 * 256  # 7,680
    assert long.kv.sliding_window == 16 and long.kv.bytes_per_token == 0  # full: a new token evicts one
    # QK + AV: 2 x keys x 64 per layer, 2 layers: 9 keys at N = 8, 16 at N = 100 and 200
    assert long.totals["macs"] - short.totals["macs"] == 2 * 2 * (16 - 9) * 64  # 1,792
    assert longer.totals["macs"] == long.totals["macs"]


def test_sliding_window_generation_is_not_one_line(lm):
    # across the window's edge a decode step is no longer a + b N: the fit says so
    pc = _count(lm, MISTRAL, "generate:12+8", fit=True)
    assert not pc.decode_cost["macs"].holds


# Mixtral-style: 8 experts, top-2, expert = gate_up 64 x 256 + down 128 x 64 = 24,576 MACs per token.
# prefill of 16 tokens: 16 x 2 experts x 24,576 = 786,432 per layer, x 2 layers = 1,572,864;
# every expert on every token: x 8 / 2 = 6,291,456
def test_moe_counts_top_k(lm):
    model = lm(MIXTRAL)
    before = model.get_experts_implementation()
    pc = _count(lm, MIXTRAL, "prefill:16")
    r = pc.routing
    assert (r.num_experts, r.top_k) == (8, 2)
    assert r.expert_macs == 1_572_864
    assert r.all_experts_macs == 6_291_456
    for name in r.expert_modules:
        assert pc.steps[0].native.row(name).macs == 786_432
    assert model.get_experts_implementation() == before  # the model's own choice restored


def test_dense_model_has_no_routing(lm):
    assert _count(lm, SLICE, "decode:4").routing is None


# ----- phase specs ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, phase", [
    ("prefill:128", phases.Phase("prefill", prompt=128)),
    ("decode:1024", phases.Phase("decode", past=1024)),
    ("decode:8*1024", phases.Phase("decode", past=1024, batch=8)),
    ("generate:128+4", phases.Phase("generate", prompt=128, new=4)),
    (" Generate:2*16+1 ", phases.Phase("generate", prompt=16, new=1, batch=2)),
])
def test_parse(text, phase):
    assert phases.parse(text) == phase
    assert phases.parse(phase.text) == phase


@pytest.mark.parametrize("text", ["", "prefill", "prefill:", "prefill:0", "decode:-1", "decode:12x",
                                  "generate:128", "generate:128+0", "prefill:128+4", "train:128",
                                  "decode:0*5", "decode:99999999999"])
def test_bad_phase(text):
    with pytest.raises(ReconcileError) as err:
        phases.parse(text)
    assert "\n" not in str(err.value)


def test_steps_of_a_generation():
    assert phases.parse("generate:4+3").steps() == (phases.Step(1, 4, 0, 1), phases.Step(1, 1, 4, 1),
                                                    phases.Step(1, 1, 5, 1))


def test_not_a_language_model():
    import torch

    from reconcile import llm

    with pytest.raises(ReconcileError, match="past_key_values"):
        llm.count_phase(torch.nn.Linear(2, 2), "decode:4")


def test_cli_bad_values(capsys):
    from reconcile.cli import main

    for argv in (["count", SLICE, "--decode", "x"], ["count", SLICE, "--generate", "128"],
                 ["count", SLICE, "--batch", "0", "--decode", "4"], ["count", SLICE, "--batch", "2"],
                 ["count", SLICE, "--decode", "4", "--training"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("reconcile: error:")


def test_cli_count_decode_json(capsys):
    # 2 layers, hidden 64, 4 heads of 16, 2 KV heads, intermediate 128, vocabulary 100:
    # per layer q 64x64 + k 64x32 + v 64x32 + o 64x64 = 12,288, MLP 3 x 64 x 128 = 24,576 -> 36,864;
    # x 2 = 73,728, + lm_head 64 x 100 = 6,400 -> 80,128; QK + AV 2 x (16 + 1) x 64 x 2 layers = 4,352
    # -> 84,480 MACs; KV: 2 x 2 x 16 x 4 = 256 bytes per token per layer, 512 per token, 16 read: 8,192
    import json

    from reconcile.cli import main

    assert main(["count", "hf:LlamaForCausalLM" + SMALL, "--decode", "16", "--format", "json"]) == 0
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert obj["phase"] == "decode:16"
    assert obj["totals"]["macs"] == 84_480
    assert obj["kv_cache"]["bytes_per_token"] == 512 and obj["totals"]["kv_read"] == 8_192
    assert obj["decode_cost"]["macs"]["coefficients"] == [80_384, 256]


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_layers_add_up(lm, depth):
    # per module rows of a generation, summed over its steps, add up to its totals exactly
    pc = _count(lm, SLICE, "generate:16+3")
    rows = pc.layers(depth)
    for q in ("macs", "flops", "bytes_read", "bytes_written"):
        assert sum(r[q] for r in rows.values()) == pc.totals[q]
    if depth == 3:
        # one decoder layer over the 3 forwards: 16 + 1 + 1 = 18 tokens x 202,375,168, plus QK and AV
        # 2 x 4096 x (16 x 16 + 17 + 18) = 2,383,872
        assert rows["model.layers.0"]["macs"] == 18 * 202_375_168 + 2 * 4096 * (16 * 16 + 17 + 18)


def test_prefill_cost_in_p(lm):
    # 2-layer slice, prefill of P tokens with every position's logits:
    # P x (404,750,336 + 131,072,000) = 535,822,336 P, plus QK and AV 2 x P x P x 4096 x 2 = 16,384 P^2
    pc = _count(lm, SLICE, "prefill:16", fit=True)
    macs = pc.prefill_cost["macs"]
    assert macs.coefficients == (Fraction(0), Fraction(535_822_336), Fraction(16_384))
    assert macs.holds and macs.checks == ((19, 19 * 535_822_336 + 16_384 * 19 * 19, Fraction(19 * 535_822_336
                                                                                              + 16_384 * 361)),)


def test_generation_parts(lm):
    # 128+4 on the slice: prefill 52,207,550,464; 3 decode steps = 3 a + b (128 + 129 + 130):
    # a = 535,838,720 -> 1,607,516,160; b (T-1) P = 16,384 x 3 x 128 = 6,291,456;
    # b (T-1)(T-2)/2 = 16,384 x 3 = 49,152; sum 53,821,407,232
    parts = _count(lm, SLICE, "generate:128+4", fit=True).generation_parts()
    assert parts == {"prefill": 52_207_550_464, "constant": 1_607_516_160, "linear_in_P": 6_291_456,
                     "quadratic_in_T": 49_152, "total": 53_821_407_232}


def test_batch_divides_per_token(lm):
    # a batch of 2 does twice the work of one sequence (no padding); per token it is the same
    one, two = _count(lm, SLICE, "decode:32"), _count(lm, SLICE, "decode:2*32")
    assert two.totals["macs"] == 2 * one.totals["macs"]
    assert two.per_token["macs"] == one.per_token["macs"]
    assert two.totals["kv_read"] == 2 * one.totals["kv_read"]




def _tiny_lm():
    import types

    import torch
    from torch import nn

    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = types.SimpleNamespace(num_hidden_layers=1, num_attention_heads=1, hidden_size=8)
            self.embed = nn.Embedding(10, 8)
            self.qkv = nn.Linear(8, 24, bias=False)
            self.head = nn.Linear(8, 10, bias=False)

        def forward(self, input_ids, position_ids=None, past_key_values=None, use_cache=True):
            x = self.embed(input_ids)
            q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)
            k, v = past_key_values.update(k, v, 0)
            a = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
            return self.head(a.squeeze(1))

    return TinyLM().to("meta")


def test_user_model_with_past_key_values():
    # decode at N = 5 on a 1-layer, 1-head, d = 8 model: qkv 8 x 24 = 192, head 8 x 10 = 80, QK and AV
    # 2 x (5 + 1) x 8 = 96 -> 368 MACs; its cache: 2 x 1 x 8 x 4 = 64 bytes per token, 5 read.
    # As a + b N: b = 2 x 8 = 16 per cached key, a = 192 + 80 + 16 (the new token's own key) = 288
    from reconcile import llm

    pc = llm.count_phase(_tiny_lm(), "decode:5")
    assert pc.totals["macs"] == 368
    assert pc.totals["kv_read"] == 5 * 64
    assert pc.decode_cost["macs"].coefficients == (Fraction(288), Fraction(16))


def test_cli_report_phases_rules_roofline_picture(tmp_path, capsys):
    # report --prefill --decode: beside the model's report, the phases with their rules of thumb,
    # each phase's roofline and the prefill-against-decode picture. Kaplan for one decode step at
    # 16 (the small config above): 2N = 2 x 73,728 = 147,456; output layer 2 x 64 x 100 = 12,800;
    # 2 n_layer n_ctx d_attn = 2 x 2 x 17 x 64 = 4,352: 164,608 FLOPs
    import json

    from reconcile.cli import main

    spec = "hf:LlamaForCausalLM" + SMALL
    assert main(["report", spec, "--tools", "native", "--prefill", "16", "--decode", "16", "--out", str(tmp_path),
                 "--hardware", "a100-80gb"]) == 0
    [md] = tmp_path.glob("*.phases.md")
    stem = md.name.removesuffix(".phases.md")
    assert (tmp_path / f"{stem}.phases.png").read_bytes().startswith(b"\x89PNG")
    text = md.read_text()
    assert "### Rules of thumb against the exact count: decode:16" in text
    assert "### Roofline: decode:16" in text and f"({stem}.phases.png)" in text
    obj = json.loads((tmp_path / f"{stem}.phases.json").read_text())
    decode = next(p for p in obj["phases"] if p["phase"] == "decode:16")
    kaplan = next(r for r in decode["rules"] if r["id"] == "kaplan")
    assert kaplan["predicted"] == 164_608 and kaplan["exact"] == decode["totals"]["flops"]
    assert kaplan["predicted"] - kaplan["exact"] == sum(g["amount"] for g in kaplan["gaps"])
    assert "roofline" in decode


def test_cli_report_phases_run_the_tools(tmp_path):
    # report --decode with --tools: each tool also runs on the phase's forward (in the phase's
    # worker) and is reconciled. The small config's decode at 16: per layer 36,864 MACs of linear
    # layers (4,096 x 2 + 2,048 x 2 + 8,192 x 3) and attention 2 x 4 heads x 17 x 16 = 2,176;
    # 2 layers + lm_head 64 x 100: 84,480. thop hooks modules, so SDPA's products go unseen:
    # 84,480 - 2 x 2,176 = 80,128
    import json

    from reconcile.cli import main

    spec = "hf:LlamaForCausalLM" + SMALL
    assert main(["report", spec, "--tools", "native,thop", "--decode", "16", "--out", str(tmp_path)]) == 0
    [md] = tmp_path.glob("*.phases.md")
    assert "### Counters on decode:16" in md.read_text()
    obj = json.loads(md.with_name(md.name.replace(".md", ".json")).read_text())
    [decode] = obj["phases"]
    [thop] = decode["tools"]
    assert (thop["tool"], thop["status"], thop["total"], thop["native_macs"], thop["residual"]) == \
        ("thop", "ok", 80_128, 84_480, 0)
