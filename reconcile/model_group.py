"""A model's tools sharing one build: a group worker builds the model once per device and runs
each tool in a child forked from it (``os.fork``), so the tools of one model pay for one build,
not one each, and still never see each other's changes (a fork's copy of the model is its own).

Building a timm or transformers model is often most of a job (timm's beit_base: 0.61 s of a
1.33 s thop job, here); the tool runs themselves are what they were: the same ``run_job`` as a
single job's worker (``reconcile.worker``), on the same model built by the same builder, and so
the same ``ToolRun`` field for field (``tests/test_model_group.py`` compares them).

The group worker:
- is started from the fork server like a job's worker, leads its own process group, dies with
  the server, and is a subreaper: what a tool's child started in a session of its own is killed
  when that child ends;
- builds with one torch thread: a fork after an OpenMP parallel region leaves the child's first
  parallel region waiting for threads that do not exist (measured here: a conv in a child hangs
  after the parent ran one on two threads, and runs when the parent ran it on one); each child
  sets the job's threads itself;
- sends ``("start", i)`` as job ``i`` begins (its build, if its device is new), ``("child", i)``
  once the child runs, the child's ``("phase", i, phase, version)`` and ``("result", i, run)``;
- keeps what a child's tool call returned when another tool of the group reads another view of
  the same call (the child's ``("keep", key, value)``: ``adapters.base.keep``), for the children
  forked after it: torchscan's two views make one ``summary`` call per model, not two;
- keeps each job's timeout for the child, counted from its fork, and kills the child's group on
  it; a child that dies without a result is recorded as a single job's worker is.

A build that fails is not kept: each tool's child builds again and records the failure as a
single worker does. The group worker itself dying (a model whose build kills its process) or
hanging in a build past the timeout ends the group: the parent (``_Group``) records the job that
was building as a timeout (a hang), and runs every job it has no result for as a single job.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Sequence

from reconcile import memory
from reconcile.adapters import base as adapters_base
from reconcile.processes import (
    _RESULT_GRACE, _end_orphans, _kill_group, _PassFd, _tail, _unnamed_file, died_message, next_message,
    start_process,
)
from reconcile.records import ToolRun
from reconcile.worker import _resolve, _tie_to_server, bounded, devices_of, ran_on, run_job, send_result

if TYPE_CHECKING:
    from reconcile.runner import Job

log = logging.getLogger(__name__)


def share_key(job: Job) -> tuple[Any, ...]:
    """Jobs with the same key build the same model and inputs: one build serves them all."""
    return (job.model, job.input_specs(), job.mode)


def _group_main(items: Sequence[tuple[int, Job, str]], builder: Any, conn: Any, output: int, threads: int,
                server: int, timeout: float, memory_share: int = 0) -> None:
    """Entry point of a group worker: each job's model from the shared builds, its tool in a child.
    The group worker and its children may take ``memory_share`` bytes more than it has at its
    start (``reconcile.memory``)."""
    _tie_to_server(server)
    memory.limit(memory_share)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    import faulthandler

    faulthandler.enable(file=sys.stderr, all_threads=True)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    try:
        import torch

        torch.set_num_threads(1)  # no OpenMP threads before a fork (see the module's docstring)
        from reconcile.models import prepare

        build = _resolve(builder) if isinstance(builder, str) else builder
        made: dict[str, Any] = {}  # device -> (model, inputs), or None where the build failed
        ran: set[str] = set()  # devices on which a tool of the group ran the model to its end (worker.ran_on)
        # a tool that may count on its shapes device once another ran the model for real: after them
        for index, job, spec in sorted(items, key=lambda item: _has_shapes_device(item[2])):
            conn.send(("start", index))
            try:
                devices = devices_of(job, spec, frozenset(ran))
            except Exception:  # noqa: BLE001 - the child loads the adapter itself and says why it cannot
                devices = ()
            for device in devices:
                if device not in made:
                    conn.send(("phase", index, f"building model {job.model!r} on {device}", ""))
                    try:
                        made[device] = prepare(build(job.model, device), job.input_specs(), device, job.mode)
                    except BaseException as exc:  # noqa: BLE001 - each child builds again, and records why it failed
                        # but a build that ran out of memory would again: each child records this one
                        # (without its frames, which hold what was built: freed before any fork)
                        made[device] = exc.with_traceback(None) if memory.failed_allocation(exc) else None
                        del exc
                        gc.collect()
            run = _in_child(index, job, spec, builder, threads, timeout, made, conn, frozenset(ran))
            where = ran_on(job, spec, run)
            if where is not None:
                ran.add(where)
            conn.send(("result", index, bounded(run)))
    finally:
        conn.close()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os.killpg(0, signal.SIGKILL)


def _has_shapes_device(spec: str) -> bool:
    try:
        return getattr(_resolve(spec), "shapes_device", None) is not None
    except Exception:  # noqa: BLE001 - the child loads the adapter itself and says why it cannot
        return False


def _in_child(index: int, job: Job, spec: str, builder: Any, threads: int, timeout: float,
              made: dict[str, Any], conn: Any, witnessed: frozenset[str]) -> ToolRun:
    """Run one job in a forked child, within ``timeout`` seconds; its ToolRun. ``witnessed``: the
    devices on which an earlier tool of the group ran the model to its end (``worker.run_job``)."""
    read, write = os.pipe()
    output = _unnamed_file()
    group = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                import ctypes

                ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # die with the group worker
            except (OSError, AttributeError):
                pass
            if os.getppid() != group:
                os._exit(1)
            os.close(read)
            conn.close()
            os.dup2(output, 1)
            os.dup2(output, 2)
            os.close(output)
            back = Connection(write, readable=False)
            # what a call of the tool returned that another tool of the group makes too (base.keep)
            adapters_base._SINK.append(lambda key, value: back.send(("keep", key, value)))
            run = run_job(job, spec, builder, threads, lambda phase, version: back.send(("phase", phase, version)),
                          built=made.get, witnessed=witnessed)
            send_result(back, run, job)  # ends this child and its group
        finally:
            os._exit(1)
    started = time.monotonic()
    os.close(write)
    reader = Connection(read, writable=False)
    phase, version = "starting the worker", ""
    result: ToolRun | None = None
    try:
        conn.send(("child", index))
        while True:
            left = started + timeout - time.monotonic()
            if left <= 0 or not reader.poll(left):
                _kill_group(pid)
                _reap(pid, 5.0)
                return _record(job, version, phase, "timeout", "Timeout",
                               f"no result after {timeout:g} s while {phase}; worker killed", started)
            try:
                message = reader.recv()
            except (EOFError, OSError):
                break
            if message[0] == "phase":
                _, phase, version = message
                conn.send(("phase", index, phase, version))
            elif message[0] == "keep":  # for the children forked after this one (base.kept)
                adapters_base._KEPT[message[1]] = message[2]
            else:
                result = message[1]
                break
        code = _reap(pid, _RESULT_GRACE if result is not None else 5.0)
        if result is not None:
            return replace(result, version=result.version or version)
        tail = _tail(output)
        return _record(job, version, phase, "failed", "WorkerDied", died_message(code, phase), started,
                       tuple(f"worker output: {line}" for line in tail))
    finally:
        reader.close()
        os.close(output)
        _kill_group(pid)
        _reap(pid, 0.0)
        _end_orphans(group, set())  # every child of this process now is one a tool's child left


def _reap(pid: int, wait: float) -> int | None:
    """The child's exit code (negative: the signal), killed if it has not exited after ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            _kill_group(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            except ChildProcessError:
                return None
        time.sleep(0.005)


def _record(job: Job, version: str, phase: str, status: str, error_type: str, message: str, started: float,
            warnings: tuple[str, ...] = ()) -> ToolRun:
    return bounded(ToolRun(tool=job.tool, version=version, status=status, warnings=warnings,
                           error_type=error_type, error_message=message,
                           attempted=f"{job.describe()} ({phase})", seconds=time.monotonic() - started))


@dataclass
class _Group:
    """The parent's side of a group worker: its jobs' starts and results as they come, a deadline
    per job, and, when the group worker ends early, the jobs it left (``requeue``) and, if it died,
    the one it was running (``suspect``)."""

    indices: list[int]
    jobs: dict[int, Job]
    process: Any
    conn: Any
    output: int
    started: float
    deadline: float
    timeout: float
    server: int = 0
    current: int = -1
    phase: str = "starting the worker"
    version: str = ""
    eof: bool = False
    finished: bool = False
    settled: set[int] = field(default_factory=set)
    requeue: list[int] = field(default_factory=list)
    # the job whose build or tool was running when the group worker died: what killed it, likely
    suspect: int | None = None

    @classmethod
    def start(cls, ctx: Any, server: int, indices: list[int], jobs: Sequence[Job], specs: Sequence[str],
              builder: Any, threads: int, timeout: float, memory_share: int = 0) -> "_Group":
        output = _unnamed_file()
        receive, send = ctx.Pipe(duplex=False)
        items = [(i, jobs[i], specs[i]) for i in indices]
        first = jobs[indices[0]]
        process = start_process(ctx, _group_main, (items, builder, send, _PassFd(output), threads, server, timeout,
                                                        memory_share),
                                f"reconcile:{first.model}:{len(indices)} tools", first.describe(), receive, send, output)
        started = time.monotonic()
        log.debug("started %d jobs on %s in one group (pid %s)", len(indices), first.model, process.pid)
        return cls(list(indices), {i: jobs[i] for i in indices}, process, receive, output, started,
                   started + timeout, timeout, server, current=indices[0])

    def poll(self) -> list[tuple[str, int, ToolRun | None]]:
        """What happened since the last call: ("start", i, None) and ("done", i, run) events."""
        events: list[tuple[str, int, ToolRun | None]] = []
        self._drain(events)
        if len(self.settled) == len(self.indices):
            self.process.join(_RESULT_GRACE)
            self._end()
        elif not self.process.is_alive():
            self.process.join()
            self._drain(events)
            self._end()
            if len(self.settled) < len(self.indices):  # it died: what is left runs job by job
                self.requeue = [i for i in self.indices if i not in self.settled]
                self.suspect = self.current if self.current in self.requeue else None
                log.debug("the group worker of %s died (exit code %s): %d jobs run alone",
                          self.jobs[self.indices[0]].model, self.process.exitcode, len(self.requeue))
        elif time.monotonic() >= self.deadline:  # a build (or the group itself) hung
            self._end()
            events.append(("done", self.current, bounded(ToolRun(
                tool=self.jobs[self.current].tool, version=self.version, status="timeout", error_type="Timeout",
                error_message=f"no result after {self.timeout:g} s while {self.phase}; worker killed",
                attempted=f"{self.jobs[self.current].describe()} ({self.phase})",
                seconds=time.monotonic() - self.started))))
            self.settled.add(self.current)
            self.requeue = [i for i in self.indices if i not in self.settled]
            log.debug("the group worker of %s hung while %s: %d jobs run alone",
                      self.jobs[self.current].model, self.phase, len(self.requeue))
        return events

    def kill(self) -> None:
        self._end()

    def _end(self) -> None:
        _kill_group(self.process.pid)
        if self.process.exitcode is None:
            self.process.kill()
        self.process.join()
        if not self.finished:
            self.conn.close()
            os.close(self.output)
        self.finished = True

    def _drain(self, events: list[tuple[str, int, ToolRun | None]]) -> None:
        while not self.eof and not self.finished:
            message, self.eof = next_message(self.conn)
            if message is None:
                return
            kind, index = message[0], message[1]
            now = time.monotonic()
            if kind == "start":
                self.current, self.phase, self.version = index, "starting the worker", ""
                self.started, self.deadline = now, now + self.timeout
                events.append(("start", index, None))
            elif kind == "child":  # the group worker keeps the child's timeout; this is its backstop
                self.started, self.deadline = now, now + self.timeout + _RESULT_GRACE
            elif kind == "phase":
                _, _, self.phase, self.version = message
            elif kind == "result":
                run = message[2]
                self.settled.add(index)
                events.append(("done", index, run))
