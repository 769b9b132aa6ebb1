"""The zoo check: every tool on many models, the share of layers explained with zero residual.

``ZOO_CI`` is the subset CI runs: at least one model of every torchvision family, the smallest of
each, so the whole check fits in CI's time. ``make zoo`` runs all 80 and writes ``reports/zoo.md``.

``run`` drives ``reconcile zoo`` (the pipeline model after model, each model's runs kept for
``--resume`` as soon as they are complete), ``write_page`` writes the page and its picture, and
``published`` checks timm's published table (``--published``); the CLI only prints.
"""

from __future__ import annotations

import math
import sys
from typing import Callable, Sequence

from reconcile.report.model import ModelReport
from reconcile.zoo_rows import PageRow, Share, rows_of, share  # noqa: F401 - Share, share: the zoo's API

# family -> smallest member; 15 models
ZOO_CI: tuple[str, ...] = (
    "resnet18",  # ResNet
    "vgg11",  # VGG
    "densenet121",  # DenseNet
    "googlenet",  # Inception (v1)
    "inception_v3",  # Inception v3 (299 px)
    "mobilenet_v3_small",  # MobileNet
    "efficientnet_b0",  # EfficientNet
    "regnet_x_400mf",  # RegNet
    "shufflenet_v2_x0_5",  # ShuffleNet
    "squeezenet1_1",  # SqueezeNet
    "convnext_tiny",  # ConvNeXt
    "vit_b_32",  # ViT
    "swin_t",  # Swin
    "maxvit_t",  # MaxViT
    "mnasnet0_5",  # MNASNet
)


# A real-world sample per source, one model per family: CNNs, ViTs, hybrids, MLP-mixers,
# relative-position attention, padding="same", weight standardisation, layer scale, recurrent
# layers (timm); an encoder, a decoder with a tied head, an encoder-decoder, a Llama with
# grouped-query attention, a vision transformer (transformers, built from configs).
TIMM_SAMPLE: tuple[str, ...] = tuple("timm:" + n for n in (
    "resnet18", "efficientnet_b0", "mobilenetv3_small_100", "regnetx_002", "ghostnet_100",
    "convnext_atto",  # layer scale
    "rexnet_100", "vit_tiny_patch16_224", "deit_tiny_patch16_224",
    "cait_xxs24_224",  # layer scale, class attention
    "xcit_nano_12_p16_224", "levit_128s", "mobilevit_xxs", "efficientvit_b0",
    "coatnet_nano_rw_224",  # relative position bias
    "crossvit_tiny_240", "maxvit_nano_rw_256", "mixer_s32_224", "resmlp_12_224", "gmlp_ti16_224",
    "swin_tiny_patch4_window7_224",
    "convmixer_768_32",  # padding="same"
    "nf_resnet26",  # weight standardisation
    "volo_d1_224", "halonet26t", "poolformer_s12", "eva02_tiny_patch14_224",
    "sequencer2d_s",  # LSTM
    "beit_base_patch16_224",  # relative position bias in attention
    "tf_efficientnet_b0",  # "same" padding by F.pad
))
from reconcile.sources.huggingface import SAMPLE as TRANSFORMERS_SAMPLE  # noqa: E402 - kept with its source
def models_of(source: str, subset: str) -> list[str]:
    """The models a zoo run covers: ``subset`` "ci" is the CI sample of the source; "all" is
    every model of it (``reconcile.sources``: every torchvision classification model, every timm
    model, the transformers sample, which has no finite list of configurations)."""
    from reconcile.sources import SOURCES

    return SOURCES[source].ci_sample() if subset == "ci" else SOURCES[source].names()


def zoo_file(source: str, whole: bool = False) -> str:
    """The zoo page of ``source``; ``whole``: of all its models (``--subset all``, no ``--models``)."""
    from reconcile.sources import SOURCES

    src = SOURCES[source]
    return src.all_file if whole and src.all_file else src.zoo_file


def zoo_markdown(rows: Sequence[PageRow | ModelReport], errors: Sequence[tuple[str, str]] = (),
                 source: str = "torchvision", picture: str = "", pending: Sequence[str] = ()) -> str:
    """The zoo page; ``picture`` is the file name of its PNG (``reconcile.report.plot.zoo_png``), "" for none;
    ``pending``: the models of a page written before all were counted (``--page-only``), said at
    the top and listed at the end.
    A row per model (``zoo_rows.PageRow``, or the ``ModelReport`` it is made from): its native
    MACs and parameters, the source's published figures for it (read from the source's table when
    the page is written, ``Source.published_columns``), and each tool's share explained; then the
    tools that did not finish on a model, with their reasons."""
    from reconcile.sources import SOURCES

    rows = rows_of(rows)
    tools: list[str] = []
    for r in rows:
        for c in r.tools:
            if c.tool not in tools:
                tools.append(c.tool)
    published = {r.model: _published_of(r.model) for r in rows}
    kinds = [k for k in SOURCES if any(kind == k for kind, _ in published.values())]
    columns = [c for k in kinds for c in SOURCES[k].published_columns]  # a page may mix sources (--models)
    pub_keys = [key for key, _ in columns]
    head = ["model", "input", "native MACs", "parameters"] + [h for _, h in columns] + tools
    figures = 2 + len(pub_keys)  # the columns between the input and the tools
    title = "" if source == "torchvision" else f" ({source})"
    lines = [f"# Zoo{title}: how much of each tool's output reconcile explains", "",
             "Share of each tool's rows (per-layer rows, the total-only record and the headline) whose every "
             "number is predicted exactly from the native count, i.e. zero residual. Target: 100% everywhere; "
             "a cell short of it (rounded down) also gives the size of the residual against the tool's own total. "
             "`failed` / `timeout`: the tool itself did not finish on that model (why: the list below the "
             "table, and the model's report).", "",
             *([f"**Not every model is counted yet**: rows for {len(rows) + len(errors)} of the "
                f"{len(rows) + len(errors) + len(pending)} models; those not counted yet are listed at the end. "
                "This page was written by `--page-only` from what a resumable run had kept so far.", ""]
               if pending else []),
             *[line for k in kinds if SOURCES[k].published_columns for line in (SOURCES[k].published_note, "")],
             *([f"![each tool's main total relative to native MACs, one dot per model]({picture})", ""] if picture else []),
             "| " + " | ".join(head) + " |",
             "|" + "|".join([":---", ":---"] + ["---:"] * (figures + len(tools))) + "|"]
    complete = {t: 0 for t in tools}
    ran = {t: 0 for t in tools}
    stopped = {t: 0 for t in tools}  # models the tool did not finish on
    unfinished: list[tuple[str, tuple[str, ...]]] = []  # (model, its reasons)
    for r in rows:
        by = {c.tool: c.share for c in r.tools}
        cells = []
        for name in tools:
            s = by.get(name)
            if s is None:
                cells.append("")
                continue
            if s.status == "ok":
                ran[name] += 1
                complete[name] += s.complete
            elif s.status != "no convention":  # ran, with no convention to explain it by
                stopped[name] += 1
            cells.append(s.text() if s.complete or s.status != "ok" else f"**{s.text()}**")
        pub = published[r.model][1]
        numbers = [_integer(r.macs), _integer(r.params)]
        numbers += [_integer(pub.get(k)) if isinstance(pub.get(k), int) else str(pub.get(k, "")) for k in pub_keys]
        lines.append("| " + " | ".join([r.model, r.input] + numbers + cells) + " |")
        if r.unfinished:
            unfinished.append((r.model, r.unfinished))
    for model, err in errors:
        lines.append("| " + " | ".join([model, "—"] + [""] * figures + [f"error: {err}"] + [""] * (len(tools) - 1)) + " |")
    lines += ["", "| tool | models fully explained | of models it ran on | did not finish |", "|:---|---:|---:|---:|"]
    lines += [f"| {t} | {complete[t]} | {ran[t]} | {stopped[t]} |" for t in tools]
    if unfinished:
        lines += ["", "## Tools that did not finish", "",
                  "A tool's own failure on a model (its error, first line), or reconcile's limit on it "
                  "(`OutOfMemory`: the memory a worker may take here; `timeout`: seconds per tool and model).", ""]
        lines += [f"- **{model}**: " + "; ".join(reasons) for model, reasons in unfinished]
    lines += _earlier_code(rows)
    lines += _pending(pending)
    return "\n".join(lines) + "\n"


def _pending(names: Sequence[str]) -> list[str]:
    """The page's list of the models not counted yet, with their published GMACs (the cost that
    puts them last: ``cheapest_first``); nothing when there are none."""
    if not names:
        return []

    def gmacs(name: str) -> str:
        g = published_gmacs(name)
        return "" if g == math.inf else f" ({g:,.2f})"

    return ["", "## Not counted yet", "",
            f"{len(names)} model{'s' if len(names) != 1 else ''}, with the GMACs published where there are: "
            "`reconcile zoo --resume` (same source, subset and tools) counts them, the cheapest first.", "",
            ", ".join(name + gmacs(name) for name in names)]


def _earlier_code(rows: Sequence[PageRow]) -> list[str]:
    """The page's note on rows explained by other reconcile code than this one (kept as rows by
    ``--resume``, their runs not at hand to explain again), by code; nothing when there are none."""
    from collections import Counter

    from reconcile._version import code_version

    now = code_version()
    codes = Counter(r.code for r in rows)
    if set(codes) <= {now}:
        return []
    lines = ["", "## Rows explained by other reconcile code", "",
             f"This reconcile's code is `{now}` (`reconcile._version.code_version`); it explained {codes[now]} "
             f"of the {len(rows)} rows. `--resume` kept the others as the rows an earlier run wrote, since their "
             "runs were not at hand to explain again; `reconcile zoo --resume --recount-earlier` counts them again. "
             "By the code that explained them:", ""]
    for code, n in codes.most_common():
        if code != now:
            names = ", ".join(r.model for r in rows if r.code == code)
            lines.append(f"- `{code}` ({n}): {names}" if code else f"- from before rows named their code ({n}): {names}")
    return lines


def _published_of(name: str) -> tuple[str, dict]:
    """The source kind of a model on a zoo page and its published figures ({} when none)."""
    from reconcile import models
    from reconcile.errors import ReconcileError

    try:
        spec = models.resolve(name, check=False)
    except ReconcileError:
        return "", {}
    return spec.kind, models.published(spec)


def _integer(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "—"


# ---- results kept as they complete, so an interrupted zoo run can be resumed -------------------

RUNS_FOLDER = ".zoo-runs"  # under the output folder: one file per model and source


def _versioned() -> tuple[str, ...]:
    """Every distribution whose version can change a model's structure, its default inputs or a
    count: reconcile, torch, each source's package and each tool's (``reconcile.tools``)."""
    from reconcile import tools
    from reconcile.sources import SOURCES

    return tuple(dict.fromkeys(("reconcile", "torch", *(s.package for s in SOURCES.values() if s.package),
                                *tools.versioned())))


def runs_folder(out: str, source: str) -> str:
    return f"{out}/{RUNS_FOLDER}/{source}"


def run_key(spec: str, tools: Sequence[str], timeout: float) -> dict:
    """What a kept result must match to be reused: the model as asked for, the tools, the timeout
    (it decides which runs time out), and the installed version of everything that counts."""
    from importlib import metadata

    versions = {}
    for dist in _versioned():
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"spec": spec, "tools": list(tools), "timeout": timeout, "versions": versions}


KEPT_SUFFIX = ".runs.json.gz"
# the format before 2026-12-04: a pickle, which runs whatever code its file names when loaded, so a
# file planted in an output folder ran on ``--resume``. Never loaded; such a model is run again
OLD_KEPT_SUFFIX = ".runs.pickle.gz"
_KEPT_LIMIT = 1 << 30  # bytes of JSON a kept file may unpack to: more is not a file of ours


def kept_file(spec: str) -> str:
    from reconcile.report.files import file_stem

    return f"{file_stem(spec)}{KEPT_SUFFIX}"


def _kept_classes() -> tuple[type, ...]:
    """The records a kept file may hold, and nothing else."""
    from reconcile import records
    from reconcile.inputs import InputSpec
    from reconcile.pipeline import ModelRuns

    return (ModelRuns, InputSpec, records.NativeCount, records.ModuleRow, records.CallRecord, records.TensorMeta,
            records.TorchCall, records.ParamInfo, records.BackwardRow, records.TrainingInfo,
            records.TrainingMemory, records.TracedOps, records.ToolRun, records.ToolLayer)


def dump_runs(key: dict, runs) -> bytes:
    """A collected model (``pipeline.ModelRuns``) with its key, for ``load_runs``: gzip-ed JSON
    (``reconcile.record_json``), which cannot run code when read. A ``TypeError`` if some value
    of the record has no exact JSON form (the model is then not kept, and simply runs again)."""
    import gzip
    import json

    from reconcile.record_json import to_json

    text = '{"key":' + json.dumps(key, sort_keys=True) + ',"runs":' + to_json(runs) + "}"
    return gzip.compress(text.encode("utf-8"), mtime=0)  # mtime=0: the same result gives the same bytes


def read_kept(path, key: dict):
    """The kept ``ModelRuns`` at ``path`` if it was made with exactly ``key``, and why not if it is
    not: ``(runs, "")``; ``(None, "")`` if there is no such file or it was made with other
    versions, tools or timeout (stale, not wrong); ``(None, why)`` if the file is not a valid kept
    result (not gzip, not JSON, a field missing or of the wrong type, an unknown record, another
    model's). Nothing in the file is ever run: it is JSON, read into the known record types only
    (``reconcile.record_json``), each field checked against its type."""
    import gzip
    import json
    import zlib

    from reconcile.pipeline import ModelRuns
    from reconcile.record_json import from_data

    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read(_KEPT_LIMIT + 1)
    except FileNotFoundError:
        return None, ""
    except (OSError, EOFError, zlib.error) as exc:
        return None, f"not a gzip file ({exc})"
    if len(raw) > _KEPT_LIMIT:
        return None, f"unpacks to more than {_KEPT_LIMIT:,} bytes"
    try:
        kept = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON ({str(exc)[:100]})"
    if not isinstance(kept, dict) or set(kept) != {"key", "runs"}:
        return None, "not a kept result (expected an object with a key and runs)"
    if kept["key"] != key:
        return None, ""
    try:
        runs = from_data(kept["runs"], _kept_classes(), ModelRuns)
    except ValueError as exc:
        return None, f"its result does not read back: {str(exc)[:200]}"
    if runs.spec != key.get("spec"):
        return None, f"it holds {runs.spec!r}, not {key.get('spec')!r}"
    return runs, ""


def load_runs(path, key: dict):
    """``read_kept``'s ``ModelRuns``, or None: no file, a stale one, or one that is not valid."""
    return read_kept(path, key)[0]


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def resume(folder, spec: str, key: dict):
    """For ``zoo --resume``: the kept ``ModelRuns`` of ``spec`` in ``folder`` (``runs_folder``) made
    with ``key``, or None, and a one-line note for the user ("" when there is nothing to say): a
    file that does not validate, or one in the old pickle format (never loaded), means the model
    runs again."""
    from pathlib import Path

    from reconcile.report.files import file_stem

    folder = Path(folder)
    runs, why = read_kept(folder / kept_file(spec), key)
    if why:
        return None, f"{spec}: the kept result {kept_file(spec)} is not valid ({why}): running it again"
    if runs is None and (folder / f"{file_stem(spec)}{OLD_KEPT_SUFFIX}").exists():
        return None, (f"{spec}: the kept result {file_stem(spec)}{OLD_KEPT_SUFFIX} is in the old pickle format, "
                      "which is never loaded (it could run code): running it again")
    return runs, ""


# ----- a zoo run: the pipeline over many models, each kept as it completes, then the page -----


def names_for(source: str, subset: str, models: str | None) -> list[str]:
    """The models of ``--models`` (comma-separated) or else of ``subset`` of ``source``, once each.
    A bare name in ``--models`` is one of ``source`` (``--source timm --models resnet50`` is
    timm:resnet50, not torchvision's); a spec with a prefix or a colon is taken as written."""
    # --models "" is a mistake (one line), not "no --models" (the whole zoo)
    from reconcile.models import split_specs
    from reconcile.sources import SOURCES

    if models is None:
        return list(dict.fromkeys(models_of(source, subset)))
    prefix = SOURCES[source].prefix
    return list(dict.fromkeys(f"{prefix}:{n}" if prefix and ":" not in n else n for n in split_specs(models)))


def published_gmacs(name: str) -> float:
    """The GMACs published for a zoo model at its default input (torchvision's ``_ops``, timm's
    table's ``infer_gmacs``); ``math.inf`` when none is (or the spec does not resolve)."""
    _, published = _published_of(name)
    try:
        return float(published.get("_ops", published.get("infer_gmacs")))
    except (TypeError, ValueError):  # none published
        return math.inf


def cheapest_first(names: Sequence[str]) -> list[str]:
    """``names`` in the order a zoo run counts them: by the GMACs published for the model at its
    default input (``published_gmacs``), the cheapest first; a model with no
    published figure (or a spec that does not resolve: its error comes in its turn) last, in the
    order given. A whole-timm run outlasts a sitting here: cut short, it has counted the most
    models it could, and the largest, which may not fit in memory or time, come at the end. The
    page keeps the order of ``names``."""
    costs = {name: published_gmacs(name) for name in names}
    return sorted(names, key=costs.__getitem__)  # stable: equal costs keep their order


def run(names: Sequence[str], cfg, folder, source: str, *, resume_kept: bool, progress,
        note: Callable[[str], None], recount_earlier: bool = False,
        count: bool = True) -> tuple[list[PageRow], list[tuple[str, str]], list[str]]:
    """Every tool of ``cfg`` on every model of ``names``, reconciled: the page's rows, the
    models' errors, in the order of ``names`` however the runs finished, and the models not
    counted (none unless ``count`` is False). Each model's runs are
    kept in ``folder``'s runs folder as soon as they are complete, and its row appended to the
    rows file there (``zoo_rows``), so that ``resume_kept`` (``--resume``) runs only the models
    kept for other tools, timeout or versions, or not at all: from their rows when this code
    explained them; else from their kept runs when there are (explained again by this reconcile),
    else, when there is no kept runs file for the model at all (one that does not validate means
    the model runs again), from their rows; with
    ``recount_earlier``, not from a row explained by other reconcile code (``PageRow.code``): that
    model runs again. The models left to count run cheapest first (``cheapest_first``).
    ``count`` False (``--page-only``): what ``resume_kept`` finds is explained and nothing is run
    or written; the models with nothing kept are returned, in the order of ``names``, for the
    page to list (a run of days can be paged while it goes on: the kept folder is only read).
    ``progress`` (a ``reconcile.progress.Progress``) is told of every job and
    shown a line per model; ``note`` gets a kept file or row that does not validate or cannot be
    written."""
    from pathlib import Path

    from reconcile import executors, pipeline
    from reconcile._version import code_version
    from reconcile.atomic import write_files
    from reconcile.errors import ReconcileError
    from reconcile.zoo_rows import ROWS_FILE, append_row, compact_rows, page_row, read_rows

    tools = cfg.tools
    kept_folder = folder / Path(runs_folder(".", source))
    rows, errors = [], []
    position = {name: k for k, name in enumerate(names, 1)}

    def show(name: str, row: PageRow) -> None:
        rows.append((position[name], row))
        cells = ", ".join(f"{c.tool} {c.share.text()}" for c in row.tools)
        kept = " (kept from an earlier run)" if name in done or name in done_rows else ""
        progress.write(f"[{position[name]}/{len(names)}] {row.model}: {cells}{kept}")

    def finish(name: str, mr, runs_lost: str = "") -> None:
        """``runs_lost``: why its runs could not be kept (its row still can be, and --resume reads it)."""
        if mr.error:
            errors.append((position[name], (mr.name, mr.error)))
            progress.write(f"reconcile: error: {mr.error}", file=sys.stderr)
            return
        try:
            row = page_row(pipeline.reconcile_model(mr))
        except Exception as exc:  # noqa: BLE001 - a bug explaining one model must not end a run of hours
            why = f"{pipeline.explanation_failed(mr.name, exc)}; its runs are kept and --resume explains them again"
            errors.append((position[name], (mr.name, why)))
            progress.write(f"reconcile: error: {why}", file=sys.stderr)
            return
        key = run_key(name, tools, cfg.timeout)
        row_lost = ""
        if count and kept_rows.get(name) != (key, row):  # a row to keep: new, or explained otherwise now
            try:
                append_row(kept_folder, key, row)
            except OSError as exc:  # the run goes on; only --resume loses this row
                row_lost = f"could not write {ROWS_FILE} in {kept_folder}: {exc.strerror or exc}"
        if runs_lost and row_lost:
            progress.write(f"reconcile: {name}: its result could not be kept for --resume ({runs_lost}; {row_lost})",
                           file=sys.stderr)
        elif runs_lost:
            progress.write(f"reconcile: {name}: its runs could not be kept ({runs_lost}); --resume takes it from "
                           "its row", file=sys.stderr)
        elif row_lost:
            progress.write(f"reconcile: {name}: its row could not be kept ({row_lost}); --resume takes it from its "
                           "runs", file=sys.stderr)
        show(name, row)

    done: set[str] = set()  # models taken from their kept runs (explained again here, one at a time)
    done_rows: dict[str, PageRow] = {}  # name -> its kept row, for a model with no kept runs
    kept_rows: dict[str, tuple[dict, PageRow]] = {}
    if resume_kept:  # models whose result is kept for the same tools and versions are not run again
        kept_rows, why_rows = read_rows(kept_folder)
        for why in why_rows:  # never trusted, never fatal: the model runs again
            note(f"{kept_folder}: {why}")
        if count:  # one line per model again (a model explained anew appends a line; the last one wins)
            try:
                compact_rows(kept_folder, kept_rows)
            except (OSError, ReconcileError) as exc:
                note(f"{kept_folder}: could not rewrite {ROWS_FILE} one line per model ({exc})")
        now = code_version()
        for name in names:
            key = run_key(name, tools, cfg.timeout)
            kept_key, row = kept_rows.get(name, (None, None))
            row = row if kept_key == key else None  # its kept row, for the same tools and versions
            # a row this code explained is taken as it is (below): its runs would give it again,
            # and reading and explaining them takes a second a model with the workers idle
            current = row is not None and row.code == now
            runs, why = (None, "") if current else resume(kept_folder, name, key)
            if why:  # a file that does not validate is never trusted, never fatal: the model runs again
                note(why)
            if runs is not None:  # explained now and let go: a resume holds one model's runs at a time
                done.add(name)
                progress.skip(name)
                finish(name, runs)
            elif not why and row is not None and not (recount_earlier and row.code != now):  # no kept runs read
                done_rows[name] = row
                progress.skip(name)
                show(name, row)
    left = [n for n in names if n not in done and n not in done_rows]
    todo = cheapest_first(left) if count else []

    def keep(mr) -> None:
        lost = ""
        if not mr.error:  # kept as soon as it is complete: an interrupted run resumes here
            try:
                write_files(kept_folder, {kept_file(mr.spec): dump_runs(
                    run_key(mr.spec, tools, cfg.timeout), mr)})
            except (ReconcileError, TypeError) as exc:  # the run goes on; --resume takes its row
                lost = str(exc)
        finish(mr.spec, mr, lost)

    if todo:  # no pool (nor Ray) started for nothing to count
        with executors.session(cfg.executor, cfg.ray_address):
            # the jobs of many models at once, in parts (so that no more than a part's counts are held
            # here at a time): locally, each model's tools share one build and the workers go from one
            # model to the next with none left idle at a model's end; a worker's memory is its share of
            # the machine's however many models run (reconcile.memory), so the largest (vit_h_14) are
            # no more at risk beside another model than split over both workers. On Ray, more at once
            # for the cluster to schedule
            size = 16 if cfg.executor == "local" else 64
            parts = [todo[k:k + size] for k in range(0, len(todo), size)]
            for part in parts:
                pipeline.collect(part, cfg, on_done=progress.on_done, on_start=progress.on_start, on_model=keep)
    return ([r for _, r in sorted(rows, key=lambda kr: kr[0])],
            [e for _, e in sorted(errors, key=lambda ke: ke[0])],
            [] if count else left)


def write_page(folder, source: str, rows: Sequence[PageRow | ModelReport], errors: Sequence[tuple[str, str]],
               whole: bool = False, pending: Sequence[str] = ()) -> tuple[str, str]:
    """The zoo page of ``source`` (``whole``: of all its models; ``pending``: those not counted
    yet) and its picture, written in ``folder``: their names ("" for no picture, when no tool's
    count was explained)."""
    from reconcile.atomic import write_files
    from reconcile.report.plot import zoo_png

    out = zoo_file(source, whole)
    rows = rows_of(rows)
    png = zoo_png(rows)
    picture = out[: -len(".md")] + ".png" if png is not None else ""
    files: dict[str, str | bytes] = {out: zoo_markdown(rows, errors, source, picture, pending)}
    if png is not None:
        files[picture] = png
    write_files(folder, files)
    return out, picture


def published(folder, models: str | None, subset: str, timeout: float,
              on_check: Callable[[int, int, object], None]) -> tuple[str, bool]:
    """``zoo --source timm --published``: timm's published table checked row by row (every row for
    ``subset`` "all", the rows of the CI sample or of ``models``), written to timm-published.md;
    its name and whether a row is unexplained or failed (a finding, not an error).
    ``on_check(position, rows, check)`` as each row settles."""
    from reconcile import timm_check
    from reconcile.atomic import write_files
    from reconcile.report.timm_published import markdown
    from reconcile.sources import timm_published as tp

    from reconcile.models import split_specs

    wanted = split_specs(models) if models is not None else (None if subset == "all" else models_of("timm", "ci"))
    rows = timm_check.rows_for(wanted)
    checks = timm_check.run(rows, timeout=timeout, workers=1, on_check=lambda k, c: on_check(k, len(rows), c))
    out = "timm-published.md"
    command = "reconcile zoo --source timm --published" + (f" --models {models}" if models else
                                                            " --subset ci" if subset == "ci" else "")
    write_files(folder, {out: markdown(checks, command)})
    counts = tp.summary(checks)
    return out, bool(counts[tp.UNEXPLAINED] or counts[tp.FAILED])
