"""A counter for the registry's tests (``tests/test_registry.py``): its whole adapter. It reports
one number, the model's parameters (each tensor once), as a tool's headline."""

from __future__ import annotations

from reconcile.adapters.base import Adapter
from reconcile.records import ToolRun


class ParamSumAdapter(Adapter):
    name = "paramsum"
    distribution = "reconcile"

    def version(self) -> str:
        return "test"

    def _run(self, model, inputs) -> ToolRun:
        total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
        return ToolRun(tool=self.name, version=self.version(), status="ok", headline={"params": total})


def tiny():
    """Conv2d(3, 4, 3) + BatchNorm2d(4): 4*3*3*3 weights + 4 bias = 112, 4 weight + 4 bias = 8; 120 in all."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


tiny.example_input_shape = (1, 3, 8, 8)
