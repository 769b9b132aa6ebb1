"""Inside one worker process of ``reconcile.runner``: tie the process to the fork server (its own
process group, death with the server), point fds 1 and 2 at the job's unnamed output file, load
the adapter (a pinned version's own folder first), build the model, run the tool (on its
``shapes_device`` first where another tool of the model's group ran the model for real, on its
``fallback_device`` after a failure), and send back one
``ToolRun``, its warnings and message ``bounded``; whatever happens, the worker's group is killed
at the end. Nothing here runs in the caller but ``bounded``.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from reconcile import memory
from reconcile.adapters.base import on_shared_build
from reconcile.errors import ReconcileError
from reconcile.records import ToolRun

if TYPE_CHECKING:
    from reconcile.runner import Job

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 4096  # characters of warnings a ToolRun keeps: its first and last lines
_LINE_LIMIT = 500  # characters kept of any one warning or error message


def _cut(text: str, limit: int = _LINE_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[: limit - 40]} [... {len(text) - limit + 40:,} characters cut]"


def bounded(run: ToolRun, limit: int = OUTPUT_LIMIT) -> ToolRun:
    """``run`` with its warnings cut to about ``limit`` characters (the first lines and the last,
    each line to ``_LINE_LIMIT``, and one line saying how much was cut) and its error message to
    one line of ``_LINE_LIMIT``: a tool or model that prints megabytes cannot make the reports
    or the pipe between processes megabytes long."""
    warnings = [_cut(w) for w in run.warnings]
    if sum(len(w) for w in warnings) > limit:
        head: list[str] = []
        tail: list[str] = []
        used = 0
        i, j = 0, len(warnings) - 1
        while i <= j:  # alternate from both ends, so both the start and the end are kept
            if used + len(warnings[i]) > limit:
                break
            head.append(warnings[i])
            used += len(warnings[i])
            i += 1
            if i > j or used + len(warnings[j]) > limit:
                break
            tail.append(warnings[j])
            used += len(warnings[j])
            j -= 1
        cut = run.warnings[i : j + 1]
        note = f"[... {len(cut):,} lines ({sum(len(w) for w in cut):,} characters) cut ...]"
        warnings = [*head, note, *reversed(tail)]
    message = _cut(" ".join(run.error_message.splitlines()))
    if tuple(warnings) == tuple(run.warnings) and message == run.error_message:
        return run
    return replace(run, warnings=tuple(warnings), error_message=message)

def _resolve(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _worker_main(job: Job, spec: str, builder: Any, conn: Any, output: int, threads: int, server: int,
                 memory_share: int = 0) -> None:
    """Entry point of one worker: build, run, send one ("result", ToolRun) message. The worker
    may take ``memory_share`` bytes more than it has at its start (``reconcile.memory``)."""
    _tie_to_server(server)
    memory.limit(memory_share)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    send_result(conn, run_job(job, spec, builder, threads, lambda phase, version: conn.send(("phase", phase, version))),
                job)


def send_result(conn: Any, run: ToolRun, job: Job) -> None:
    """Send ``("result", run)`` (bounded) and end this process with its whole group: nothing the
    model or tool started outlives the job."""
    try:
        try:
            conn.send(("result", bounded(run)))
        except Exception as exc:  # the record would not pickle (nothing was sent): say so instead
            conn.send(("result", ToolRun(
                tool=job.tool, version=run.version, status="failed", error_type=type(exc).__name__,
                error_message=_cut(f"the {run.status} result could not be sent back: {exc}"),
                attempted=run.attempted or job.describe(), seconds=run.seconds)))
    finally:
        conn.close()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stream must not spare the group
                pass
        os.killpg(0, signal.SIGKILL)


def run_job(job: Job, spec: str, builder: Any, threads: int, tell: Callable[[str, str], None],
            built: Callable[[str], Any] | None = None, witnessed: frozenset[str] = frozenset()) -> ToolRun:
    """Load the adapter, build the model, run the tool: the job's ``ToolRun``, never raised.

    ``tell(phase, version)`` is called as each phase begins. ``built(device)``, when given, is
    the ``(model, inputs)`` prepared on ``device`` by the process this one was forked from
    (``reconcile.model_group``: one build shared by a model's tools), or None where it has none;
    each device is used at most once here, so a tool never sees a model another attempt changed.
    ``witnessed``: the devices on which another tool of the model's group ran the same model and
    inputs to the end (``ran_on``); only there may a tool be counted on its shapes device instead."""
    started = time.perf_counter()
    import faulthandler

    faulthandler.enable(file=sys.stderr, all_threads=True)  # a segfault leaves a stack in the tail

    version = ""
    phase = "starting the worker"

    def enter(text: str) -> None:
        nonlocal phase
        phase = text
        tell(phase, version)

    try:
        import torch

        torch.set_num_threads(threads)
        from reconcile.models import prepare

        enter(f"loading the {job.tool} adapter")
        from reconcile import versions

        pin = versions.get(job.tool)
        if pin is not None:  # its own folder first, the preloaded copy of its module dropped
            versions.check(pin.name)  # not installed: a ReconcileError, recorded as this job's failure
            versions.activate(pin)
        adapter = _resolve(spec)(**dict(job.options))
        if pin is not None:
            adapter.name, adapter.distribution = pin.name, pin.dist
        version = adapter.version()
        device = job.device or getattr(adapter, "device", "cpu")
        build = _resolve(builder) if isinstance(builder, str) else builder

        used: set[str] = set()  # devices whose shared build this run has had (and may have changed)
        tried: dict[str, tuple[Any, Any]] = {}  # its shapes device -> the (model, inputs) it ran on there

        def attempt(device: str) -> ToolRun:
            enter(f"building model {job.model!r} on {device}")
            made = built(device) if built is not None and device not in used else None
            used.add(device)
            if isinstance(made, BaseException):  # the shared build ran out of memory: so would this one
                raise made
            model, inputs = made if made is not None else \
                prepare(build(job.model, device), job.input_specs(), device, job.mode)
            if device == getattr(adapter, "shapes_device", None):  # for same_path: meta holds nothing
                tried[device] = (model, inputs)
            enter(f"running {job.tool}" + (f" on {device}" if device != "cpu" else ""))
            with on_shared_build(device if made is not None else None):
                return adapter.run(model, inputs)

        fallback = getattr(adapter, "fallback_device", None)
        if not getattr(adapter, "needs_model", True):
            enter(f"finding the inputs of {job.model!r}")
            run = adapter.probe(job.model)
        else:
            def same_path(shapes: str) -> bool:
                """The tool reads the same path through the model on its shapes device as on the
                build another tool ran for real (``adapter.path``); never where there is none."""
                real = built(device) if built is not None else None
                if real is None or isinstance(real, BaseException) or shapes not in tried:
                    return False
                return adapter.path(*tried[shapes]) == adapter.path(*real)

            run = _on_shapes(adapter, job, device, attempt, witnessed, same_path)
            try:
                run = run or attempt(device)
            except ReconcileError as exc:  # a forward that needs real data cannot even build its inputs on meta
                if not fallback:
                    raise
                run = _failed_on(device, exc)
        if run.status == "failed" and fallback and fallback != device:
            # shapes decide every count, so a model that cannot run on meta (a forward that reads
            # values meta cannot know: a branch on a weight) is counted on real tensors, and the
            # run says so
            first = run
            run = attempt(fallback)
            why = f"{first.error_message.rstrip('.')}; so it was counted on {fallback}"
            run = replace(run, notes=(why, *run.notes))
    except BaseException as exc:  # a failure outside the adapter: recorded, never raised here
        text = str(exc).strip()
        # a ReconcileError (unknown model, bad factory) says all in its message; anything else
        # is a bug or a crash whose traceback belongs in the record (never on the terminal)
        details: tuple[str, ...] = ()
        if not isinstance(exc, ReconcileError):
            details = (f"failed outside the adapter while {phase}; traceback:",
                       *(line for line in traceback.format_exc().splitlines() if line.strip()))
        run = ToolRun(
            tool=job.tool,
            version=version,
            status="failed",
            warnings=details,
            error_type=type(exc).__name__,
            error_message=text.splitlines()[0] if text else repr(exc),
            attempted=f"{job.describe()} ({phase})",
            seconds=time.perf_counter() - started,
        )
    return memory.explain(run)


def devices_of(job: Job, spec: str, witnessed: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The devices ``run_job`` builds the job's model on before any failure (its shapes device when
    ``witnessed`` allows it, then its own; the fallback only after a failure): what a group of the
    model's jobs builds once for all of them. () for a tool that needs no model."""
    adapter = _resolve(spec)
    if not getattr(adapter, "needs_model", True):
        return ()
    device = job.device or getattr(adapter, "device", "cpu")
    shapes = _shapes(adapter, job, device, witnessed)
    return (shapes, device) if shapes else (device,)


def ran_on(job: Job, spec: str, run: ToolRun) -> str | None:
    """The device on which ``run`` took the job's model through its forward to the end, where that
    is certain: an ``ok`` run of a tool that builds the model, on its one device (no shapes device
    tried first, no fallback after a failure); else None."""
    if run.status != "ok":
        return None
    try:
        adapter = _resolve(spec)
    except Exception:  # noqa: BLE001 - a tool that cannot load witnesses nothing
        return None
    if getattr(adapter, "fallback_device", None) or getattr(adapter, "shapes_device", None):
        return None
    devices = devices_of(job, spec)
    return devices[0] if len(devices) == 1 else None


def _shapes(adapter: Any, job: Job, device: str, witnessed: frozenset[str]) -> str | None:
    """The adapter's ``shapes_device`` when the job may be counted there: the job names no device,
    the model's forward on ``device`` is known to run to its end (``witnessed``), and the adapter
    can say which path it takes through a model (``path``, for ``_on_shapes``)."""
    shapes = getattr(adapter, "shapes_device", None)
    if job.device is not None or not shapes or shapes == device or device not in witnessed or \
            not hasattr(adapter, "path"):
        return None
    return shapes


def _on_shapes(adapter: Any, job: Job, device: str, attempt: Callable[[str], ToolRun],
               witnessed: frozenset[str], same_path: Callable[[str], bool]) -> ToolRun | None:
    """The adapter's run on its ``shapes_device`` (meta) when it may run there (``_shapes``), its
    run there is ``ok`` and ``same_path(shapes_device)`` holds; else None, and the job runs on
    ``device`` as it would without.

    Only for a tool whose numbers, warnings and notes read shapes alone: its run on meta is the
    run it makes on real tensors, field for field (``tests/meta_proof.py`` checks it on
    every zoo sample), without the cost of building real weights and running real kernels. A model
    that cannot run on meta (a forward that reads values) is simply counted on ``device``; nothing
    in the run differs, so nothing says so. Meta knows no memory and no values, so a forward
    that fails on real tensors (out of memory, a fault on data) would succeed there: hence only
    where another tool of the group ran the model on ``device`` to the end, and never for a
    job alone, whose tool meets on ``device`` whatever its users would. That witness proves the
    forward runs on ``device``, not that it is the forward meta ran: a model may branch on where
    its weights are. So the run is kept only where the tool's path through the model
    (``adapter.path``: pthflops' fx graph) is the same on the witness's build."""
    shapes = _shapes(adapter, job, device, witnessed)
    if shapes is None:
        return None
    try:
        run = attempt(shapes)
        if run.status != "ok":
            return None
        if not same_path(shapes):
            log.debug("%s takes another path on %s than on %s; run on %s", job.describe(), shapes, device, device)
            return None
    except Exception:  # noqa: BLE001 - any failure there is settled by the run on ``device``
        log.debug("%s on %s failed; run on %s", job.describe(), shapes, device, exc_info=True)
        return None
    return run


def _tie_to_server(server: int) -> None:
    """Make this worker the leader of its own process group (so the group can be killed with
    whatever the job starts), die with the fork server, and drop the server's "alive" pipe that
    every forkserver child inherits: held here, it would keep the server alive after the caller
    died, and the server's death is what ends an orphaned worker."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's handler (reconcile._server) is not ours
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: SIGKILL when the server dies
    except (OSError, AttributeError):  # not Linux: the server's exit hook still kills the group
        pass
    if os.getppid() != server:  # the server died before the line above took effect
        os._exit(1)
    from multiprocessing import forkserver

    alive = forkserver._forkserver._forkserver_alive_fd
    if alive is not None:
        forkserver._forkserver._forkserver_alive_fd = None
        os.close(alive)


def _failed_on(device: str, exc: BaseException) -> ToolRun:
    return ToolRun(tool="", version="", status="failed", error_type=type(exc).__name__,
                   error_message=str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
