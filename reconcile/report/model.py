"""What one model's report holds: plain frozen data, built by ``reconcile.pipeline``, rendered by
``markdown``, ``data`` (JSON, CSV). Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from reconcile.explain.core import ToolExplanation


@dataclass(frozen=True)
class ModelReport:
    model: str
    input_shape: tuple[int, ...]
    input_dtype: str
    versions: Mapping[str, str]  # torch, torchvision, reconcile
    native_totals: Mapping[str, int]
    native_components: Mapping[str, int]
    tools: tuple[ToolExplanation, ...]
    published: Mapping[str, object] = field(default_factory=dict)  # torchvision _ops / num_params when known
    error: str = ""  # set when the model itself could not be counted
