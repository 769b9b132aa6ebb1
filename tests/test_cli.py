"""The command line: outputs, exit codes, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import textwrap

import pytest

from reconcile.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_count_json_resnet18(capsys):
    code, out, err = run(capsys, "count", "resnet18", "--format", "json", "--depth", "1")
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["model"] == "resnet18" and obj["input_shape"] == [1, 3, 224, 224]
    # torchvision's published _ops for ResNet18_Weights.IMAGENET1K_V1: 1.814 GMACs = 1,814,073,344 exactly
    assert obj["totals"]["macs"] == 1814073344
    assert obj["totals"]["params"] == 11689512
    for key in ("flops", "activations", "bytes_read", "bytes_written"):
        assert isinstance(obj["totals"][key], int)
    assert {m["module"] for m in obj["modules"]} >= {"", "conv1", "fc"}
    assert all(m["depth"] <= 1 for m in obj["modules"])


def test_count_table_two_models(capsys):
    code, out, _ = run(capsys, "count", "resnet18,alexnet", "--depth", "0")
    assert code == 0
    assert "resnet18" in out and "alexnet" in out
    assert "1,814,073,344 MACs" in out


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("reconcile: error: ")
    return lines[0]


def test_unknown_model(capsys):
    code, out, err = run(capsys, "count", "resnet81")
    assert code == 2 and out == ""
    line = _one_line_error(err)
    assert "resnet18" in line and "did you mean" in line


def test_unknown_model_does_not_stop_the_others(capsys):
    code, out, err = run(capsys, "count", "resnet81,alexnet", "--depth", "0")
    assert code == 2
    assert "alexnet" in out
    _one_line_error(err)


@pytest.mark.parametrize("shape", ["1,3,x", "", "0,3,4,4", "1,-3,4", "a"])
def test_malformed_input_shape(capsys, shape):
    code, out, err = run(capsys, "count", "resnet18", "--input-shape", shape)
    assert code == 2
    assert "input shape" in _one_line_error(err)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "usernets.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Good(nn.Module):
            example_input_shape = (2, 4)
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 3)
            def forward(self, x):
                return self.fc(x)

        def not_a_module():
            return 42

        class Broken(nn.Module):
            example_input_shape = (1, 4)
            def forward(self, x):
                raise ValueError("this forward always fails")
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    import sys

    sys.modules.pop("usernets", None)


def test_callable_spec_counts(capsys, user_module):
    code, out, err = run(capsys, "count", "usernets:Good", "--format", "json")
    assert code == 0, err
    # Linear(4, 3) on 2x4: 2 * 4 * 3 = 24 MACs
    assert json.loads(out)["totals"]["macs"] == 24


@pytest.mark.parametrize("spec, needle", [
    ("nosuchmodule_xyz:make", "nosuchmodule_xyz"),
    ("usernets:missing", "missing"),
    ("usernets:not_a_module", "nn.Module"),
    ("usernets:Broken", "this forward always fails"),
])
def test_bad_specs_one_line(capsys, user_module, spec, needle):
    code, out, err = run(capsys, "count", spec, "--input-shape", "1,4")
    assert code == 2
    assert needle in _one_line_error(err)


def test_conventions_table(capsys):
    code, out, _ = run(capsys, "conventions")
    assert code == 0
    assert "thop" in out and "functional_not_seen" in out


def test_one_model_spelled_twice_is_counted_once(capsys):
    code, out, err = run(capsys, "count", "alexnet,AlexNet", "--depth", "0", "--format", "json")
    assert code == 0 and err == ""
    assert [json.loads(line)["model"] for line in out.strip().splitlines()] == ["alexnet"]


@pytest.mark.parametrize("value", ["nan", "inf", "1e10", "0"])
def test_unusable_timeout(capsys, value):
    code, out, err = run(capsys, "tools", "resnet18", f"--timeout={value}")
    assert code == 2 and out == ""
    assert "--timeout must be a number of seconds above 0 and at most 86400" in _one_line_error(err)


@pytest.mark.parametrize("spec, tool, reason", [
    # vit feeds (1, 197, 192) tokens to its first Linear: torchstat's Linear formula asserts 2-D
    ("timm:vit_tiny_patch16_224", "torchstat",
     "torchstat's Linear rule asserts 2-D inputs: this model feeds a 3-D tensor to blocks.0.attn.qkv (Linear)"),
    # token ids: torchsummary makes random float inputs from sizes, which an embedding rejects
    ("hf:DistilBertModel:n_layers=1", "torchsummary",
     "torchsummary feeds random float inputs of the sizes it is given; this model takes int64 values (ids) "
     "as input 0"),
    ("hf:DistilBertModel:n_layers=1", "torchstat",
     "torchstat takes one input of size (C, H, W); this model takes 2 inputs"),
])
def test_predict_says_when_a_tool_cannot_run(capsys, spec, tool, reason):
    code, out, err = run(capsys, "predict", spec, "--tool", tool)
    assert code == 2 and out == ""
    assert err == f"reconcile: error: {tool} cannot run on {spec}: {reason}\n"
