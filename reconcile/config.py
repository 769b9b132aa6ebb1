"""Run settings: one small frozen config, checked once at the entry point."""

from __future__ import annotations

from dataclasses import dataclass

from reconcile.errors import ReconcileError

DEVICES = ("meta", "cpu")
FORMATS = ("table", "json")


@dataclass(frozen=True)
class RunConfig:
    inputs: tuple = ()  # InputSpecs from --input; empty: --input-shape or the model's defaults
    input_shape: tuple[int, ...] | None = None  # None: each model's default input
    input_dtype: str = "float32"
    input_high: int | None = None
    device: str = "meta"
    mode: str = "eval"
    depth: int | None = None
    format: str = "table"
    tools: tuple[str, ...] = ()
    timeout: float = 300.0
    out: str = "reports"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ReconcileError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.format not in FORMATS:
            raise ReconcileError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.depth is not None and self.depth < 0:
            raise ReconcileError(f"--depth must be 0 or more, got {self.depth}")
        if self.timeout <= 0:
            raise ReconcileError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if self.input_high is not None and self.input_high < 1:
            raise ReconcileError(f"--input-high must be at least 1, got {self.input_high}")
