"""A model's tools sharing one build (``reconcile.model_group``): the same records as when each
job builds its own model, and every fault recorded as a single job's worker records it.

The comparisons run each job list twice, ``share=True`` and ``share=False``, and compare the
records field for field but ``seconds`` (and ``attempted``'s phase where a fault is timed).
"""

from __future__ import annotations

import dataclasses
import time
from multiprocessing import forkserver

import pytest

from reconcile import runner, tools
from reconcile.inputs import InputSpec
from reconcile.runner import Job, run_jobs, units
from tests.fault_models import GOOD_MACS, new_session_sleepers, server_killer, SHAPE


def _same(a, b) -> dict:
    """The fields in which two records differ, ``seconds`` aside."""
    return {f.name: (getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
            if f.name != "seconds" and f.compare and getattr(a, f.name) != getattr(b, f.name)}


def _both(jobs: list[Job], **kwargs):
    # one memory share for both runs: by default each run takes its share of the memory available
    # as it starts, which moves, and an OutOfMemory record (alloc_too_much) says its share
    kwargs.setdefault("memory_share", 8 << 30)
    return run_jobs(jobs, share=True, **kwargs), run_jobs(jobs, share=False, **kwargs)


# ----- which jobs share a build -------------------------------------------------------------


def _jobs(models: str, per_model: int, cost: float = 1.0) -> list[Job]:
    return [Job(m, f"t{k}", SHAPE, cost=cost) for m in models for k in range(per_model)]


def test_one_worker_gets_each_model_whole():
    # 2 models x 3 tools of cost 1, 1 worker: the bound is 6 / 1 = 6 and the run takes 6: nothing cut
    assert units(_jobs("ab", 3), workers=1) == [(0, 1, 2), (3, 4, 5)]
    # 2 workers: bound 6 / 2 = 3, one model each takes 3: nothing cut (a cut costs a build)
    assert units(_jobs("ab", 3), workers=2) == [(0, 1, 2), (3, 4, 5)]


def test_a_model_bigger_than_a_workers_share_is_split():
    # model a: 3 tools, b: 1, 2 workers: bound 4 / 2 = 2, whole they take 3 > 2.2: a cut in halves,
    # each next job to the cheaper half: (0, 2) and (1,); then 2 and 1 + 1 take 2: done. The
    # costlier units first, equal ones in the given order
    assert units(_jobs("a", 3) + _jobs("b", 1), workers=2) == [(0, 2), (1,), (3,)]
    # 1 model x 4 tools on 2 workers: bound 2, whole 4: halves (0, 2) and (1, 3) take 2
    assert units(_jobs("a", 4), workers=2) == [(0, 2), (1, 3)]
    # costs 8, 1, 1, 1 (total 11): the bound is the 8 itself; whole 11, halves (0,) and (1, 2, 3)
    # take 8
    jobs = [Job("a", "t0", SHAPE, cost=8)] + _jobs("a", 3)
    assert units(jobs, workers=2) == [(0,), (1, 2, 3)]


def test_a_small_model_is_not_left_alone_at_the_end():
    # a: 6 tools (0-5), b: 2 tools (6, 7), all of cost 1, 2 workers: bound 8 / 2 = 4.
    # whole: 6 and 2 take 6 > 4.4: a in halves (0, 2, 4) and (1, 3, 5); 3 + 2 and 3 take 5 (shorter):
    # kept. 5 > 4.4: the costliest unit, (0, 2, 4), in halves (0, 4) and (2,); 3, 2, 2, 1 take 4:
    # kept, and 4 <= 4.4: done. Cut by a worker's share alone (round(6 / 4) = 2 parts, b whole),
    # the run took 5: b alone at the end on one worker while the other waited
    assert units(_jobs("ab", 6)[:6] + _jobs("b", 2), workers=2) == [(1, 3, 5), (0, 4), (6, 7), (2,)]


def test_no_jobs_are_no_units():
    assert units([], workers=2) == []


def test_without_share_or_for_input_probes_every_job_is_alone():
    assert units(_jobs("ab", 2), workers=1, share=False) == [(0,), (1,), (2,), (3,)]
    jobs = [Job("a", tools.PROBE, SHAPE), Job("a", tools.PROBE, SHAPE), Job("a", "thop", SHAPE)]
    assert units(jobs, workers=1) == [(0,), (1,), (2,)]


def test_other_inputs_or_modes_are_other_builds():
    jobs = [Job("a", "t0", SHAPE), Job("a", "t1", (2, 3, 8, 8)), Job("a", "t2", SHAPE, mode="train"),
            Job("a", "t3", SHAPE)]
    assert units(jobs, workers=1) == [(0, 3), (1,), (2,)]


# ----- the same records, on real models -----------------------------------------------------

_CHEAP = ("native", "thop", "ptflops", "torchinfo", "fvcore", "flopcountermode")
_MODELS = [
    ("resnet18", (InputSpec((1, 3, 64, 64)),)),
    ("timm:convnext_atto", (InputSpec((1, 3, 64, 64)),)),
    ("hf:DistilBertModel:n_layers=1", (InputSpec((1, 16), "long", 1000),)),
]


@pytest.fixture(scope="module")
def real_runs():
    jobs = [Job(model, tool, inputs=inputs) for model, inputs in _MODELS for tool in _CHEAP]
    return jobs, _both(jobs, workers=2, timeout=600)


def test_shared_builds_give_the_same_records(real_runs):
    jobs, (shared, alone) = real_runs
    for job, a, b in zip(jobs, shared, alone):
        assert a.status == "ok", (job, a.error_message)
        assert not _same(a, b), (job.describe(), _same(a, b))


# ----- faults in a group: each recorded as when alone ---------------------------------------


def _fault_jobs(model: str, tools_: tuple[str, ...] = ("thop", "ptflops", "native")) -> list[Job]:
    return [Job(model, tool, SHAPE) for tool in tools_]


def _assert_recorded_alike(shared, alone, jobs):
    for job, a, b in zip(jobs, shared, alone):
        assert (a.status, a.error_type) == (b.status, b.error_type), (job.describe(), a.error_message)
        assert a.error_message == b.error_message, job.describe()
        assert a.headline == b.headline, job.describe()


@pytest.mark.parametrize("model", ["segfault", "abort", "exit", "sys_exit", "alloc_too_much"])
def test_a_tool_that_crashes_in_a_group_is_recorded_as_alone(model):
    jobs = _fault_jobs(f"tests.fault_models:{model}")
    shared, alone = _both(jobs, workers=1, timeout=120)
    _assert_recorded_alike(shared, alone, jobs)
    assert shared[0].status == "failed" and shared[2].status == "ok"  # native counts it on meta
    assert shared[2].headline["macs"] == GOOD_MACS


def test_what_a_tool_does_to_torch_stays_in_its_child():
    # the model sets float64 as default, one thread, a seed and patches Conv2d.forward and F.relu in
    # every process that runs it: each later tool of the group is forked from the group worker, which
    # never ran it, and records what it records alone. Its forward does so on real tensors only (it
    # reads its input's device), so a tool counted on meta would not see it: pthflops, tried on meta
    # once ptflops and torchinfo ran the model on CPU, cannot trace a forward that branches on a
    # traced value and fails alike on both devices. thop, whose hooks see the eager forward, would
    # count 3,888 on meta against its CPU run's 27 (Conv2d.forward patched to return one zero:
    # 1 output x 3 x 9), which is why thop is not tried on meta (tests/test_shapes_device.py)
    jobs = _fault_jobs("tests.fault_models:changes_global_torch_state",
                       ("thop", "ptflops", "torchinfo", "native", "pthflops"))
    shared, alone = _both(jobs, workers=1, timeout=120)
    _assert_recorded_alike(shared, alone, jobs)
    assert shared[3].headline["macs"] == GOOD_MACS
    assert alone[0].headline["macs"] == 1 * 3 * 9  # thop on CPU: the patched conv's one output
    assert shared[4].status == alone[4].status == "failed"


def test_a_hanging_tool_in_a_group_times_out_and_the_others_finish():
    jobs = _fault_jobs("tests.fault_models:spawn_child_and_hang", ("thop", "native"))
    started = time.monotonic()
    shared = run_jobs(jobs, workers=1, timeout=8)
    assert time.monotonic() - started < 8 + 20  # one timeout, not the group's whole
    assert shared[0].status == "timeout" and shared[0].error_type == "Timeout"
    assert shared[0].error_message.startswith("no result after 8 s while "), shared[0].error_message
    assert shared[1].status == "ok" and shared[1].headline["macs"] == GOOD_MACS


@pytest.mark.parametrize("model", ["tests.fault_models_group:build_raises", "tests.fault_models_group:build_exits"])
def test_a_build_that_fails_in_the_group_worker_is_recorded_as_alone(model):
    # build_raises: the group worker keeps no model, each tool's child builds again and records the
    # error; build_exits: the group worker dies building, every job then runs alone (and dies alike)
    jobs = _fault_jobs(model)
    shared, alone = _both(jobs, workers=1, timeout=120)
    _assert_recorded_alike(shared, alone, jobs)
    assert all(r.status == "failed" for r in shared)


def test_a_model_that_kills_its_worker_in_a_group_is_recorded_as_alone():
    # the tool's child kills its parent: in a group that is the group worker, whose jobs then run
    # alone, where the same model kills the fork server, as it does with share=False
    jobs = _fault_jobs("tests.fault_models:kills_server", ("thop", "ptflops"))
    shared, alone = _both(jobs, workers=1, timeout=120)
    _assert_recorded_alike(shared, alone, jobs)
    assert "the worker fork server died (killed by signal SIGKILL) while running thop" in shared[0].error_message


def test_a_fork_server_killed_while_a_group_runs_loses_nothing():
    kill_server, killed = server_killer()

    jobs = _fault_jobs("tests.fault_models:good", ("thop", "ptflops"))
    runs = run_jobs(jobs, workers=1, timeout=120, on_start=kill_server)
    assert killed
    for run in runs:  # the group died with its server; its jobs ran again, alone, on a new one
        assert run.status == "ok", run.error_message
        assert run.headline["macs"] == GOOD_MACS


def test_what_a_tool_starts_in_a_new_session_ends_with_its_child():
    before = new_session_sleepers()
    runs = run_jobs(_fault_jobs("tests.fault_models:child_in_new_session", ("thop", "ptflops")), workers=1,
                    timeout=120)
    assert all(r.status == "ok" for r in runs), [r.error_message for r in runs]
    deadline = time.monotonic() + 5
    while new_session_sleepers() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not new_session_sleepers() - before
    assert forkserver._forkserver._forkserver_pid is not None
    runner.shutdown()


def test_the_jobs_of_a_dead_group_wait_for_the_one_it_was_running():
    # thop's child kills its parent, the group worker; run alone, thop kills the fork server, and
    # native, started beside it, would die with that server (seen in CI: the model "could not be
    # counted"). native waits until thop has settled, then counts on a new server
    # 3 jobs on 2 workers: bound 3 / 2 = 1.5; kills_server's 2 and good's 1 take 2, and its halves
    # would take 2 as well (1 + 1 and 1): not cut, one group (of one model alone, its two jobs would
    # be cut into two parts and run alone from the start);
    # good's native, quick, leaves its worker free for the group's jobs run alone
    jobs = _fault_jobs("tests.fault_models:kills_server", ("thop", "native")) + \
        _fault_jobs("tests.fault_models:good", ("native",))
    assert units(jobs, workers=2) == [(0, 1), (2,)]
    events: list[str] = []
    thop, native = run_jobs(jobs, workers=2, timeout=120,
                            on_start=lambda job: events.append(f"start {job.model[-4:]} {job.tool}"),
                            on_done=lambda job, run: events.append(f"done {job.model[-4:]} {job.tool}"))[:2]
    # native (started in the group, or again alone) only after thop settled: nothing beside it
    last_start = len(events) - 1 - events[::-1].index("start rver native") if "start rver native" in events else -1
    assert events.index("done rver thop") < last_start, events
    assert thop.status == "failed" and "the worker fork server died" in thop.error_message, thop.error_message
    assert native.status == "ok", native.error_message
    assert native.headline["macs"] == GOOD_MACS
