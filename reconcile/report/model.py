"""What one model's report holds: plain frozen data, built by ``reconcile.pipeline``, rendered by
``markdown``, ``data`` (JSON, CSV). Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from reconcile.explain.core import ToolExplanation


@dataclass(frozen=True)
class ModelReport:
    model: str
    input_shape: tuple[int, ...]
    input_dtype: str
    versions: Mapping[str, str]  # torch, torchvision (timm / transformers for their models), reconcile
    native_totals: Mapping[str, int]
    native_components: Mapping[str, int]
    tools: tuple[ToolExplanation, ...]
    published: Mapping[str, object] = field(default_factory=dict)  # torchvision _ops / num_params when known
    error: str = ""  # set when the model itself could not be counted
    inputs: tuple[str, ...] = ()  # each input described: "input_ids 1x128 long in [0, 30522)"
    mode: str = "eval"
    options: tuple[str, ...] = ()  # command-line options that reproduce the report
    native_device: str = ""  # where native counted ("meta", or "cpu")
    native_notes: tuple[str, ...] = ()  # why native counted where it did, when not on meta
    roofline: Any = None  # reconcile.roofline.Roofline of the native count, when asked for
    training: Any = None  # reconcile.explain.training.TrainingSummary, with --training
