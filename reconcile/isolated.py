"""The model of ``count``, ``predict`` and ``roofline`` run as ``tools`` runs a tool.

These commands print what the native counter (or a layer timing) found on one model at a time.
They used to build and run the model in the command's own process; now every model runs as
jobs of ``reconcile.runner`` (``pipeline.collect``: a fresh fork of the fork server per job,
under ``--timeout``), model after model, so that:

- a model that aborts, segfaults, exits, hangs (in its factory, its import or its forward) or
  runs out of memory fails alone, as one line saying how (``failure``), and the next model runs;
- nothing the model prints (at import, in its factory or forward) or warns reaches the
  command's stdout or stderr, so ``--format json`` stays one JSON object per line;
- what a model does to torch's process-wide state (``torch.set_default_dtype``, threads,
  ``torch.backends`` flags, monkey-patches) dies with its worker: the next model never sees it;
- the command's process never imports the user's model module.

Model after model, not all at once: each model's result is printed as soon as it is known, in
the order given, and a layer timing (``--measure``) never shares the CPU with another job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from reconcile.adapters.base import Adapter
from reconcile.records import ToolRun

if TYPE_CHECKING:
    from reconcile.pipeline import ModelRuns

# how ``runner`` says a model counted on meta was counted on CPU instead (the runner's words)
_MOVED = "; so it was counted on "


@dataclass(frozen=True)
class Counted:
    """One model's native count, or the one line saying why there is none."""

    runs: "ModelRuns"
    error: str = ""  # one line; "" when counted
    moved: str = ""  # why a count asked for on meta was made on CPU ("" when it was not)

    @property
    def name(self) -> str:
        return self.runs.name

    @property
    def inputs(self) -> tuple[Any, ...]:
        return self.runs.inputs

    @property
    def native(self) -> Any:
        return self.runs.native


def counted(specs: Sequence[str], *, inputs: Sequence[Any] = (), input_shape: tuple[int, ...] | None = None,
            input_dtype: str = "float32", input_high: int | None = None, device: str = "meta",
            mode: str = "eval", training: bool = False, timeout: float = 300.0) -> Iterator[Counted]:
    """The native count of each model spec, one model at a time, in the order given (a model
    spelled twice counted once). Each count is a ``native`` job of ``pipeline.collect`` (its
    inputs found in a worker too when that runs user code), under ``timeout`` seconds per job."""
    from reconcile import models, pipeline, tools
    from reconcile.config import RunConfig

    seen: set[str] = set()
    for text in specs:
        try:
            name = models.resolve(text, check=False).name
        except Exception:  # noqa: BLE001 - collect reports the same error as this model's line
            name = None
        if name is not None:
            if name in seen:
                continue
            seen.add(name)
        cfg = RunConfig(inputs=tuple(inputs), input_shape=input_shape, input_dtype=input_dtype,
                        input_high=input_high, device=device, mode=mode, training=training,
                        tools=(tools.reference().name,), timeout=timeout)
        (mr,) = pipeline.collect([text], cfg, workers=1)
        yield _counted(mr)


def _counted(mr: "ModelRuns") -> Counted:
    from reconcile import tools

    run = next((r for r in mr.runs if r.tool == tools.reference().name), None)
    if mr.native is None:
        return Counted(mr, failure(mr.name, run, mr.error))
    # the adapter counts a model it calls "model": the record carries the model's own name
    mr = replace(mr, native=replace(mr.native, model=mr.name))
    moved = ""
    note = run.notes[0] if run is not None and run.notes else ""
    if _MOVED in note:
        moved = note.rsplit(_MOVED, 1)[0]
    return Counted(mr, "", moved)


def failure(name: str, run: ToolRun | None, error: str = "", what: str = "counted") -> str:
    """One line for a model that could not be counted: a user's mistake as reconcile says it
    (unknown model, a factory or forward that raised), out of memory with what to do, and a
    worker that died or timed out with how."""
    from reconcile.runner import bounded

    if run is None:
        return error
    message = bounded(run).error_message
    if run.error_type == "ReconcileError":
        return message
    if run.error_type == "MemoryError" or _out_of_memory(message):
        return (f"{name}: the input or model is too large for this machine's memory ({run.error_type}); "
                "count it with --device meta, which allocates nothing")
    if run.status == "timeout":
        return f"{name} could not be {what}: {message} (raise --timeout if it needs longer)"
    return f"{name} could not be {what}: {run.error_type}: {message}"


def _out_of_memory(text: str) -> bool:
    text = text.lower()
    return "can't allocate memory" in text or "cannot allocate memory" in text or "out of memory" in text


def measured(name: str, inputs: Sequence[Any], repeat: int, kernels: bool, timeout: float) -> ToolRun:
    """``MeasureLayers`` on the model in a worker, alone on this machine's CPUs (``workers=1``
    gives the worker every CPU's thread, as torch takes them in the command's process)."""
    from reconcile.runner import Job, run_jobs

    from reconcile.tools import MEASURE

    job = Job(name, MEASURE, inputs=tuple(inputs), mode="eval", device="cpu",
              options=(("repeat", repeat), ("kernels", kernels)))
    (run,) = run_jobs([job], timeout=timeout, workers=1)
    return run


class MeasureLayers(Adapter):
    """Not a counter: ``roofline --measure``'s timings of one model on CPU with real tensors, in
    a worker. ``detail`` is a dict: ``module_s`` and ``total_s`` (``local.measure_layers``) and,
    when ``kernels``, this model's own kernels timed alone just before (``kernels``) and just
    after (``kernels_after``) the layers (``local.model_kernels``)."""

    name = "roofline-measure"
    distribution = "reconcile"
    device = "cpu"

    def __init__(self, repeat: int = 5, kernels: bool = False) -> None:
        self.repeat = repeat
        self.kernels = kernels

    def version(self) -> str:
        from reconcile._version import __version__

        return __version__

    def attempted(self) -> str:
        return f"reconcile.roofline.local.measure_layers(model, inputs, repeat={self.repeat})"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        from reconcile.roofline import local

        before = local.model_kernels(model, inputs) if self.kernels else {}
        module_s, total_s = local.measure_layers(model, inputs, self.repeat)
        after = local.model_kernels(model, inputs) if self.kernels else {}
        return ToolRun(tool=self.name, version=self.version(), status="ok",
                       detail={"module_s": module_s, "total_s": total_s, "kernels": before,
                               "kernels_after": after})
