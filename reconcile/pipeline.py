"""The main job: collect every tool's run on every model, reconcile, write reports.

Stages stay apart: ``collect`` runs tools (worker processes; this process never imports torch
for torchvision models), ``reconcile_model`` predicts and explains (pure), ``write_reports``
renders and writes each file atomically, so a report is written whole or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from reconcile import conventions, models, tools as registry
from reconcile.config import RunConfig
from reconcile.sources import PROBED, SOURCES, kind_of
from reconcile.atomic import WriteFailed, write_files
from reconcile.errors import ReconcileError
from reconcile.inputs import model_dtype
from reconcile.explain.core import ToolExplanation, explain_run
from reconcile.records import NativeCount, ToolRun
from reconcile.report.files import file_stem
from reconcile.report.model import ModelReport

if TYPE_CHECKING:
    from reconcile.runner import Job

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ModelRuns:
    """Everything collected for one model: its inputs, native count and each tool's run."""

    spec: str
    name: str
    inputs: models.Inputs
    native: NativeCount | None
    runs: tuple[ToolRun, ...] = ()
    error: str = ""
    published: dict = field(default_factory=dict)
    mode: str = "eval"
    options: tuple[str, ...] = ()  # the command-line options that reproduce this run
    training: bool = False  # counted with --training: ``native.training`` holds the backward

    @property
    def input(self) -> models.InputSpec:
        return self.inputs[0]


def parse_tools(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """The tools a run asks for (``reconcile.tools``; none: the default run), the reference first."""
    if text is None:
        return registry.defaults()
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not names:  # --tools "" or ",,,": a mistake, not the default run
        raise ReconcileError(f"--tools names no tool ({text!r}): name one or more of {', '.join(registry.names())}, "
                             "comma-separated, or leave --tools out for the default run")
    from reconcile import versions

    for t in names:
        registry.get(t)  # an unknown name: one line naming the known ones
    for t in names:  # a pinned version asked for but not installed: what to run, before anything starts
        versions.check(t)  # (in the default set it fails as its own run instead, like a missing tool)
    # the reference (native) is what every explanation needs: always run it, first
    first = registry.reference().name
    return (first,) + tuple(dict.fromkeys(t for t in names if t != first))


def inputs_for(spec: models.ModelSpec, inputs: Sequence[models.InputSpec] | None = None,
               shape: tuple[int, ...] | None = None, dtype: str = "float32",
               high: int | None = None) -> models.Inputs:
    """The inputs a model runs on: ``inputs`` as given, else one input of ``shape``, else the
    model's default inputs with ``dtype`` / ``high`` applied."""
    if inputs:
        return models.check_inputs(inputs)
    if shape is not None:
        return (models.InputSpec(shape, dtype, high),)
    return models.with_dtype(models.default_inputs(spec), dtype, high)


def _options(inputs: Sequence[models.InputSpec] | None, shape: tuple[int, ...] | None, dtype: str,
             high: int | None, mode: str, device: str, tools: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    if inputs:
        out += [f"--input {i.option()}" for i in inputs]
    elif shape is not None:
        out.append("--input-shape " + ",".join(map(str, shape)))
    if not inputs and dtype != "float32":
        out.append(f"--input-dtype {dtype}")
    if not inputs and high is not None:
        out.append(f"--input-high {high}")
    if mode != "eval":
        out.append(f"--mode {mode}")
    if device != "meta":
        out.append(f"--device {device}")
    if tuple(tools) != registry.defaults():
        out.append("--tools " + ",".join(tools))
    return tuple(out)


# not a tool: the forward as torch.jit traces it, recorded for the native count when a traced tool
# (fvcore: ``Tool.traced``), which counts that trace, is compared; a job of its own beside the tools
TRACE = registry.TRACE


# a model's cost beyond its GMACs, in GMACs: a tool's job took about 0.35 s plus 0.04 s per GMAC
# here (the 36 models of the real-world sample, every tool, fitted 2026-12-06), building, forking
# and the tool's own bookkeeping being most of a small model's time
PER_MODEL = 8.0


def _expected_size(spec: models.ModelSpec, inputs: models.Inputs) -> float:
    """A model's expected cost, for the order jobs start in (the costliest first, so that no large
    model is left running alone at the end): its published GMACs (torchvision's ``_ops``; timm's
    table at the input's size, for one square image input; 1 when none is known) plus
    ``PER_MODEL``."""
    ops = models.published(spec).get("_ops")
    shape = inputs[0].shape if len(inputs) == 1 else ()
    if ops is None and spec.kind == "timm" and len(shape) == 4 and shape[2] == shape[3]:
        from reconcile.sources import timm_published

        ops = timm_published.gmacs(spec.name.removeprefix("timm:").partition(".")[0], shape[2])
    return PER_MODEL + float(ops or 1.0)


def collect(specs: Sequence[str], config: RunConfig = RunConfig(), *, workers: int = 2,
            on_done: Callable[[Job, ToolRun], None] | None = None,
            on_start: Callable[[Job], None] | None = None,
            on_model: Callable[[ModelRuns], None] | None = None) -> list[ModelRuns]:
    """Run ``config.tools`` (none: the default run) on every model spec; a spec that cannot be
    resolved gets an ``error``.

    ``config.device`` is where the reference counts ("meta": free; it falls back to CPU by itself
    for a forward that reads data; ``Tool.run_device``); the other tools run where their adapters
    ask (CPU, as their users run them). ``config.mode`` ("eval" or "train") applies to every tool.
    ``on_start(job)`` and ``on_done(job, run)`` are told of each tool run as it starts and settles
    (``runner.run_jobs``); ``on_model(runs)`` of each model as soon as all its runs have settled
    (while other models' tools still run), with the same object the returned list holds.
    ``config.executor`` "ray" runs the jobs as Ray tasks (``reconcile.executors``), on the
    cluster at ``config.ray_address`` if given."""
    from reconcile import executors
    from reconcile.runner import Job

    tools = config.tools or registry.defaults()
    inputs, input_shape, input_dtype, input_high = config.inputs, config.input_shape, config.input_dtype, config.input_high
    mode, device, training, timeout = config.mode, config.device, config.training, config.timeout
    options = _options(inputs, input_shape, input_dtype, input_high, mode, device, tools)
    if training:
        options += ("--training",)
    resolved: list[tuple[str, models.ModelSpec | None, str]] = []
    seen: set[str] = set()
    for text in specs:
        try:
            # what needs an import (user code, transformers) is checked in a worker, below
            spec = models.resolve(text, check=False)
        except ReconcileError as exc:
            resolved.append((text, None, str(exc)))
            continue
        if spec.name not in seen:  # resnet18,ResNet18: one model, run once under its first spelling
            seen.add(spec.name)
            resolved.append((text, spec, ""))
    found = _probe_inputs([s for _, s, _ in resolved if s is not None and not inputs and input_shape is None
                           and s.kind in PROBED], timeout, workers)
    prepared: list[tuple[str, models.ModelSpec | None, models.Inputs, str]] = []
    for text, spec, err in resolved:
        if spec is None:
            prepared.append((text, None, (), err))
            continue
        try:
            default = found.get(spec.name)
            if isinstance(default, str):
                raise ReconcileError(default)
            if default is not None:
                prepared.append((text, spec, models.with_dtype(default, input_dtype, input_high), ""))
            else:
                prepared.append((text, spec, inputs_for(spec, inputs, input_shape, input_dtype, input_high), ""))
        except ReconcileError as exc:
            prepared.append((text, None, (), str(exc)))
    jobs: list[Job] = []
    owners: list[int] = []
    not_run: dict[int, list[ToolRun]] = {}  # tools that cannot count the model's dtype, by model
    for i, (_, spec, inp, err) in enumerate(prepared):
        if err:
            continue
        size = _expected_size(spec, inp)
        entries = [registry.get(t) for t in tools]
        try:
            dtype = model_dtype(inp) or "float32"
        except ReconcileError:  # floating inputs of two dtypes: each job's worker says so
            dtype = ""
        for tool in entries:
            why = tool.cannot_run(dtype) if dtype else ""
            if why:  # checked here, before any tool runs, not met as the tool's own dtype error
                not_run.setdefault(i, []).append(ToolRun(
                    tool=tool.name, version=tool.version or (_version(tool.dist) if tool.dist else ""),
                    status="not run", error_type="UnsupportedDtype", error_message=why,
                    attempted=f"{tool.name} on {spec.name} (checked before running)"))
                continue
            # --training: a tool with a training adapter counts forward + backward (its run keeps its name)
            jobs.append(Job(spec.name, tool.job(training), inputs=inp, mode=mode, cost=size * tool.cost,
                            device=device if tool.run_device else None))
            owners.append(i)
        if any(t.traced for t in entries):
            jobs.append(Job(spec.name, TRACE, inputs=inp, mode=mode, cost=size * registry.TRACE_COST))
            owners.append(i)
    built: dict[int, ModelRuns] = {}
    settled: dict[int, ToolRun] = {}
    position = {id(job): k for k, job in enumerate(jobs)}
    left = {i: owners.count(i) for i in set(owners)}
    tell_done, tell_start = _tools_only(on_done), _tools_only(on_start)
    if tell_done is not None:
        for i, skipped in not_run.items():
            for run in skipped:
                tell_done(Job(prepared[i][1].name, run.tool, inputs=prepared[i][2]), run)

    def done(job: Job, run: ToolRun) -> None:
        if tell_done is not None:
            tell_done(job, run)
        k = position[id(job)]
        settled[k] = run
        left[owners[k]] -= 1
        if on_model is not None and left[owners[k]] == 0:
            i = owners[k]
            built[i] = _model_runs(prepared[i], _in_order([settled[j] for j in range(len(jobs)) if owners[j] == i]
                                                          + not_run.get(i, []), tools), mode, options, training)
            on_model(built[i])

    runs = executors.run(jobs, executor=config.executor, address=config.ray_address, timeout=timeout, workers=workers,
                         on_done=done, on_start=tell_start) if jobs else []
    by_model: dict[int, list[ToolRun]] = {}
    for i, run in zip(owners, runs):
        by_model.setdefault(i, []).append(run)
    out = []
    for i, item in enumerate(prepared):
        if i not in built:
            built[i] = _model_runs(item, _in_order(by_model.get(i, []) + not_run.get(i, []), tools), mode, options,
                                   training)
            if on_model is not None:
                on_model(built[i])
        out.append(built[i])
    return out


def _in_order(runs: list[ToolRun], tools: Sequence[str]) -> list[ToolRun]:
    """A model's runs in the order of ``tools`` (runs not started come back in their place), the
    trace job last."""
    order = {t: k for k, t in enumerate(tools)}
    return sorted(runs, key=lambda r: order.get(r.tool, len(order)))


def _tools_only(callback: Callable | None) -> Callable | None:
    """A progress callback that hears of the tools' runs only (the trace job is not a tool)."""
    if callback is None:
        return None
    return lambda job, *rest: None if job.tool == TRACE else callback(job, *rest)


def _with_trace(runs: list[ToolRun], native_run: ToolRun, native: NativeCount,
                trace_run: ToolRun) -> tuple[list[ToolRun], NativeCount]:
    """The native count with the traced forward attached (``NativeCount.traced``); when the trace
    failed, the native run says so (fvcore's trace-only ops are then left unexplained)."""
    if trace_run.status == "ok":
        native = replace(native, traced=trace_run.detail)
        attached = replace(native_run, detail=native)
    else:
        note = (f"reconcile's own torch.jit trace of the model {trace_run.status}: "
                f"{trace_run.error_message or trace_run.error_type}; ops only a trace holds are not predicted")
        attached = replace(native_run, notes=(*native_run.notes, note))
    return [attached if r is native_run else r for r in runs], native


def _model_runs(prepared: tuple[str, models.ModelSpec | None, models.Inputs, str], model_runs: list[ToolRun],
                mode: str, options: tuple[str, ...], training: bool = False) -> ModelRuns:
    """One model's ``ModelRuns`` from its prepared spec and its settled runs (in job order)."""
    text, spec, inp, err = prepared
    if err:
        return ModelRuns(text, text, (models.InputSpec((1,)),), None, error=err)
    trace_run = next((r for r in model_runs if r.tool == TRACE), None)
    model_runs = [r for r in model_runs if r.tool != TRACE]
    reference = registry.reference().name
    native_run = next((r for r in model_runs if r.tool == reference), None)
    native = native_run.detail if native_run is not None and native_run.status == "ok" else None
    if native is not None and trace_run is not None:
        model_runs, native = _with_trace(model_runs, native_run, native, trace_run)
    error = ""
    if native is None:
        why = f"{native_run.error_type}: {native_run.error_message}" if native_run else "not run"
        if native_run is not None and native_run.error_type == "ReconcileError":
            why = native_run.error_message
        error = f"{spec.name} could not be counted: {why}"
    return ModelRuns(text, spec.name, inp, native, tuple(model_runs), error, models.published(spec), mode, options,
                     training)


def traced(name: str, inputs: models.Inputs, native: NativeCount, mode: str = "eval", tool: str = "",
           timeout: float = 300.0) -> tuple[NativeCount, str]:
    """``native`` with the forward as torch.jit traces it attached when ``tool`` counts a trace
    (``Tool.traced``: fvcore, mmengine, torchprofile), traced as the trace job of ``collect`` is, in a
    worker of its own (the model never runs in this process); the second item says why ops only a
    trace holds are not predicted ("" when they are, or when ``tool`` needs no trace)."""
    if tool and not registry.get(tool).traced:
        return native, ""
    from reconcile.runner import Job, run_jobs

    (run,) = run_jobs([Job(name, TRACE, inputs=tuple(inputs), mode=mode)], timeout=timeout, workers=1)
    if run.status == "ok":
        return replace(native, traced=run.detail), ""
    return native, (f"reconcile's own torch.jit trace of the model failed: {run.error_message}; "
                    "ops only a trace holds are not predicted")


def _probe_inputs(specs: Sequence[models.ModelSpec], timeout: float, workers: int) -> dict[str, models.Inputs | str]:
    """Default inputs of models whose finding imports user code or transformers, each found in a
    worker under ``timeout`` (a hanging import is stopped, what it prints is kept away from the
    terminal): name -> inputs, or the one-line reason they could not be found."""
    from reconcile.runner import Job, run_jobs

    if not specs:
        return {}
    runs = run_jobs([Job(s.name, registry.PROBE, input_shape=(1,)) for s in specs], timeout=timeout, workers=workers)
    out: dict[str, models.Inputs | str] = {}
    for spec, run in zip(specs, runs):
        if run.status == "ok":
            out[spec.name] = run.detail
        elif run.error_type == "ReconcileError":
            out[spec.name] = run.error_message
        else:
            out[spec.name] = (f"finding the inputs of {spec.name} {run.status}: {run.error_type}: "
                              f"{run.error_message}; pass --input-shape or --input")
    return out


def reconcile_model(mr: ModelRuns, hardware: str | None = None) -> ModelReport:
    """Predict every tool from the native count and explain its run, and (``hardware``: names as
    ``reconcile roofline`` takes them) the native count's roofline. Pure for named hardware."""
    from reconcile._version import __version__

    versions = {"torch": _version("torch"), "torchvision": _version("torchvision")}
    source_dist = SOURCES[_kind(mr.name)].package if _kind(mr.name) else ""
    if source_dist:
        versions[source_dist] = _version(source_dist)
    versions["reconcile"] = __version__
    published = {k: mr.published[k] for k in ("_ops", "num_params") if k in mr.published}
    reference = registry.reference().name
    native_run = next((r for r in mr.runs if r.tool == reference), None)
    context = dict(inputs=tuple(i.describe() for i in mr.inputs), mode=mr.mode, options=mr.options,
                   native_device=mr.native.device if mr.native is not None else "",
                   native_notes=tuple(native_run.notes) if native_run is not None else ())
    if mr.native is None:
        # nothing to predict from: each tool that ran is reported as it printed, unexplained
        raw = tuple(explain_run(run, None, _convention(run.tool), None) for run in mr.runs if run.tool != reference)
        return ModelReport(mr.name, mr.input.shape, mr.input.dtype, versions, {}, {}, raw, published, mr.error,
                           **context)
    explanations: list[ToolExplanation] = []
    for run in mr.runs:
        conv = _convention(run.tool)
        prediction = conv.predict(mr.native) if conv is not None and run.status == "ok" else None
        explanations.append(explain_run(run, prediction, conv, mr.native))
    roofline = None
    if hardware:
        from reconcile.roofline import roofline as _roofline

        roofline = _roofline(mr.native, hardware)
    training = None
    if mr.native.training is not None:
        from reconcile.explain.training import summarize

        training = summarize(mr.native)
    return ModelReport(mr.name, mr.input.shape, mr.input.dtype, versions, dict(mr.native.totals),
                       dict(mr.native.components), tuple(explanations), published, roofline=roofline,
                       training=training,
                       **context)


def _kind(name: str) -> str:
    """The source of a canonical name, from its prefix alone (no import)."""
    return kind_of(name)


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


def explanation_failed(name: str, exc: BaseException) -> str:
    """What is said of a model whose explanation raised (a bug in reconcile), the exception named."""
    return f"{name}: explaining its runs failed, a bug in reconcile ({type(exc).__name__}: {exc})"


def write_reports(results: Sequence[ModelRuns], folder: Path, hardware: str | None, *,
                  say: Callable[[str], None], error: Callable[[str], None],
                  tool_failed: Callable[[str], None]) -> tuple[list[ModelReport], int]:
    """Reconcile, render and write each model's report (``render_model``), then ``index.md``; the
    reports written and how many models failed. A model native could not count is still reported
    when some tool counted it (raw numbers); a model whose files cannot be written (a full disk)
    is lost alone. ``say`` gets a line per file written, ``error`` a model's error, ``tool_failed``
    a line per tool that did not finish (the details are in the report)."""
    reports: list[ModelReport] = []
    failed = 0
    for mr in results:
        ran = [r for r in mr.runs if r.status == "ok"]
        if mr.error:
            error(mr.error)
            failed += 1
            if not ran:
                continue
            # native could not count it, some tools did: their numbers are still reported (raw)
        try:
            report = reconcile_model(mr, hardware if mr.native is not None else None)
            files = render_model(report)
        except Exception as exc:  # noqa: BLE001 - a bug reporting one model must not lose the others
            error(f"{explanation_failed(mr.name, exc)}: its report was not written")
            failed += 1
            continue
        try:
            write_files(folder, files)
        except WriteFailed as exc:  # a full disk: this model's report is lost, not the others'
            error(f"{exc}: the report of {mr.name} was not written")
            failed += 1
            continue
        reports.append(report)
        unexplained = [t.tool for t in report.tools if t.status == "ok" and t.residual]
        note = f"; unexplained residual in {', '.join(unexplained)}" if unexplained else ""
        bad = [t.tool for t in report.tools if t.status not in ("ok", "not run")]
        note += f"; {', '.join(bad)} did not finish" if bad else ""
        skipped = [t.tool for t in report.tools if t.status == "not run"]
        note += f"; {', '.join(skipped)} not run" if skipped else ""
        extra = ", .png" if f"{file_stem(mr.name)}.png" in files else ""
        say(f"wrote {folder / file_stem(mr.name)}.md (.json, .csv{extra}){note}")
        for t in report.tools:
            if t.status != "ok":
                tool_failed(f"{mr.name}: {t.tool} {t.status}: {t.run.error_type}: {t.run.error_message}")
    return reports, failed


def write_index(folder: Path, reports: Sequence[ModelReport]) -> Path:
    """``index.md`` of ``folder`` with this run's ``reports`` (``render_index``), written; its path."""
    write_files(folder, {"index.md": render_index(folder, reports)})
    return folder / "index.md"


def warm_renderers() -> None:
    """Import what ``reconcile_model`` and ``render_model`` use (matplotlib: about 1 s), so a
    caller can pay for it while the tools still run (``reconcile report`` does, in a thread)."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import matplotlib.patches  # noqa: F401
    import matplotlib.ticker  # noqa: F401

    import reconcile.report.data  # noqa: F401
    import reconcile.report.markdown  # noqa: F401
    import reconcile.report.plot  # noqa: F401
    import reconcile.roofline  # noqa: F401


def render_model(report: ModelReport) -> dict[str, str | bytes]:
    """Every file of one model's report, by name: Markdown, JSON, CSV and, when some tool's count
    was explained, the picture (``<stem>.png``) the Markdown shows."""
    from reconcile.report.data import layers_csv, model_json
    from reconcile.report.markdown import index_entry, model_markdown
    from reconcile.report.plot import model_png

    stem = file_stem(report.model)
    png = model_png(report)
    files: dict[str, str | bytes] = {
        f"{stem}.md": model_markdown(report, f"{stem}.png" if png is not None else ""),
        f"{stem}.json": model_json(report, index_entry(report, stem)), f"{stem}.csv": layers_csv(report)}
    if png is not None:
        files[f"{stem}.png"] = png
    return files


def render_index(folder: Path, reports: Sequence[ModelReport] = ()) -> str:
    """``index.md`` for every model report in ``folder`` (earlier runs' included, one row per
    model), with ``reports`` taking the place of the same models' rows on disk."""
    import json

    from reconcile.report.markdown import index_entry, index_markdown

    entries = {r.model: index_entry(r, file_stem(r.model)) for r in reports}
    ours = {f"{file_stem(r.model)}.json" for r in reports}
    for path in sorted(folder.glob("*.json")):
        if path.name in ours:
            continue  # this run's own report: its entry is above (no need to parse it again)
        try:
            entry = json.loads(path.read_text(encoding="utf-8")).get("index")
        except (OSError, ValueError, AttributeError):
            continue  # not a report of ours
        if isinstance(entry, dict) and entry.get("model") and entry["model"] not in entries \
                and (folder / str(entry.get("file", ""))).exists():
            entries[entry["model"]] = entry
    return index_markdown(list(entries.values()))
