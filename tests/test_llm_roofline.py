"""The roofline per phase (reconcile.llm.roofline): decode's byte floor, tokens-per-second upper
bound and the batch where decode turns compute-bound, worked by hand on Llama-2-7B dimensions in
bf16 and on a small grouped-query configuration; the renderers and the picture."""

from __future__ import annotations

from fractions import Fraction

import pytest

pytest.importorskip("transformers")

from reconcile.llm.roofline import critical_batch  # noqa: E402
from reconcile.roofline.hardware import Platform  # noqa: E402

# A100 80GB as the table uses it: bf16 312e12 FLOP/s, 2039e9 B/s
A100 = Platform("a100-80gb", "A100", 312e12, 2039e9, "BF16 tensor", "test")


def test_critical_batch_by_hand():
    # f = 2e9 FLOPs per sequence, W = 2e9 bytes, k = 0: B f / 312e12 >= 2e9 / 2039e9
    # <=> B >= 312e12 / 2039e9 = 153.016... -> 154
    assert critical_batch(2_000_000_000, 2_000_000_000, 0, 312e12, 2039e9) == 154
    # k = 1e7 bytes per sequence: f x bw / peak = 2e9 x 2039 / 312000 = 13,070,512.8; minus k =
    # 3,070,512.8; W / that = 651.36 -> 652
    assert critical_batch(2_000_000_000, 2_000_000_000, 10_000_000, 312e12, 2039e9) == 652
    # the cache alone above f x bw / peak: never compute-bound
    assert critical_batch(2_000_000_000, 2_000_000_000, 20_000_000, 312e12, 2039e9) is None


def _model(**kw):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**kw)
    cfg._attn_implementation = "sdpa"
    with torch.device("meta"):
        return LlamaForCausalLM(cfg).to(torch.bfloat16)


@pytest.fixture(scope="module")
def llama_bf16():
    return _model(max_position_embeddings=8192)  # room for a decode step at N = 4096 (4,097 positions)


@pytest.mark.parametrize("n, kv_read, tps", [
    # weights read: 6,738,415,616 params less the 31,999 embedding rows not looked up (x 4096 =
    # 131,067,904) = 6,607,347,712, x 2 bytes = 13,214,695,424. KV read: 32 layers x 2 x 32 heads x 128 x
    # N x 2 bytes = 524,288 N; appended: 524,288. N = 128: 67,108,864, floor 13,282,328,576 bytes;
    # 2039e9 / 13,282,328,576 = 153.51 tokens/s
    (128, 67_108_864, 153.51),
    # N = 1024: 536,870,912, floor 13,752,090,624: 148.27 tokens/s
    (1024, 536_870_912, 148.27),
    # N = 4096: 2,147,483,648, floor 15,362,703,360: 132.72 tokens/s
    (4096, 2_147_483_648, 132.72),
])
def test_decode_floor_and_tokens_per_second(llama_bf16, n, kv_read, tps):
    from reconcile.llm import count_phase
    from reconcile.llm.roofline import phase_roofline

    pc = count_phase(llama_bf16, f"decode:{n}", fit=False)
    r = phase_roofline(pc, [A100])
    s = r.platforms[0].steps[0]
    assert pc.totals["kv_read"] == kv_read
    assert s.floor_bytes == 13_214_695_424 + kv_read + 524_288
    assert s.bound == "memory"
    assert s.tokens_per_s == pytest.approx(tps, abs=0.01)
    assert r.dtype == "bfloat16"


def test_decode_critical_batch_7b(llama_bf16):
    from reconcile.llm import count_phase
    from reconcile.llm.roofline import phase_roofline

    pc = count_phase(llama_bf16, "decode:128", fit=False)
    p = phase_roofline(pc, [A100]).platforms[0]
    f = pc.totals["flops"]
    # weights only: B >= W x peak / (bw x f) = 13,214,695,424 x 312e12 / (2039e9 x f); f ~ 1.33e10 -> 152.01 -> 153
    assert p.critical_batch_weights == -(-Fraction(13_214_695_424) // (Fraction(f) * Fraction(2039e9) / Fraction(312e12)))
    assert p.critical_batch_weights == 153
    # with the cache (k = 67,108,864 + 524,288 = 67,633,152 per sequence): f x bw / peak = 86,935,... so
    # B >= 13,214,695,424 / (86.94e6 - 67.63e6) = 684.6 -> 685
    assert p.critical_batch == 685


def test_gqa_cache_is_smaller_and_decode_faster():
    from reconcile.llm import count_phase
    from reconcile.llm.roofline import phase_roofline

    # 2 layers, hidden 256, 8 heads of 32, 2 KV heads, vocab 1000: KV per token = 2 layers x 2 x 2 x 32 x
    # 2 bytes = 512 bytes; at N = 64: 32,768 read, 512 appended
    m = _model(hidden_size=256, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
               intermediate_size=512, vocab_size=1000)
    pc = count_phase(m, "decode:64", fit=False)
    assert (pc.totals["kv_read"], pc.totals["kv_appended"]) == (32_768, 512)
    s = phase_roofline(pc, [A100]).platforms[0].steps[0]
    # weights read: per layer q, o 256 x 256 = 65,536 each, k, v 256 x 64 = 16,384 each, MLP 3 x 256 x 512 =
    # 393,216, norms 2 x 256: 557,568; x 2 layers = 1,115,136; final norm 256, lm_head 256,000, one
    # embedding row 256: 1,371,648 params, x 2 bytes = 2,743,296
    assert s.floor_bytes == 2_743_296 + 32_768 + 512


def test_renderers_and_picture(llama_bf16):
    from reconcile.llm import count_phase
    from reconcile.llm.plot import phases_png
    from reconcile.llm.render import roofline_markdown, rules_markdown
    from reconcile.llm.roofline import phase_roofline
    from reconcile.llm.rules import explain_phase

    m = _model(num_hidden_layers=2)
    pre = phase_roofline(count_phase(m, "prefill:128", fit=False), [A100])
    pc = count_phase(m, "decode:128", fit=False)
    dec = phase_roofline(pc, [A100])
    text = "\n".join(roofline_markdown(dec))
    assert "tokens/s at most" in text and "a100-80gb" in text
    text = "\n".join(rules_markdown("decode:128", explain_phase(pc, m)))
    assert "**sum**" in text and "attention_av" in text
    import json

    from reconcile.llm.render import roofline_plain

    plain = json.loads(json.dumps(roofline_plain(dec)))
    assert plain["platforms"]["a100-80gb"]["steps"][0]["forward"] == "decode 1x1 at N=128"
    png = phases_png([pre, dec])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png == phases_png([pre, dec])  # the same records, the same bytes


def test_gqa_1b_decode_at_4096():
    from reconcile.llm import count_phase
    from reconcile.llm.roofline import phase_roofline

    # Llama-3.2-1B-like: hidden 2048, 16 layers, 32 heads of 64, 8 KV heads, intermediate 8192, tied vocab 128256
    m = _model(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=8192)
    pc = count_phase(m, "decode:4096", fit=False)
    # linear per token: per layer q, o 2 x 2048^2 = 8,388,608; k, v 2 x 2048 x 512 = 2,097,152; MLP 3 x 2048
    # x 8192 = 50,331,648: 60,817,408, x 16 = 973,078,528; lm_head 2048 x 128256 = 262,668,288.
    # attention QK^T + AV over 4097 keys: 2 x 4097 x 32 x 64 x 16 = 268,500,992. Sum 1,504,247,808
    assert pc.totals["macs"] == 1_504_247_808
    # KV: 16 layers x 2 x 8 heads x 64 x 2 bytes = 32,768 per token; read 4096 x 32,768 = 134,217,728
    assert (pc.totals["kv_read"], pc.totals["kv_appended"]) == (134_217_728, 32_768)
    s = phase_roofline(pc, [A100]).platforms[0].steps[0]
    # weights read: 16 x (60,817,408 + 2 x 2048 norms) = 973,144,064, final norm 2048, the tied table
    # 262,668,288 read whole by lm_head (the embedding's row is part of it, not again): 1,235,814,400
    # params, x 2 bytes = 2,471,628,800
    assert s.floor_bytes == 2_471_628_800 + 134_217_728 + 32_768


@pytest.mark.parametrize("key, peak, bandwidth", [
    # LLM-Viewer hardware_params.py, as /work/shared/reference/hardware-peaks.md quotes it
    ("a6000", 154.8e12, 768e9), ("a40", 149.7e12, 696e9), ("l40", 181e12, 864e9)])
def test_llm_viewer_gpus_in_the_table(key, peak, bandwidth):
    from reconcile.roofline import platforms

    (p,) = platforms(key, "bfloat16")
    assert (p.peak_flops, p.bandwidth) == (peak, bandwidth)
