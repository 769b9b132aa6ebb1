"""Every promise under faults (issue #9): models that hang, abort, segfault, exit, run out of
memory, print megabytes, start processes or change torch's globals, run through ``reconcile
report`` as a user runs it. For each: the other tools' results are written, the terminal gets at
most one line per failed tool besides the usual summary, no process of the run survives it,
nothing is left in the temporary folder, and the run ends within its timeouts. Then bad inputs,
and the Python API under odd use.

The factories live in ``tests/fault_models.py``; every fault happens in ``forward`` on CPU
tensors only, so the native counter (meta device) still counts each model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reconcile.progress import PREFIX  # progress lines (one per model) are not errors

from tests.fault_models import GOOD_MACS, ROOT, start, wait_for_session_end

TOOLS = "native,thop,fvcore"
CRASHES = ("abort", "segfault", "exit", "sys_exit", "alloc_too_much", "print_megabytes",
           "changes_global_torch_state", "good")
HANGS = ("hang", "spawn_child_and_hang", "good")
HANG_TIMEOUT = 5


def _stem(name: str) -> str:
    from reconcile.pipeline import file_stem

    return file_stem(name)


class Run:
    """One finished ``reconcile report`` run and what it left behind."""

    def __init__(self, tmp: Path, specs: list[str], *extra: str, limit: float = 240) -> None:
        self.out = tmp / "out"
        self.tmp = tmp / "tmp"
        self.specs = specs
        began = time.monotonic()
        proc = start(["report", ",".join(specs), "--tools", TOOLS, "--out", str(self.out), *extra], str(self.tmp))
        self.stdout, self.stderr = proc.communicate(timeout=limit)
        self.seconds = time.monotonic() - began
        self.code = proc.returncode
        self.survivors = wait_for_session_end(proc.pid, 10)  # the session id is the run's pid
        self.left = sorted(os.listdir(self.tmp))

    def report(self, spec: str) -> dict:
        return json.loads((self.out / f"{_stem(spec)}.json").read_text())

    def failed_runs(self) -> int:
        return sum(t["status"] != "ok" for spec in self.specs for t in self.report(spec)["tools"].values())


@pytest.fixture(scope="module")
def crashes(tmp_path_factory) -> Run:
    # one run for all of them, and a module that prints while imported; no --input-shape: the
    # inputs come from each factory's example_input_shape, read in a worker (reconcile itself
    # never imports a model module)
    specs = [f"tests.fault_models:{name}" for name in CRASHES] + ["tests.fault_models_noisy:make"]
    return Run(tmp_path_factory.mktemp("crashes"), specs)


@pytest.fixture(scope="module")
def hangs(tmp_path_factory) -> Run:
    specs = [f"tests.fault_models:{name}" for name in HANGS]
    return Run(tmp_path_factory.mktemp("hangs"), specs, "--input-shape", "1,3,8,8", "--timeout", str(HANG_TIMEOUT))


@pytest.fixture(params=["crashes", "hangs"])
def run(request) -> Run:
    return request.getfixturevalue(request.param)


def test_every_model_is_reported_and_native_counts_it(run):
    assert run.code == 0, run.stderr
    for spec in run.specs:
        data = run.report(spec)  # written whole: it parses
        assert data["tools"]["native"]["status"] == "ok", spec
        # conv 3->4 k3, no bias, on 1x3x8x8: 4x6x6 = 144 outputs * 27 = 3,888 MACs
        assert data["native"]["totals"]["macs"] == GOOD_MACS, spec
        assert (run.out / f"{_stem(spec)}.md").exists() and (run.out / f"{_stem(spec)}.csv").exists()
    index = (run.out / "index.md").read_text()
    for spec in run.specs:  # the index links each model's report by its file name
        assert f"[{spec}]({_stem(spec)}.md)" in index


def test_the_terminal_gets_one_line_per_failed_tool(run):
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip() and not line.startswith(PREFIX)]
    wrote = [line for line in lines if line.startswith("wrote ")]
    assert len(wrote) == len(run.specs) + 1  # one per model and the index
    assert len(lines) - len(wrote) <= run.failed_runs()
    assert run.failed_runs() > 0
    # progress lines name the model (tests.fault_models_noisy): the check is on what else is said
    text = "\n".join(line for line in (run.stdout + run.stderr).splitlines() if not line.startswith(PREFIX))
    for needle in ("Traceback", "Fatal Python error", "fault_models_noisy", "xxxxxxxx", "yyyyyyyy"):
        assert needle not in text


def test_no_process_survives_and_no_file_is_left(run):
    assert run.survivors == []
    assert run.left == []
    assert sorted(p.name for p in run.out.iterdir() if p.name.startswith(".")) == []


def test_the_run_ends_within_its_timeouts(hangs, crashes):
    # two hanging models x (thop, fvcore) time out after 5 s each, two at a time: about 10 s of
    # timeouts, plus starting torch once and the quick jobs
    assert hangs.seconds < 4 * HANG_TIMEOUT + 40
    assert crashes.seconds < 120


@pytest.mark.parametrize("model, status, error", [
    ("abort", "failed", "worker killed by signal SIGABRT while running {tool}, without a result"),
    ("segfault", "failed", "worker killed by signal SIGSEGV while running {tool}, without a result"),
    ("exit", "failed", "worker exited with code 3 while running {tool}, without a result"),
    ("sys_exit", "failed", "a model that calls sys.exit"),
    ("alloc_too_much", "failed", "can't allocate memory"),
])
def test_each_crash_is_recorded_with_its_cause(crashes, model, status, error):
    tools = crashes.report(f"tests.fault_models:{model}")["tools"]
    for tool in ("thop", "fvcore"):
        t = tools[tool]
        assert t["status"] == status
        assert error.format(tool=tool) in t["error"]["message"]
        assert t["version"]  # known from the moment the adapter was loaded
        assert len(json.dumps(t["warnings"])) < 2 * 4096  # details (bounded), never on the terminal


def test_a_traceback_goes_into_the_report_not_to_the_terminal(crashes):
    t = crashes.report("tests.fault_models:sys_exit")["tools"]["thop"]
    assert t["warnings"][0] == "failed outside the adapter while running thop; traceback:"
    assert any("SystemExit" in w for w in t["warnings"])
    segv = crashes.report("tests.fault_models:segfault")["tools"]["thop"]
    assert any("Segmentation fault" in w for w in segv["warnings"])  # faulthandler's first line
    md = (crashes.out / f"{_stem('tests.fault_models:segfault')}.md").read_text()
    assert "public entry point" not in md  # a run that did not finish claims nothing about how it ran


def test_megabytes_printed_make_a_bounded_report(crashes):
    spec = "tests.fault_models:print_megabytes"
    data = crashes.report(spec)
    assert all(t["status"] == "ok" for t in data["tools"].values())
    # the model printed 10 MB per call; fvcore keeps printed lines as warnings, thop its [WARN]s
    for ext in ("json", "md", "csv"):
        assert (crashes.out / f"{_stem(spec)}.{ext}").stat().st_size < 64 * 1024, ext
    warnings = data["tools"]["fvcore"]["warnings"]
    assert sum(len(w) for w in warnings) < 4096 + 600
    assert any(w.startswith("[... ") and "lines" in w and "cut ...]" in w for w in warnings)


def test_no_job_sees_what_another_did_to_torch(crashes):
    # changes_global_torch_state sets float64, patches Conv2d.forward and F.relu in its workers;
    # the models after it are counted as if it never ran: 3,888 MACs
    for spec in ("tests.fault_models:good", "tests.fault_models_noisy:make"):
        tools = crashes.report(spec)["tools"]
        assert {tool: t["status"] for tool, t in tools.items()} == {"native": "ok", "thop": "ok", "fvcore": "ok"}
        assert tools["thop"]["total"] == tools["fvcore"]["total"] == GOOD_MACS
        assert tools["thop"]["residual"] == tools["fvcore"]["residual"] == 0


def test_a_hang_times_out_with_its_version_and_its_child_is_killed(hangs):
    for model in ("hang", "spawn_child_and_hang"):
        tools = hangs.report(f"tests.fault_models:{model}")["tools"]
        for tool in ("thop", "fvcore"):
            t = tools[tool]
            assert t["status"] == "timeout"
            assert t["error"]["message"] == f"no result after {HANG_TIMEOUT} s while running {tool}; worker killed"
            assert t["version"]
    # `sleep 3600` started by the model: no process of the run is left (checked per run above)
    assert hangs.survivors == []


# ----- bad inputs: one line, exit code 2, nothing created --------------------------------------


def _cli(*argv: str, cwd: str = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.run([sys.executable, "-m", "reconcile", *argv], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout, preexec_fn=_cap_memory)


def _cap_memory() -> None:
    """At most 16 GiB of address space for the command and its workers: a 120 GB input then fails
    at once on any machine, whatever its memory and overcommit policy, and touches nothing."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(PREFIX)]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e10", "86401", "0", "-1"])
def test_an_unusable_timeout_is_one_line_and_creates_nothing(tmp_path, value):
    out = tmp_path / "out"
    line = _one_line(_cli("report", "resnet18", f"--timeout={value}", "--out", str(out)))
    assert "--timeout must be a number of seconds above 0 and at most 86400" in line
    assert not out.exists()


def test_a_timeout_is_checked_by_run_jobs_too():
    from reconcile.errors import ReconcileError
    from reconcile.runner import Job, run_jobs

    for value in (float("nan"), float("inf"), 1e10, 0.0):
        with pytest.raises(ReconcileError, match="timeout must be a number of seconds"):
            run_jobs([Job("resnet18", "thop", (1, 3, 8, 8))], timeout=value)


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path):
    out = tmp_path / "a" / "b"
    _one_line(_cli("report", "resnet81", "--out", str(out)))
    assert not (tmp_path / "a").exists()


def test_an_input_too_large_for_memory_is_one_line(tmp_path):
    # 1 x 3 x 100,000 x 100,000 floats = 120 GB: more than the 16 GiB cap, refused at once
    line = _one_line(_cli("count", "resnet18", "--device", "cpu", "--input-shape", "1,3,100000,100000"))
    assert "too large for this machine's memory" in line and "--device meta" in line


@pytest.mark.parametrize("argv", [("count", "resnet18"), ("tools", "resnet18", "--tools", "native")])
def test_a_run_leaves_nothing_in_the_temporary_folder(tmp_path, argv):
    # `count` imports torchvision in the command's process, `tools` in its workers: importing it
    # makes torch's compile cache folder ($TMPDIR/torchinductor_<user>), which must go with the run
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=path)
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "reconcile", *argv], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_an_absurd_input_shape_fails_each_tool_in_one_line(tmp_path):
    # native counts it on meta (no memory); thop needs the 120 GB input on CPU and fails
    out = tmp_path / "out"
    proc = _cli("report", "tests.fault_models:good", "--input-shape", "1,3,100000,100000", "--tools", "native,thop",
                "--out", str(out), timeout=240)
    assert proc.returncode == 0, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(PREFIX)]
    assert len(errors) == 1 and "thop failed" in errors[0] and "Traceback" not in proc.stderr
    data = json.loads((out / f"{_stem('tests.fault_models:good')}.json").read_text())
    assert data["tools"]["thop"]["status"] == "failed"
    assert data["tools"]["thop"]["warnings"][0].startswith("failed outside the adapter while building model")


# ----- the Python API and the pipeline under odd use ---------------------------------------


API = ("count", "compare", "conventions", "predict", "normalize", "explain")
ORDERS = [
    [],
    ["reconcile.explain.core"],
    ["reconcile.pipeline"],
    ["reconcile.explain.pair", "reconcile.conventions.thop", "reconcile.report.markdown"],
    ["reconcile.cli", "reconcile.explain", "reconcile.zoo"],
]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "+".join(o) or "plain")
def test_every_api_name_works_in_any_import_order(order):
    """``import reconcile, reconcile.pipeline; reconcile.explain(a, b)`` raised TypeError: importing
    ``reconcile.explain.core`` bound the subpackage over the function."""
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {order!r}:
            importlib.import_module(name)
        import reconcile
        for name in {order!r}:
            importlib.import_module(name)
        bad = [n for n in {API!r} if not callable(getattr(reconcile, n))]
        assert not bad, bad
        import reconcile.explain.pair as pair
        pair.explain_pair = lambda a, b: ("pair", a, b)
        assert reconcile.explain(1, 2) == ("pair", 1, 2)
        assert isinstance(reconcile.conventions(), dict) and "thop" in reconcile.conventions()
        from reconcile.explain.core import explain_run  # the submodules stay reachable
        assert "torch" not in sys.modules
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("mode", ["train", "as-is"])
def test_counting_a_train_mode_model_leaves_its_buffers(mode):
    import torch
    from torch import nn

    import reconcile

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reconcile.count(model, torch.randn(2, 3, 8, 8), mode=mode)
    after = model.state_dict()
    assert after["1.num_batches_tracked"] == 0  # a training forward would make it 1
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model[1].training


def test_file_names_are_one_per_model():
    from reconcile.models import torchvision_names
    from reconcile.pipeline import file_stem

    assert file_stem("resnet18") == "resnet18" and file_stem("vit_b_16") == "vit_b_16"
    assert file_stem("usernets:Good") == "usernets_Good"
    names = ["a.b:c_d", "a.b_c:d", "a.b:c.d", "a.b.c:d", "a_:b", "a:_b", "a__:b", "a:__b", "swin:t",
             "mobilenet:v2", "my_pkg.nets:make_net", "my.pkg_nets:make_net", *torchvision_names()]
    assert "swin_t" in names and "mobilenet_v2" in names
    stems = [file_stem(n) for n in names]
    assert len(set(stems)) == len(names), [(n, s) for n, s in zip(names, stems) if stems.count(s) > 1]
    assert all(s and "/" not in s and ":" not in s for s in stems)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_reports_get_the_usual_permissions(tmp_path, umask, mode):
    from reconcile.pipeline import write_files

    saved = os.umask(umask)
    try:
        write_files(tmp_path / "new", {"a.md": "a\n", "b.json": "{}\n"})
    finally:
        os.umask(saved)
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "new").iterdir()} == {"a.md": mode, "b.json": mode}


def test_one_model_spelled_twice_runs_once():
    from reconcile.config import RunConfig
    from reconcile.pipeline import collect

    runs = collect(["alexnet", "AlexNet", "alexnet "], RunConfig(tools=("native",), input_shape=(1, 3, 64, 64), timeout=120))
    assert [mr.name for mr in runs] == ["alexnet"]
    assert [r.tool for r in runs[0].runs] == ["native"]


def test_a_signal_while_reports_are_renamed_waits_for_the_last(tmp_path, monkeypatch):
    import signal

    from reconcile import atomic

    folder = tmp_path / "out"
    seen: list[list[str]] = []
    saved = signal.signal(signal.SIGTERM, lambda s, f: seen.append(sorted(p.name for p in folder.iterdir())))
    real_replace = os.replace

    sent = []

    def replace(src, dst):  # SIGTERM arrives between the first rename and the second
        real_replace(src, dst)
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(atomic.os, "replace", replace)
    try:
        atomic.write_files(folder, {"m.md": "md\n", "m.json": "{}\n", "m.csv": "csv\n"})
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert seen == [["m.csv", "m.json", "m.md"]]  # the handler ran only once all three were in place


def test_an_import_that_hangs_is_stopped_by_the_timeout(tmp_path):
    # finding the default inputs imports the module: in a worker, under --timeout, its print kept
    began = time.monotonic()
    proc = start(["report", "tests.fault_models_slow_import:make,tests.fault_models:good", "--tools", "native,thop",
                  "--timeout", "5", "--out", str(tmp_path / "out")], str(tmp_path / "tmp"))
    stdout, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - began < 60
    assert proc.returncode == 2
    assert [line for line in stderr.strip().splitlines() if not line.startswith(PREFIX)] == [
        "reconcile: error: finding the inputs of tests.fault_models_slow_import:make timeout: Timeout: no result "
        "after 5 s while finding the inputs of 'tests.fault_models_slow_import:make'; worker killed; pass "
        "--input-shape or --input"]
    assert "slow_import" not in stdout.replace("tests.fault_models_slow_import", "")
    assert (tmp_path / "out" / "tests.fault-models_good.md").exists()
    assert wait_for_session_end(proc.pid, 10) == []
