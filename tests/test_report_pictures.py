"""Pictures and the grouped per-layer view, on synthetic records (renderers are pure).

The synthetic model: three ReLUs that thop-like "tally" counts at 1 per element (one formula,
one group), two Conv2d layers with a bias add each, and ``conv.b`` where tally is off by 7 with
no cause: a residual, which must stay on its own row and be drawn in the warning colour.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconcile.explain.core import Cause, LayerExplanation, MetricSummary, ToolExplanation
from reconcile.records import Phrase, ToolRun
from reconcile.report import plot
from reconcile.report.markdown import compress_names, layers_section, model_markdown
from reconcile.report.model import ModelReport

ROOT = Path(__file__).resolve().parents[1]


def _relu(name: str, n: int) -> LayerExplanation:
    text = Phrase("tally counts ReLU at 1 per element: {n}", {"n": n})
    return LayerExplanation(name, "ReLU", 1, None, {"ops": n}, {"ops": n}, {"ops": 0}, {"ops": 0},
                            {"ops": (Cause("activation", "convention", n, "tally.activation", text),)})


def _conv(name: str, macs: int, outputs: int, residual: int = 0) -> LayerExplanation:
    text = Phrase("tally counts Conv2d's bias (one add per output element): {outputs}", {"outputs": outputs})
    raw = macs + outputs + residual
    return LayerExplanation(name, "Conv2d", 1, None, {"ops": raw}, {"ops": macs + outputs}, {"ops": macs},
                            {"ops": residual}, {"ops": (Cause("bias", "convention", outputs, "tally.bias", text),)})


# relu: 100 + 200 + 300 = 600 activation; conv: 1,000 + 2,000 MACs, bias 10 + 20 = 30, residual 7
LAYERS = (_conv("conv.a", 1000, 10), _relu("act.0", 100), _conv("conv.b", 2000, 20, residual=7),
          _relu("act.1", 200), _relu("act.2", 300))
NATIVE = 3000
TOTAL = 3000 + 600 + 30 + 7  # 3,637


def report(residual: bool = True) -> ModelReport:
    layers = LAYERS if residual else tuple(_conv("conv.b", 2000, 20) if le.module == "conv.b" else le for le in LAYERS)
    total = sum(le.raw["ops"] for le in layers)
    native = sum(le.reference["ops"] for le in layers)
    res = 7 if residual else 0
    summary = MetricSummary("ops", "ops", total, native, {"activation": 600, "bias": total - native - 600 - res},
                            res, is_ops=True, rows_total=total)
    run = ToolRun("tally", "1.0", "ok", headline={"ops": total}, units={"ops": "ops"})
    tool = ToolExplanation("tally", "1.0", "ok", "ops", "ops", run, layers, summaries={"ops": summary}, main="ops",
                           native_macs=native)
    return ModelReport("synthetic", (1, 3, 8, 8), "float32", {"torch": "x"},
                       {"macs": native, "flops": 2 * native, "params": 0, "params_trainable": 0, "params_frozen": 0,
                        "buffers": 0, "bytes_read": 0, "bytes_written": 0, "activations": 0}, {}, (tool,))


def test_same_formula_is_one_row_and_a_residual_is_never_grouped():
    text = "\n".join(layers_section(report()))
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| modules")]
    # conv.a alone (conv.b has the residual), conv.b alone, the three ReLUs as one row
    assert len(rows) == 3
    relu = next(r for r in rows if "ReLU" in r)
    assert "`act.{0,1,2}`" in relu and "| 3 |" in relu and "| +600 |" in relu  # 100 + 200 + 300 against 0
    assert next(r for r in rows if "conv.b" in r).count("**unexplained tally +7**") == 1
    assert "conv.a" in next(r for r in rows if "| 1,000 | +10 |" in r)  # 1,000 MACs + 10 bias, alone
    # each sentence once, under its cause, after the cause's own description
    assert text.count("tally counts ReLU at 1 per element") == 1
    assert "- **activation**: counts activation functions, which the MAC reference leaves out. [" in text
    assert "- **bias**: counts bias adds, which the MAC reference leaves out. [" in text


def test_without_the_residual_the_convs_are_one_row():
    rows = [line for line in layers_section(report(residual=False)) if line.startswith("| `")]
    # 1,000 + 2,000 MACs + 10 + 20 bias adds = 3,030 against 3,000 native MACs: +30
    assert len(rows) == 2 and any("`conv.{a,b}`" in r and "| 3,000 | +30 |" in r for r in rows)


@pytest.mark.parametrize(("modules", "expected"), [
    (["features.1"], "`features.1`"),
    (["features.1", "features.3"], "`features.{1,3}`"),
    ([f"features.{i}" for i in range(1, 30, 2)], "`features.{1,3,5,...}`"),
    ([f"block{i}.act" for i in range(9)], "9 ReLU modules"),
])
def test_compressed_names(modules, expected):
    assert compress_names(modules, "ReLU") == expected


def test_tables_fit_in_160_columns_on_the_committed_reports():
    for name in ("resnet18.md", "vgg16.md"):
        wide = [line for line in (ROOT / "reports" / name).read_text().splitlines()
                if line.startswith("|") and len(line) > 160]
        assert wide == [], (name, wide[:1])


def test_the_picture_shows_causes_and_the_residual():
    bars = plot.tool_bars(report())
    # native reference + causes + residual = the tool's total
    assert bars == [("tally", NATIVE, TOTAL, [("bias", 30), ("activation", 600)], 7)]
    png = plot.model_png(report())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in png
    md = model_markdown(report(), "synthetic.png")
    assert "![synthetic: " in md and "(synthetic.png)" in md


def test_cause_colours_follow_the_catalogue_not_the_report():
    from reconcile.conventions.base import CAUSES

    assert list(plot.CAUSE_COLOURS) == list(CAUSES)
    assert plot.RESIDUAL_COLOUR not in plot.CAUSE_COLOURS.values()
    assert len(set(plot.CAUSE_COLOURS.values())) == len(CAUSES)  # one colour per cause, none shared


_RENDER = """
import hashlib, sys
sys.path.insert(0, {root!r})
from tests.test_report_pictures import report
from reconcile.report import plot
print(hashlib.sha256(plot.model_png(report())).hexdigest(), hashlib.sha256(plot.zoo_png([report()])).hexdigest(),
      "torch" in sys.modules, "matplotlib.pyplot" in sys.modules)
"""


def test_pictures_are_byte_identical_across_fresh_processes():
    digests = [subprocess.run([sys.executable, "-c", _RENDER.format(root=str(ROOT))], capture_output=True, text=True,
                              check=True, cwd=ROOT, timeout=120).stdout for _ in range(2)]
    assert digests[0] == digests[1] and len(digests[0].split()) == 4
    # renderers import no torch, and no pyplot (its global state and backend choice)
    assert digests[0].split()[2:] == ["False", "False"]
