"""Command line: ``reconcile <command> ...``. The only layer that writes to the terminal.

User mistakes (``ReconcileError``) print one line on stderr and exit with code 2; a model that
fails does not stop the other models of the same run; a tool that fails adds one line. Bugs keep
their traceback. SIGINT, SIGTERM and SIGHUP stop a run the same way: workers killed, nothing
half-written, one line, exit code 128 + the signal's number (130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import replace
from typing import Callable, Sequence

from reconcile import tools as registry
from reconcile.atomic import check_writable
from reconcile.config import DEVICES, FORMATS, MODES, TIMEOUT, ZOO_TIMEOUT, RunConfig
from reconcile.errors import ReconcileError
from reconcile.sources import spec_help, with_zoo


def _err(msg: str, limit: int = 1000) -> None:
    """One line on stderr, however long the message (20,000 inputs listed in it, say)."""
    msg = " ".join(msg.split())
    if len(msg) > limit:
        msg = f"{msg[: limit - 40]} [... {len(msg) - limit + 40:,} characters cut]"
    print(f"reconcile: error: {msg}", file=sys.stderr)


def _err_line(msg: str, limit: int = 300) -> None:
    """A tool's failure: one line on stderr, however long its message."""
    msg = " ".join(msg.split())
    print(f"reconcile: {msg if len(msg) <= limit else msg[: limit - 3] + '...'}", file=sys.stderr)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", metavar="SPEC[,SPEC...]", help=spec_help())
    p.add_argument("--input-shape", metavar="N,C,H,W", help="input shape with batch, e.g. 1,3,224,224 "
                   "(default: the model's published eval size)")
    p.add_argument("--input-dtype", default="float32", metavar="DTYPE",
                   help="input dtype: float32 (default), long for token ids, ...")
    p.add_argument("--input-high", type=int, metavar="N", help="integer inputs are drawn from [0, N)")
    p.add_argument("--input", action="append", metavar="[NAME=]SHAPE[:DTYPE[:HIGH|ones|zeros]]",
                   help="one input tensor; repeat for several (positional first, then named by forward's "
                        "parameters), e.g. --input input_ids=1x128:long:30522 --input attention_mask=1x128:long:ones")


def _add_timeout(p: argparse.ArgumentParser, default: float = TIMEOUT, per_model: bool = False) -> None:
    p.add_argument("--timeout", type=float, default=default, metavar="S",
                   help=f"seconds per {'model' if per_model else 'tool and model'}, counted from its worker's start "
                        f"(default {default:g})")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICES, default="meta",
                   help="where native counts: meta (default: free, exact; falls back to cpu for a forward "
                        "that reads data) or cpu; the other tools always run on cpu")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="run every tool in eval (default; train with --training) or train mode")
    _add_training_arg(p)
    _add_executor_args(p)


def _add_training_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--training", action="store_true",
                   help="count the training step too: forward + backward per module (native, on meta), "
                        "in train mode unless --mode eval")


def _add_executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where the (model, tool) jobs run: local (default: a process per job on this machine) "
                        "or ray (a Ray task per job; needs pip install 'reconcile[ray]')")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="with --executor ray: an existing cluster (e.g. 10.0.0.1:6379 or auto); default: a "
                        "local Ray instance started for the run and stopped after it")


def _config(ns: argparse.Namespace) -> RunConfig:
    """The one validated ``RunConfig`` of a command: every option checked here, once."""
    from reconcile import models, pipeline

    shape = models.parse_input_shape(ns.input_shape) if getattr(ns, "input_shape", None) is not None else None
    # --input-dtype "" is a mistake (one line), not float32
    dtype = models.parse_dtype(ns.input_dtype) if getattr(ns, "input_dtype", None) is not None else "float32"
    inputs = tuple(models.parse_input(t) for t in (getattr(ns, "input", None) or ()))
    if getattr(ns, "input_high", None) is not None:
        from reconcile.inputs import check_high

        check_high(ns.input_high)  # 99999999999999999999999: one line now, not a traceback in a worker
    if inputs and (shape is not None or getattr(ns, "input_high", None) is not None
                   or (getattr(ns, "input_dtype", None) or "float32") != "float32"):
        raise ReconcileError("give inputs either with --input (each with its own dtype) or with "
                             "--input-shape/--input-dtype/--input-high, not both")
    cfg = RunConfig(
        inputs=models.check_inputs(inputs) if inputs else (),
        input_shape=shape,
        input_dtype=dtype,
        input_high=getattr(ns, "input_high", None),
        device=getattr(ns, "device", "meta"),
        mode=getattr(ns, "mode", None) or ("train" if getattr(ns, "training", False) else "eval"),
        training=bool(getattr(ns, "training", False)),
        depth=getattr(ns, "depth", None),
        format=getattr(ns, "format", "table"),
        timeout=getattr(ns, "timeout", TIMEOUT),
        out=getattr(ns, "out", "reports"),
        executor=getattr(ns, "executor", "local"),
        ray_address=getattr(ns, "ray_address", None),
    )
    if not hasattr(ns, "tools"):
        return cfg
    # the commands that run tools: the reference first (what every explanation needs), validated
    tools = pipeline.parse_tools(ns.tools)
    asked = [t.strip() for t in (ns.tools or "").split(",") if t.strip()]
    if ns.command == "tools" and asked and registry.reference().name not in asked:
        tools = tools[1:]  # `tools` prints the tools asked for only
    from reconcile.runner import serve_tools

    serve_tools(tools)  # the command's fork server preloads these (its first run may find inputs only)
    return replace(cfg, tools=tools)


def _collect(ns: argparse.Namespace, cfg: RunConfig):
    from reconcile import models, pipeline
    from reconcile.progress import Progress

    specs = models.split_specs(ns.specs)
    progress = Progress(len(specs), len(cfg.tools))  # on stderr: a bar on a terminal, else a line per model
    try:
        return pipeline.collect(specs, cfg, on_done=progress.on_done, on_start=progress.on_start)
    finally:
        progress.close()


def _each_counted(ns: argparse.Namespace, cfg: RunConfig, work: Callable[[object], None], *, device: str,
                  mode: str, training: bool = False, note: bool = True) -> int:
    """Run ``work`` on each model's native count, counted in a worker (``reconcile.isolated``: a
    crash, hang, print or change to torch's globals touches only that model); a model that could
    not be counted, or whose ``work`` raised a ReconcileError, is one line and the rest go on.
    ``note``: say on stderr when a count asked for on meta was made on CPU."""
    from reconcile import isolated, models

    failed = 0
    for counted in isolated.counted(models.split_specs(ns.specs), inputs=cfg.inputs, input_shape=cfg.input_shape,
                                    input_dtype=cfg.input_dtype, input_high=cfg.input_high, device=device,
                                    mode=mode, training=training, timeout=cfg.timeout):
        try:
            if counted.error:
                raise ReconcileError(counted.error)
            if counted.moved and note:
                print(f"reconcile: note: {counted.name} counted on cpu: on meta, {counted.moved}", file=sys.stderr)
            work(counted)
        except ReconcileError as exc:
            _err(str(exc))
            failed += 1
    return 2 if failed else 0


def cmd_count(ns: argparse.Namespace) -> int:
    cfg = _config(ns)
    from reconcile.llm import cli as llm_cli

    phases = llm_cli.phases_of(ns)  # --prefill/--decode/--generate: a language model's phases
    if phases:
        return llm_cli.run(ns, phases, cfg.device, cfg.timeout, cfg.format, cfg.depth, _err)
    from reconcile.report.data import count_plain
    from reconcile.report.text import count_table

    def work(counted) -> None:
        spec, inputs, result = counted, counted.inputs, counted.native
        depth = cfg.depth if cfg.depth is not None else max(r.depth for r in result.rows)
        if cfg.format == "json":
            print(json.dumps(count_plain(spec.name, inputs, result, depth), sort_keys=False))
        else:
            print(count_table(spec.name, result.input_shapes, result.device, dict(result.totals),
                              result.by_depth(depth)))
            print()
            if result.training is not None:
                from reconcile import views
                from reconcile.report.text import training_table

                print(training_table(spec.name, views.training_by_depth(result, depth),
                                     dict(result.training.totals), result.training.seed))
                print()
        sys.stdout.flush()

    return _each_counted(ns, cfg, work, device=cfg.device, mode=cfg.mode, training=cfg.training)


def cmd_tools(ns: argparse.Namespace) -> int:
    """Each tool's raw results, exactly as the tools reported them."""
    cfg = _config(ns)
    from reconcile.report.data import tool_runs_plain
    from reconcile.report.text import tool_runs_table

    results = _collect(ns, cfg)
    failed = 0
    for mr in results:
        if mr.error and not mr.runs:
            _err(mr.error)
            failed += 1
            continue
        if cfg.format == "json":
            print(json.dumps(tool_runs_plain(mr)))
        else:
            print(tool_runs_table(mr))
            print()
        sys.stdout.flush()
    return 2 if failed else 0


def cmd_report(ns: argparse.Namespace) -> int:
    cfg = _config(ns)
    from reconcile import pipeline
    from reconcile.llm import cli as llm_cli

    phases = llm_cli.phases_of(ns)  # checked before any tool runs

    hardware = getattr(ns, "hardware", None) or None
    if hardware:
        from reconcile.roofline import platforms

        platforms(hardware)  # an unknown name is a one-line error before any tool runs
    folder = check_writable(cfg.out)

    # matplotlib (about 1 s to import) is imported in a thread while the worker fork server
    # imports torch and this thread only waits; the fork server is stopped in a thread while the
    # reports render. Rendering itself waits for the tools: on two cores, rendering beside two
    # workers slowed them more than it saved.
    import threading

    warm = threading.Thread(target=pipeline.warm_renderers, name="reconcile-warm", daemon=True)
    warm.start()
    results = _collect(ns, cfg)
    stopping = threading.Thread(target=_stop_workers, args=(5.0,), name="reconcile-stop")
    stopping.start()
    try:
        warm.join()
        reports, failed = pipeline.write_reports(results, folder, hardware, say=print, error=_err,
                                                 tool_failed=_err_line)
    finally:
        stopping.join()  # before the caller's own stop (one stop at a time)
    if reports:
        print(f"wrote {pipeline.write_index(folder, reports)}")
    if phases:  # a language model's phases, beside its report
        failed += llm_cli.write_reports(folder, [mr.name for mr in results if mr.native is not None], phases,
                                        cfg.device, cfg.timeout, _err, hardware,
                                        tools=[t for t in (cfg.tools or registry.defaults())
                                               if not registry.get(t).reference])
    return 2 if failed else 0


def cmd_predict(ns: argparse.Namespace) -> int:
    """What a tool would report, predicted from the native count alone (the tool is not run)."""
    cfg = _config(ns)
    from reconcile import conventions, pipeline
    from reconcile.report.data import prediction_plain
    from reconcile.report.text import prediction_table

    conv = conventions.get(ns.tool)

    def work(counted) -> None:
        spec, inputs, native = counted, counted.inputs, counted.native
        why = conv.cannot_run(native)
        if why:  # the tool would print nothing: say so rather than numbers it never prints
            raise ReconcileError(f"{conv.tool} cannot run on {spec.name}: {why}")
        # ops only a torch.jit trace holds: traced as `report` does
        native, trace_note = pipeline.traced(spec.name, inputs, native, cfg.mode, ns.tool, cfg.timeout)
        pred = conv.predict(native)
        if cfg.format == "json":
            print(json.dumps(prediction_plain(spec.name, conv, inputs[0].shape, pred)))
            return
        print(prediction_table(spec.name, conv, pred))
        if trace_note:
            print(f"note: {trace_note}")
        print()

    return _each_counted(ns, cfg, work, device="meta", mode=cfg.mode)


def cmd_conventions(ns: argparse.Namespace) -> int:
    from reconcile import conventions
    from reconcile.conventions.base import CAUSES
    from reconcile.report.text import table

    for tool, conv in conventions.available().items():
        print(f"{tool}: unit {conv.unit}" + (", per sample" if conv.per_sample else ""))
        print(table(["layer / op family", "what it counts"], [[r.family, r.counts] for r in conv.rules], [False, False]))
        print()
    print("causes of disagreement")
    print(table(["cause", "kind", "meaning"], [[k, kind, text] for k, (kind, text) in CAUSES.items()], [False, False, False]))
    return 0


def cmd_zoo(ns: argparse.Namespace) -> int:
    from reconcile import pipeline, zoo
    from reconcile.progress import Progress

    cfg = _config(ns)
    folder = check_writable(cfg.out)
    if ns.source != "timm" and ns.published:
        raise ReconcileError(f"--published checks timm's published table: use it with --source timm, not {ns.source}")
    if ns.page_only and ns.published:
        raise ReconcileError("--page-only writes the zoo page, --published checks timm's table: use one of them")
    if ns.published:
        def line(k: int, rows: int, c) -> None:
            amounts = f" ({c.cause}: {c.amounts})" if c.cause else ""
            print(f"[{k}/{rows}] {c.row.model} {c.row.img_size}: {c.status}, macts {c.macts_status}{amounts}",
                  flush=True)

        out, finding = zoo.published(folder, ns.models, ns.subset, cfg.timeout, line)
        print(f"wrote {folder / out}")
        return 1 if finding else 0  # like roofline --measure: a finding, not an error
    if ns.recount_earlier and not ns.resume:
        raise ReconcileError("--recount-earlier says which kept rows --resume may not reuse: add --resume")
    if ns.page_only and ns.recount_earlier:
        raise ReconcileError("--page-only counts nothing, --recount-earlier counts kept rows again: use one of them")
    names = zoo.names_for(ns.source, ns.subset, ns.models)
    # a bar on a terminal; without one, the per-model line is the progress
    progress = Progress(len(names), len(cfg.tools), lines=False)
    try:
        rows, errors, pending = zoo.run(names, cfg, folder, ns.source, resume_kept=ns.resume or ns.page_only,
                                        progress=progress, note=_err_line, recount_earlier=ns.recount_earlier,
                                        count=not ns.page_only)
    finally:
        progress.close()
    out, picture = zoo.write_page(folder, ns.source, rows, errors, whole=ns.models is None and ns.subset == "all",
                                  pending=pending)
    print(f"wrote {folder / out}" + (" (.png)" if picture else "")
          + (f"; {len(pending)} of its {len(names)} models not counted yet" if pending else ""))
    return 2 if errors else 0


def cmd_models(ns: argparse.Namespace) -> int:
    from reconcile import models
    from reconcile.sources import SOURCES

    names = SOURCES[ns.source].names()  # transformers has no finite list: its sample, as examples of the spec
    for name in names:
        inputs = models.default_inputs(models.resolve(name, check=False))
        print(f"{name:24s} {models.describe_inputs(inputs) if len(inputs) > 1 else 'x'.join(map(str, inputs[0].shape))}")
    return 0


def cmd_roofline(ns: argparse.Namespace) -> int:
    """Per layer: FLOPs, bytes moved, intensity, and on each hardware the bound and time bound."""
    cfg = _config(ns)
    if ns.repeat < 1:
        raise ReconcileError(f"--repeat must be at least 1, got {ns.repeat}")
    from pathlib import Path

    from reconcile.roofline import core as rcore
    from reconcile.roofline import render
    from reconcile.roofline.measure import Check

    check = Check(ns.hardware, ns.peak_dtype, ns.tf32, ns.repeat, ns.measure)
    from reconcile.roofline import platforms
    from reconcile.roofline.hardware import split_keys

    # a bad name or custom: entry is one line before any model is counted (local is measured later)
    platforms([k for k in split_keys(ns.hardware) if k != "local"])
    if ns.plot is not None:  # before any model is counted, not after
        check_writable(ns.plot, "--plot", "pictures")

    def work(counted) -> None:
        spec, inputs, native = counted, counted.inputs, counted.native
        plats = check.platforms(native)
        if ns.measure:
            from reconcile import isolated

            # timed in a worker of its own: the layers, and this model's own kernels just before and
            # just after them when this machine is one of the entries (its speed drifts)
            local_here = any(p.key == "local" for p in plats)
            run = isolated.measured(spec.name, inputs, ns.repeat, local_here, cfg.timeout)
            if run.status != "ok":
                raise ReconcileError(isolated.failure(spec.name, run, what="measured"))
            result = check.model(spec.name, native, run.detail, plats, per_op=ns.ops, weight_dtype=ns.weight_dtype)
        else:
            result = rcore.roofline(native, plats, per_op=ns.ops, weight_dtype=ns.weight_dtype)
        if ns.format == "json":
            print(json.dumps(render.to_json(result)))
        else:
            print(render.table(result))
            print()
        if ns.plot:
            from reconcile.roofline import plot

            folder = Path(ns.plot)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                for fname, data in plot.files(result).items():
                    tmp = folder / f".{fname}.tmp"
                    tmp.write_bytes(data)
                    tmp.replace(folder / fname)
                    print(f"wrote {folder / fname}", file=sys.stderr)
            except OSError as exc:
                raise ReconcileError(f"cannot write pictures to {str(folder)!r}: {exc.strerror or exc}: "
                                     "choose another folder with --plot") from exc
        sys.stdout.flush()

    code = _each_counted(ns, cfg, work, device="meta", mode="eval", note=False)
    within, beaten = check.notes()
    if within and not code:
        print(f"reconcile: {within}", file=sys.stderr)
    if beaten and not code:  # the --measure check: a bound above a measured time is a bug to look at
        print(f"reconcile: {beaten}", file=sys.stderr)
        return 1
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconcile",
        description="Run every PyTorch FLOP/param counter on a model and explain every difference.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("count", help="count models with the native counter (exact, per module)")
    _add_model_args(p)
    p.add_argument("--device", choices=DEVICES, default="meta",
                   help="meta (default: free, exact; falls back to cpu for a forward that reads data) or cpu")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="count in eval (default; train with --training) or train mode")
    _add_training_arg(p)
    p.add_argument("--depth", type=int, metavar="N", help="show modules down to depth N (default: all)")
    _add_timeout(p, per_model=True)
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default) or json (one object per model per line)")
    from reconcile.llm.cli import add_phase_args

    add_phase_args(p)
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("tools", help="run the counting tools and print their raw results")
    _add_model_args(p)
    _add_run_args(p)
    p.add_argument("--tools", metavar="T[,T...]", help="tools to run (default: all): " + ", ".join(registry.defaults())
                   + "; pinned versions (reconcile/tool_versions.toml): "
                   + ", ".join(t.name for t in registry.all_tools().values() if t.pinned))
    _add_timeout(p)
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default) or json (one object per model per line)")
    p.set_defaults(func=cmd_tools)

    p = sub.add_parser("report", help="run every tool, explain every difference, write Markdown/JSON/CSV reports")
    _add_model_args(p)
    _add_run_args(p)
    p.add_argument("--tools", metavar="T[,T...]", help="tools to run (default: all; native always runs)")
    _add_timeout(p)
    p.add_argument("--out", default="reports", metavar="DIR", help="output folder (default reports/)")
    p.add_argument("--hardware", default="a100-80gb", metavar="NAME[,NAME...]",
                   help="hardware of the report's roofline section (default a100-80gb; names as `reconcile "
                        "roofline` takes them; '' for no section)")
    add_phase_args(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("predict", help="predict a tool's numbers from the native count, without running the tool")
    _add_model_args(p)
    p.add_argument("--tool", required=True, choices=registry.names(), help="the tool to predict")
    p.add_argument("--mode", choices=MODES, default="eval", help="eval (default) or train mode")
    _add_timeout(p, per_model=True)
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default) or json")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("conventions", help="print each tool's counting rules and the causes of disagreement")
    p.set_defaults(func=cmd_conventions)

    p = sub.add_parser("zoo", help="every tool on every model of a source: share of layers explained")
    p.add_argument("--source", choices=with_zoo(), default=with_zoo()[0],
                   help="where the models come from (default torchvision); writes zoo.md, zoo-timm.md (zoo-timm-all.md for --subset all), zoo-transformers.md")
    p.add_argument("--subset", choices=("all", "ci"), default="all",
                   help="all models of the source (default; for transformers its sample) or its CI sample")
    p.add_argument("--models", metavar="SPEC[,SPEC...]", help="these models instead of a subset (a bare name is one of --source: --source timm --models resnet50 is timm:resnet50)")
    p.add_argument("--tools", metavar="T[,T...]", help="tools to run (default: all)")
    _add_timeout(p, ZOO_TIMEOUT)
    p.add_argument("--out", default="reports", metavar="DIR", help="output folder (default reports/)")
    _add_executor_args(p)
    p.add_argument("--resume", action="store_true",
                   help="skip models whose result an earlier run kept (OUT/.zoo-runs/SOURCE/: its runs, "
                        "or only its page row in rows.jsonl) for the same tools, timeout and versions")
    p.add_argument("--recount-earlier", action="store_true",
                   help="with --resume: count again the models kept only as a page row explained by other "
                        "reconcile code (the page lists them); kept runs are always explained again")
    p.add_argument("--page-only", action="store_true",
                   help="count nothing: write the page from what an earlier run kept (as --resume finds it), "
                        "the models with nothing kept listed as not counted yet; the kept folder is only read, "
                        "so a long run can be paged while it goes on")
    p.add_argument("--published", action="store_true",
                   help="with --source timm: check timm's published table (benchmark.py's param_count, "
                        "infer_gmacs) row by row, predicted from the native count; runs no tool; writes "
                        "timm-published.md")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("roofline", help="bytes moved, arithmetic intensity and the roofline time bound per layer, "
                                        "on named hardware")
    _add_model_args(p)
    p.add_argument("--hardware", default="a100-80gb", metavar="NAME[,NAME...]",
                   help="hardware table entries (a100-40gb, a100-80gb, h100-sxm, h100-pcie, h200, l4, t4, v100, "
                        "rtx-4090), local (this machine, measured once and cached) or "
                        "custom:peak=FLOPS,bandwidth=BYTES_PER_S (default a100-80gb)")
    p.add_argument("--tf32", action="store_true", help="float32 matmuls on TF32 tensor cores (default: the FP32 peak)")
    p.add_argument("--peak-dtype", choices=("float32", "float16", "bfloat16", "int8"),
                   help="the peak to use (default: the input's floating dtype)")
    p.add_argument("--weight-dtype", choices=("float32", "float16", "bfloat16", "int8"),
                   help="what-if: parameter bytes at this dtype's size; activations and FLOPs unchanged")
    p.add_argument("--ops", action="store_true", help="one row per module and aten op (default: per module)")
    p.add_argument("--measure", action="store_true",
                   help="time each layer on CPU with real tensors (best of --repeat) next to its bound on "
                        "this machine's entries (local, custom); exit status 1 if one beats its bound")
    p.add_argument("--repeat", type=int, default=5, metavar="N", help="repetitions for --measure (default 5)")
    _add_timeout(p, per_model=True)
    p.add_argument("--plot", metavar="DIR", help="write a roofline and a per-family picture per hardware (PNG)")
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default) or json (one object per model per line)")
    p.set_defaults(func=cmd_roofline)

    p = sub.add_parser("models", help="list the models of a source and their default inputs")
    p.add_argument("--source", choices=with_zoo(), default=with_zoo()[0],
                   help="torchvision (default; 80 models), timm (every timm.list_models() name) or "
                        "transformers (the sample: any class works as hf:ClassName)")
    p.set_defaults(func=cmd_models)
    return parser


class _Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: raised where the run is, so every ``finally`` cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop(signum: int, frame: object) -> None:
    for sig in _STOP_SIGNALS:  # once: a second signal must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    raise _Stopped(signum)


def _catch_signals() -> Callable[[], None]:
    """Handle the stop signals as above until the returned function restores the old handlers."""
    try:
        saved = {sig: signal.signal(sig, _stop) for sig in _STOP_SIGNALS}
    except ValueError:  # not the main thread: signals are not ours to handle
        return lambda: None

    def restore() -> None:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

    return restore


def _stop_workers(grace: float) -> None:
    """No worker process outlives the command (only if this command started any)."""
    runner = sys.modules.get("reconcile.runner")
    if runner is not None:
        runner.shutdown(grace)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        ns = parser.parse_args(argv)
        from reconcile.runner import one_command, private_inductor_cache

        # count, roofline, ... import torchvision in this process; the command's fork server serves
        # its runs only (it is stopped as the command ends): it preloads their tools, no others
        with private_inductor_cache(), one_command():
            return _run(ns)
    except KeyboardInterrupt:  # Ctrl-C before _run handles the stop signals (a 0.1 s SIGINT: a traceback)
        _err("interrupted")
        return 130


def _run(ns: argparse.Namespace) -> int:
    """One parsed command: its exit status, a user's error as one line, signals as exit 128+N."""
    restore = _catch_signals()
    grace = 5.0
    try:
        return ns.func(ns)
    except ReconcileError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:
        grace = 0.0
        signum = getattr(exc, "signum", signal.SIGINT)
        _err("interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}")
        return 128 + signum
    except BrokenPipeError:
        return 0
    finally:
        try:
            _stop_workers(grace)
        finally:
            restore()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
