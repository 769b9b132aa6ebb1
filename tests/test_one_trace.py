"""fvcore and mmengine trace the forward once per analysis (flops, then activations); reconcile
hands the second analysis the first one's graph (``adapters.base.one_trace``) in eval mode. A
tool's numbers never change to buy speed: here each tool's record with one trace equals its
record with two (``RECONCILE_TRACE_TWICE``), field for field, on models that exercise the trace
differently: a CNN with size arithmetic in its forward (efficientvit: unsupported ops only the
trace has), a decoder run through the flattening wrapper (GPT-2: keyword inputs, a cache output)
and a window-attention model. ``python benchmarks/one_trace.py`` proves it on all 51 zoo sample
models (torchvision CI, timm and transformers samples): 2026-12-06, beside a zoo run, 102 of 102 records equal,
warnings included, and the two tools took 92.7 and 98.5 job-seconds with one trace against
150.6 with two (fvcore 39.4 / 68.2, mmengine 53.3 / 82.4)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from reconcile import models
from reconcile.adapters.base import ONE_TRACE_NOTE, TRACE_TWICE
from reconcile.adapters.fvcore import FvcoreAdapter
from reconcile.adapters.mmengine import MmengineAdapter

ADAPTERS = {"fvcore": FvcoreAdapter, "mmengine": MmengineAdapter}


def _model(name: str):
    spec = models.resolve(name)
    torch.manual_seed(0)
    return models.prepare(models.build(spec, device="cpu"), models.default_inputs(spec), "cpu")


# GPT-2 with 2 of its 12 layers: the same blocks, the same path through the wrapper, a sixth of the time
@pytest.mark.parametrize("name", ["timm:efficientvit_b0", "hf:GPT2LMHeadModel:n_layer=2",
                                  "timm:swin_tiny_patch4_window7_224"])
def test_one_trace_gives_the_records_of_two(name, monkeypatch):
    model, inputs = _model(name)
    for tool, adapter in ADAPTERS.items():
        monkeypatch.delenv(TRACE_TWICE, raising=False)
        once = adapter().run(model, inputs)
        monkeypatch.setenv(TRACE_TWICE, "1")
        twice = adapter().run(model, inputs)
        assert once.status == twice.status == "ok", (tool, once.error_message, twice.error_message)
        assert ONE_TRACE_NOTE in once.notes and ONE_TRACE_NOTE not in twice.notes
        # the second trace only repeats warnings the first gave (the activation analysis's own
        # "unsupported operator" lines come from reading the graph, so they are in both)
        # (an import's warning comes only with the first import in this process)
        assert {w for w in once.warnings if not w.startswith("import: ")} <= set(twice.warnings), tool
        assert (replace(once, seconds=0.0, notes=(), warnings=())
                == replace(twice, seconds=0.0, notes=(), warnings=())), tool
        assert [n for n in once.notes if n != ONE_TRACE_NOTE] == list(twice.notes)


def test_a_model_in_training_mode_is_traced_once_per_analysis():
    """In training mode a trace updates BatchNorm's running statistics (and a stochastic layer may
    take another path), so the second analysis traces for itself, as the tool does."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    for tool, adapter in ADAPTERS.items():
        before = model[1].num_batches_tracked.item()
        run = adapter().run(model, (torch.randn(1, 3, 8, 8),))
        assert run.status == "ok" and ONE_TRACE_NOTE not in run.notes, tool
        # conv 3->4 k3 on 8x8: 4 x 6 x 6 = 144 outputs x 27 = 3,888 MACs; fvcore's batch_norm in
        # training mode (norm_flop_counter, affine): 5 per element, 144 x 5 = 720; 4,608 in all
        assert run.headline["flops"] == 4608 and run.headline["activations"] == 144, tool
        assert [layer.calls for layer in run.layers] == [1, 1, 1], tool  # each module once per trace
        assert model[1].num_batches_tracked.item() == before  # the tools run on a copy
