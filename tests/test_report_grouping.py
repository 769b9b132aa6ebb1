"""The grouped per-layer view on a real tool run with a residual: a module no rule explains is
never grouped away, while its siblings explained alike still share a row.

ptflops runs for real (in this process: it restores what it patches) on three identical
Conv2d(2, 2, 1) + ReLU pairs; one conv's row is then raised by 7, as a tool release that changes
one formula would, and the run is explained against the real native count.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from reconcile.report.data import layers_csv, model_json  # noqa: E402
from reconcile.report.markdown import model_markdown  # noqa: E402
from reconcile.report.model import ModelReport  # noqa: E402
from tests.harness import adapter, explain  # noqa: E402
from reconcile.counter import count  # noqa: E402


@pytest.fixture(scope="module")
def report() -> ModelReport:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1), nn.ReLU(),
                          nn.Conv2d(2, 2, 1), nn.ReLU()).eval()
    x = (torch.rand(1, 2, 4, 4),)
    run = adapter("ptflops").run(model, x)
    assert run.status == "ok"
    # each conv: 2 x 4 x 4 = 32 outputs x 2 input channels x 1 = 64 MACs, + 32 bias adds = 96 (ptflops
    # counts the bias); each ReLU 32 (1 per element); F.relu patched as well: 3 x 32 = 96 again.
    # 3 x 96 + 3 x 32 + 96 = 480
    assert [(le.module, le.raw["macs"]) for le in run.layers] == [
        ("0", 96), ("1", 32), ("2", 96), ("3", 32), ("4", 96), ("5", 32)]
    assert run.headline["macs"] == 480
    layers = tuple(dataclasses.replace(le, raw={**le.raw, "macs": le.raw["macs"] + 7,
                                                "__flops__": le.raw["__flops__"] + 7})
                   if le.module == "2" else le for le in run.layers)
    drifted = dataclasses.replace(run, layers=layers, headline={**run.headline, "macs": 487, "macs_exact": 487})
    native = count(model, x)
    ex = explain("ptflops", drifted, native)
    return ModelReport("drift", (1, 2, 4, 4), "float32", {"torch": torch.__version__}, dict(native.totals),
                       dict(native.components), (ex,))


def test_the_module_with_a_residual_keeps_its_own_row(report):
    md = model_markdown(report)
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    # a cell is ptflops minus native: convs 0 and 4 explained alike, one row, 2 x 96 = 192 against
    # native 2 x 64 = 128: +64; conv 2 alone, 96 + 7 = 103 against 64: +39, marked; the three
    # ReLUs one row, 3 x 32 = 96 against 0: +96
    assert len(rows) == 3
    assert any(r.startswith("| `{0,4}` | Conv2d | 2 | 128 | +64 |") for r in rows), rows
    alone = next(r for r in rows if r.startswith("| `2` |"))
    assert "| Conv2d | 1 | 64 | +39 |" in alone and "**unexplained ptflops +7**" in alone
    assert any(r.startswith("| `{1,3,5}` | ReLU | 3 | 0 | +96 |") for r in rows), rows
    # the totals table shows the residual, in bold, in its last column
    assert any(line.startswith("| ptflops |") and line.endswith("| **7** |") for line in md.splitlines()), md


def test_the_json_and_csv_keep_each_module_and_its_residual(report):
    data = json.loads(model_json(report))
    rows = {le["module"]: le for le in data["tools"]["ptflops"]["layers"]}
    assert rows["2"]["residual"]["macs"] == 7 and rows["2"]["raw"]["macs"] == 103
    assert rows["0"]["residual"]["macs"] == 0 and rows["4"]["residual"]["macs"] == 0
    assert data["tools"]["ptflops"]["residual"] == 7
    csv = layers_csv(report).splitlines()
    assert any(line.startswith("drift,ptflops,2,Conv2d,1,,macs,103,96,64,7,") for line in csv), csv
