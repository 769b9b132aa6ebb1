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
    if address and name != "ray":
        raise ReconcileError("--ray-address needs --executor ray")
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ReconcileError("--executor ray needs Ray: pip install 'reconcile[ray]' "
                                 "(make setup installs it)") from None
    return name


def run(jobs: list["Job"], *, executor: str = "local", address: str | None = None, timeout: float = 300.0,
        workers: int = 2, build: Callable[[str, str], Any] | str | None = None,
        on_done: Callable[["Job", "ToolRun"], None] | None = None,
        on_start: Callable[["Job"], None] | None = None) -> list["ToolRun"]:
    """``runner.run_jobs`` on the chosen executor; the same arguments and the same results."""
    check_executor(executor, address)
    from reconcile import runner

    if executor == "local":
        return runner.run_jobs(jobs, timeout=timeout, workers=workers, build=build, on_done=on_done,
                               on_start=on_start)
    return run_on_ray(jobs, address=address, timeout=timeout, workers=workers, build=build,
                      on_done=on_done, on_start=on_start)


def _job_on_ray_worker(job: "Job", timeout: float, build: Any, threads: int) -> "ToolRun":
    """One Ray task: the local runner with one worker, inside the Ray worker process."""
    from reconcile import runner

    return runner.run_jobs([job], timeout=timeout, workers=1, build=build, threads=threads)[0]


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
    import ray

    with session("ray", address, workers):
        # torch threads per job: on the local instance this machine's CPUs shared by the workers, as
        # the local pool does; on a cluster, each task holds one CPU of its node
        threads = max(1, (os.cpu_count() or 1) // workers) if address is None else 1
        return _run_tasks(ray, jobs, timeout=timeout, threads=threads, build=build, on_done=on_done,
                          on_start=on_start)


def _run_tasks(ray: Any, jobs: list["Job"], *, timeout: float, threads: int, build: Any,
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
            done, pending = ray.wait(pending, num_returns=1)
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
    check_executor(executor, address)
    if executor != "ray":
        yield
        return
    import ray

    if ray.is_initialized():
        yield
        return
    if address is not None:
        _check_reachable(address)
    folder = tempfile.mkdtemp(prefix="reconcile-ray-", dir=_short_temp_dir()) if address is None else None
    try:
        try:
            _init(ray, address, workers, folder)
        except Exception as exc:  # noqa: BLE001 - Ray's own start-up or connection error, in one line
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ReconcileError(f"could not start or reach {where}: {text}"
                                 + ("; check the address (`ray status` on the head node)" if address else "")) from exc
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """A wrong address is a one-line error at once: Ray itself retries an unreachable head for
    minutes, printing its C++ client's warnings on the terminal meanwhile."""
    import socket

    text = address.removeprefix("ray://")
    if text == "auto" or ":" not in text:
        return  # "auto": Ray finds the cluster this machine started; Ray's own error otherwise
    host, _, port = text.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds):
            pass
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ReconcileError(f"could not reach the Ray cluster at {address!r}: {why}; check the address "
                             "(`ray status` on the head node prints it) or leave out --ray-address for a "
                             "local Ray instance") from None


def _short_temp_dir() -> str:
    """Where the local instance's session folder goes: the temporary folder, unless its path is so
    long that Ray's sockets under it would pass the 107 bytes a Unix socket path may have (about
    70 are Ray's own), then /tmp."""
    base = tempfile.gettempdir()
    if len(base) > 30 and os.access("/tmp", os.W_OK):
        return "/tmp"
    return base


def cluster_cpus() -> int:
    """CPUs of the Ray cluster this process is connected to (1 when it cannot tell)."""
    import ray

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
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     logging_level=logging.ERROR, _temp_dir=folder,
                     runtime_env={"env_vars": {"PYTHONPATH": path, "TMPDIR": tmp}})
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False, logging_level=logging.ERROR)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
