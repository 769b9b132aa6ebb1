"""The committed example reports are current, and on resnet18 and vgg16 every tool reproduces its
own published total and is explained with zero residual on every layer.

One ``reconcile report resnet18,vgg16`` run (the command ``make report`` runs) feeds every test.
If a change alters the reports on purpose, refresh them with ``make report`` and commit them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet18", "vgg16")
TOOLS = ("native", "thop", "ptflops", "ptflops-aten", "torchstat", "torchsummary", "fvcore", "mmengine")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reports")
    proc = subprocess.run([sys.executable, "-m", "reconcile", "report", ",".join(MODELS), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("name", [f"{m}.{ext}" for m in MODELS for ext in ("md", "json", "csv", "png")] + ["index.md"])
def test_committed_report_is_current(fresh, name):
    committed = ROOT / "reports" / name
    assert committed.exists(), f"reports/{name} is not committed: run `make report`"
    assert (fresh / name).read_bytes() == committed.read_bytes(), (
        f"reports/{name} is stale: run `make report MODELS=resnet18,vgg16` and commit it")


def _report(fresh: Path, model: str) -> dict:
    return json.loads((fresh / f"{model}.json").read_text())


@pytest.mark.parametrize("model", MODELS)
def test_every_tool_explained_on_every_layer(fresh, model):
    data = _report(fresh, model)
    assert set(data["tools"]) == set(TOOLS)
    for tool, t in data["tools"].items():
        assert t["status"] == "ok", (tool, t)
        assert t["residual"] == 0, tool
        for layer in t["layers"]:
            assert not any(layer["residual"].values()), (tool, layer["module"], layer["residual"])


# The tools' own totals, as each prints them (issue #3; checked against the tools themselves by
# tests/test_adapters_*.py), and what reconcile normalizes them to.
TOTALS = {
    "resnet18": {"thop": 1_824_033_792, "ptflops": 1_825_313_768, "ptflops-aten": 1_814_074_344,
                 "fvcore": 1_819_065_856, "mmengine": 1_819_065_856, "torchstat": 3_638_757_912},
    "vgg16": {"thop": 15_470_314_496, "ptflops": 15_523_225_576, "ptflops-aten": 15_483_821_032,
              "fvcore": 15_470_289_408, "mmengine": 15_470_289_408, "torchstat": 30_958_666_264},
}
# torchvision's published _ops (GMACs) and num_params for these weights
PUBLISHED = {"resnet18": (1_814_073_344, 11_689_512), "vgg16": (15_470_264_320, 138_357_544)}


@pytest.mark.parametrize("model", MODELS)
def test_raw_totals_and_normalized_macs(fresh, model):
    data = _report(fresh, model)
    macs, params = PUBLISHED[model]
    assert data["native"]["totals"]["macs"] == macs
    assert data["native"]["totals"]["params"] == params
    for tool, total in TOTALS[model].items():
        t = data["tools"][tool]
        assert t["total"] == total, tool
        # every op-counting tool sees every MAC of these two models: once its conventions are
        # removed, it agrees with the native MAC count exactly
        assert t["normalized"]["macs"] == macs, tool


def test_markdown_names_every_tool_and_no_unexplained_rows(fresh):
    text = (fresh / "resnet18.md").read_text()
    for tool in TOOLS:
        assert f"| {tool} |" in text
    assert "**unexplained " not in text  # how a row with a residual is marked


def test_readme_sample_is_the_committed_report():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import readme_sample
    finally:
        sys.path.pop(0)
    readme = (ROOT / "README.md").read_text()
    block = readme.split(readme_sample.BEGIN)[1].split(readme_sample.END)[0]
    assert block.strip("\n") == readme_sample.sample(), "run `python scripts/readme_sample.py` after `make report`"


@pytest.mark.parametrize("model", MODELS)
def test_the_report_has_the_roofline_on_its_default_hardware(fresh, model):
    data = _report(fresh, model)
    a100 = data["roofline"]["a100-80gb"]
    # hardware.toml: A100 80GB SXM, FP32 dense 19.5 TFLOP/s (datasheet), 2,039 GB/s
    assert (a100["peak_flops"], a100["bandwidth"]) == (19.5e12, 2.039e12)
    assert a100["ridge"] == pytest.approx(19.5e12 / 2.039e12)
    # the layers run one after another: their summed bound is at least the whole-model bound
    assert a100["total_time_s"] >= a100["naive_time_s"] > 0
    assert "## Roofline: how fast it could run" in (fresh / f"{model}.md").read_text()
