"""What every tool adapter is, and the small helpers they share.

An adapter runs one counting tool the way its users run it and returns a ``ToolRun`` holding
exactly what the tool computed. Adapters run inside a worker process (see ``reconcile.runner``):
they may be clumsy with globals there, but they must still not let the tool print to the
terminal, and they import their tool lazily inside ``run``. Adapters never import each other.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import traceback
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import metadata
from typing import Any, Callable, Iterator, Sequence

from reconcile.records import Number, ToolRun

log = logging.getLogger(__name__)


def exact_number(value: Any) -> Number:
    """A tool's number, exactly: numpy scalars unwrapped, integral floats and fractions as ints,
    other floats as their exact ``Fraction``."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return int(value) if value.is_integer() else Fraction(value)
    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else value
    return int(value)


@contextlib.contextmanager
def counting_calls(model: Any) -> Iterator[dict[int, int]]:
    """Count forward calls per module object (``id -> calls``); hooks are removed on exit."""
    counts: dict[int, int] = {}
    handles = []
    for mod in model.modules():
        counts[id(mod)] = 0

        def hook(m: Any, args: Any, out: Any, key: int = id(mod)) -> None:
            counts[key] += 1

        handles.append(mod.register_forward_hook(hook))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass
class Captured:
    """Text a tool printed or logged, and the warnings it raised, while captured."""

    stdout: str = ""
    stderr: str = ""
    warnings: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class ListHandler(logging.Handler):
    """Keeps each record's message in ``sink``."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@contextlib.contextmanager
def capture_output(loggers: tuple[str, ...] = ()) -> Iterator[Captured]:
    """Swallow stdout, stderr, ``warnings`` and the named loggers; hand them back as data."""
    cap = Captured()
    out, err = io.StringIO(), io.StringIO()
    handler = ListHandler(cap.log)
    saved = []
    for name in loggers:
        lg = logging.getLogger(name)
        saved.append((lg, lg.propagate, lg.level))
        lg.addHandler(handler)
        lg.propagate = False
        lg.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            yield cap
        cap.warnings.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        for lg, propagate, level in saved:
            lg.removeHandler(handler)
            lg.propagate = propagate
            lg.setLevel(level)
        cap.stdout, cap.stderr = out.getvalue(), err.getvalue()


# ----- DeepSpeed's profiler and its copies (deepspeed, flops-profiler, calflops) -----------------


@contextlib.contextmanager
def profiled(work: Any, cls: Any, end: str) -> Iterator[tuple[dict[int, tuple[Any, Any, Any]], dict[int, int]]]:
    """Run DeepSpeed's profiler, or a copy of it, on ``work`` with ``cls.end`` (the method that
    deletes what it stored on each module: ``end_profile``, calflops' ``end_flops_calculate``)
    patched to keep each module's ``__macs__``, ``__flops__`` and ``__params__`` first, and with
    every module's forward calls counted; yields ``(id -> (macs, flops, params), id -> calls)``.
    The method and the hooks are restored on exit."""
    snap: dict[int, tuple[Any, Any, Any]] = {}
    original = getattr(cls, end)

    def keep_then_end(profiler: Any) -> None:
        for m in profiler.model.modules():
            if hasattr(m, "__flops__"):
                snap[id(m)] = (m.__macs__, m.__flops__, m.__params__)
        original(profiler)

    setattr(cls, end, keep_then_end)
    try:
        with counting_calls(work) as calls:
            yield snap, calls
    finally:
        setattr(cls, end, original)


def profiled_run(adapter: "Adapter", work: Any, snap: dict[int, tuple[Any, Any, Any]], calls: dict[int, int],
                 forwards: int, totals: tuple[Any, Any, Any], cap: Captured, notes: tuple[str, ...]) -> ToolRun:
    """The ``ToolRun`` of a profiler of DeepSpeed's family: one row per module object of ``work``
    (each once, as their totals), its own macs and flops and its subtree's params, its calls
    divided by the ``forwards`` the profiler ran (warm-up included); ``totals`` its (flops, macs,
    params); what it printed, warned or logged as warnings."""
    from reconcile.records import ToolLayer

    names = module_names(work)
    layers = []
    for mod in work.modules():
        m_macs, m_flops, m_params = snap[id(mod)]
        raw: dict[str, Number] = {"macs": exact_number(m_macs), "flops": exact_number(m_flops), "params": int(m_params)}
        layers.append(ToolLayer(module=names[id(mod)], type=type(mod).__name__, calls=calls[id(mod)] // forwards,
                                raw=raw, key=names[id(mod)]))
    flops, macs, params = totals
    return adapter.ok(
        headline={"macs": exact_number(macs), "flops": exact_number(flops), "params": int(params)},
        units={"macs": "MACs", "flops": "FLOPs", "params": "params"},
        layers=tuple(layers),
        warnings=tuple([*cap.warnings, *(ln.strip() for ln in (cap.stdout + cap.stderr).splitlines() if ln.strip()),
                        *cap.log]),
        notes=notes,
    )


def prefixed_messages(prefix: str, cap: Captured, logged: Sequence[str] = ()) -> list[str]:
    """Every warning, log record (``cap.log``, then ``logged``) and printed line of ``cap``, each
    behind ``prefix`` (the call that made it)."""
    printed = [line.strip() for text in (cap.stdout, cap.stderr) for line in text.splitlines() if line.strip()]
    return [f"{prefix}: {m}" for m in (*cap.warnings, *cap.log, *logged, *printed)]


def module_names(model: Any) -> dict[int, str]:
    """``id(module) -> named_modules() name`` (first name for a module registered twice)."""
    names: dict[int, str] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        names.setdefault(id(mod), name)
    return names


def fcm_keys(model: Any) -> dict[str, Any]:
    """FlopCounterMode's module-tracker name -> module object, for ``model`` called first (its
    root); FlopCounterMode's own rows and torchscan's operator view (which runs it) are keyed so.

    Reproduces ``torch.utils.module_tracker.ModuleTracker._get_mod_name``: a name is assigned to
    every child before the child is walked, and a module already walked is not walked again, so a
    module reachable twice ends with its last path and its children with their first."""
    known: dict[int, str] = {}
    objects: dict[int, Any] = {}
    walked: set[int] = set()

    def name_of(mod: Any) -> str:
        objects[id(mod)] = mod
        if id(mod) not in known:
            known[id(mod)] = type(mod).__name__
        name = known[id(mod)]
        if id(mod) not in walked:
            for child_name, child in mod.named_children():
                objects[id(child)] = child
                known[id(child)] = f"{name}.{child_name}"
                name_of(child)
            walked.add(id(mod))
        return name

    name_of(model)
    return {name: objects[i] for i, name in known.items()}


def output_tensors(obj: Any, seen: set[int] | None = None) -> list[Any]:
    """Every tensor of a forward's result, in order: through tuples, lists, dicts (a transformers
    ``ModelOutput`` is one) and the attributes of other objects (a ``Cache``)."""
    import torch

    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        return [obj]
    if id(obj) in seen or obj is None or isinstance(obj, (int, float, bool, str)):
        return []
    seen.add(id(obj))
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return []
    return [t for item in items for t in output_tensors(item, seen)]


def flat_io(model: Any, inputs: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """``model`` inside a module whose forward takes only the tensor inputs (a ``None`` between
    them is put back in its place) and returns every output tensor as a flat tuple: what
    ``torch.jit`` can trace when a forward takes ``None`` or returns a dict, a ``ModelOutput`` or a
    cache. The model is the wrapper's child ``model``."""
    import torch

    slots = [i for i, a in enumerate(inputs) if isinstance(a, torch.Tensor)]

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            args = list(inputs)
            for i, t in zip(slots, tensors):
                args[i] = t
            return tuple(output_tensors(self.model(*args)))

    return Flat(), tuple(inputs[i] for i in slots)


def unwrapped_key(prefix: str) -> Callable[[str], str | None]:
    """A jit-traced tool's module key -> the key on the model: the same when nothing wraps the
    model, else with ``flat_io``'s wrapper attribute (``prefix``) taken off (None: the wrapper)."""

    def own(key: str) -> str | None:
        if not prefix:
            return key
        if key == prefix:
            return ""
        return key[len(prefix) + 1:] if key.startswith(prefix + ".") else None

    return own


# the note of a run traced through ``flat_io``'s wrapper (fvcore, mmengine)
FLAT_IO_NOTE = ("traced through a wrapper that passes only the tensor inputs and returns every output tensor as "
                "a tuple: torch.jit traces no None input and no dict, ModelOutput or cache output")


ONE_TRACE_NOTE = ("one jit trace serves both analyses (the model in eval mode: a second trace of the same inputs "
                  "is the same graph, and the analyses only read it); run as written, each analysis traces the "
                  "forward itself, with the same counts")

# set (to anything but "") to trace once per analysis, as fvcore and mmengine do themselves: how
# the shared trace is proven to give the same records (tests/test_one_trace.py)
TRACE_TWICE = "RECONCILE_TRACE_TWICE"


@contextlib.contextmanager
def one_trace(jit_analysis: Any, model: Any) -> Iterator[dict[str, int]]:
    """While open, the analyses of ``jit_analysis`` (``fvcore.nn.jit_analysis`` or mmengine's copy
    of it) on ``model`` share one jit trace: the flop and the activation analysis each trace the
    forward themselves (``_get_scoped_trace_graph``, from ``JitModelAnalysis._analyze``), and the
    second gets the graph the first traced, for the same module, inputs and scope names. Only
    with every module in eval mode, where a second trace of the same inputs is the same graph
    (in training mode a trace updates BatchNorm's statistics, and a stochastic layer may take
    another path); the analyses only read the graph. Yields ``{"traces": n}``, the traces run."""
    original = jit_analysis._get_scoped_trace_graph
    share = not os.environ.get(TRACE_TWICE) and not any(m.training for m in model.modules())
    memo: dict[tuple[int, int], tuple[dict, Any]] = {}
    counted = {"traces": 0}

    def scoped(module: Any, inputs: Any, aliases: dict) -> Any:
        key = (id(module), id(inputs))
        if share and key in memo and memo[key][0] == aliases:
            return memo[key][1]
        graph = original(module, inputs, aliases)
        counted["traces"] += 1
        if share:
            memo[key] = (dict(aliases), graph)
        return graph

    jit_analysis._get_scoped_trace_graph = scoped
    try:
        yield counted
    finally:
        jit_analysis._get_scoped_trace_graph = original


def jit_analysis_rows(work: Any, prefix: str, flop_by_module: dict[str, Any], act_by_module: dict[str, Any],
                      params: dict[str, int], unsupported_of: Callable[[str], dict[str, int]],
                      calls: dict[int, int], traces: int = 1) -> list[Any]:
    """The per-module rows of fvcore's and mmengine's jit analyses (the same code, mmengine's a
    copy of fvcore's): flops, activations and parameters per module of ``work``, and each row's
    unsupported-op call counts (``unsupported:<op>``); ``calls`` counted over ``traces`` traces."""
    from reconcile.records import ToolLayer

    own, names = unwrapped_key(prefix), module_names(work)
    layers = []
    for traced_key, value in flop_by_module.items():
        key = own(traced_key)
        if key is None:
            continue
        module = work.get_submodule(key)
        raw: dict[str, Number] = {
            "flops": exact_number(value),
            "activations": exact_number(act_by_module.get(traced_key, 0)),
            "params": int(params.get(key, 0)),
        }
        raw.update({f"unsupported:{op}": int(n) for op, n in sorted(unsupported_of(traced_key).items())})
        layers.append(ToolLayer(module=names[id(module)], type=type(module).__name__,
                                calls=calls[id(module)] // max(traces, 1), raw=raw, key=key))
    return layers


def jit_analysis_headline(flops: Any, activations: Any, params: int, flop_unsupported: dict[str, int],
                          act_unsupported: dict[str, int]) -> tuple[dict[str, Number], dict[str, str]]:
    """The headline and units of fvcore's and mmengine's jit analyses: totals, and the call count
    of each op the flop (``unsupported:<op>``) or activation analysis has no handle for."""
    headline: dict[str, Number] = {"flops": exact_number(flops), "activations": exact_number(activations),
                                   "params": int(params)}
    units = {"flops": "flops", "activations": "activations", "params": "params"}
    for prefix, ops in (("unsupported", flop_unsupported), ("unsupported_activations", act_unsupported)):
        for op, n in sorted(ops.items()):
            headline[f"{prefix}:{op}"] = int(n)
            units[f"{prefix}:{op}"] = "calls"
    return headline, units


def unattributed(layers: list[Any], total: Number) -> dict[str, Number]:
    """What a tool's total holds beyond its root row (work outside every module), if anything."""
    root = next((layer for layer in layers if layer.key == ""), None)
    shortfall = total - (root.raw["flops"] if root is not None else 0)
    return {"no_module": shortfall} if shortfall else {}


class ToolFailure(Exception):
    """A tool's own exception with a plain one-line reason. Recorded under the original
    exception's type, with the reason followed by the tool's own words."""

    def __init__(self, reason: str, original: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.original = original


def _first_line(exc: BaseException) -> str:
    """The exception's first line; a bare ``assert`` (no text) as the statement that failed and
    where (``assert heads == ... at torchprofile/handlers.py:172``), not ``AssertionError()``."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and frames[-1].line:
        last = frames[-1]
        path = last.filename.replace("\\", "/")
        path = path.split("site-packages/")[-1] if "site-packages/" in path else os.path.basename(path)
        return f"{last.line} at {path}:{last.lineno}"
    return repr(exc)


def failure_reason(tool: str, exc: BaseException, where: tuple[str, str, tuple[int, ...] | None] | None,
                   input_rule: str) -> str | None:
    """The common ways a hook-based tool fails on a model, in plain words. ``where``: the
    (module name, type, first input shape) running when it failed; ``input_rule``: what the tool
    feeds the model. None when the failure is none of these."""
    text = str(exc)
    name, type_, shape = where if where is not None else ("", "", None)
    at = f"{type_} {name}" if name else (type_ or "the model")
    if "Expected tensor for argument #1 'indices'" in text or "Expected Long" in text:
        return f"{tool} {input_rule}: {at} needs integer inputs (token ids)"
    if isinstance(exc, AttributeError) and "has no attribute 'size'" in text:
        kind = text.split("'")[1] if "'" in text else "non-tensor"
        return (f"{tool} needs every layer to return a tensor or a flat tuple of tensors: {at} returns a {kind} "
                "where a tensor should be")
    if isinstance(exc, AssertionError) and type_ == "Linear" and shape is not None and len(shape) != 2:
        return f"{tool} needs 2-D Linear inputs: this model feeds a {len(shape)}-D tensor to {name}"
    if isinstance(exc, (RuntimeError, AssertionError, AttributeError, TypeError)) and name:
        return f"{tool} failed in {at}"
    return None


class Adapter:
    """One counting tool. Subclasses set ``name`` and ``distribution`` and implement ``_run``."""

    name: str = ""
    distribution: str = ""  # the pip distribution whose version is reported
    device: str = "cpu"  # where the runner builds the model and inputs for this tool
    # what ``attempted`` says ("": the name); an adapter may reword it in ``_run`` once it knows the call
    _attempted: str = ""

    def version(self) -> str:
        return version_of(self.distribution)

    def run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        """Run the tool on ``model`` (eval mode, CPU) with ``inputs``. A tool's own exception
        becomes a ``failed`` run; the adapter's bugs surface the same way but keep their type."""
        start = time.perf_counter()
        try:
            run = self._run(model, inputs)
        except Exception as exc:  # the tool crashed: record it, never crash the harness
            original = exc.original if isinstance(exc, ToolFailure) else exc
            message = _first_line(original)
            if isinstance(exc, ToolFailure):
                message = f"{exc.reason} ({type(original).__name__}: {message})"
            return ToolRun(
                tool=self.name,
                version=self.version(),
                status="failed",
                error_type=type(original).__name__,
                error_message=message,
                attempted=self.attempted(),
                seconds=time.perf_counter() - start,
            )
        return _with_seconds(run, time.perf_counter() - start)

    def ok(self, **fields: Any) -> ToolRun:
        """This tool's successful ``ToolRun`` (its name and version) with ``fields``."""
        return ToolRun(tool=self.name, version=self.version(), status="ok", **fields)

    def attempted(self) -> str:
        """One line saying what was called, for failure records."""
        return self._attempted or self.name

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        raise NotImplementedError


def _with_seconds(run: ToolRun, seconds: float) -> ToolRun:
    from dataclasses import replace

    return replace(run, seconds=seconds)


AdapterFactory = Callable[[], Adapter]


# ----- one tool call serving two adapters of one model group ----------------------------------
#
# Two adapters that read two views of the same call (torchscan's module and operator views, both
# ``torchscan.summary``) make it once per model group (``reconcile.model_group``): the child that
# makes it first sends what it returned back to the group worker (``keep``), and each child forked
# after that finds it (``kept``) instead of running the forward again. Only on the group's shared
# build of the model: ``run_job`` says which device's build the adapter got (``on_shared_build``).

_KEPT: dict[tuple[str, str], Any] = {}  # in a group worker: (call, device) -> what the call returned
_SINK: list[Callable[[tuple[str, str], Any], None]] = []  # in a group's child: sends a kept result back
_BUILD: list[str] = []  # the device of the group's shared build the running adapter has


@contextlib.contextmanager
def on_shared_build(device: str | None) -> Iterator[None]:
    """While open, the adapter runs on the group's shared build on ``device`` (None: a build of
    its own, for which nothing is kept or found)."""
    _BUILD.append(device or "")
    try:
        yield
    finally:
        _BUILD.pop()


def kept(call: str) -> Any:
    """What ``call`` returned for this model group's shared build on the running device, kept by
    a tool run before this one in the group; None when there is none."""
    return _KEPT.get((call, _BUILD[-1])) if _BUILD and _BUILD[-1] else None


def keep(call: str, value: Any) -> None:
    """Hand ``value`` (what ``call`` returned on the shared build; picklable) to the tools of this
    model group run after this one. Nothing outside a group's child on its shared build."""
    if _BUILD and _BUILD[-1] and _SINK:
        try:
            _SINK[-1]((call, _BUILD[-1]), value)
        except Exception:  # noqa: BLE001 - a value that would not go: the next tool makes the call itself
            log.debug("could not keep %s", call, exc_info=True)
