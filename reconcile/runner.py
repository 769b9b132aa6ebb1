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

A model's tools share one build (``share=True``, the default): their jobs go to one group worker
(``reconcile.model_group``) that builds the model once per device and runs each tool in a child
forked from it, with the same guarantees per child and the same ``ToolRun`` as a job alone; a
group that dies or hangs in a build hands its unsettled jobs back, to run alone.

This module schedules the jobs (``run_jobs``: the costliest units first, up to ``workers`` at a
time, a new fork server when one dies); the process bookkeeping is ``reconcile.processes`` (the
fork server, each job's worker process, orphans), what runs inside a worker ``reconcile.worker``,
a group of one model's jobs ``reconcile.model_group``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any, Callable

from reconcile import memory
from reconcile.config import check_timeout
from reconcile.errors import ReconcileError
# the fork server and each job's worker process (``shutdown``, ``private_inductor_cache``,
# ``one_command`` and ``serve_tools`` are this module's API too), and what runs inside a worker
# (``OUTPUT_LIMIT``: a ToolRun's warnings)
from reconcile.processes import (  # noqa: F401 - the callers' API, above
    _dead, _end_orphans, _exit_status, _forkserver_context, _Worker, one_command, private_inductor_cache, serve_tools,
    served_tools, shutdown,
)
from reconcile.model_group import _Group, share_key
from reconcile.records import ToolRun
from reconcile.worker import OUTPUT_LIMIT, bounded  # noqa: F401 - OUTPUT_LIMIT: the callers' API

log = logging.getLogger(__name__)

# pids of the workers running in this process, whichever thread's ``run_jobs`` started them: the
# fork server is shared, so one run's clean-up of the server's other children must spare them
# (changed and read under the lock)
_LIVE_WORKERS: set[int] = set()
_WORKERS_LOCK = threading.Lock()


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


def _makespan(costs: list[float], workers: int) -> float:
    """The time ``workers`` take over units of these costs, each next costliest unit to the worker
    free first (the order the runner starts them in)."""
    loads = [0.0] * workers
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return max(loads)


def _bonded(unit: list[int], jobs: list[Job]) -> list[list[int]]:
    """The jobs of a unit as a cut moves them, in the unit's order: each job alone, but jobs whose
    tools read views of one call (``Tool.shares``) together, where the first of them stands, so
    the group that runs them makes the call once (``adapters.base.keep``)."""
    from reconcile import tools

    known = tools.all_tools()
    items: list[list[int]] = []
    bonds: dict[tuple[str, str], list[int]] = {}
    for i in unit:
        tool = known.get(jobs[i].tool)
        # a pinned version makes its own call (its own folder's module): bonded with its own views only
        call = (tool.shares, tool.version) if tool is not None and tool.shares else None
        if call and call in bonds:
            bonds[call].append(i)
            continue
        items.append([i])
        if call:
            bonds[call] = items[-1]
    return items


def units(jobs: list[Job], workers: int, share: bool = True) -> list[tuple[int, ...]]:
    """The jobs as the runner starts them, the costliest first: each a job's index alone, or (with
    ``share``) the indices of jobs sharing a model build (``model_group.share_key``). While the
    workers would take more than a tenth longer than the work's lower bound (total / workers, or
    the costliest job), the costliest unit is cut in two halves of about equal cost, as long as that
    shortens the run: a run of one model keeps every worker busy, a small model is not left alone
    at the end beside an idle worker, and models of equal cost are not cut (each part builds the
    model once). Jobs that need no model (input probes) run alone."""
    from reconcile import tools

    if not jobs:
        return []
    groups: dict[Any, list[int]] = {}
    out: list[list[int]] = []
    for i, job in enumerate(jobs):
        if not share or job.tool == tools.PROBE:
            out.append([i])
        else:
            groups.setdefault(share_key(job), []).append(i)
    cost = lambda i: max(jobs[i].cost, 1e-9)  # noqa: E731 - jobs of no stated cost count as equal
    unit_cost = lambda unit: sum(cost(i) for i in unit)  # noqa: E731
    out += [sorted(members, key=lambda i: -cost(i)) for members in groups.values()]
    bound = max(sum(cost(i) for i in range(len(jobs))) / workers, max(cost(i) for i in range(len(jobs))))
    span = _makespan([unit_cost(u) for u in out], workers)
    while span > 1.1 * bound:
        big = max((u for u in out if len(u) > 1), key=unit_cost, default=None)
        if big is None:
            break
        halves: list[list[int]] = [[], []]
        for item in _bonded(big, jobs):  # each next costliest job (or bond) to the cheaper half so far
            min(halves, key=unit_cost).extend(item)
        trial = [u for u in out if u is not big] + halves
        shorter = _makespan([unit_cost(u) for u in trial], workers)
        if shorter >= span:
            break
        out, span = trial, shorter
    # each unit keeps its jobs costliest first (halving keeps the order it is given)
    return sorted((tuple(u) for u in out), key=lambda unit: (-unit_cost(unit), unit[0]))


def run_jobs(
    jobs: list[Job],
    *,
    timeout: float = 300.0,
    workers: int = 2,
    build: Callable[[str, str], Any] | str | None = None,
    on_done: Callable[[Job, ToolRun], None] | None = None,
    on_start: Callable[[Job], None] | None = None,
    threads: int | None = None,
    share: bool = True,
    memory_share: int | None = None,
    alone_share: int | None = None,
) -> list[ToolRun]:
    """Run every job in its own worker process, up to ``workers`` at a time; results in job order.

    ``build(model_name, device)`` makes a model from ``Job.model`` on the device the adapter asks
    for (``Adapter.device``): a module-level function or ``"module:function"``, called in the
    worker; default ``build_model``. ``timeout`` is per job, in seconds,
    counted from the worker's start (building the model included). ``on_start(job)`` and
    ``on_done(job, run)`` are called in this process as each job starts and settles (progress
    display). ``threads``: torch threads per job (default: this machine's CPUs shared by the
    ``workers``, and all of them for a job run again alone; a Ray task running one job passes its
    node's share). ``share``: a model's
    tools share one build (``reconcile.model_group``; the same ToolRuns); False: every job
    builds its own model in a worker of its own. ``memory_share``: bytes each worker may take
    (``reconcile.memory``; default: four fifths of the memory available now, shared by the ``workers``; 0: no
    limit); a job that needs more is recorded as ``OutOfMemory``, unless ``alone_share`` is larger:
    then, once every other job has settled, it runs again with no other worker beside it and that
    share (default: four fifths of the memory available then, when ``memory_share`` is the default
    and more than one worker runs; a model that fits the machine is counted, not only one that
    fits half of it)."""
    if workers < 1:
        raise ReconcileError(f"workers must be at least 1, got {workers}")
    check_timeout(timeout, "timeout")  # nan would spin the loop below, inf overflow its waits
    specs = [adapter_spec(job.tool) for job in jobs]
    if not jobs:
        return []
    builder = build if build is not None else f"{__name__}:build_model"
    # a job run again alone (below) has every CPU its workers had: the machine's, unless threads are given
    alone_threads = threads if threads is not None else max(1, os.cpu_count() or 1)
    threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)
    # a job out of memory runs again alone: with alone_share, or by default (the default share, more
    # than one worker) with four fifths of what is available once the others have settled
    again_alone = bool(alone_share) or (alone_share is None and memory_share is None and min(workers, len(jobs)) > 1)
    if memory_share is None:
        memory_share = memory.share(min(workers, len(jobs)))
    alone: dict[int, ToolRun] = {}  # jobs out of memory beside other workers (their runs): run again alone
    from reconcile import tools
    from reconcile.sources import preload_for

    also = served_tools()
    preload = (tools.preload([job.tool for job in jobs] + list(also or ()), every_default=also is None)
               + preload_for([job.model for job in jobs]))
    ctx, server = _forkserver_context(preload)

    results: list[ToolRun | None] = [None] * len(jobs)
    # a model's tools in groups sharing one build (reconcile.model_group), the costliest first
    pending = deque(units(jobs, workers, share))
    running: list[Any] = []

    # jobs of a group that died, held until the job it was running when it died (the likely cause:
    # a model that kills its process may kill the fork server when run alone) has settled, so that
    # they are not running beside it, on that server, when it does
    held: dict[int, list[tuple[int, ...]]] = {}

    def settle(index: int, run: ToolRun) -> None:
        pending.extendleft(reversed(held.pop(index, [])))
        if again_alone and run.error_type == "OutOfMemory":
            alone[index] = run  # settled below, once it has run alone
            return
        results[index] = run
        if on_done is not None:
            on_done(jobs[index], run)

    try:
        while pending or running:
            while pending and len(running) < workers:
                unit = pending.popleft()
                index = unit[0]
                for attempt in (1, 2):
                    if _dead(server):  # killed (by a job's model, or from outside): a new one for the rest
                        why = _exit_status(server)  # read before the new start reaps it
                        log.debug("the worker fork server (pid %s) died (%s): starting a new one", server, why)
                        for worker in running:
                            if worker.server == server and isinstance(worker, _Worker):
                                worker.server_died = why
                        ctx, server = _forkserver_context(preload)
                    try:
                        with _WORKERS_LOCK:  # no other thread's _end_orphans between the fork and the add
                            if len(unit) > 1:
                                worker = _Group.start(ctx, server, list(unit), jobs, specs, builder, threads, timeout,
                                                      memory_share)
                            else:
                                worker = _Worker.start(ctx, server, index, jobs[index], specs[index], builder,
                                                       threads, timeout, memory_share)
                            _LIVE_WORKERS.add(worker.process.pid)
                    except (EOFError, OSError) as exc:  # the server died while it forked this job's worker
                        # its socket closes as it exits, a moment before /proc shows it dead (seen
                        # under load: an EOFError from a server not yet a zombie)
                        if not _dead(server, 2.0):
                            raise
                        if attempt == 1:
                            continue
                        worker = None
                        for i in unit:
                            settle(i, bounded(ToolRun(
                                tool=jobs[i].tool, version="", status="failed", error_type="WorkerDied",
                                error_message=f"the worker fork server died ({_exit_status(server)}) twice while "
                                              f"starting this job's worker: {type(exc).__name__}",
                                attempted=f"{jobs[i].describe()} (starting the worker)")))
                    break
                if worker is not None:
                    running.append(worker)
                    if on_start is not None and isinstance(worker, _Worker):
                        on_start(jobs[index])
            if not running:
                continue
            waiting = [w.conn for w in running if not w.eof] + [w.process.sentinel for w in running]
            wait(waiting, timeout=max(0.0, min(w.deadline for w in running) - time.monotonic()))
            for worker in list(running):
                if isinstance(worker, _Group):
                    for kind, index, run in worker.poll():
                        if kind == "start":
                            if on_start is not None:
                                on_start(jobs[index])
                        else:
                            settle(index, run)
                    if not worker.finished:
                        continue
                    rest = [(i,) for i in worker.requeue if i != worker.suspect]
                    if worker.suspect is not None:
                        held[worker.suspect] = rest
                        pending.appendleft((worker.suspect,))
                    else:
                        pending.extendleft(reversed(rest))  # job by job, next
                else:
                    run = worker.poll()
                    if run is None:
                        continue
                    settle(worker.index, run)
                running.remove(worker)
                # what the job started in a session of its own is the server's now (a subreaper);
                # the workers of every thread's run_jobs are spared, not only this call's
                with _WORKERS_LOCK:
                    _LIVE_WORKERS.discard(worker.process.pid)
                    _end_orphans(worker.server, set(_LIVE_WORKERS))
    finally:
        for worker in running:  # only reached on an error or interrupt in this loop
            worker.kill()
        if running:
            with _WORKERS_LOCK:
                _LIVE_WORKERS.difference_update(w.process.pid for w in running)
                _end_orphans(server, set(_LIVE_WORKERS))
    if alone:
        again = alone_share or memory.share(1)
        if again > memory_share > 0:
            note = (f"ran out of memory beside another worker ({memory_share / memory.GIB:.1f} GiB each), so it "
                    f"ran again with no other worker beside it ({again / memory.GIB:.1f} GiB)")
            runs = run_jobs([jobs[i] for i in alone], timeout=timeout, workers=1, build=build,
                            threads=alone_threads, share=share, memory_share=again, alone_share=0)
            alone.update((index, replace(run, notes=(*run.notes, note))) for index, run in zip(alone, runs))
        for index, run in alone.items():
            results[index] = run
            if on_done is not None:
                on_done(jobs[index], run)
    done = [r for r in results if r is not None]
    assert len(done) == len(jobs), "every job settles before the loop ends"
    return done
