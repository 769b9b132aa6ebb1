"""Where the (model, tool) jobs run: this machine's fork-server pool (default) or a Ray cluster.

Guarantees of the Ray executor, the same as the local pool's (``reconcile.runner``):
- every job yields one ``ToolRun``, in the order of ``jobs``;
- a job is isolated exactly as locally: each Ray task runs ``runner.run_jobs([job])`` inside its
  Ray worker, so the job itself runs in a throwaway process forked from a fork server in that
  worker (torch imported once per Ray worker, which Ray reuses for later tasks); a job that
  crashes, hangs past ``timeout`` or runs out of memory is recorded ``failed`` / ``timeout``
  with its reason there, and the Ray task still returns normally;
- a task is retried only when its Ray worker process itself died (a lost node, Ray's memory
  monitor): the job never ran to a result then, so running it again cannot change one. A job's
  own failure is a result and is never retried (``retry_exceptions=False``);
- without ``address`` a local Ray instance is started for the run with ``workers`` CPUs and
  stopped after it (its processes and session folder go with it); with ``address`` the run
  joins that cluster and leaves it running;
- results do not depend on the executor: a ``ToolRun`` carries no host or executor detail that a
  report shows (timings are left out of reports).

Ray is an optional extra (``pip install reconcile[ray]``); asking for it without it installed is
a one-line error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterator

from reconcile.errors import ReconcileError

if TYPE_CHECKING:
    from reconcile.records import ToolRun
    from reconcile.runner import Job

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


def check_executor(name: str, address: str | None = None) -> str:
    if name not in EXECUTORS:
        raise ReconcileError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if address is not None and not address.strip():
        raise ReconcileError("--ray-address is empty: give the cluster's address (HOST:PORT or auto), or leave it "
                             "out for a local Ray instance")
    if address and name != "ray":
        raise ReconcileError("--ray-address needs --executor ray")
    if name == "ray":
        try:
            _import_ray()
        except ImportError:
            raise ReconcileError("--executor ray needs Ray: pip install 'reconcile[ray]' "
                                 "(make setup installs it)") from None
    return name


def _import_ray() -> Any:
    """``import ray``, without abseil's failure signal handler, which Ray otherwise installs in
    this process while ``ray.init`` runs (it reads this variable when it is imported): a SIGTERM
    then printed Ray's "*** SIGTERM received" stack dump on the terminal and aborted the process
    3 s later (exit -6) while the run was still stopping. A value the user set is kept."""
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    import ray

    return ray


def run(jobs: list["Job"], *, executor: str = "local", address: str | None = None, timeout: float = 300.0,
        workers: int = 2, build: Callable[[str, str], Any] | str | None = None,
        on_done: Callable[["Job", "ToolRun"], None] | None = None,
        on_start: Callable[["Job"], None] | None = None) -> list["ToolRun"]:
    """``runner.run_jobs`` on the chosen executor; the same arguments and the same results."""
    if executor != "ray":  # Ray's is checked inside its session, which puts back what importing it set
        check_executor(executor, address)
    from reconcile import runner

    if executor == "local":
        return runner.run_jobs(jobs, timeout=timeout, workers=workers, build=build, on_done=on_done,
                               on_start=on_start)
    return run_on_ray(jobs, address=address, timeout=timeout, workers=workers, build=build,
                      on_done=on_done, on_start=on_start)


def _job_on_ray_worker(job: "Job", timeout: float, build: Any, threads: int) -> "ToolRun":
    """One Ray task: the local runner with one worker, inside the Ray worker process. Its memory
    share is that of one of the tasks its node runs at once (one per CPU Ray gives the node: each
    task takes one), not the node's whole: a task alone would otherwise let each of them take four
    fifths of what the node has."""
    from reconcile import memory, runner

    return runner.run_jobs([job], timeout=timeout, workers=1, build=build, threads=threads,
                           memory_share=memory.share(_node_slots()))[0]


_SLOTS: int | None = None  # tasks this Ray worker's node runs at once, found once per worker


def _node_slots() -> int:
    """The CPUs Ray gives this task's node (each task takes one), or this machine's CPU count when
    Ray cannot say."""
    global _SLOTS
    if _SLOTS is None:
        try:
            ray = sys.modules["ray"]  # a Ray worker has it imported; anywhere else, never import (or start) it
            if not ray.is_initialized():
                raise LookupError("not in a Ray task")
            node = ray.get_runtime_context().get_node_id()
            _SLOTS = next(int(n["Resources"]["CPU"]) for n in ray.nodes() if n["NodeID"] == node)
        except Exception:  # noqa: BLE001 - not in a Ray task, or no CPU resource: the machine's count
            _SLOTS = os.cpu_count() or 1
    return max(1, _SLOTS)


def run_on_ray(jobs: list["Job"], *, address: str | None, timeout: float, workers: int,
               build: Callable[[str, str], Any] | str | None,
               on_done: Callable[["Job", "ToolRun"], None] | None,
               on_start: Callable[["Job"], None] | None) -> list["ToolRun"]:
    from reconcile import runner
    from reconcile.config import check_timeout

    if workers < 1:
        raise ReconcileError(f"workers must be at least 1, got {workers}")
    check_timeout(timeout, "timeout")
    for job in jobs:
        runner.adapter_spec(job.tool)  # an unknown tool is the caller's to fix; a pinned version is known
    if not jobs:
        return []

    with session("ray", address, workers):
        ray = _import_ray()
        # torch threads per job: on the local instance this machine's CPUs shared by the workers, as
        # the local pool does; on a cluster, each task holds one CPU of its node
        threads = max(1, (os.cpu_count() or 1) // workers) if address is None else 1
        return _run_tasks(ray, jobs, timeout=timeout, threads=threads, build=build, on_done=on_done,
                          on_start=on_start)


# Ray's errors for a task whose node, raylet or worker process died under it: the job never ran
# to a result, so running it again cannot change one (a job's own failure is a ToolRun, not these)
_LOST = ("LocalRayletDiedError", "NodeDiedError", "WorkerCrashedError", "ObjectLostError",
         "OwnerDiedError", "RaySystemError")
# how to start the local instance again, while ``session`` holds one it started (a stack: one
# session at a time in practice); empty on a cluster, where Ray retries on another node itself
_RESTARTS: list[Callable[[], None]] = []


def _run_tasks(ray: Any, jobs: list["Job"], *, timeout: float, threads: int, build: Any,
               on_done: Callable[["Job", "ToolRun"], None] | None,
               on_start: Callable[["Job"], None] | None) -> list["ToolRun"]:
    """Every job as a Ray task. A job lost with its raylet on the local instance (a single node:
    Ray has nowhere to retry it) is run once more on a new local instance, as on a cluster Ray
    retries a task whose node died (``max_retries=1``); lost twice, it is recorded with why."""
    lost: list[int] = []

    def settled(job: "Job", run: "ToolRun") -> None:
        if run.error_type in _LOST and _RESTARTS:
            lost.append(next(k for k, j in enumerate(jobs) if j is job))  # told once it has run again
            return
        if on_done is not None:
            on_done(job, run)

    results = list(_submit(ray, jobs, timeout=timeout, threads=threads, build=build, on_done=settled,
                           on_start=on_start))
    if lost:
        reasons = sorted({results[i].error_type for i in lost})
        log.info("%d job(s) lost with the local Ray instance's %s: starting a new instance to run them once "
                 "more", len(lost), ", ".join(reasons))
        _RESTARTS[-1]()
        again = _submit(_import_ray(), [jobs[i] for i in lost], timeout=timeout, threads=threads, build=build,
                        on_done=None, on_start=None)
        for i, run in zip(lost, again):
            if run.error_type in _LOST:
                run = replace(run, error_message=_cut(f"lost twice, run on a new local Ray instance after the first "
                                                      f"({results[i].error_type}): {run.error_message}"))
            results[i] = run
            if on_done is not None:
                on_done(jobs[i], run)
    return results


def _cut(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _submit(ray: Any, jobs: list["Job"], *, timeout: float, threads: int, build: Any,
            on_done: Callable[["Job", "ToolRun"], None] | None,
            on_start: Callable[["Job"], None] | None) -> list["ToolRun"]:
    refs: dict[Any, int] = {}
    try:
        task = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(_job_on_ray_worker)
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)  # longest first, as locally
        for i in order:
            refs[task.remote(jobs[i], timeout, build, threads)] = i
            if on_start is not None:
                on_start(jobs[i])
        results: list[ToolRun | None] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            with _signals_outside_ray():
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                i = refs[ref]
                results[i] = _result(ray, ref, jobs[i])
                if on_done is not None:
                    on_done(jobs[i], results[i])
    except BaseException:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass
        raise
    return [r for r in results if r is not None]


@contextlib.contextmanager
def _signals_outside_ray() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP arriving inside a Ray call are acted on (by this process's own
    handlers) once it returns. Ray runs Python's signal handlers from inside its C++ calls and
    turns what they raise into a plain ``KeyboardInterrupt``: a SIGHUP or SIGTERM then ended the
    run as Ctrl-C would (exit code 130), or crashed it."""
    import signal

    pending: list[int] = []
    saved = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            handler = signal.getsignal(sig)
            if handler not in (signal.SIG_IGN, None):
                saved[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    except ValueError:  # not the main thread: signals are not ours to hold
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in pending[:1]:
            signal.raise_signal(sig)


def _result(ray: Any, ref: Any, job: "Job") -> "ToolRun":
    """The task's ToolRun, or a failed record saying why Ray could not give one."""
    from reconcile.records import ToolRun

    started = time.monotonic()
    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - Ray's errors (worker died twice, OOM kill) become the record
        text = str(exc).strip().splitlines()
        reason = next((line for line in text if line.strip()), type(exc).__name__)
        return ToolRun(tool=job.tool, version="", status="failed", error_type=type(exc).__name__,
                       error_message=f"the Ray task failed: {reason}"[:500],
                       attempted=f"{job.describe()} (on Ray)", seconds=time.monotonic() - started)


@contextlib.contextmanager
def session(executor: str, address: str | None = None, workers: int = 2) -> Iterator[None]:
    """Keep one Ray connection for several ``run`` calls (a zoo runs model after model): a local
    instance is started once, with ``workers`` CPUs, and stopped with its session folder at the
    end; an existing connection (the caller's own ``ray.init``) is used as it is and left open.
    Nothing for the local executor."""
    if executor != "ray":
        check_executor(executor, address)
        yield
        return
    with _environment_kept(), _ray_errors_logged():
        check_executor(executor, address)  # imports Ray: see _import_ray
        ray = _import_ray()
        if ray.is_initialized():
            yield
            return
        with _session(ray, address, workers):
            yield


@contextlib.contextmanager
def _environment_kept() -> Iterator[None]:
    """The process's environment as it was before the session: Ray's import reads a variable
    this module sets (``_import_ray``), and ``ray.init`` sets ``PYTHONBREAKPOINT`` for good."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@contextlib.contextmanager
def _ray_errors_logged() -> Iterator[None]:
    """Ray's driver prints the errors the cluster pushes to it on this process's stdout from a
    thread of its own (``listen_error_messages``: a raylet killed mid-run printed about 44 lines of
    its log there, into ``tools --format json``'s output): while the session lasts they go to this
    module's log (debug) instead; the job that met the error records it as its own failure."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:  # another Ray layout: its own printing applies
        yield
        return
    printer = getattr(ray_worker, "print_to_stdstream", None)
    if printer is None:
        yield
        return

    def logged(data: dict, ignore_prefix: bool = False) -> None:
        for line in data.get("lines", ()):
            log.debug("ray (%s): %s", data.get("pid", "?"), line)

    ray_worker.print_to_stdstream = logged
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = printer


@contextlib.contextmanager
def _session(ray: Any, address: str | None, workers: int) -> Iterator[None]:
    """A new Ray connection: a local instance started (``address`` None) or a cluster joined."""
    if address is not None:
        _check_reachable(address)
    # mode 0700 (mkdtemp): Ray makes its own folders under it 0777, so this one keeps them private
    folder = tempfile.mkdtemp(prefix=_RAY_FOLDER, dir=_short_temp_dir()) if address is None else None
    watchdog = _Watchdog.start(folder) if folder is not None else None
    try:
        try:
            # a stop signal while Ray starts is acted on once it is up (raised inside Ray's start,
            # it left half-started threads that crashed the process at exit)
            with _signals_outside_ray(), _our_signal_handlers():
                _init(ray, address, workers, folder)
        except Exception as exc:  # noqa: BLE001 - Ray's own start-up or connection error, in one line
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ReconcileError(f"could not start or reach {where}: {text}"
                                 + ("; check the address (`ray status` on the head node)" if address else "")) from exc
        except BaseException:  # stopped by a signal while Ray started: what did start is stopped
            with contextlib.suppress(Exception), _our_signal_handlers():
                ray.shutdown()
            raise

        def restart() -> None:  # a lost raylet's jobs run once more on a new local instance
            with contextlib.suppress(Exception), _our_signal_handlers():
                ray.shutdown()
            with _signals_outside_ray(), _our_signal_handlers():
                _init(ray, None, workers, folder)

        if folder is not None:
            _RESTARTS.append(restart)
        try:
            yield
        finally:
            if folder is not None:
                _RESTARTS.remove(restart)
            with _our_signal_handlers():  # Ray's own handlers would print a dump on a second signal
                ray.shutdown()
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if watchdog is not None:  # it kills what Ray left of the local instance, if anything
            watchdog.stop()


# what a gRPC server (Ray's GCS, or its client server behind ray://) answers first: an HTTP/2
# SETTINGS frame. The client's preface and an empty SETTINGS frame of its own ask for it.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """A wrong address is a one-line error at once: Ray itself retries an unreachable head, or
    one that is not Ray (a web server on that port), for minutes, printing its C++ client's
    warnings on the terminal meanwhile. So the address must accept a connection and answer as
    a gRPC server does (Ray's head node is one) within ``seconds``."""
    import socket

    text = address.removeprefix("ray://")
    if text == "auto" or ":" not in text:
        return  # "auto": Ray finds the cluster this machine started; Ray's own error otherwise
    host, _, port = text.rpartition(":")
    what = ("check the address (`ray status` on the head node prints it) or leave out --ray-address for a "
            "local Ray instance")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds) as sock:
            sock.sendall(_HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except (OSError, ValueError) as exc:
        if isinstance(exc, TimeoutError) or isinstance(exc, socket.timeout):
            why = f"no answer within {seconds:g} s"
        else:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ReconcileError(f"could not reach the Ray cluster at {address!r}: {why}; {what}") from None
    if len(head) < 9 or head[3] != _SETTINGS:
        seen = head[:16].decode("ascii", errors="replace").split("\r")[0].strip() or "nothing"
        raise ReconcileError(f"{address!r} is not a Ray cluster: it answered {seen!r}, not as Ray's head node "
                             f"does; {what}")


# The longest path Ray puts under the folder it is given, after the folder itself: the plasma
# store's socket, "/ray/session_<date>_<time>_<microseconds>_<pid>/sockets/plasma_store", under
# our "/reconcile-ray-<8 characters>" (pids go to 4,194,304: 7 digits)
_RAY_FOLDER = "reconcile-ray-"  # our folder's prefix (mkdtemp adds 8 characters); Ray's folder is "ray" in it
_RAY_TAIL = len(f"/{_RAY_FOLDER}xxxxxxxx/ray/session_2026-12-05_12-14-43_881331_4194304/sockets/plasma_store")
_UNIX_PATH_MAX = 107  # bytes of a Unix socket's path (sun_path, 108 with its NUL)


def _short_temp_dir() -> str:
    """Where the local instance's session folder goes: the temporary folder, unless its path is so
    long that Ray's sockets under it would pass the 107 bytes a Unix socket path may have, then
    /tmp. (The limit was 30 characters of folder: a 20-character TMPDIR gave a 110-byte socket
    path and Ray's "AF_UNIX path length cannot exceed 107 bytes".)"""
    base = tempfile.gettempdir()
    if len(os.fsencode(base)) + _RAY_TAIL > _UNIX_PATH_MAX and os.access("/tmp", os.W_OK):
        return "/tmp"
    return base


@contextlib.contextmanager
def _our_signal_handlers() -> Iterator[None]:
    """Keep this process's SIGINT, SIGTERM and SIGHUP handlers across Ray's start and stop: the
    driver Ray starts installs its own (a SIGTERM then printed Ray's "*** SIGTERM received" dump and
    ended the command with exit code 1, not the documented 143)."""
    import signal

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {sig: signal.getsignal(sig) for sig in stops}
    # ray.init first sets its own SIGTERM handler (``sys.exit(15)``: a run stopped while Ray
    # started ended with exit code 15 and nothing said); it sets it through this function
    try:
        from ray._private import utils as ray_utils
    except ImportError:
        ray_utils = None
    setter = getattr(ray_utils, "set_sigterm_handler", None)
    if setter is not None:
        ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        if setter is not None:
            ray_utils.set_sigterm_handler = setter
        for sig, handler in saved.items():
            # None: set outside Python, nothing Python can put back; SIG_IGN now: a stop signal
            # came meanwhile and its handler ignores further ones while the run cleans up
            if handler is None or signal.getsignal(sig) is signal.SIG_IGN:
                continue
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread: the handlers were not ours to keep
                break


class _Watchdog:
    """A small process that outlives this one only to clean up after it: when this process ends
    without stopping it, even by SIGKILL (its pipe then reaches EOF), it kills every process of the
    local Ray instance and removes the folder. While the run lasts it notes, once a second, the
    processes that name the folder on their command line or in their environment (the GCS, the
    raylet, workers: ``RECONCILE_RAY_FOLDER`` is set while Ray starts, and the workers' TMPDIR is
    in it) and every child of those (Ray's agents, which rename their command lines and get an
    environment of Ray's making), each with its start time, so a pid used again is spared. Ray
    alone leaves its DashboardAgent and RuntimeEnvAgent running for minutes, even after a normal
    ``ray.shutdown()``, so the watchdog also acts when the session ends normally."""

    def __init__(self, process: Any, fd: int) -> None:
        self.process = process
        self.fd = fd

    @classmethod
    def start(cls, folder: str) -> "_Watchdog | None":
        import subprocess

        read, write = os.pipe()
        try:
            import multiprocessing

            # this process's own multiprocessing folder, if it has one: removed only if it dies
            own = multiprocessing.current_process()._config.get("tempdir") or ""
            process = subprocess.Popen([sys.executable, "-c", _WATCHDOG, folder, str(os.getpid()), own], stdin=read,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                                       start_new_session=True)  # a Ctrl-C at the terminal is not for it
        except OSError as exc:  # the run goes on; only a SIGKILL of it would leave Ray behind
            log.debug("no watchdog for the local Ray instance: %s", exc)
            os.close(write)
            return None
        finally:
            os.close(read)
        os.set_inheritable(write, False)
        return cls(process, write)

    def stop(self) -> None:
        """The session ended normally (Ray stopped, folder removed): the watchdog checks and exits."""
        os.close(self.fd)
        try:
            self.process.wait(10)
        except Exception:  # noqa: BLE001 - it is in its own session; it ends itself
            pass


_WATCHDOG = r"""
import os, select, shutil, signal, sys, time
folder = sys.argv[1].encode()
driver = int(sys.argv[2])
spare = {os.getpid(), driver}  # this process, and the one that started it
known = {}  # pid -> start time (a pid used again later is not ours)

def stat(pid):
    with open(f"/proc/{pid}/stat", "rb") as fh:
        text = fh.read().decode("ascii", "replace")
    return text[text.rindex(")") + 2:].split()  # state, ppid, ..., starttime is field 22

def scan():
    # ours: a process naming the folder, or a child of one of ours (Ray's agents rename their
    # command lines and get an environment of Ray's making)
    procs = {}
    for e in os.listdir("/proc"):
        if e.isdigit() and int(e) not in spare:
            try:
                procs[int(e)] = stat(e)
            except (OSError, ValueError, IndexError):
                pass
    for pid, fields in procs.items():
        if pid in known:
            continue
        named = False
        for name in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as fh:
                    named = named or folder in fh.read()
            except OSError:
                pass
        if named:
            known[pid] = fields[19]
    for _ in range(5):  # children of ours, generation by generation
        grown = {pid: f[19] for pid, f in procs.items() if pid not in known and int(f[1]) in known}
        if not grown:
            break
        known.update(grown)

while True:  # until EOF: the process that started this one closed its end, or died
    ready = select.select([0], [], [], 1.0)[0]
    scan()
    if ready and not os.read(0, 1):
        break

for _ in range(50):
    scan()
    alive = []
    for pid, start in known.items():
        try:
            fields = stat(pid)
        except (OSError, ValueError, IndexError):
            continue
        if fields[19] == start and fields[0] not in "ZX":
            alive.append(pid)
    if not alive:
        break
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.1)
shutil.rmtree(folder, ignore_errors=True)
if sys.argv[3] and os.path.basename(sys.argv[3]).startswith("pymp-"):
    try:
        gone = stat(driver)[0] in "ZX"
    except (OSError, ValueError, IndexError):
        gone = True
    if gone:  # killed: it could not remove its own multiprocessing folder
        shutil.rmtree(sys.argv[3], ignore_errors=True)
"""


def cluster_cpus() -> int:
    """CPUs of the Ray cluster this process is connected to (1 when it cannot tell)."""
    ray = _import_ray()

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _init(ray: Any, address: str | None, workers: int, folder: str | None) -> None:
    # Ray logs a warning about its token authentication on every local start: not the user's concern
    quiet = [logging.getLogger(n) for n in ("ray", "ray._private.authentication.authentication_token_setup")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        if address is None:
            # the job's code must import on the workers as it does here (user model modules, tests.*)
            path = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p and os.path.isdir(p))
            # Ray ends its workers with SIGKILL, and their children with them (each worker's fork
            # server included), so nothing of theirs can clean up: their temporary files (the fork
            # servers' pymp-* folders) go in this run's folder, removed when the session ends
            tmp = os.path.join(folder, "tmp")
            os.makedirs(tmp, exist_ok=True)
            os.environ["RECONCILE_RAY_FOLDER"] = folder  # for the watchdog: see _Watchdog
            env = {"PYTHONPATH": path, "TMPDIR": tmp}
            inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")
            if os.path.basename(os.path.dirname(inductor)).startswith("pymp-"):
                # reconcile's own (runner.private_inductor_cache), in this process's pymp-* folder:
                # a Ray worker importing torch would make that folder again after this process's
                # fork server removed it (a SIGKILL of reconcile), so the workers' goes in theirs
                env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tmp, "inductor")
            with _loopback_only():
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
                         logging_level=logging.ERROR, _temp_dir=os.path.join(folder, "ray"),
                         runtime_env={"env_vars": env})
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False, logging_level=logging.ERROR)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
        os.environ.pop("RECONCILE_RAY_FOLDER", None)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """While a local instance starts: its node address is 127.0.0.1, so that Ray's GCS, raylet,
    agents, workers and this driver listen on the loopback interface only (Ray binds its gRPC
    servers to 0.0.0.0 unless the node's address is 127.0.0.1). ``ray.init`` turns a
    ``_node_ip_address`` of 127.0.0.1 into the machine's own address, except where Ray runs
    single-machine only (its Windows and macOS default, ``ENABLE_RAY_CLUSTER`` false), which is
    what this asks for, in Ray's own module, only for the start."""
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: its defaults apply
        yield
        return
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if saved is None:
        log.debug("this Ray has no ENABLE_RAY_CLUSTER: its local instance may listen on every interface")
        yield
        return
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
