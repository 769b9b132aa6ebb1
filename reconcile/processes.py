"""The parent's side of the process bookkeeping of ``reconcile.runner``: the fork server (started
with the run's preloads and fds 1 and 2 on /dev/null, stopped by ``shutdown``), one ``_Worker``
per job (started from the server, polled for its phase and result, killed with its process group
on a result, a timeout or an interrupt), the processes a job left to the server (``_end_orphans``)
and a dead child's exit status read from /proc. ``run_jobs`` schedules jobs over these; what runs
inside a worker is ``reconcile.worker``.
"""

from __future__ import annotations

import contextlib
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
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator

from reconcile.records import ToolRun
from reconcile.worker import _worker_main, bounded

if TYPE_CHECKING:
    from reconcile.runner import Job

log = logging.getLogger(__name__)

# imported once by the forkserver, so no worker pays for them, with the modules each tool of the
# run preloads (``reconcile.tools.Tool.preload``, ``tools.preload``). Only ImportError is tolerated
# there (a tool that is not installed is skipped), so only modules whose import has no side
# effects belong here: importing the tools changes nothing until they are called.
# "__main__" keeps the caller's main module imported once in the server, not once per job.
# reconcile._server is the exception, first so that it acts before the slow imports: its import
# makes the server die with its caller and clean up after itself (it is imported only there).
# torchvision and pandas are not here: the sources and tools that use them preload them (a native
# count of a transformers model imported torchvision's 1.2 s for nothing).
PRELOAD = ("reconcile._server", "__main__", "torch", "numpy", "reconcile.runner")

# What a fork server preloads besides the run's own tools: None, the modules of every default tool,
# so that it serves this process's later runs of other tools as fast (the API's default); or, in a
# command (``reconcile.cli``, which stops the server as it ends, so nothing else runs on it), those of
# the command's tools (``serve_tools``): its first run, finding a model's inputs, runs no tool yet
_SERVED_TOOLS: list[tuple[str, ...] | None] = [None]


@contextlib.contextmanager
def one_command() -> Iterator[None]:
    """Within: a fork server started preloads the modules of the run's tools and the command's
    (``serve_tools``), not every default tool's."""
    _SERVED_TOOLS.append(())
    try:
        yield
    finally:
        _SERVED_TOOLS.pop()


def serve_tools(names: tuple[str, ...]) -> None:
    """The tools of the command being run (``one_command``): its fork server preloads their modules."""
    if _SERVED_TOOLS[-1] is not None:
        _SERVED_TOOLS[-1] = tuple(names)


def served_tools() -> tuple[str, ...] | None:
    """The tools whose modules a fork server started now preloads besides the run's: None for every
    default tool."""
    return _SERVED_TOOLS[-1]


_RESULT_GRACE = 5.0  # seconds a worker that sent its result gets to exit before it is killed
_OUTPUT_TAIL = 10  # lines of a dead worker's output kept in its ToolRun


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

@contextlib.contextmanager
def private_inductor_cache() -> Iterator[None]:
    """Importing torchvision makes torch's compile cache folder ($TMPDIR/torchinductor_<user>):
    while this is open, ``TORCHINDUCTOR_CACHE_DIR`` points into this process's own ``pymp-*``
    folder, removed with it at exit, so processes started meanwhile (the fork server and its
    workers) or torch imported here leave nothing behind. A cache the user chose with
    ``TORCHINDUCTOR_CACHE_DIR`` is left as it is.

    The folder is only named here (``_reserved_temp_dir``) and made just before the fork server
    starts (``_made_temp_dir``). Before its name is chosen, a watcher process is started that
    removes it once this process is gone (``_watch_folder``): a SIGKILL, which nothing in this
    process can answer, between the folder's mkdir and the server's start (whose clean-up covers
    a caller that died) left it behind. If torch, imported here, made it meanwhile, it is removed
    on the way out."""
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
            folder = os.path.join(tempfile.gettempdir(), name)
            _watch_folder(folder)  # before anything can make it
            config[_RESERVED] = folder
        return config[_RESERVED]


# sh reads its stdin, a pipe whose only writer is this process, until EOF: when this process has
# ended, however (its exit, a signal, SIGKILL). Then it removes the folder, a no-op if this process
# or the fork server (reconcile._server) already did. It ignores the signals a terminal sends to
# the whole process group, so a Ctrl-C that stops the command does not stop its clean-up.
_WATCH_SCRIPT = "trap '' HUP INT TERM; while read -r _; do :; done; exec rm -rf -- \"$1\""
_WATCHED: list[int] = []  # the pipes' write ends, open for this process's lifetime


def _watch_folder(folder: str) -> None:
    """Start a watcher (``sh``, spawned in a millisecond) that removes ``folder`` once this
    process is gone. Where it cannot be started, the folder is cleaned up as before: by this
    process at its exit, or by its fork server if it was killed."""
    try:
        read, write = os.pipe()  # both ends close-on-exec: only this process holds the write end
    except OSError:
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.posix_spawn("/bin/sh", ["sh", "-c", _WATCH_SCRIPT, "reconcile-tempdir-watcher", folder],
                           dict(os.environ), file_actions=[(os.POSIX_SPAWN_DUP2, read, 0),
                                                           (os.POSIX_SPAWN_DUP2, null, 1),
                                                           (os.POSIX_SPAWN_DUP2, null, 2)])
        finally:
            os.close(null)
    except (OSError, AttributeError):  # no /bin/sh, or no posix_spawn (not POSIX)
        os.close(write)
        return
    finally:
        os.close(read)
    _WATCHED.append(write)


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
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    with _FDS_LOCK:  # one thread at a time: two interleaved saves left fd 1 on /dev/null for good
        return _start_server(ctx, extra)


_FDS_LOCK = threading.Lock()


# glibc's malloc (2.35 and later) asks for transparent huge pages for what it maps, where the kernel
# gives them on request (/sys/kernel/mm/transparent_hugepage/enabled: "madvise", as here, or
# "always"). Every job is a fork of a process holding torch (about 450 MB of private memory) that
# writes into fresh memory as its tool runs a forward: with 2 MB pages a job takes half the page
# faults. Measured here, `reconcile zoo` on 8 timm models x 15 tools, best of 4 each way
# (`benchmarks/bench.py --only pages`): 1.62 M page faults against 3.17 M, 38.1 against 40.0 CPU-s
# (0.95x). Allocation only: no count, shape or tensor value changes. A tunable the caller set is
# kept, after ours, and wins (glibc takes the last setting of a name).
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def server_tunables(caller: str | None) -> str:
    """GLIBC_TUNABLES for the fork server: ``HUGE_PAGES`` before the caller's own, if any."""
    return f"{HUGE_PAGES}:{caller}" if caller else HUGE_PAGES


def _start_server(ctx: Any, extra: tuple[str, ...]) -> tuple[Any, int]:
    """The fork server started with fds 1 and 2 on /dev/null (see ``_forkserver_context``)."""
    from multiprocessing import forkserver, resource_tracker

    saved: list[int] = []
    null = os.open(os.devnull, os.O_WRONLY)
    # the server's environment, and so its workers' (each variable is as it was again before this
    # returns): RECONCILE_CALLER is read by reconcile._server in the server; GLIBC_TUNABLES gets
    # server_tunables()
    server_env = {"RECONCILE_CALLER": f"{os.getpid()},{int(threading.current_thread() is threading.main_thread())}",
                  "GLIBC_TUNABLES": server_tunables(os.environ.get("GLIBC_TUNABLES"))}
    previous = {name: os.environ.get(name) for name in server_env}
    with private_inductor_cache():  # the server's, and so its workers'
        try:
            os.environ.update(server_env)
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
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
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


def start_process(ctx: Any, target: Any, args: tuple[Any, ...], name: str, what: str, receive: Any, send: Any,
                  output: int) -> Any:
    """Start ``target(*args)`` as a daemon process forked by the fork server; ``send`` (the write
    end the process holds) is closed here, and on a failure ``receive`` and ``output`` too."""
    process = ctx.Process(target=target, args=args, name=name, daemon=True)
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
            log.debug("while starting %s: %s", what, caught_warning.message)
        else:  # anything else (another thread's, say) is shown as it would have been
            warnings.warn_explicit(caught_warning.message, caught_warning.category,
                                   caught_warning.filename, caught_warning.lineno)
    return process


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
              timeout: float, memory_share: int = 0) -> "_Worker":
        output = _unnamed_file()
        receive, send = ctx.Pipe(duplex=False)
        process = start_process(ctx, _worker_main, (job, spec, builder, send, _PassFd(output), threads, server,
                                                         memory_share),
                                f"reconcile:{job.tool}:{job.model}", job.describe(), receive, send, output)
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
            message, self.eof = next_message(self.conn)
            if message is None:
                return
            if message[0] == "phase":
                _, self.phase, self.version = message
            elif message[0] == "result":
                self.result = message[1]

    def _died(self) -> ToolRun:
        code = self.process.exitcode
        tail = _tail(self.output)
        message = died_message(code, self.phase)
        log.debug("%s: %s; its last output:\n%s", self.job.describe(), message, "\n".join(tail))
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


def next_message(conn: Any) -> tuple[Any, bool]:
    """The next message waiting on a worker's pipe without blocking (None if there is none yet),
    and whether the pipe has ended (then None)."""
    try:
        if not conn.poll():
            return None, False
        return conn.recv(), False
    except (EOFError, OSError):
        return None, True


def died_message(code: int | None, phase: str) -> str:
    """How a worker (or a tool's child in a ``reconcile.model_group``) that ended without a result
    is described, from its exit code (negative: the signal that killed it)."""
    if code is not None and code < 0:
        try:
            how = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    return f"worker {how} while {phase}, without a result"


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
