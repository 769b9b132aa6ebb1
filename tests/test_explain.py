"""The residual is honest and counted once: a deliberately unmodelled op shows on its row, in
the total, and in the explained share, once; a headline that is its rows' sum adds nothing more."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import torch
from torch import nn

from tests.harness import adapter, residual_rows

from reconcile import conventions
from reconcile.counter import count
from reconcile.explain.core import explain_run


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 4, bias=False)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def _forget_conv(prediction, amount: int):
    """The thop prediction with ``amount`` MACs of the conv row left unmodelled (as if a rule
    were missing), in the row and therefore in the headline (thop's total is its rows' sum)."""
    layers = tuple(dataclasses.replace(p, predicted={**p.predicted, "ops": p.predicted["ops"] - amount})
                   if p.module == "conv" else p for p in prediction.layers)
    headline = {k: (v - amount if k == "macs" else v) for k, v in prediction.headline.items()}
    return dataclasses.replace(prediction, layers=layers, headline=headline)


def test_an_unmodelled_op_shows_once():
    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    native = count(model, (x,))
    run = adapter("thop").run(model, (x,))
    conv = conventions.get("thop")
    honest = explain_run(run, conv.predict(native), conv, native)
    assert honest.residual == 0
    # conv: 8 * 8 * 8 outputs * 3 * 9 = 13,824 MACs; fc 8 * 4 = 32; thop's total 13,856
    assert honest.raw_total == 13_824 + 32 == native.totals["macs"]

    broken = explain_run(run, _forget_conv(conv.predict(native), 100), conv, native)
    # the row shows +100, the headline shows the same +100 again: the residual is 100, not 200
    assert [r.split(" ")[0] for r in residual_rows(broken)] == ["conv", "(headline)"]
    assert broken.layers[0].residual["ops"] == 100
    assert broken.summaries["macs"].headline_residual == 100
    assert broken.residual == 100
    # no gap to native (thop's conv and linear are native's MACs), so nothing is explained
    assert broken.explained_share() == Fraction(0)
    assert broken.summaries["macs"].headline_not_rows == 0


def test_a_headline_that_is_not_its_rows_sum_is_a_fact_not_a_residual():
    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    native = count(model, (x,))
    run = adapter("thop").run(model, (x,))
    conv = conventions.get("thop")
    # a headline 7 above what the rows add up to, predicted so (a headline-level cause)
    run = dataclasses.replace(run, headline={**run.headline, "macs": run.headline["macs"] + 7})
    pred = conv.predict(native)
    pred = dataclasses.replace(pred, headline={**pred.headline, "macs": pred.headline["macs"] + 7})
    ex = explain_run(run, pred, conv, native)
    assert ex.residual == 0
    assert ex.summaries["macs"].headline_not_rows == 7
