"""A worker's memory share (``reconcile.memory``): a model that needs more than a worker may take
fails as ``OutOfMemory`` with the share in its message, on the single-job path and in a group
(where the build that ran out is not tried again by every tool), while native still counts it on
meta; nothing else on the machine is asked for the memory."""

from __future__ import annotations

import os
import tempfile

import pytest
from torch import nn

from reconcile import memory
from reconcile.records import ToolRun
from reconcile.runner import Job, run_jobs

GIB = 1 << 30
# Linear 16384 -> 32768, no bias: 536,870,912 float32 weights = 2 GiB, one tensor
IN, OUT = 16384, 32768


def _builds_log() -> str:
    return os.path.join(tempfile.gettempdir(), "reconcile-memory-builds.log")


def big_linear() -> nn.Module:
    with open(_builds_log(), "a") as fh:  # one line per build attempt, on the device being built on
        fh.write("build\n")
    return nn.Linear(IN, OUT, bias=False)


big_linear.example_input_shape = (1, IN)  # type: ignore[attr-defined]


def _threads_log() -> str:
    return os.path.join(tempfile.gettempdir(), "reconcile-memory-threads.log")


def mid_linear() -> nn.Module:  # 8192 x 32768 float32 weights: 1 GiB
    import torch

    with open(_threads_log(), "a") as fh:  # the torch threads of each build (a worker sets its job's first)
        fh.write(f"{torch.get_num_threads()}\n")
    return nn.Linear(IN // 2, OUT, bias=False)


mid_linear.example_input_shape = (1, IN // 2)  # type: ignore[attr-defined]


def small_linear() -> nn.Module:
    return nn.Linear(8, 4)


small_linear.example_input_shape = (1, 8)  # type: ignore[attr-defined]


@pytest.mark.parametrize("share", [True, False])
def test_a_model_larger_than_the_share_is_out_of_memory_and_still_counted_on_meta(share):
    path = _builds_log()
    if os.path.exists(path):
        os.remove(path)
    name = f"{__name__}:big_linear"
    jobs = [Job(name, "native", input_shape=(1, IN), device="meta"), Job(name, "thop", input_shape=(1, IN)),
            Job(name, "torchinfo", input_shape=(1, IN))]
    native, thop, torchinfo = run_jobs(jobs, workers=1, memory_share=GIB, share=share)
    # on meta nothing is allocated: 1 x 16384 x 32768 = 536,870,912 MACs, as many parameters
    assert native.status == "ok", native.error_message
    assert (native.headline["macs"], native.headline["params"]) == (IN * OUT, IN * OUT)
    for run in (thop, torchinfo):
        assert (run.status, run.error_type) == ("failed", "OutOfMemory"), run
        assert run.error_message.startswith("needs more memory than a worker may take here (1.0 GiB"), run.error_message
        # torch's own words follow: the 2 GiB tensor it could not allocate
        assert f"you tried to allocate {IN * OUT * 4} bytes" in run.error_message, run.error_message
    with open(path) as fh:
        attempts = fh.read().count("build")
    os.remove(path)
    # meta: one build. CPU: in a group one build, whose failure each tool's child records; alone,
    # each tool's worker tries its own
    assert attempts == (2 if share else 3)


@pytest.mark.parametrize("share", [True, False])
def test_a_tool_tried_on_meta_first_runs_out_of_memory_as_its_users_would(share):
    # pthflops counts shapes alone and is tried on meta first (Adapter.shapes_device), where
    # big_linear's 2 GiB of weights take nothing; its users build the model on CPU, and there it
    # runs out of the 1 GiB share as thop does. Beside thop's failed run (a group) or alone, no tool
    # of the group ran the model on CPU to its end, so pthflops runs there and fails the same way
    name = f"{__name__}:big_linear"
    thop, pthflops = run_jobs([Job(name, "thop", input_shape=(1, IN)), Job(name, "pthflops", input_shape=(1, IN))],
                              workers=1, memory_share=GIB, share=share)
    for run in (thop, pthflops):
        assert (run.status, run.error_type) == ("failed", "OutOfMemory"), run
        assert f"you tried to allocate {IN * OUT * 4} bytes" in run.error_message, run.error_message


def test_a_model_within_the_share_runs():
    name = f"{__name__}:small_linear"
    (run,) = run_jobs([Job(name, "thop", input_shape=(1, 8))], workers=1, memory_share=GIB)
    # thop: 8 x 4 = 32 MACs (bias not counted by thop 0.1.1)
    assert run.status == "ok" and run.headline["macs"] == 32, run


def test_available_reads_meminfo_and_a_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n")
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    assert memory.available(str(meminfo), str(cgroup)) == 20000000 * 1024  # no cgroup files: the machine's
    (cgroup / "memory.max").write_text("max\n")
    assert memory.available(str(meminfo), str(cgroup)) == 20000000 * 1024
    # a container limited to 8 GiB that uses 3 GiB: 5 GiB left, less than the machine's
    (cgroup / "memory.max").write_text(f"{8 * GIB}\n")
    (cgroup / "memory.current").write_text(f"{3 * GIB}\n")
    assert memory.available(str(meminfo), str(cgroup)) == 5 * GIB
    assert memory.available(str(tmp_path / "none"), str(tmp_path / "none")) == 0  # unknown: not limited


def test_the_workers_share_four_fifths_of_what_is_available(monkeypatch):
    # 20 GiB available: 16 GiB for the workers, 8 GiB each of two, 16/3 GiB each of three; nothing
    # known, nothing limited
    monkeypatch.setattr(memory, "available", lambda: 20 * GIB)
    assert (memory.share(1), memory.share(2), memory.share(3), memory.share(0)) == (
        16 * GIB, 8 * GIB, 16 * GIB // 3, 16 * GIB)
    monkeypatch.setattr(memory, "available", lambda: 0)
    assert memory.share(2) == 0


def test_explain_marks_only_a_failed_allocation_in_a_limited_worker(monkeypatch):
    failed = ToolRun(tool="thop", version="", status="failed", error_type="RuntimeError",
                     error_message="[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                                   "allocate memory: you tried to allocate 8 bytes.")
    other = ToolRun(tool="thop", version="", status="failed", error_type="RuntimeError", error_message="shapes")
    monkeypatch.setattr(memory, "_share", 0)
    assert memory.explain(failed) is failed  # not limited: the tool's words as they were
    monkeypatch.setattr(memory, "_share", 3 * GIB // 2)
    marked = memory.explain(failed)
    assert marked.error_type == "OutOfMemory"
    assert marked.error_message == ("needs more memory than a worker may take here (1.5 GiB: four fifths of the "
                                    "memory available when the run started, shared by the workers running at once); "
                                    "can't allocate memory: you tried to allocate 8 bytes.")
    assert memory.explain(other) is other
    assert memory.explain(marked) is marked
    # Python's own MemoryError has no words; one with words is a model's or a tool's, left as it is
    bare = ToolRun(tool="thop", version="", status="failed", error_type="MemoryError", error_message="MemoryError()")
    assert memory.explain(bare).error_type == "OutOfMemory"
    said = ToolRun(tool="thop", version="", status="failed", error_type="MemoryError",
                   error_message="simulated: cannot allocate the model")
    assert memory.explain(said) is said


def test_a_ray_task_takes_the_share_of_one_of_its_nodes_tasks(monkeypatch):
    # a Ray task runs one job with one local worker; its node runs a task per CPU Ray gives it, so
    # the task's share divides the node's memory by those: 20 GiB available, four fifths of it for
    # the 4 tasks of a 4-CPU node, 4 GiB each (not 16 GiB, as a worker alone would take)
    from reconcile import executors, runner

    seen = {}

    def fake_run_jobs(jobs, **kwargs):
        seen.update(kwargs)
        return ["run"]

    monkeypatch.setattr(memory, "available", lambda: 20 * GIB)
    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    monkeypatch.setattr(executors, "_SLOTS", 4)
    assert executors._job_on_ray_worker(Job("resnet18", "thop", input_shape=(1, 3, 8, 8)), 60.0, None, 1) == "run"
    assert (seen["workers"], seen["memory_share"]) == (1, 4 * GIB)
    # outside a Ray task (no runtime context), the machine's CPU count stands for the node's
    monkeypatch.setattr(executors, "_SLOTS", None)
    assert executors._node_slots() == (os.cpu_count() or 1)


def test_a_job_out_of_memory_beside_another_worker_runs_again_alone(monkeypatch):
    """A model that fits the machine but not half of it (timm's aimv2_3b: 10.9 GB of weights, 8.7 GiB
    a worker beside another here) is counted: once the other jobs have settled, it runs again with
    no worker beside it and the whole share. Here the shares are 1 GiB beside another worker and
    3 GiB alone, and the model's weights 1 GiB (thop counts a deepcopy: 2 GiB)."""
    monkeypatch.setattr(memory, "share", lambda workers: 3 * GIB if workers == 1 else GIB)
    big, small = f"{__name__}:mid_linear", f"{__name__}:small_linear"
    jobs = [Job(big, "thop", input_shape=(1, IN // 2)), Job(small, "thop", input_shape=(1, 8))]
    settled = []
    log = _threads_log()
    if os.path.exists(log):
        os.remove(log)
    first, second = run_jobs(jobs, workers=2, on_done=lambda job, run: settled.append(job.model))
    with open(log) as fh:
        threads = [int(n) for n in fh.read().split()]
    os.remove(log)
    # beside another worker, its share of this machine's CPUs; alone, all of them (the tool's
    # numbers do not depend on them; its time does)
    cpus = os.cpu_count() or 1
    assert threads == [max(1, cpus // 2), cpus]
    # thop: 8192 x 32768 = 268,435,456 MACs (no bias); 8 x 4 = 32
    assert (first.status, first.headline.get("macs")) == ("ok", IN // 2 * OUT), first
    assert first.notes[-1] == ("ran out of memory beside another worker (1.0 GiB each), so it ran again with no "
                               "other worker beside it (3.0 GiB)")
    assert (second.status, second.headline["macs"]) == ("ok", 32), second
    assert not any("ran again" in n for n in second.notes)
    assert settled == [small, big]  # the big one settles last, once it has run alone


def test_a_job_out_of_memory_alone_too_says_both_shares():
    (run,) = run_jobs([Job(f"{__name__}:big_linear", "thop", input_shape=(1, IN))], workers=1,
                      memory_share=GIB, alone_share=GIB + GIB // 2)
    assert (run.status, run.error_type) == ("failed", "OutOfMemory"), run
    assert run.error_message.startswith("needs more memory than a worker may take here (1.5 GiB"), run.error_message
    assert run.notes[-1].endswith("so it ran again with no other worker beside it (1.5 GiB)")
    # a share given by the caller alone is what it is: no second run
    (run,) = run_jobs([Job(f"{__name__}:big_linear", "thop", input_shape=(1, IN))], workers=2, memory_share=GIB)
    assert run.error_type == "OutOfMemory" and not any("ran again" in n for n in run.notes), run
