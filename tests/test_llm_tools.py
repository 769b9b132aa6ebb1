"""Counting tools on the forward passes of a phase (reconcile.llm.phase_tools): DeepSpeed's decode
and generation figures of the issue reproduced and reconciled to a zero residual; calflops, which
cannot take a DynamicCache, recorded as failed with its own error."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")


def _llama(layers: int = 32):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=layers)
    cfg._attn_implementation = "sdpa"
    with torch.device("meta"):
        return LlamaForCausalLM(cfg)


def _run(tool: str, layers: int, phase: str):
    from reconcile.llm.phase_tools import run_phase
    from reconcile.llm import count_phase

    m = _llama(layers)
    pc = count_phase(m, phase, fit=False)
    return pc, run_phase(tool, m, pc)


@pytest.mark.parametrize("phase, macs", [
    # linear layers per token 32 x 202,375,168 + lm_head 4096 x 32000 = 6,607,077,376, plus
    # attention 2 x (N + 1) x 4096 per layer: N = 128: 2 x 129 x 4096 x 32 = 33,816,576 -> 6,640,893,952
    ("decode:128", 6_640_893_952),
    # N = 1024: 2 x 1025 x 4096 x 32 = 268,697,600 -> 6,875,774,976
    ("decode:1024", 6_875_774_976),
])
def test_deepspeed_decode_step(phase, macs):
    pytest.importorskip("deepspeed")
    pc, r = _run("deepspeed", 32, phase)
    assert pc.totals["macs"] == macs
    assert r.status == "ok", r.reason
    assert r.headline("macs") == macs
    assert r.residual == 0


def test_deepspeed_generation_on_a_two_layer_slice():
    pytest.importorskip("deepspeed")
    pc, r = _run("deepspeed", 2, "generate:128+4")
    # prefill of 128 (logits for the last position only): 128 x 2 x 202,375,168 + 4096 x 32000 =
    # 51,939,115,008, attention 2 layers x 2 x 128 x 128 x 4096 = 268,435,456; then 3 decode steps
    # at N = 128, 129, 130: 3 x (404,750,336 + 131,072,000) = 1,607,467,008 and attention
    # 2 x 2 x 4096 x (129 + 130 + 131) = 6,389,760. Sum: 53,821,407,232
    assert len(r.steps) == 4
    assert r.status == "ok", r.reason
    assert r.headline("macs") == pc.totals["macs"] == 53_821_407_232
    assert r.residual == 0


def test_calflops_cannot_take_a_cache():
    pytest.importorskip("calflops")
    _, r = _run("calflops", 2, "decode:128")
    assert r.status == "failed"
    assert "decode 1x1 at N=128" in r.reason and "DynamicCache" in r.reason


def test_calflops_prefill_reconciled():
    pytest.importorskip("calflops")
    pc, r = _run("calflops", 2, "prefill:128")
    assert r.status == "ok", r.reason
    # linear layers only (calflops counts no SDPA): 128 x (2 x 202,375,168 + 131,072,000) = 68,585,259,008
    assert r.headline("macs") == 68_585_259_008
    assert r.residual == 0


def test_calflops_around_generate_on_a_two_layer_slice():
    """calflops cannot take a cache, but its profiler wrapped around ``model.generate`` counts every
    forward generate makes (real weights, CPU: about 2.7 GB and 10 s)."""
    pytest.importorskip("calflops")
    import torch

    from reconcile.llm.phase_tools import run_generate
    from reconcile.llm import count_phase

    meta = _llama(2)
    pc = count_phase(meta, "generate:128+4", fit=False)
    real = meta.to_empty(device="cpu")
    with torch.no_grad():
        for p in real.parameters():
            p.normal_(0, 0.02)
    r = run_generate("calflops", real.eval(), pc)
    # the native 53,821,407,232 less SDPA's QK^T and AV, which calflops does not see: prefill 2 layers x
    # 2 x 128 x 128 x 4096 = 268,435,456, decode 2 x 2 x 4096 x (129 + 130 + 131) = 6,389,760: 274,825,216
    assert r.native == 53_821_407_232
    assert r.macs == 53_546_582_016
    assert r.residual == 0
    assert sum(a for _, a in r.causes) == r.predicted - r.native == -274_825_216


# ----- every tool of the registry on a phase: each runs and is reconciled, or fails in its own words --

GQA = ("hf:LlamaForCausalLM:hidden_size=256:intermediate_size=512:num_hidden_layers=2:num_attention_heads=8:"
       "num_key_value_heads=2:vocab_size=1000")
MOE = ("hf:MixtralForCausalLM:hidden_size=512:intermediate_size=1024:num_hidden_layers=2:num_attention_heads=8:"
       "num_key_value_heads=2:vocab_size=1000:num_local_experts=4:num_experts_per_tok=2")
# what stops a tool, in its own words (the model takes input_ids plus keyword inputs, a cache, on meta)
CANNOT = {
    "thop@0.0.22": "takes one input_size",
    "torchstat": "takes one input of size (C, H, W)",
    "torchsummary": "takes tensor inputs only",
    "pthflops": "takes one input tensor",
    "torchinfo": "torchinfo failed",  # copies tensors out of meta (prefill) / reads .dtype of a Size (decode)
}
# GQA through SDPA's enable_gqa: torchprofile's handler asserts as many key heads as query heads
# (its prefill; the decode step's causal mask sends transformers through repeat_kv); calflops calls
# .to() on every input, the DynamicCache included
CANNOT_IN = {("torchprofile", "prefill:16"): "assert heads == prod(k[1:-2]) == prod(v[1:-2]) at torchprofile/handlers.py",
             ("calflops", "decode:16"): "'DynamicCache' object has no attribute 'to'"}


def _every_tool() -> list[str]:
    from reconcile import tools

    return [n for n, t in tools.all_tools().items() if not t.reference]


@pytest.fixture(scope="module")
def gqa_runs() -> dict:
    """Every tool on the small GQA model's prefill of 16 and decode at 16, each in a forked child
    (tools patch torch globals), the model built on meta as the native count's."""
    from reconcile.llm import count_phase
    from reconcile.llm.explained import build, run_tools

    model = build(GQA, "float32")
    phases = ("prefill:16", "decode:16")
    runs = run_tools(model, [count_phase(model, p, fit=False) for p in phases], _every_tool())
    return {(t, p): runs[t][i] for t in runs for i, p in enumerate(phases)}


@pytest.mark.parametrize("phase", ["prefill:16", "decode:16"])
def test_every_tool_on_a_phase_reconciled_or_failed_in_its_own_words(gqa_runs, phase):
    ran = []
    for tool in _every_tool():
        r = gqa_runs[tool, phase]
        expected = CANNOT_IN.get((tool, phase)) or CANNOT.get(tool)
        if expected:
            assert r.status == "failed" and expected in r.reason, (tool, r.reason)
            continue
        assert r.status == "ok", (tool, r.reason)
        assert r.residual == 0, tool
        ran.append(tool)
    assert len(ran) >= 12  # thop, ultralytics-thop, ptflops (3), fvcore, mmengine, FCM, torchscan (2), deepspeed, ...


def test_every_tool_figures_by_hand(gqa_runs):
    # per layer, one token: q 256x256 + k, v 256x64 each + o 256x256 + gate, up 256x512 + down 512x256
    # = 65,536 x 2 + 16,384 x 2 + 131,072 x 3 = 557,056; lm_head 256 x 1000 = 256,000.
    # decode at 16 (17 keys): QK and AV 8 heads x 17 x 32 each = 8,704 per layer;
    # 2 x (557,056 + 8,704) + 256,000 = 1,387,520
    dec = {t: gqa_runs[t, "decode:16"] for t in ("deepspeed", "thop", "flopcountermode", "ptflops-aten")}
    assert sum(e.native_macs for e in dec["deepspeed"].explanations) == 1_387_520
    assert dec["deepspeed"].main_total() == 1_387_520  # DeepSpeed patches F.scaled_dot_product_attention
    assert dec["thop"].main_total() == 1_387_520 - 2 * 8_704  # module hooks: attention's products unseen
    # FlopCounterMode on meta sees SDPA's math path (two bmm), as native does; 2 FLOPs per MAC
    assert (dec["flopcountermode"].main, dec["flopcountermode"].main_total()) == ("flops", 2 * 1_387_520)
    assert dec["ptflops-aten"].main_total() == 1_387_520
    # prefill of 16: 16 x 2 x 557,056 + attention 2 layers x 2 x 8 heads x 16 x 16 x 32 = 262,144,
    # logits for all 16 positions 16 x 256,000: 17,825,792 + 262,144 + 4,096,000 = 22,183,936
    pre = gqa_runs["deepspeed", "prefill:16"]
    assert sum(e.native_macs for e in pre.explanations) == pre.main_total() == 22_183_936
    assert gqa_runs["thop", "prefill:16"].main_total() == 22_183_936 - 262_144


@pytest.mark.parametrize("tool, macs", [
    # experts run as batched_mm, as in the native count: DeepSpeed patches torch.bmm and sees them
    # per layer: q, o 512x512, k, v 512x128: 655,360; router 512x4 = 2,048; 2 routed experts x
    # 3 x 512 x 1024 = 3,145,728; attention 2 x 8 x 65 x 64 = 66,560 -> 3,869,696;
    # x 2 layers + lm_head 512 x 1000: 8,251,392
    ("deepspeed", 8_251_392),
    # thop hooks modules: the experts and the router (modules of their own, no thop rule) and
    # attention's products unseen: 8,251,392 - 2 x (3,145,728 + 2,048 + 66,560) = 1,822,720
    ("thop", 1_822_720),
])
def test_moe_decode_tools_reconciled(tool, macs):
    pytest.importorskip("deepspeed")
    from reconcile.llm.explained import run_tool

    r = run_tool(tool, MOE, "bfloat16", "decode:64")
    assert r.status == "ok", r.reason
    assert sum(e.native_macs for e in r.explanations) == 8_251_392
    assert r.main_total() == macs and r.residual == 0
