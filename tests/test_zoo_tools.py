"""CI's zoo check: every tool on 15 torchvision models spanning every family (``zoo.ZOO_CI``),
each tool's rows predicted from the native count with zero residual.

The target is 100% of rows everywhere. The few rows reconcile cannot yet predict are pinned
below with the reason, so both a regression and an improvement make this test fail (and the
pin is then updated on purpose). A tool that cannot run a model at all is pinned as failed with
the tool's own error.
"""

from __future__ import annotations

import pytest

from reconcile import pipeline, zoo

# (model, tool) -> (rows explained, rows) for the rows not yet explained
KNOWN_GAPS = {
    # fvcore's "unsupported:<op>" call counts include the Python size arithmetic its jit trace
    # records (h * w on traced shapes, torch.arange/pad/roll bookkeeping): no aten op reaches
    # the native counter for them. flops, activations and params are explained on every row.
    ("vit_b_32", "fvcore"): (151, 153),
    ("swin_t", "fvcore"): (150, 181),
    ("maxvit_t", "fvcore"): (550, 671),
    # mmengine's analysis is fvcore's jit trace, copied: the same trace-only size arithmetic. Its
    # convention is fvcore's (conventions/mmengine.py): a fix there closes both pins at once
    ("vit_b_32", "mmengine"): (151, 153),
    ("swin_t", "mmengine"): (150, 181),
    ("maxvit_t", "mmengine"): (550, 671),
    # (maxvit_t, ptflops) was pinned here for torch.einsum, which ptflops does not patch: the
    # native call record now tells einsum from torch.matmul
}

# (model, tool) -> the tool's own failure on that model, as it happens with the pinned versions
KNOWN_FAILURES = {
    ("densenet121", "torchsummary"): "failed",
    ("vit_b_32", "torchsummary"): "failed",
    ("convnext_tiny", "torchstat"): "failed",
    ("vit_b_32", "torchstat"): "failed",
    ("swin_t", "torchstat"): "failed",
    ("maxvit_t", "torchstat"): "failed",
}

FAMILIES = ("resnet", "vgg", "densenet", "googlenet", "inception", "mobilenet", "efficientnet", "regnet",
            "shufflenet", "squeezenet", "convnext", "vit", "swin", "maxvit")


def test_subset_spans_every_family():
    assert len(zoo.ZOO_CI) >= 15
    for family in FAMILIES:
        assert any(m.startswith(family) for m in zoo.ZOO_CI), family


@pytest.fixture(scope="module")
def shares() -> dict[tuple[str, str], zoo.Share]:
    out = {}
    for mr in pipeline.collect(list(zoo.ZOO_CI), pipeline.TOOLS, timeout=600):
        assert not mr.error, (mr.name, mr.error)
        report = pipeline.reconcile_model(mr)
        for t in report.tools:
            out[(mr.name, t.tool)] = zoo.share(t)
    return out


@pytest.mark.slow
def test_every_tool_explained_on_the_ci_subset(shares):
    got_gaps = {k: (s.explained, s.rows) for k, s in shares.items() if s.status == "ok" and not s.complete}
    got_failures = {k: s.status for k, s in shares.items() if s.status != "ok"}
    assert got_failures == KNOWN_FAILURES
    assert got_gaps == KNOWN_GAPS
    assert len(shares) == len(zoo.ZOO_CI) * len(pipeline.TOOLS)
