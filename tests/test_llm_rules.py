"""The rules of thumb per phase (reconcile.llm.rules): the issue's figures worked by hand, and
every rule's gap to the native count split into causes that add up."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from reconcile.errors import ReconcileError  # noqa: E402
from reconcile.llm.phases import Step  # noqa: E402
from reconcile.llm.rules import Dims, explain_phase, kaplan, llm_viewer  # noqa: E402

# Llama-2-7B dimensions (LlamaConfig()): hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab 32000
LLAMA = Dims(hidden=4096, layers=32, heads=32, kv_heads=32, head_dim=128, intermediate=11008, vocab=32000)


def test_dims_from_llama_config():
    from transformers import LlamaConfig

    assert Dims.of(LlamaConfig()) == LLAMA
    # N = 32 x (4 x 4096^2 + 3 x 4096 x 11008) = 32 x (67,108,864 + 135,266,304) = 32 x 202,375,168
    assert LLAMA.kaplan_n == 6_476_005_376


def test_dims_of_a_config_without_dimensions_says_what_to_do():
    class Cfg:
        hidden_size = 8

    with pytest.raises(ReconcileError, match="decoder-only language model config"):
        Dims.of(Cfg())


def test_dims_gqa_and_moe():
    from transformers import MixtralConfig

    cfg = MixtralConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                        intermediate_size=128, vocab_size=100, num_local_experts=4, num_experts_per_tok=2)
    d = Dims.of(cfg)
    assert (d.kv_heads, d.head_dim, d.experts, d.experts_per_token, d.expert_intermediate) == (2, 8, 4, 2, 128)
    # attention: q, o 64 x 64 = 4096 each; k, v 64 x (2 x 8) = 1024 each: 10,240
    # MLP: 4 experts x 3 x 64 x 128 = 98,304, router 64 x 4 = 256: 98,560; N = 2 x 108,800
    assert d.kaplan_n == 217_600


def test_kaplan_prefill_128_by_hand():
    t = kaplan(LLAMA, Step(1, 128, 0))
    # 2N x 128 = 2 x 6,476,005,376 x 128 = 1,657,857,376,256
    # output layer 2 x 4096 x 32000 x 128 = 33,554,432,000
    # attention 2 x 32 x 128 x 4096 x 128 = 4,294,967,296
    assert t == {"weights": 1_657_857_376_256, "output_layer": 33_554_432_000, "attention_qk": 4_294_967_296}
    assert sum(t.values()) == 1_695_706_775_552  # the figure


def test_llm_viewer_prefill_and_decode_by_hand():
    # per layer, prefill seqlen 128: linear 2 x 128 x 202,375,168 = 51,808,043,008; QK = SV =
    # 128^2 x 128 x 32 x 2 = 134,217,728; softmax 32 x 128^2 x 5 = 2,621,440; norms 2 x 7 x 4096 x
    # 128 = 7,340,032; adds 2 x 4096 x 128 = 1,048,576; activation 2 x 4096 x 128 = 1,048,576:
    # 52,088,537,088 per layer, x 32 = 1,666,833,186,816
    assert sum(llm_viewer(LLAMA, Step(1, 128, 0)).values()) == 1_666_833_186_816
    # decode at seqlen 128: linear 404,750,336; QK = SV = 128 x 128 x 32 x 2 = 1,048,576; softmax
    # 32 x 128 x 5 = 20,480; norms 57,344; adds 8,192; activation 8,192: 406,941,696, x 32 = 13,022,134,272
    assert sum(llm_viewer(LLAMA, Step(1, 1, 128)).values()) == 13_022_134_272


@pytest.fixture(scope="module")
def llama_meta():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig()
    cfg._attn_implementation = "sdpa"
    with torch.device("meta"):
        return LlamaForCausalLM(cfg)


def _gaps(rule):
    return {g.cause: g.amount for g in rule.gaps}


def test_prefill_rules_against_the_native_count(llama_meta):
    from reconcile.llm import count_phase

    pc = count_phase(llama_meta, "prefill:128", fit=False)
    rules = {r.id: r for r in explain_phase(pc, llama_meta)}
    for r in rules.values():
        assert r.exact == pc.totals["flops"]
        assert r.predicted == r.exact + sum(g.amount for g in r.gaps)
    k = rules["kaplan"]
    assert k.predicted == 1_695_706_775_552
    # the rule counts QK^T but not AV: AV = 32 layers x 32 heads x 128 x 128 x 128 MACs = 2,147,483,648, x 2
    assert _gaps(k)["attention_av"] == -4_294_967_296
    # with QK^T and the linear layers exact, the rest of the gap is all non-matmul work
    assert "weights" not in _gaps(k) and "output_layer" not in _gaps(k) and "attention_qk" not in _gaps(k)
    v = rules["llm_viewer"]
    assert v.predicted == 1_666_833_186_816
    # lm_head left out: 2 x 4096 x 32000 x 128 = 33,554,432,000
    assert _gaps(v)["output_layer"] == -33_554_432_000
    two = rules["2x_params"]
    # 2 x 6,738,415,616 params x 128 tokens = 1,725,034,397,696; the embedding table 32000 x 4096 is
    # looked up: 2 x 131,072,000 x 128 = 33,554,432,000 counted by the rule and not done
    assert two.predicted == 1_725_034_397_696
    assert _gaps(two)["embedding"] == 33_554_432_000


def test_decode_rules_against_the_native_count(llama_meta):
    from reconcile.llm import count_phase

    pc = count_phase(llama_meta, "decode:128", fit=False)
    assert pc.totals["macs"] == 6_640_893_952  # the DeepSpeed figure
    rules = {r.id: r for r in explain_phase(pc, llama_meta)}
    v = rules["llm_viewer"]
    assert v.predicted == 13_022_134_272
    # LLM-Viewer's decode attends seqlen = 128 keys, the step attends 129: QK and AV each
    # 32 layers x 32 heads x 128 x 1 key x 2 FLOPs = 262,144 less
    assert _gaps(v)["attention_qk"] == _gaps(v)["attention_av"] == -262_144
    k = rules["kaplan"]
    # per token: 2 x (6,476,005,376 + 131,072,000) + 2 x 32 x 129 x 4096 = 13,214,154,752 + 33,816,576
    assert k.predicted == 13_247_971_328
    assert _gaps(k)["attention_av"] == -33_816_576  # 32 x 32 x 129 x 128 MACs = 16,908,288, x 2


def test_generation_rules_sum_their_steps(llama_meta):
    from reconcile.llm import count_phase

    pc = count_phase(llama_meta, "generate:128+4", fit=False)
    rules = {r.id: r for r in explain_phase(pc, llama_meta)}
    k = rules["kaplan"]
    assert k.exact == pc.totals["flops"]
    assert k.predicted == k.exact + sum(g.amount for g in k.gaps)
    # generate keeps logits for the last position only: the rule counts the output layer for the
    # 127 other prompt tokens, 2 x 4096 x 32000 x 127 = 33,292,288,000
    assert _gaps(k)["output_layer"] == 33_292_288_000


def test_moe_prefill_gap_is_the_unrouted_experts():
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    from reconcile.llm import count_phase

    cfg = MixtralConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=8,
                        num_key_value_heads=2, vocab_size=1000, num_local_experts=4, num_experts_per_tok=2)
    cfg._attn_implementation = "sdpa"
    with torch.device("meta"):
        m = MixtralForCausalLM(cfg).to(torch.bfloat16)  # transformers' grouped experts need bf16 / fp16
    pc = count_phase(m, "prefill:64", fit=False)
    k = {r.id: r for r in explain_phase(pc, m)}["kaplan"]
    # N counts all 4 experts, a token runs 2: 2 FLOPs x 2 unrouted experts x 3 x 512 x 1024 x 64 tokens x 2 layers
    assert _gaps(k)["weights"] == 805_306_368
    assert k.predicted == k.exact + sum(g.amount for g in k.gaps)
