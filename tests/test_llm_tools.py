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
