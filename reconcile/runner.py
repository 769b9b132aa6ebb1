"""Run counting tools on models, each (model, tool) job in its own throwaway process.

Guarantees:
- no tool can change the calling process or another job's process: every job is a fresh fork of
  a "forkserver" process that has imported torch, torchvision and reconcile once (so ``import
  torch`` is paid once per ``run_jobs`` caller, not once per job), and is thrown away afterwards;
- the calling process never imports torch;
- every job yields one ``ToolRun``, in the order of ``jobs``: what the adapter returned, or
  ``status="timeout"`` (the worker was killed after ``timeout`` seconds), or ``status="failed"``
  when the worker raised outside the adapter or died (signal, exit code, no result);
- nothing a tool or worker prints reaches the caller's terminal: a worker's fds 1 and 2 point at
  a temporary file, whose last lines are kept in the ``warnings`` of a worker that died.

Inside a worker: the adapter named by ``ADAPTERS[tool]`` is imported, ``build(model_name,
device)`` makes the model on the adapter's ``device`` (``build_model`` by default), it is put in
eval mode, ``reconcile.models.make_inputs`` makes the job's deterministic input, and
``adapter.run(model, inputs)`` is called.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any, Callable

from reconcile.errors import ReconcileError
from reconcile.records import ToolRun

log = logging.getLogger(__name__)

# tool name -> "module:Class"; each module imports its tool only inside ``run``
ADAPTERS: dict[str, str] = {
    "thop": "reconcile.adapters.thop:ThopAdapter",
    "ptflops": "reconcile.adapters.ptflops:PtflopsAdapter",
    "ptflops-aten": "reconcile.adapters.ptflops:PtflopsAtenAdapter",
    "torchstat": "reconcile.adapters.torchstat:TorchstatAdapter",
    "torchsummary": "reconcile.adapters.torchsummary:TorchsummaryAdapter",
    "fvcore": "reconcile.adapters.fvcore:FvcoreAdapter",
    "native": "reconcile.adapters.native:NativeAdapter",
}

# imported once by the forkserver, so no worker pays for them. Only ImportError is tolerated
# there (a tool that is not installed is skipped), so only modules whose import has no side
# effects belong here: importing the tools changes nothing until they are called.
# "__main__" keeps the caller's main module imported once in the server, not once per job.
PRELOAD = ("__main__", "torch", "torchvision", "numpy", "pandas", "reconcile.runner", "reconcile.counter.core",
           "thop", "ptflops", "fvcore.nn", "torchsummary", "torchstat")

_RESULT_GRACE = 5.0  # seconds a worker that sent its result gets to exit before it is killed
_OUTPUT_TAIL = 10  # lines of a dead worker's output kept in its ToolRun


@dataclass(frozen=True)
class Job:
    """One tool on one model with its inputs (batch included), in eval or train mode.

    ``inputs`` is a tuple of ``reconcile.inputs.InputSpec``; a single unnamed input can still be
    given as ``input_shape`` / ``input_dtype`` / ``input_high``."""

    model: str
    tool: str
    input_shape: tuple[int, ...] = ()
    input_dtype: str = "float32"
    input_high: int | None = None  # exclusive upper bound of integer inputs (token ids, ...)
    cost: float = 0.0  # expected run time, any unit: the costliest jobs start first
    inputs: tuple[Any, ...] = ()
    mode: str = "eval"
    device: str | None = None  # where to build and run; None: where the adapter asks (Adapter.device)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        self.input_specs()  # a bad shape, dtype or high is the caller's to fix: ReconcileError now

    def input_specs(self) -> tuple[Any, ...]:
        from reconcile.inputs import InputSpec, check_inputs

        if self.inputs:
            return check_inputs(self.inputs)
        return (InputSpec(self.input_shape, self.input_dtype, self.input_high),)

    def describe(self) -> str:
        from reconcile.inputs import describe

        return f"{self.tool} on {self.model} ({describe(self.input_specs())})"


def build_model(name: str, device: str) -> Any:
    """The builder used when ``run_jobs`` gets no ``build``: ``reconcile.models`` resolves the
    spec (torchvision name or ``package.module:callable``) and builds it on ``device`` ("cpu",
    or "meta" for an adapter that asks for it) without downloads or random init."""
    from reconcile import models

    return models.build(models.resolve(name), device=device)


def run_jobs(
    jobs: list[Job],
    *,
    timeout: float = 300.0,
    workers: int = 2,
    build: Callable[[str, str], Any] | str | None = None,
) -> list[ToolRun]:
    """Run every job in its own worker process, up to ``workers`` at a time; results in job order.

    ``build(model_name, device)`` makes a model from ``Job.model`` on the device the adapter asks
    for (``Adapter.device``): a module-level function or ``"module:function"``, called in the
    worker; default ``build_model``. ``timeout`` is per job, in seconds,
    counted from the worker's start (building the model included)."""
    if workers < 1:
        raise ReconcileError(f"workers must be at least 1, got {workers}")
    if timeout <= 0:
        raise ReconcileError(f"timeout must be positive, got {timeout}")
    specs = []
    for job in jobs:
        if job.tool not in ADAPTERS:
            raise ReconcileError(f"unknown tool {job.tool!r}; known tools: {', '.join(sorted(ADAPTERS))}")
        specs.append(ADAPTERS[job.tool])
    if not jobs:
        return []
    builder = build if build is not None else f"{__name__}:build_model"
    threads = max(1, (os.cpu_count() or 1) // workers)
    from reconcile.sources import preload_for

    ctx = _forkserver_context(preload_for([job.model for job in jobs]))

    results: list[ToolRun | None] = [None] * len(jobs)
    # longest first, so two workers finish together (results stay in job order)
    pending = deque(sorted(range(len(jobs)), key=lambda i: -jobs[i].cost))
    running: list[_Worker] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                index = pending.popleft()
                running.append(_Worker.start(ctx, index, jobs[index], specs[index], builder, threads, timeout))
            waiting = [w.conn for w in running if not w.eof] + [w.process.sentinel for w in running]
            wait(waiting, timeout=max(0.0, min(w.deadline for w in running) - time.monotonic()))
            for worker in list(running):
                run = worker.poll()
                if run is not None:
                    results[worker.index] = run
                    running.remove(worker)
    finally:
        for worker in running:  # only reached on an error or interrupt in this loop
            worker.kill()
    done = [r for r in results if r is not None]
    assert len(done) == len(jobs), "every job settles before the loop ends"
    return done


# ----- parent side -------------------------------------------------------------------------


def _forkserver_context(extra: tuple[str, ...] = ()) -> Any:
    """The forkserver context, its server started with our preload (plus ``extra``, e.g. timm for
    a run of timm models; only when the server starts) and with fds 1 and 2 on /dev/null, so
    nothing printed while it imports (or by a worker before it redirects its own fds) reaches the
    caller's terminal."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD) + [m for m in extra if m not in PRELOAD])
    from multiprocessing import forkserver

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    saved: list[int] = []
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            saved.append(os.dup(fd))
            os.dup2(null, fd)
        forkserver.ensure_running()  # no-op when it already runs; its children inherit its fds
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)
    return ctx


@dataclass
class _Worker:
    index: int
    job: Job
    process: Any
    conn: Any
    output: str  # path of the file holding the worker's fds 1 and 2
    started: float
    deadline: float
    timeout: float
    phase: str = "starting the worker"
    version: str = ""
    eof: bool = False
    result: ToolRun | None = None

    @classmethod
    def start(cls, ctx: Any, index: int, job: Job, spec: str, builder: Any, threads: int, timeout: float) -> "_Worker":
        fd, output = tempfile.mkstemp(prefix="reconcile-job-", suffix=".log")
        os.close(fd)
        receive, send = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_worker_main,
            args=(job, spec, builder, send, output, threads),
            name=f"reconcile:{job.tool}:{job.model}",
            daemon=True,
        )
        started = time.monotonic()
        try:
            process.start()
        except BaseException:
            receive.close()
            _remove(output)
            raise
        finally:
            send.close()  # the worker holds the only write end: its death means EOF here
        log.debug("started %s (pid %s)", job.describe(), process.pid)
        return cls(index, job, process, receive, output, started, started + timeout, timeout)

    def poll(self) -> ToolRun | None:
        """The job's ToolRun once it is settled, else None. Never blocks for long."""
        self._drain()
        if self.result is not None:
            self.process.join(_RESULT_GRACE)
            if self.process.exitcode is None:
                self.process.kill()
                self.process.join()
            return self._finish(self.result)
        if not self.process.is_alive():
            self.process.join()
            self._drain()
            if self.result is not None:
                return self._finish(self.result)
            return self._finish(self._died())
        if time.monotonic() >= self.deadline:
            self.kill()
            return self._finish(
                self._record(
                    "timeout",
                    "Timeout",
                    f"no result after {self.timeout:g} s while {self.phase}; worker killed",
                )
            )
        return None

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()
        self.process.join()
        self.conn.close()
        _remove(self.output)

    def _drain(self) -> None:
        while not self.eof and self.result is None:
            try:
                if not self.conn.poll():
                    return
                message = self.conn.recv()
            except (EOFError, OSError):
                self.eof = True
                return
            if message[0] == "phase":
                _, self.phase, self.version = message
            elif message[0] == "result":
                _, self.result, details = message
                if details:
                    log.warning("%s: %s", self.job.describe(), details)

    def _died(self) -> ToolRun:
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        tail = _tail(self.output)
        if tail:
            log.warning("%s: worker %s; its last output:\n%s", self.job.describe(), how, "\n".join(tail))
        message = f"worker {how} while {self.phase}, without a result"
        if self.phase == "starting the worker" and code:
            message += (" (it could not load the job: a script calling run_jobs must guard its entry "
                        "point with `if __name__ == '__main__':`)")
        return self._record(
            "failed",
            "WorkerDied",
            message,
            warnings=tuple(f"worker output: {line}" for line in tail),
        )

    def _record(self, status: str, error_type: str, message: str, warnings: tuple[str, ...] = ()) -> ToolRun:
        return ToolRun(
            tool=self.job.tool,
            version=self.version,
            status=status,
            warnings=warnings,
            error_type=error_type,
            error_message=message,
            attempted=f"{self.job.describe()} ({self.phase})",
            seconds=time.monotonic() - self.started,
        )

    def _finish(self, run: ToolRun) -> ToolRun:
        self.conn.close()
        _remove(self.output)
        log.debug("%s: %s in %.1f s", self.job.describe(), run.status, time.monotonic() - self.started)
        return run


def _tail(path: str) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.rstrip() for line in text.splitlines() if line.strip() and not line.startswith("Extension modules:")]
    fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
    if fatal:  # faulthandler's report: the error line and the innermost frames matter most
        return lines[fatal[-1] : fatal[-1] + _OUTPUT_TAIL]
    return lines[-_OUTPUT_TAIL:]


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ----- worker side -------------------------------------------------------------------------


def _resolve(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _worker_main(job: Job, spec: str, builder: Any, conn: Any, output: str, threads: int) -> None:
    """Entry point of one worker: build, run, send one ("result", ToolRun, details) message."""
    started = time.perf_counter()
    out = os.open(output, os.O_WRONLY | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    import faulthandler

    faulthandler.enable(file=sys.stderr, all_threads=True)  # a segfault leaves a stack in the tail

    version = ""
    phase = "starting the worker"

    def enter(text: str) -> None:
        nonlocal phase
        phase = text
        conn.send(("phase", phase, version))

    try:
        import torch

        torch.set_num_threads(threads)
        from reconcile.models import prepare

        enter(f"loading the {job.tool} adapter")
        adapter = _resolve(spec)()
        version = adapter.version()
        device = job.device or getattr(adapter, "device", "cpu")
        build = _resolve(builder) if isinstance(builder, str) else builder

        def attempt(device: str) -> ToolRun:
            enter(f"building model {job.model!r} on {device}")
            model, inputs = prepare(build(job.model, device), job.input_specs(), device, job.mode)
            enter(f"running {job.tool}" + (f" on {device}" if device != "cpu" else ""))
            return adapter.run(model, inputs)

        try:
            run = attempt(device)
        except ReconcileError as exc:  # a forward that needs real data cannot even build its inputs on meta
            if not getattr(adapter, "fallback_device", None):
                raise
            run = _failed_on(device, exc)
        fallback = getattr(adapter, "fallback_device", None)
        if run.status == "failed" and fallback and fallback != device:
            # shapes decide every count, so a model that cannot run on meta (a forward that reads
            # data: `if x.mean() > 0`, `.item()`) is counted on real tensors, and the run says so
            first = run
            run = attempt(fallback)
            why = f"{first.error_message.rstrip('.')}; so it was counted on {fallback}"
            run = replace(run, notes=(why, *run.notes))
        conn.send(("result", run, None))
    except BaseException as exc:  # a failure outside the adapter: recorded, never raised here
        text = str(exc).strip()
        # a ReconcileError (unknown model, bad factory) says all in its message; anything else
        # is a bug or a crash whose traceback the caller's log should get
        details = None
        if not isinstance(exc, ReconcileError):
            details = f"failed outside the adapter while {phase}:\n{traceback.format_exc()}"
        conn.send(
            (
                "result",
                ToolRun(
                    tool=job.tool,
                    version=version,
                    status="failed",
                    error_type=type(exc).__name__,
                    error_message=text.splitlines()[0] if text else repr(exc),
                    attempted=f"{job.describe()} ({phase})",
                    seconds=time.perf_counter() - started,
                ),
                details,
            )
        )
    finally:
        conn.close()


def _failed_on(device: str, exc: BaseException) -> ToolRun:
    return ToolRun(tool="", version="", status="failed", error_type=type(exc).__name__,
                   error_message=str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
