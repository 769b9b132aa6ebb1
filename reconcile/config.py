"""Run settings: one small frozen config, checked once at the entry point."""

from __future__ import annotations

import math
from dataclasses import dataclass

from reconcile.errors import ReconcileError

DEVICES = ("meta", "cpu")  # where a model is built and the reference counts
MODES = ("eval", "train")
FORMATS = ("table", "json")
# seconds per tool (or per model for count, predict, roofline), counted from its worker's start:
# the default of every command and of the API, but zoo's, whose largest models (vit_h_14) take
# the slowest tools longer (its kept results are keyed on it: changing it re-runs them)
TIMEOUT = 300.0
ZOO_TIMEOUT = 600.0
MAX_TIMEOUT = 86400.0  # seconds: a day per tool and model; longer is a mistake (and overflows waits)


def check_timeout(seconds: float, name: str = "--timeout") -> float:
    """``seconds`` if it is a usable timeout (finite, above 0, at most a day), else a ReconcileError:
    nan would disable the timeout and spin the caller, inf and 1e10 overflow the waits."""
    try:
        ok = math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT
    except TypeError:
        ok = False
    if not ok:
        raise ReconcileError(f"{name} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
                             f"got {seconds!r}")
    return seconds


@dataclass(frozen=True)
class RunConfig:
    inputs: tuple = ()  # InputSpecs from --input; empty: --input-shape or the model's defaults
    input_shape: tuple[int, ...] | None = None  # None: each model's default input
    input_dtype: str = "float32"
    input_high: int | None = None
    device: str = "meta"
    mode: str = "eval"
    training: bool = False  # --training: forward + backward (count, tools, report)
    depth: int | None = None
    format: str = "table"
    tools: tuple[str, ...] = ()  # the tools to run (reconcile.tools names); empty: the default run
    timeout: float = TIMEOUT
    out: str = "reports"
    executor: str = "local"  # where the (model, tool) jobs run: local (fork-server pool) or ray
    ray_address: str | None = None  # an existing Ray cluster; None: a local instance for the run

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ReconcileError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.mode not in MODES:
            raise ReconcileError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.format not in FORMATS:
            raise ReconcileError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.depth is not None and self.depth < 0:
            raise ReconcileError(f"--depth must be 0 or more, got {self.depth}")
        check_timeout(self.timeout)
        if self.executor not in ("local", "ray"):
            raise ReconcileError(f"--executor must be local or ray, got {self.executor!r}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ReconcileError("--ray-address is empty: give the cluster's address (HOST:PORT or auto), or leave "
                                 "it out for a local Ray instance")
        if self.ray_address and self.executor != "ray":
            raise ReconcileError("--ray-address needs --executor ray")
        object.__setattr__(self, "tools", tuple(self.tools))
        if self.tools:
            from reconcile import tools

            for name in self.tools:
                tools.get(name)  # an unknown name: one line naming the known ones
        if self.input_high is not None and self.input_high < 1:
            raise ReconcileError(f"--input-high must be at least 1, got {self.input_high}")
