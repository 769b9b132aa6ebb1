"""Run counting tools on models, each (model, tool) job in its own throwaway process.

Guarantees:
- no tool can change the calling process or another job's process: every job is a fresh fork of
  a "forkserver" process that has imported torch, torchvision and reconcile once (so ``import
  torch`` is paid once per ``run_jobs`` caller, not once per job), and is thrown away afterwards;
- the calling process never imports torch;
- every job yields one ``ToolRun``, in the order of ``jobs``: what the adapter returned, or
  ``status="timeout"`` (the worker was killed after ``timeout`` seconds), or ``status="failed"``
  when the worker raised outside the adapter or died (signal, exit code, no result);
- nothing a tool or worker prints reaches the caller's terminal or its log above debug level: a
  worker's fds 1 and 2 point at an unlinked temporary file, whose last lines are kept in the
  ``warnings`` of a worker that died; a traceback from outside the adapter goes into ``warnings``;
  every ``ToolRun`` leaves its worker with at most ``OUTPUT_LIMIT`` characters of warnings (the
  first and last lines, and how much was cut);
- no process of a job outlives it: a worker leads its own process group, which is killed (with
  any process the model or tool started) when the job settles, times out or the caller is
  interrupted; a worker dies with the fork server (``PR_SET_PDEATHSIG``), and the fork server,
  when the caller dies even by SIGKILL, kills what its workers left and removes the caller's
  ``pymp-*`` folder (``reconcile._server``). ``shutdown()`` stops the fork server at once.

Inside a worker: a pinned tool version (``reconcile.versions``: ``thop@0.0.22``, ``ultralytics-thop``)
first drops the preloaded copy of its module and puts its own folder first on ``sys.path`` (only
there, never in the caller); the adapter the tool registry names (``reconcile.tools``) is imported, ``build(model_name,
device)`` makes the model on the job's device or the adapter's ``device`` (``build_model`` by
default), ``reconcile.models.prepare`` puts it in the job's mode and dtype and makes the job's
deterministic inputs, and ``adapter.run(model, inputs)`` is called; an adapter with a
``fallback_device`` (native) is run there when it fails on its device.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator

from reconcile.config import check_timeout
from reconcile.errors import ReconcileError
from reconcile.records import ToolRun

log = logging.getLogger(__name__)

# imported once by the forkserver, so no worker pays for them, with the modules each tool of the
# run preloads (``reconcile.tools.Tool.preload``, ``tools.preload``). Only ImportError is tolerated
# there (a tool that is not installed is skipped), so only modules whose import has no side
# effects belong here: importing the tools changes nothing until they are called.
# "__main__" keeps the caller's main module imported once in the server, not once per job.
# reconcile._server is the exception, first so that it acts before the slow imports: its import
# makes the server die with its caller and clean up after itself (it is imported only there).
PRELOAD = ("reconcile._server", "__main__", "torch", "torchvision", "numpy", "pandas", "reconcile.runner")

# pids of the workers running in this process, whichever thread's ``run_jobs`` started them: the
# fork server is shared, so one run's clean-up of the server's other children must spare them
# (changed and read under the lock)
_LIVE_WORKERS: set[int] = set()
_WORKERS_LOCK = threading.Lock()

_RESULT_GRACE = 5.0  # seconds a worker that sent its result gets to exit before it is killed
_OUTPUT_TAIL = 10  # lines of a dead worker's output kept in its ToolRun
OUTPUT_LIMIT = 4096  # characters of warnings a ToolRun keeps: its first and last lines
_LINE_LIMIT = 500  # characters kept of any one warning or error message


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
    options: tuple[tuple[str, Any], ...] = ()  # keyword arguments of the adapter's constructor

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


def adapter_spec(tool: str) -> str:
    """The ``"module:Class"`` a job runs (``reconcile.tools.adapter_of``: a tool's adapter, a
    pinned version's, a training or helper job's); a ReconcileError for a tool reconcile does not
    know. A pin whose folder is missing fails in its worker, with the one line saying what to run,
    like a tool that is not installed."""
    from reconcile import tools

    return tools.adapter_of(tool)


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
    on_done: Callable[[Job, ToolRun], None] | None = None,
    on_start: Callable[[Job], None] | None = None,
    threads: int | None = None,
) -> list[ToolRun]:
    """Run every job in its own worker process, up to ``workers`` at a time; results in job order.

    ``build(model_name, device)`` makes a model from ``Job.model`` on the device the adapter asks
    for (``Adapter.device``): a module-level function or ``"module:function"``, called in the
    worker; default ``build_model``. ``timeout`` is per job, in seconds,
    counted from the worker's start (building the model included). ``on_start(job)`` and
    ``on_done(job, run)`` are called in this process as each job starts and settles (progress
    display). ``threads``: torch threads per job (default: this machine's CPUs shared by the
    ``workers``; a Ray task running one job passes its node's share)."""
    if workers < 1:
        raise ReconcileError(f"workers must be at least 1, got {workers}")
    check_timeout(timeout, "timeout")  # nan would spin the loop below, inf overflow its waits
    specs = [adapter_spec(job.tool) for job in jobs]
    if not jobs:
        return []
    builder = build if build is not None else f"{__name__}:build_model"
    threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)
    from reconcile import tools
    from reconcile.sources import preload_for

    preload = tools.preload([job.tool for job in jobs]) + preload_for([job.model for job in jobs])
    ctx, server = _forkserver_context(preload)

    results: list[ToolRun | None] = [None] * len(jobs)
    # longest first, so two workers finish together (results stay in job order)
    pending = deque(sorted(range(len(jobs)), key=lambda i: -jobs[i].cost))
    running: list[_Worker] = []

    def settle(index: int, run: ToolRun) -> None:
        results[index] = run
        if on_done is not None:
            on_done(jobs[index], run)

    try:
        while pending or running:
            while pending and len(running) < workers:
                index = pending.popleft()
                for attempt in (1, 2):
                    if _dead(server):  # killed (by a job's model, or from outside): a new one for the rest
                        why = _exit_status(server)  # read before the new start reaps it
                        log.debug("the worker fork server (pid %s) died (%s): starting a new one", server, why)
                        for worker in running:
                            if worker.server == server:
                                worker.server_died = why
                        ctx, server = _forkserver_context(preload)
                    try:
                        with _WORKERS_LOCK:  # no other thread's _end_orphans between the fork and the add
                            worker = _Worker.start(ctx, server, index, jobs[index], specs[index], builder,
                                                   threads, timeout)
                            _LIVE_WORKERS.add(worker.process.pid)
                    except (EOFError, OSError) as exc:  # the server died while it forked this job's worker
                        if not _dead(server):
                            raise
                        if attempt == 1:
                            continue
                        worker = None
                        settle(index, bounded(ToolRun(
                            tool=jobs[index].tool, version="", status="failed", error_type="WorkerDied",
                            error_message=f"the worker fork server died ({_exit_status(server)}) twice while "
                                          f"starting this job's worker: {type(exc).__name__}",
                            attempted=f"{jobs[index].describe()} (starting the worker)")))
                    break
                if worker is not None:
                    running.append(worker)
                    if on_start is not None:
                        on_start(jobs[index])
            if not running:
                continue
            waiting = [w.conn for w in running if not w.eof] + [w.process.sentinel for w in running]
            wait(waiting, timeout=max(0.0, min(w.deadline for w in running) - time.monotonic()))
            for worker in list(running):
                run = worker.poll()
                if run is not None:
                    running.remove(worker)
                    # what the job started in a session of its own is the server's now (a subreaper);
                    # the workers of every thread's run_jobs are spared, not only this call's
                    with _WORKERS_LOCK:
                        _LIVE_WORKERS.discard(worker.process.pid)
                        _end_orphans(worker.server, set(_LIVE_WORKERS))
                    settle(worker.index, run)
    finally:
        for worker in running:  # only reached on an error or interrupt in this loop
            worker.kill()
        if running:
            with _WORKERS_LOCK:
                _LIVE_WORKERS.difference_update(w.process.pid for w in running)
                _end_orphans(server, set(_LIVE_WORKERS))
    done = [r for r in results if r is not None]
    assert len(done) == len(jobs), "every job settles before the loop ends"
    return done


def shutdown(grace: float = 2.0) -> None:
    """Stop the worker fork server of this process, if one runs: asked to stop (EOF on its pipe),
    sent SIGTERM after ``grace`` seconds and SIGKILL 2 s later. The next ``run_jobs`` starts a
    new one."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # private, as in multiprocessing's own ``_stop``
    with server._lock:
        pid, alive = server._forkserver_pid, server._forkserver_alive_fd
        if pid is None:
            return
        server._forkserver_pid = server._forkserver_alive_fd = None
        address, server._forkserver_address = server._forkserver_address, None
        os.close(alive)  # EOF on its "alive" pipe: the server exits when it next looks
        # then SIGTERM (it cleans up on that too, even while importing), then SIGKILL
        for sig, wait_for in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0), (None, 5.0)):
            deadline = time.monotonic() + wait_for
            while time.monotonic() < deadline and not _reaped(pid):
                time.sleep(0.02)
            if _reaped(pid) or sig is None:
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
        if isinstance(address, str):
            _remove(address)


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after "(comm)": state, ppid, pgrp, ... ([] when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", errors="replace")
    except OSError:
        return []
    return stat[stat.rindex(")") + 2 :].split()


def _dead(pid: int, wait: float = 0.0) -> bool:
    """Whether a child of this process has died (gone, or a zombie not yet reaped), waiting up to
    ``wait`` seconds for it to. Read from /proc, not ``waitpid``: multiprocessing reaps its fork
    server itself when it starts a new one."""
    deadline = time.monotonic() + wait
    while True:
        fields = _stat(pid)
        if not fields or fields[0] in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _exit_status(pid: int) -> str:
    """How a dead, unreaped child ended, in words (its exit status is in /proc until it is reaped)."""
    fields = _stat(pid)
    try:
        status = int(fields[49])  # field 52 of stat: exit_code, as waitpid gives it
    except (IndexError, ValueError):
        return "it is gone"
    if os.WIFSIGNALED(status):
        try:
            return f"killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def _end_orphans(server: int, workers: set[int]) -> None:
    """Kill the fork server's children that are not running workers: processes a job started in a
    new session (``start_new_session=True``: out of its worker's group), which the server, a
    subreaper, inherited when their worker ended (``reconcile._server``). Each one that leads a
    group goes with its group; what they started themselves is inherited and killed in turn."""
    for _ in range(20):  # each round kills one generation; more is a fork bomb, left to the server's exit
        orphans = []
        try:
            entries = os.listdir("/proc")
        except OSError:
            return
        for entry in entries:
            if entry.isdigit() and int(entry) not in workers:
                fields = _stat(int(entry))
                if len(fields) > 2 and fields[1] == str(server) and fields[0] not in ("Z", "X"):
                    orphans.append((int(entry), int(fields[2])))
        if not orphans:
            return
        for pid, group in orphans:
            if group == pid:
                _kill_group(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)  # their children are reparented to the server as they die


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


# ----- parent side -------------------------------------------------------------------------


@contextlib.contextmanager
def private_inductor_cache() -> Iterator[None]:
    """Importing torchvision makes torch's compile cache folder ($TMPDIR/torchinductor_<user>):
    while this is open, ``TORCHINDUCTOR_CACHE_DIR`` points into this process's own ``pymp-*``
    folder, removed with it at exit, so processes started meanwhile (the fork server and its
    workers) or torch imported here leave nothing behind. A cache the user chose with
    ``TORCHINDUCTOR_CACHE_DIR`` is left as it is.

    The folder is only named here (``_reserved_temp_dir``) and made just before the fork server
    starts (``_made_temp_dir``): made at a command's start, a SIGKILL in the second before the
    server ran left it behind, with no process alive to remove it (the server removes it for a
    caller that died). If torch, imported here, made it meanwhile, it is removed on the way out."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        yield
        return
    folder = _reserved_temp_dir()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(folder, "inductor")
    try:
        yield
    finally:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        if multiprocessing.current_process()._config.get("tempdir") != folder:  # not multiprocessing's
            shutil.rmtree(folder, ignore_errors=True)


_TEMP_LOCK = threading.Lock()
_RESERVED = "reconcile_reserved_tempdir"  # the name in multiprocessing's per-process config


def _reserved_temp_dir() -> str:
    """The ``pymp-*`` folder multiprocessing uses in this process: the one it made, else a name
    chosen now (random, as ``mkdtemp``'s) that ``_made_temp_dir`` makes when it is needed."""
    with _TEMP_LOCK:
        config = multiprocessing.current_process()._config
        made = config.get("tempdir")
        if made:
            return made
        if not config.get(_RESERVED):
            name = "pymp-" + "".join(random.SystemRandom().choice("abcdefghijklmnopqrstuvwxyz0123456789_")
                                     for _ in range(8))
            config[_RESERVED] = os.path.join(tempfile.gettempdir(), name)
        return config[_RESERVED]


def _made_temp_dir() -> str:
    """The reserved folder made (mode 0700) and handed to multiprocessing as this process's temp
    folder, removed at exit as one it made itself (``util.get_temp_dir``); called just before the
    fork server starts, so that its socket goes there."""
    from multiprocessing import util

    folder = _reserved_temp_dir()
    with _TEMP_LOCK:
        config = multiprocessing.current_process()._config
        if config.get("tempdir") == folder:
            return folder
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # made by torch's import in this process (its compile cache is in it)
            if os.stat(folder).st_uid != os.getuid():
                raise
        util.Finalize(None, util._remove_temp_dir, args=(shutil.rmtree, folder), exitpriority=-100)
        config["tempdir"] = folder
        config.pop(_RESERVED, None)
    return folder


def _forkserver_context(extra: tuple[str, ...] = ()) -> tuple[Any, int]:
    """The forkserver context and its server's pid, the server started with our preload (plus
    ``extra``, e.g. timm for a run of timm models; only when the server starts) and with fds 1
    and 2 on /dev/null, so nothing printed while it imports (or by a worker before it redirects
    its own fds) reaches the caller's terminal."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD) + [m for m in extra if m not in PRELOAD])
    from multiprocessing import forkserver, resource_tracker

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    saved: list[int] = []
    null = os.open(os.devnull, os.O_WRONLY)
    # read by reconcile._server in the server (the variable is gone again before this returns)
    caller = f"{os.getpid()},{int(threading.current_thread() is threading.main_thread())}"
    previous = os.environ.get("RECONCILE_CALLER")
    with private_inductor_cache():  # the server's, and so its workers'
        try:
            os.environ["RECONCILE_CALLER"] = caller
            for fd in (1, 2):
                saved.append(os.dup(fd))
                os.dup2(null, fd)
            # the server's start begins by starting multiprocessing's resource tracker (a fork and
            # exec: milliseconds, far more on a busy machine), so that comes first: a SIGKILL
            # between the folder's mkdir and the server's fork leaves the folder with no process
            # to remove it, and that gap is now a bind and a fork (see private_inductor_cache)
            resource_tracker.ensure_running()
            _made_temp_dir()
            forkserver.ensure_running()  # no-op when it already runs; its children inherit its fds
        finally:
            if previous is None:
                os.environ.pop("RECONCILE_CALLER", None)
            else:
                os.environ["RECONCILE_CALLER"] = previous
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            os.close(null)
    return ctx, forkserver._forkserver._forkserver_pid


class _PassFd:
    """An open file descriptor in a worker's arguments: the fork server hands the worker a copy of
    it (as it does for pipes), so the file needs no name the worker could leave behind."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> Any:
        from multiprocessing import reduction

        return _received_fd, (reduction.DupFd(self.fd),)


def _received_fd(dup: Any) -> int:
    return dup.detach()


@dataclass
class _Worker:
    index: int
    job: Job
    process: Any
    conn: Any
    output: int  # fd of the unlinked file holding the worker's fds 1 and 2
    started: float
    deadline: float
    timeout: float
    server: int = 0  # pid of the fork server that forked this worker
    server_died: str = ""  # how that server ended, once it is known to have died
    phase: str = "starting the worker"
    version: str = ""
    eof: bool = False
    result: ToolRun | None = None

    @classmethod
    def start(cls, ctx: Any, server: int, index: int, job: Job, spec: str, builder: Any, threads: int,
              timeout: float) -> "_Worker":
        output = _unnamed_file()
        receive, send = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_worker_main,
            args=(job, spec, builder, send, _PassFd(output), threads, server),
            name=f"reconcile:{job.tool}:{job.model}",
            daemon=True,
        )
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                process.start()  # returns once the server forked: the first call waits for its imports
        except BaseException:
            receive.close()
            os.close(output)
            raise
        finally:
            send.close()  # the worker holds the only write end: its death means EOF here
        for caught_warning in caught:
            # multiprocessing probes its resource tracker on every start and, finding it dead, warns
            # "Some resources might leak" on the caller's stderr and starts a new one. Nothing of
            # reconcile's is registered with it (no named semaphores, no shared memory), so the
            # line is noise to the user: kept in this module's debug log, never on the terminal
            if caught_warning.filename.endswith(os.path.join("multiprocessing", "resource_tracker.py")):
                log.debug("while starting %s: %s", job.describe(), caught_warning.message)
            else:  # anything else (another thread's, say) is shown as it would have been
                warnings.warn_explicit(caught_warning.message, caught_warning.category,
                                       caught_warning.filename, caught_warning.lineno)
        # the clock starts now: the server's start-up (import torch) is not the job's time, and
        # counting it made the first jobs time out before their adapter, and version, were loaded
        started = time.monotonic()
        log.debug("started %s (pid %s)", job.describe(), process.pid)
        return cls(index, job, process, receive, output, started, started + timeout, timeout, server)

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
        """Kill the worker and every process in its group (what the model or tool started)."""
        _kill_group(self.process.pid)
        if self.process.exitcode is None:
            self.process.kill()
        self.process.join()
        self._close()

    def _close(self) -> None:
        self.conn.close()
        if self.output >= 0:
            os.close(self.output)
            self.output = -1

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
                self.result = message[1]

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
        log.debug("%s: worker %s; its last output:\n%s", self.job.describe(), how, "\n".join(tail))
        message = f"worker {how} while {self.phase}, without a result"
        # a worker dies with its server (PR_SET_PDEATHSIG), and its exit code is then unknown (255:
        # the server reports it); the server may still be exiting when its pipe closes
        if self.server_died or (self.server and _dead(self.server, 1.0 if code == 255 else 0.0)):
            message = (f"the worker fork server died ({self.server_died or _exit_status(self.server)}) while "
                       f"{self.phase}, killed "
                       "by this job's model or from outside, and took the job's worker with it; the remaining "
                       "jobs run on a new server")
        elif self.phase == "starting the worker" and code:
            message += (" (it could not load the job: a script calling run_jobs must guard its entry "
                        "point with `if __name__ == '__main__':`)")
        return self._record(
            "failed",
            "WorkerDied",
            message,
            warnings=tuple(f"worker output: {line}" for line in tail),
        )

    def _record(self, status: str, error_type: str, message: str, warnings: tuple[str, ...] = ()) -> ToolRun:
        return bounded(ToolRun(
            tool=self.job.tool,
            version=self.version,
            status=status,
            warnings=warnings,
            error_type=error_type,
            error_message=message,
            attempted=f"{self.job.describe()} ({self.phase})",
            seconds=time.monotonic() - self.started,
        ))

    def _finish(self, run: ToolRun) -> ToolRun:
        # the worker is gone; what it started is not, unless its group is killed too
        _kill_group(self.process.pid)
        self._close()
        if not run.version and self.version:  # a failure record made before the adapter was asked
            run = replace(run, version=self.version)
        log.debug("%s: %s in %.1f s", self.job.describe(), run.status, time.monotonic() - self.started)
        return bounded(run)


def _unnamed_file() -> int:
    """A read-write file with no name (removed at once), so a caller killed by SIGKILL leaves no
    ``reconcile-job-*.log`` behind."""
    fd, path = tempfile.mkstemp(prefix="reconcile-job-", suffix=".log")
    os.unlink(path)
    return fd


def _kill_group(pgid: int | None) -> None:
    if not pgid:
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(fd: int) -> list[str]:
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - 16384)
        text = os.pread(fd, size - start, start).decode("utf-8", errors="replace")
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


# ----- worker side -------------------------------------------------------------------------


def _resolve(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _worker_main(job: Job, spec: str, builder: Any, conn: Any, output: int, threads: int, server: int) -> None:
    """Entry point of one worker: build, run, send one ("result", ToolRun) message."""
    started = time.perf_counter()
    _tie_to_server(server)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
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

        def attempt(device: str) -> ToolRun:
            enter(f"building model {job.model!r} on {device}")
            model, inputs = prepare(build(job.model, device), job.input_specs(), device, job.mode)
            enter(f"running {job.tool}" + (f" on {device}" if device != "cpu" else ""))
            return adapter.run(model, inputs)

        fallback = getattr(adapter, "fallback_device", None)
        if not getattr(adapter, "needs_model", True):
            enter(f"finding the inputs of {job.model!r}")
            run = adapter.probe(job.model)
        else:
            run = _on_shapes(adapter, job, device, attempt)
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
    try:
        try:
            conn.send(("result", bounded(run)))
        except Exception as exc:  # the record would not pickle (nothing was sent): say so instead
            conn.send(("result", ToolRun(
                tool=job.tool, version=version, status="failed", error_type=type(exc).__name__,
                error_message=_cut(f"the {run.status} result could not be sent back: {exc}"),
                attempted=f"{job.describe()} ({phase})", seconds=time.perf_counter() - started)))
    finally:
        conn.close()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stream must not spare the group
                pass
        # nothing the model or tool started outlives the job (this process included)
        os.killpg(0, signal.SIGKILL)


def _on_shapes(adapter: Any, job: Job, device: str, attempt: Callable[[str], ToolRun]) -> ToolRun | None:
    """The adapter's run on its ``shapes_device`` (meta) when it has one, the job names no device,
    and the run there is ``ok``; else None, and the job runs on ``device`` as it would without.

    Only for a tool whose numbers, warnings and notes read shapes alone: its run on meta is the
    run it makes on real tensors, field for field (``tests/test_shapes_device.py`` checks it on
    every zoo sample), without the cost of building real weights and running real kernels. A model
    that cannot run on meta (a forward that reads values) is simply counted on ``device``; nothing
    in the run differs, so nothing says so."""
    shapes = getattr(adapter, "shapes_device", None)
    if job.device is not None or not shapes or shapes == device:
        return None
    try:
        run = attempt(shapes)
    except Exception:  # noqa: BLE001 - any failure there is settled by the run on ``device``
        log.debug("%s on %s failed; run on %s", job.describe(), shapes, device, exc_info=True)
        return None
    return run if run.status == "ok" else None


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
