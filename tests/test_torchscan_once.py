"""torchscan's two views, the rows ``torchscan`` (module view) and ``torchscan-ops`` (operator
view), read one ``torchscan.summary`` call. In a model group the view run first keeps the report
for the other (``adapters.base.keep``), so the model's forward runs once for both, not twice. A
tool's numbers never change to buy speed: each record equals the one made with a call of its own
(``share=False``: every job in a worker of its own), field for field but ``seconds``, on a CNN, a
timm ViT (SDPA, the module tracker's names) and a transformers model (keyword inputs)."""

from __future__ import annotations

import dataclasses
import os
import tempfile

import pytest
from torch import nn

from reconcile import models, tools
from reconcile.adapters.torchscan import SUMMARY
from reconcile.runner import Job, run_jobs, units

BOTH = ("torchscan", "torchscan-ops")
SHAPE = (1, 3, 8, 8)


def test_the_two_views_are_bonded_in_the_registry():
    known = tools.all_tools()
    assert {name for name, t in known.items() if t.shares} == set(BOTH)
    assert {known[name].shares for name in BOTH} == {SUMMARY}


def _jobs(name: str) -> list[Job]:
    spec = models.resolve(name)
    inputs = tuple(models.default_inputs(spec))
    return [Job(name, tool, inputs=inputs, cost=1.5) for tool in BOTH]


def test_a_cut_never_parts_the_two_views():
    # one model, the two views, two workers: the bound is 3 / 2 = 1.5 and the unit takes 3, so the
    # runner cuts it in halves (as it does thop and ptflops: (0,) and (1,)); the bonded views stay
    # together, one group, one call
    assert units([Job("m", "thop", SHAPE, cost=1.5), Job("m", "ptflops", SHAPE, cost=1.5)], workers=2) == [(0,), (1,)]
    assert units([Job("m", tool, SHAPE, cost=1.5) for tool in BOTH], workers=2) == [(0, 1)]
    # beside two other tools of the model: the halves are (torchscan, torchscan-ops) and (thop, ptflops)
    jobs = [Job("m", tool, SHAPE, cost=1.5) for tool in ("thop", *BOTH, "ptflops")]
    assert sorted(units(jobs, workers=2)) == [(0, 3), (1, 2)]


@pytest.mark.parametrize("name", ["squeezenet1_1", "timm:vit_tiny_patch16_224", "hf:DistilBertModel:n_layers=1"])
def test_one_call_gives_the_records_of_two(name):
    jobs = _jobs(name)
    shared = run_jobs(jobs, workers=2, share=True)
    alone = run_jobs(jobs, workers=2, share=False)
    for one, own in zip(shared, alone):
        assert one.status == own.status == "ok", (one.tool, one.error_message, own.error_message)
        differ = {f.name for f in dataclasses.fields(one)
                  if f.name != "seconds" and getattr(one, f.name) != getattr(own, f.name)}
        assert not differ, (one.tool, differ)


# ----- the forward runs once for the two views ------------------------------------------------

FORWARDS = os.path.join(tempfile.gettempdir(), "reconcile-torchscan-forwards")


class Counted(nn.Module):
    """conv 3->4 k3 on 8x8; each forward appends a line to ``FORWARDS`` (the workers share the
    temporary folder of the process that started them)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        with open(FORWARDS, "a") as f:
            f.write("forward\n")
        return self.conv(x)


def counted() -> nn.Module:
    return Counted()


counted.example_input_shape = (1, 3, 8, 8)  # type: ignore[attr-defined]


@pytest.mark.parametrize("share, forwards", [(True, 1), (False, 2)])
def test_the_forward_runs_once_for_the_two_views(share, forwards):
    name = f"{__name__}:counted"
    try:
        runs = run_jobs([Job(name, tool, input_shape=counted.example_input_shape) for tool in BOTH],
                        workers=1, share=share)
        assert [r.status for r in runs] == ["ok", "ok"], [r.error_message for r in runs]
        # module view (torchscan's macs_convnd): 4 x 6 x 6 outputs x (3 x 3 x 3) = 3,888 MACs, the
        # bias "included in the accumulation"; operator view (FlopCounterMode's convolution formula,
        # no bias): 2 x 3,888 = 7,776 FLOPs
        assert runs[0].headline["macs"] == 3888
        assert runs[1].headline["flops"] == 7776
        with open(FORWARDS) as f:
            assert f.read().count("forward") == forwards  # one summary call: one forward
    finally:
        if os.path.exists(FORWARDS):
            os.remove(FORWARDS)
