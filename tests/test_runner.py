"""The runner: one throwaway process per job, results in order, timeouts and crashes recorded.

Test adapters and model builders live at module level here, so workers can import them by name
(``f"{__name__}:Class"``); they are registered per test as entries of the tool registry
(``monkeypatch.setattr(tools, "BUILTIN", ...)``), which works because the parent passes each job's
adapter spec to its worker.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reconcile import runner
from reconcile.adapters.base import Adapter
from reconcile.errors import ReconcileError
from reconcile.records import ToolRun
from reconcile.runner import Job, run_jobs

HERE = Path(__file__).resolve().parent
SHAPE = (1, 3, 8, 8)


# ----- what the workers import -------------------------------------------------------------


def make_tiny(name: str, device: str):
    """Model builder for tests: ``tiny`` is conv -> bn -> relu; ``oom`` fails like a big model."""
    import torch
    from torch import nn

    if name == "oom":
        raise MemoryError("simulated: cannot allocate the model")
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).to(device)


class _TestAdapter(Adapter):
    distribution = "pytest"

    def _ok(self, **headline) -> ToolRun:
        return ToolRun(tool=self.name, version=self.version(), status="ok", headline=headline)


class SleepAdapter(_TestAdapter):
    name = "sleepy"

    def _run(self, model, inputs):
        time.sleep(120)
        return self._ok()


class ExitAdapter(_TestAdapter):
    name = "exits"

    def _run(self, model, inputs):
        os._exit(3)


class SegfaultAdapter(_TestAdapter):
    name = "segfaults"

    def _run(self, model, inputs):
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
        return self._ok()


class OomAdapter(_TestAdapter):
    name = "oom"

    def _run(self, model, inputs):
        raise MemoryError("simulated: tool ran out of memory")


class PatchAdapter(_TestAdapter):
    """Patches globals the way torchstat and ptflops do, and reports whether it found them clean."""

    name = "patcher"

    def _run(self, model, inputs):
        import torch
        import torch.nn.functional as F
        from torch import nn

        clean = (
            nn.Module.__call__.__name__ == "_wrapped_call_impl"
            and "__call__" not in vars(nn.Conv2d)
            and F.relu.__module__ == "torch.nn.functional"
        )
        original = nn.Module.__call__

        def patched(self, *args, **kwargs):
            return original(self, *args, **kwargs)

        nn.Module.__call__ = patched
        nn.Conv2d.__call__ = patched
        F.relu = lambda x, inplace=False: torch.relu(x)
        model(*inputs)
        return self._ok(clean=int(clean), pid=os.getpid())


class SpawnAdapter(_TestAdapter):
    """Starts a process that would run for an hour, and returns at once."""

    name = "spawner"

    def _run(self, model, inputs):
        import subprocess

        child = subprocess.Popen(["sleep", "3600"])
        return self._ok(child=child.pid)


class UnpicklableAdapter(_TestAdapter):
    """Returns a record that cannot be sent back (a lambda in its detail)."""

    name = "unpicklable"

    def _run(self, model, inputs):
        from dataclasses import replace

        return replace(self._ok(), detail=lambda: None)


class PrintAdapter(_TestAdapter):
    """Writes to stdout and stderr at the Python and at the OS level, and warns."""

    name = "printer"

    def _run(self, model, inputs):
        import warnings

        print("python-level stdout")
        print("python-level stderr", file=sys.stderr)
        os.write(1, b"fd-level stdout\n")
        os.write(2, b"fd-level stderr\n")
        warnings.warn("a warning")
        return self._ok(pid=os.getpid())


TEST_ADAPTERS = {cls.name: f"{__name__}:{cls.__name__}" for cls in
                 (SleepAdapter, ExitAdapter, SegfaultAdapter, OomAdapter, PatchAdapter, PrintAdapter, SpawnAdapter,
                  UnpicklableAdapter)}


@pytest.fixture
def adapters(monkeypatch):
    from reconcile import tools

    entries = tuple(tools.Tool(name, spec, default=False) for name, spec in TEST_ADAPTERS.items())
    monkeypatch.setattr(tools, "BUILTIN", tools.BUILTIN + entries)


BUILD = f"{__name__}:make_tiny"


# ----- tests -------------------------------------------------------------------------------


def test_crashes_are_recorded_in_order_and_the_rest_still_run(adapters, caplog):
    jobs = [
        Job("tiny", "torchsummary", SHAPE),
        Job("tiny", "exits", SHAPE),
        Job("tiny", "segfaults", SHAPE),
        Job("oom", "torchstat", SHAPE),  # MemoryError while building: outside the adapter
        Job("tiny", "oom", SHAPE),  # MemoryError inside the adapter
        Job("tiny", "torchstat", SHAPE),
    ]
    runs = run_jobs(jobs, build=BUILD, timeout=60)
    assert [r.tool for r in runs] == [j.tool for j in jobs]
    assert [r.status for r in runs] == ["ok", "failed", "failed", "failed", "failed", "ok"]

    # the two real tools: conv 3->4 k3 on 8x8 gives 4x6x6; params 4*3*9 + 4 bias = 112 (+8 bn)
    assert runs[0].headline["Total params"] == 120
    assert runs[5].headline["Total params"] == 120
    # torchstat MAdd of the conv: (2*27 - 1 + 1 bias) * 144 outputs = 7776
    assert runs[5].layers[0].raw["MAdd"] == 54 * 144 == 7776

    exited, segv, oom_build, oom_tool = runs[1:5]
    assert exited.error_type == "WorkerDied"
    assert exited.error_message == "worker exited with code 3 while running exits, without a result"
    assert segv.error_type == "WorkerDied"
    assert segv.error_message == "worker killed by signal SIGSEGV while running segfaults, without a result"
    assert any("Segmentation fault" in w for w in segv.warnings)  # faulthandler's report, from the worker's fd 2
    assert (oom_build.error_type, oom_build.error_message) == ("MemoryError", "simulated: cannot allocate the model")
    assert "building model 'oom'" in oom_build.attempted
    assert (oom_tool.error_type, oom_tool.error_message) == ("MemoryError", "simulated: tool ran out of memory")
    assert exited.version == segv.version != ""  # reported by the worker before it died
    # a crash outside the adapter: its traceback is in the record, not in the log above debug
    assert oom_build.warnings[0] == "failed outside the adapter while building model 'oom' on cpu; traceback:"
    assert any("MemoryError: simulated" in w for w in oom_build.warnings)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_hanging_tool_times_out_and_the_others_finish(adapters):
    jobs = [Job("tiny", "sleepy", SHAPE), Job("tiny", "torchsummary", SHAPE), Job("tiny", "sleepy", SHAPE)]
    start = time.monotonic()
    runs = run_jobs(jobs, build=BUILD, timeout=3, workers=2)
    elapsed = time.monotonic() - start
    assert [r.status for r in runs] == ["timeout", "ok", "timeout"]
    assert runs[0].error_message == "no result after 3 s while running sleepy; worker killed"
    assert runs[0].version == runs[2].version != ""  # known since the adapter was loaded
    assert 3 <= runs[0].seconds < 10
    assert elapsed < 20  # two 3 s timeouts, two at a time, not 120 s sleeps


def test_tools_cannot_change_the_caller_or_each_other(adapters):
    import torch.nn.functional as F
    from torch import nn

    module_call, relu = nn.Module.__call__, F.relu
    jobs = [Job("tiny", "patcher", SHAPE), Job("tiny", "patcher", SHAPE), Job("tiny", "torchstat", SHAPE)]
    runs = run_jobs(jobs, build=BUILD, timeout=60, workers=1)  # one after another
    assert [r.status for r in runs] == ["ok", "ok", "ok"]
    assert [r.headline["clean"] for r in runs[:2]] == [1, 1]  # the second saw no trace of the first
    assert runs[0].headline["pid"] != runs[1].headline["pid"] != os.getpid()
    assert nn.Module.__call__ is module_call and F.relu is relu
    assert "__call__" not in vars(nn.Conv2d)


def test_default_builder_runs_torchvision_models():
    runs = run_jobs(
        [Job("resnet18", "torchstat", (1, 3, 224, 224)), Job("resnet18", "torchsummary", (1, 3, 224, 224))], timeout=120
    )
    assert [r.status for r in runs] == ["ok", "ok"]
    assert runs[0].headline["Total MAdd"] == 3_638_757_912
    assert runs[1].headline["Forward/backward pass size (MB)"] == "62.79"


def test_unknown_model_is_a_failed_run_with_the_reason():
    (run,) = run_jobs([Job("no_such_net", "torchstat", SHAPE)], timeout=60)
    assert (run.status, run.error_type) == ("failed", "ReconcileError")
    assert "no_such_net" in run.error_message


def test_parent_imports_no_torch_and_prints_nothing():
    """A fresh interpreter runs a printing tool: its own output must be exactly what it printed."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from reconcile import runner, tools
        tools.BUILTIN += (tools.Tool("printer", {TEST_ADAPTERS["printer"]!r}, default=False),)
        runs = runner.run_jobs([runner.Job("tiny", "printer", {SHAPE!r})], build={BUILD!r}, timeout=60)
        print(json.dumps({{"status": runs[0].status, "torch": "torch" in sys.modules,
                           "warnings": list(runs[0].warnings)}}))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stderr == ""
    out = json.loads(done.stdout)  # the only line on stdout
    assert out["status"] == "ok" and out["torch"] is False
    assert out["warnings"] == []  # the test adapter does not capture; nothing leaked either way


def test_a_dead_resource_tracker_prints_nothing():
    """multiprocessing's resource tracker (a child of the caller) dies mid-run, as it once did in
    CI: starting the next worker then finds it dead and warns "Some resources might leak" on the
    caller's stderr. The run goes on, and the caller prints nothing (the line goes to the debug
    log: nothing of reconcile's is registered with the tracker)."""
    script = textwrap.dedent(
        f"""
        import json, os, signal, sys
        from multiprocessing import resource_tracker
        from reconcile import runner, tools
        tools.BUILTIN += (tools.Tool("printer", {TEST_ADAPTERS["printer"]!r}, default=False),)
        killed = []

        def kill_tracker(job):
            pid = resource_tracker._resource_tracker._pid
            if pid and not killed:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)  # dead and reaped before the second worker starts
                killed.append(pid)

        jobs = [runner.Job("tiny", "printer", {SHAPE!r})] * 2
        # share=False: two workers (the two jobs would share one build, in one worker)
        runs = runner.run_jobs(jobs, build={BUILD!r}, timeout=60, workers=1, on_start=kill_tracker, share=False)
        relaunched = resource_tracker._resource_tracker._pid
        print(json.dumps({{"status": [r.status for r in runs], "killed": killed, "relaunched": relaunched}}))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stderr == ""
    out = json.loads(done.stdout)
    assert out["status"] == ["ok", "ok"]
    assert len(out["killed"]) == 1 and out["relaunched"] not in (None, out["killed"][0])  # it did die, and was replaced


def test_bad_jobs_are_rejected_before_anything_runs():
    with pytest.raises(ReconcileError, match="unknown tool 'nope'"):
        run_jobs([Job("tiny", "nope", SHAPE)])
    with pytest.raises(ReconcileError, match="dtype"):
        Job("tiny", "thop", SHAPE, input_dtype="complex64")
    assert run_jobs([]) == []


def test_the_timeout_starts_once_the_worker_exists(adapters):
    # the first job of a run waits for the fork server to import torch (~4 s); that is not its time
    runner.shutdown()
    (run,) = run_jobs([Job("tiny", "torchsummary", SHAPE)], build=BUILD, timeout=2)
    assert run.status == "ok", run.error_message


def test_what_a_job_starts_does_not_outlive_it(adapters):
    (run,) = run_jobs([Job("tiny", "spawner", SHAPE)], build=BUILD, timeout=60)
    assert run.status == "ok"
    child = run.headline["child"]
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_a_record_keeps_the_first_and_last_lines_of_megabytes():
    lines = tuple(f"line {i}: " + "x" * 90 for i in range(100_000))  # 100,000 lines of 98-99 characters
    run = runner.bounded(ToolRun(tool="t", version="1", status="failed", warnings=lines, error_message="e" * 10_000))
    assert sum(len(w) for w in run.warnings) <= runner.OUTPUT_LIMIT + 100
    assert run.warnings[0] == lines[0] and run.warnings[-1] == lines[-1]
    (note,) = [w for w in run.warnings if w.startswith("[... ")]
    kept = len(run.warnings) - 1
    assert note == f"[... {100_000 - kept:,} lines ({sum(map(len, lines)) - sum(len(w) for w in run.warnings if w != note):,} characters) cut ...]"
    assert run.error_message == "e" * 460 + " [... 9,540 characters cut]"  # 460 + 9,540 = 10,000
    short = ToolRun(tool="t", version="1", status="ok", warnings=("a", "b"))
    assert runner.bounded(short) is short


def test_a_result_that_cannot_be_sent_back_is_a_failed_run(adapters):
    (run,) = run_jobs([Job("tiny", "unpicklable", SHAPE)], build=BUILD, timeout=60)
    assert run.status == "failed" and run.version  # the version was known before the run
    assert run.error_message.startswith("the ok result could not be sent back: ")
