"""fvcore's unsupported-op counts come from a jit trace, which is not the eager forward: Python
arithmetic on traced sizes becomes tensor ops, a ``torch.jit.is_tracing()`` branch runs other
ops, and ops nothing returned uses are dropped. Reconcile traces the model itself
(``counter.traced``, the ``native-trace`` job) and names each difference; these tests check
that on tiny models whose traces are worked out by hand, against real fvcore runs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from reconcile import conventions
from reconcile.config import RunConfig
from reconcile.counter import count
from reconcile.counter.traced import trace_ops
from reconcile.explain.core import explain_run
from tests.harness import adapter, assert_explained, residual_rows


class Sizes(nn.Module):
    """Size arithmetic in a forward (input 2x3x4)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        scale = 1 - x.shape[1]  # eager: Python ints; traced: aten::rsub on a 0-dim size tensor
        n = x.shape[0] * x.shape[1]  # traced: aten::mul on two size tensors
        return (y * scale).reshape(n, 4)  # aten::mul on a real tensor, eager and traced alike


class Paths(nn.Module):
    """A result nothing uses, and a branch taken only under a trace (input 2x4)."""

    def forward(self, x):
        unused = x.sigmoid()  # noqa: F841 - eager runs it; the trace drops it as dead
        if torch.jit.is_tracing():
            x = x.neg()
        else:
            x = x.abs()
        return x + 1


def _explained(model: nn.Module, x: torch.Tensor, traced: bool = True):
    model.eval()
    native = count(model, (x,))
    if traced:
        trace = adapter("native-trace").run(model, (x,))
        assert trace.status == "ok", trace.error_message
        native = replace(native, traced=trace.detail)
    run = adapter("fvcore").run(model, (x,))
    assert run.status == "ok", run.error_message
    conv = conventions.get("fvcore")
    return explain_run(run, conv.predict(native), conv, native)


def _unsupported(mapping) -> dict[str, int]:
    return {k.removeprefix("unsupported:"): v for k, v in mapping.items() if k.startswith("unsupported:") and v}


def _trace_causes(le) -> dict[tuple[str, str], int]:
    return {(m.removeprefix("unsupported:"), c.id): c.amount for m, cs in le.causes.items()
            if m.startswith("unsupported:") for c in cs}


def test_the_trace_record_counts_nodes_per_module_and_marks_size_arithmetic():
    t = trace_ops(Sizes().eval(), (torch.randn(2, 3, 4),))
    # root: 3 aten::size (x.shape[1] twice, x.shape[0] once), rsub (1 - h), mul (b * h) and the
    # real mul (y * scale), aten::Int (n as reshape's size), reshape; fc: one aten::linear
    assert t.ops == {"": {"aten::Int": 1, "aten::mul": 2, "aten::reshape": 1, "aten::rsub": 1, "aten::size": 3},
                     "fc": {"aten::linear": 1}}
    # of those, on sizes only: the rsub and one of the two muls (the other multiplies y)
    assert t.on_sizes == {"": {"aten::mul": 1, "aten::rsub": 1}}


def test_size_arithmetic_is_a_named_cause():
    ex = _explained(Sizes(), torch.randn(2, 3, 4))
    assert_explained(ex)
    root = next(le for le in ex.layers if le.module == "")
    # fvcore lists the traced rsub and both muls; eagerly only y * scale runs (one aten::mul)
    assert _unsupported(root.raw) == {"aten::mul": 2, "aten::rsub": 1}
    assert _unsupported(root.reference) == {"aten::mul": 1}
    assert _trace_causes(root) == {("aten::mul", "trace_size_arithmetic"): 1,
                                   ("aten::rsub", "trace_size_arithmetic"): 1}
    # flops: fc 2*3 rows * 4 * 4 = 96 MACs, bias ignored; nothing else changes
    assert ex.raw_total == 96


def test_without_the_trace_the_size_arithmetic_is_an_honest_residual():
    ex = _explained(Sizes(), torch.randn(2, 3, 4), traced=False)
    bad = residual_rows(ex)
    # the root row and the headline each miss the rsub and one mul (headline also in activations)
    assert len(bad) == 2
    root = next(le for le in ex.layers if le.module == "")
    assert {k: v for k, v in root.residual.items() if v} == {"unsupported:aten::mul": 1, "unsupported:aten::rsub": 1}


def test_a_dead_op_and_a_tracing_branch_are_named():
    ex = _explained(Paths(), torch.randn(2, 4))
    assert_explained(ex)
    root = next(le for le in ex.layers if le.module == "")
    # traced: neg (the is_tracing branch) and the add; eagerly: sigmoid, abs and the add
    assert _unsupported(root.raw) == {"aten::add": 1, "aten::neg": 1}
    assert _unsupported(root.reference) == {"aten::abs": 1, "aten::add": 1, "aten::sigmoid": 1}
    assert _trace_causes(root) == {("aten::abs", "trace_differs"): -1, ("aten::neg", "trace_differs"): 1,
                                   ("aten::sigmoid", "trace_differs"): -1}


def test_the_trace_job_leaves_the_model_as_it_was():
    model = Sizes().eval()
    hooks = (dict(model._forward_pre_hooks), dict(model._forward_hooks), dict(model.fc._forward_hooks))
    run = adapter("native-trace").run(model, (torch.randn(2, 3, 4),))
    assert run.status == "ok" and not model.training
    assert (dict(model._forward_pre_hooks), dict(model._forward_hooks), dict(model.fc._forward_hooks)) == hooks


def test_a_model_torch_jit_cannot_trace_fails_with_its_reason():
    class Data(nn.Module):
        def forward(self, x):
            if torch.jit.is_tracing():  # as models do that refuse a trace
                raise RuntimeError("this model cannot be traced")
            return x

    run = adapter("native-trace").run(Data(), (torch.randn(2),))
    assert run.status == "failed"
    assert run.error_message.startswith("torch.jit could not trace this model")


@pytest.mark.slow
def test_the_pipeline_traces_only_when_fvcore_is_compared():
    from reconcile import pipeline

    spec = "tests.test_fvcore_trace:Sizes"
    with_fvcore, = pipeline.collect([spec], RunConfig(tools=("native", "fvcore"), input_shape=(2, 3, 4)))
    without, = pipeline.collect([spec], RunConfig(tools=("native", "thop"), input_shape=(2, 3, 4)))
    assert with_fvcore.native.traced is not None and without.native.traced is None
    assert [r.tool for r in with_fvcore.runs] == ["native", "fvcore"]  # the trace job is not a tool
    report = pipeline.reconcile_model(with_fvcore)
    assert all(t.explained for t in report.tools)


@pytest.mark.parametrize("tool", ["fvcore", "mmengine"])
def test_predict_traces_the_model_as_report_does(capsys, tool):
    from reconcile import cli

    spec = "tests.test_fvcore_trace:Sizes"
    assert cli.main(["predict", spec, "--tool", tool, "--input-shape", "2,3,4", "--format", "json"]) == 0
    predicted = json.loads(capsys.readouterr().out)["headline"]
    # Sizes' trace-only ops: 1 - x.shape[1] is one aten::rsub, x.shape[0] * x.shape[1] one aten::mul
    # beside the real (y * scale): 2 muls; none of them has a flop handle, so each is a call count
    assert (predicted["unsupported:aten::rsub"], predicted["unsupported:aten::mul"]) == (1, 2)
    x = torch.randn(2, 3, 4)
    run = adapter(tool).run(Sizes().eval(), (x,))  # the tool itself agrees
    assert {k: v for k, v in run.headline.items() if k.startswith("unsupported:")} == {
        k: v for k, v in predicted.items() if k.startswith("unsupported:")}


class Fill(nn.Module):
    """A Python number written into a slice (input 2x2)."""

    def forward(self, x):
        m = x.new_zeros(2, 2)
        m[0, :] = 3  # CPU and the trace: one aten::fill_; meta: aten::scalar_tensor + aten::copy_
        return x + m


def test_a_number_written_into_a_slice_is_one_fill_on_meta_too():
    x = torch.randn(2, 2)
    run = adapter("fvcore").run(Fill(), (x,))
    # fvcore lists the traced fill_ and the add (new_zeros, slice, select are ignored)
    assert _unsupported(run.headline) == {"aten::add": 1, "aten::fill_": 1}
    conv = conventions.get("fvcore")
    for native in (count(Fill(), (x,)), count(Fill().to("meta"), (x.to("meta"),))):
        ex = explain_run(run, conv.predict(native), conv, native)
        assert_explained(ex)


class MinOf(nn.Module):
    """torch.min of two tensors (input 2x4), as T5's relative position buckets call it."""

    def forward(self, x):
        return torch.min(x, torch.full_like(x, 0.5)) + torch.max(x, x.neg())


def test_torch_min_of_two_tensors_is_traced_as_min():
    # eager: aten::minimum and aten::maximum; fvcore's trace: aten::min (listed, unsupported) and
    # aten::max (ignored), plus the add and the neg (full_like is ignored)
    ex = _explained(MinOf(), torch.randn(2, 4), traced=False)
    assert_explained(ex)
    assert _unsupported(ex.run.headline) == {"aten::add": 1, "aten::min": 1, "aten::neg": 1}
