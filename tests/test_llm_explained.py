"""The phases report command (python -m reconcile.llm.explained): a one-line error for bad input,
and a small GQA model's report written with its picture."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from reconcile.llm.explained import main  # noqa: E402


def test_not_a_transformers_spec(tmp_path, capsys):
    assert main(["resnet18", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "hf:LlamaForCausalLM" in err and len(err.strip().splitlines()) == 1


def test_bad_phase(tmp_path, capsys):
    assert main(["hf:LlamaForCausalLM:num_hidden_layers=1", "--phases", "decode:x", "--out", str(tmp_path / "x")]) == 2
    assert "bad phase" in capsys.readouterr().err


def test_small_gqa_report(tmp_path):
    stem = tmp_path / "gqa"
    spec = ("hf:LlamaForCausalLM:hidden_size=256:intermediate_size=512:num_hidden_layers=2:num_attention_heads=8:"
            "num_key_value_heads=2:vocab_size=1000")
    assert main([spec, "--phases", "prefill:16,decode:16", "--out", str(stem)]) == 0
    text = stem.with_suffix(".md").read_text()
    # KV cache per token: 2 layers x 2 x 2 KV heads x 32 x 2 bytes (bf16) = 512
    assert "512 bytes per token" in text
    assert "## decode:16" in text and "tokens/s at most" in text and "Kaplan" in text
    assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
