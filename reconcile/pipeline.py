"""The main job: collect every tool's run on every model, reconcile, write reports.

Stages stay apart: ``collect`` runs tools (worker processes; this process never imports torch
for torchvision models), ``reconcile_model`` predicts and explains (pure), ``write_reports``
renders and writes each file atomically, so a report is written whole or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterator, Sequence

from reconcile import conventions, models
from reconcile.errors import ReconcileError
from reconcile.explain.core import ToolExplanation, explain_run
from reconcile.records import NativeCount, ToolRun
from reconcile.report.files import file_stem  # noqa: F401 - the CLI names files with it
from reconcile.report.model import ModelReport

log = logging.getLogger(__name__)

TOOLS = ("native", "thop", "ptflops", "ptflops-aten", "torchstat", "torchsummary", "fvcore")


@dataclass(frozen=True)
class ModelRuns:
    """Everything collected for one model: its input, native count and each tool's run."""

    spec: str
    name: str
    input: models.InputSpec
    native: NativeCount | None
    runs: tuple[ToolRun, ...] = ()
    error: str = ""
    published: dict = field(default_factory=dict)


def parse_tools(text: str | Sequence[str] | None) -> tuple[str, ...]:
    if not text:
        return TOOLS
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in names if t not in TOOLS]
    if unknown:
        raise ReconcileError(f"unknown tool {unknown[0]!r}: choose from {', '.join(TOOLS)}")
    # native is the reference every explanation needs: always run it, first
    return ("native",) + tuple(dict.fromkeys(t for t in names if t != "native"))


def input_for(spec: models.ModelSpec, shape: tuple[int, ...] | None, dtype: str, high: int | None) -> models.InputSpec:
    if shape is None:
        inp = models.default_input(spec)
        if dtype != "float32" or high is not None:
            inp = models.InputSpec(inp.shape, dtype, high if high is not None else inp.high)
        return inp
    return models.InputSpec(shape, dtype, high)


# relative run time of each tool on the same model, measured on resnet18/vgg16 (native runs on meta)
_TOOL_COST = {"native": 0.1, "thop": 1.0, "ptflops": 1.2, "ptflops-aten": 1.2, "torchstat": 1.5,
              "torchsummary": 2.0, "fvcore": 2.5}


def _expected_size(spec: models.ModelSpec) -> float:
    """A model's expected cost: its published GMACs plus a constant per model (building, tracing)."""
    ops = models.published(spec.name).get("_ops") if spec.kind == "torchvision" else None
    return 1.0 + float(ops or 1.0)


def collect(specs: Sequence[str], tools: Sequence[str], *, input_shape: tuple[int, ...] | None = None,
            input_dtype: str = "float32", input_high: int | None = None, timeout: float = 300.0,
            workers: int = 2) -> list[ModelRuns]:
    """Run ``tools`` on every model spec; a spec that cannot be resolved gets an ``error``."""
    from reconcile.runner import Job, run_jobs

    prepared: list[tuple[str, models.ModelSpec | None, models.InputSpec | None, str]] = []
    seen: set[str] = set()
    for text in specs:
        try:
            spec = models.resolve(text)
            if spec.name in seen:  # resnet18,ResNet18: one model, run once under its first spelling
                continue
            seen.add(spec.name)
            prepared.append((text, spec, input_for(spec, input_shape, input_dtype, input_high), ""))
        except ReconcileError as exc:
            prepared.append((text, None, None, str(exc)))
    jobs: list[Job] = []
    owners: list[int] = []
    for i, (_, spec, inp, err) in enumerate(prepared):
        if err:
            continue
        size = _expected_size(spec)
        for tool in tools:
            jobs.append(Job(spec.text, tool, inp.shape, inp.dtype, inp.high, cost=size * _TOOL_COST.get(tool, 1.0)))
            owners.append(i)
    runs = run_jobs(jobs, timeout=timeout, workers=workers) if jobs else []
    by_model: dict[int, list[ToolRun]] = {}
    for i, run in zip(owners, runs):
        by_model.setdefault(i, []).append(run)
    out = []
    for i, (text, spec, inp, err) in enumerate(prepared):
        if err:
            out.append(ModelRuns(text, text, models.InputSpec((1,)), None, error=err))
            continue
        model_runs = by_model.get(i, [])
        native_run = next((r for r in model_runs if r.tool == "native"), None)
        native = native_run.detail if native_run is not None and native_run.status == "ok" else None
        error = ""
        if native is None:
            why = f"{native_run.error_type}: {native_run.error_message}" if native_run else "not run"
            if native_run is not None and native_run.error_type == "ReconcileError":
                why = native_run.error_message
            error = f"{spec.name} could not be counted: {why}"
        published = models.published(spec.name) if spec.kind == "torchvision" else {}
        out.append(ModelRuns(text, spec.name, inp, native, tuple(model_runs), error, published))
    return out


def reconcile_model(mr: ModelRuns) -> ModelReport:
    """Predict every tool from the native count and explain its run. Pure."""
    from reconcile import __version__

    versions = {"torch": _version("torch"), "torchvision": _version("torchvision"), "reconcile": __version__}
    if mr.native is None:
        return ModelReport(mr.name, mr.input.shape, mr.input.dtype, versions, {}, {}, (), mr.published, mr.error)
    explanations: list[ToolExplanation] = []
    for run in mr.runs:
        conv = _convention(run.tool)
        prediction = conv.predict(mr.native) if conv is not None and run.status == "ok" else None
        explanations.append(explain_run(run, prediction, conv, mr.native))
    published = {k: mr.published[k] for k in ("_ops", "num_params") if k in mr.published}
    return ModelReport(mr.name, mr.input.shape, mr.input.dtype, versions, dict(mr.native.totals),
                       dict(mr.native.components), tuple(explanations), published)


def _convention(tool: str):
    try:
        return conventions.get(tool)
    except (ImportError, AttributeError):
        log.warning("no convention for %s yet: its numbers are reported but not explained", tool)
        return None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def check_writable(out: str) -> Path:
    """``out`` as a Path once it is known that reports can be written there. The folder itself is
    created only when the first file is written (``write_files``): a run that writes nothing
    leaves nothing."""
    path = Path(out)
    try:
        if path.is_dir():
            with tempfile.NamedTemporaryFile(dir=path, prefix=".reconcile-check-", delete=True):
                pass
        else:
            parent = path
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if path.exists() or not parent.is_dir():
                raise NotADirectoryError(20, "Not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise ReconcileError(f"cannot write reports to {out!r}: {exc.strerror or exc}: choose another folder with --out") from exc
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP arriving inside are acted on (by their own handlers) on exit.
    Python-level, not ``pthread_sigmask``: a signal blocked in this thread would still be taken by
    another thread of the process, and its Python handler run here at once."""
    pending: list[int] = []
    saved = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            saved[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    except ValueError:  # not the main thread: signals are not ours to hold
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


def write_files(folder: Path, files: dict[str, str]) -> None:
    """Write every file whole or none: all are rendered first, each goes to a temporary file in
    the same folder, and they are renamed into place only once all were written, with SIGINT,
    SIGTERM and SIGHUP held back while they are. Files get the usual ``0o666 & ~umask``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReconcileError(f"cannot write reports to {str(folder)!r}: {exc.strerror or exc}: "
                             "choose another folder with --out") from exc
    mode = 0o666 & ~_umask()
    temps: list[tuple[str, Path]] = []
    try:
        for name, text in files.items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            os.fchmod(fd, mode)  # mkstemp makes 0600
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
            temps.append((name, Path(tmp)))
        with _signals_held():
            for name, tmp in temps:
                os.replace(tmp, folder / name)
            temps.clear()
    finally:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)


def render_model(report: ModelReport) -> dict[str, str]:
    from reconcile.report.data import layers_csv, model_json
    from reconcile.report.markdown import model_markdown

    stem = file_stem(report.model)
    return {f"{stem}.md": model_markdown(report), f"{stem}.json": model_json(report), f"{stem}.csv": layers_csv(report)}
