"""The commands that used to run a model in their own process (``count``, ``predict``,
``roofline --measure``) under faults (issue #19), run as a user runs them: each model in a worker
(``reconcile.isolated``), so a crash, hang, print or change to torch's globals touches only that
model's result, with one line on stderr per model that failed, exit code 2, clean stdout, no
process left and nothing left in the temporary folder. Then bad input that used to be a
traceback or a 150 KB line, and the Python API's promise to put torch's settings back.

The fault models are in ``tests/fault_models_count.py`` (faults on every device) and
``tests/fault_models.py`` (faults on real tensors only); each counts 3,888 MACs when it counts:
conv 3->4 k3 on 1x3x8x8 gives 4x6x6 = 144 outputs, 144 * 3 * 9 = 3,888 MACs.
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

from reconcile.progress import PREFIX

from tests.fault_models import ROOT, start, wait_for_session_end
from tests.fault_models_count import GOOD_MACS, MANY

F = "tests.fault_models_count"
# conv 3->4 k3 with bias: 4 * 3 * 9 weights + 4 biases = 112 parameters
GOOD_PARAMS = 4 * 3 * 9 + 4


class Cmd:
    """One finished command, run in a session of its own with an empty TMPDIR."""

    def __init__(self, tmp: Path, argv: list[str], limit: float = 300) -> None:
        self.tmp = tmp / "tmp"
        began = time.monotonic()
        proc = start(argv, str(self.tmp))
        self.stdout, self.stderr = proc.communicate(timeout=limit)
        self.seconds = time.monotonic() - began
        self.code = proc.returncode
        self.survivors = wait_for_session_end(proc.pid, 10)
        self.left = sorted(os.listdir(self.tmp))

    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip() and not line.startswith(PREFIX)]

    def clean(self) -> None:
        assert self.survivors == [] and self.left == [], (self.survivors, self.left)
        assert "Traceback" not in self.stderr and "Warning" not in self.stderr, self.stderr


# ----- count: one run with every fault -------------------------------------------------------

FAILS = {  # model -> what its one line says
    "aborts": "worker killed by signal SIGABRT",
    "segfaults": "worker killed by signal SIGSEGV",
    "sleeps": "no result after 5 s while running native",
    "hanging_factory": "no result after 5 s while building model",
    # a ScriptModule takes no hooks: the one line `report` gives too
    "scripted": "register_forward_pre_hook is not supported on ScriptModules",
}
# sets_default_dtype first: the models after it were counted in a float64 world before (rc 2,
# "Input type (float) and bias type (double)")
COUNTS = ("prints_in_forward", "traced", "sets_default_dtype", "changes_globals", "good")
# the printing and warning models first: the old command printed them before it died on `aborts`
ORDER = ("prints_in_forward", "traced", "sets_default_dtype", "aborts", "changes_globals", "segfaults", "sleeps",
         "hanging_factory", "good", "scripted")


@pytest.fixture(scope="module")
def counted(tmp_path_factory) -> Cmd:
    specs = ",".join(f"{F}:{name}" for name in ORDER)
    return Cmd(tmp_path_factory.mktemp("count"), ["count", specs, "--timeout", "5", "--depth", "0"])


def test_count_fails_each_faulty_model_in_one_line_and_counts_the_rest(counted):
    assert counted.code == 2, counted.stderr
    errors = counted.errors()
    assert len(errors) == len(FAILS), errors
    for line, (name, why) in zip(errors, FAILS.items()):
        assert line.startswith(f"reconcile: error: {F}:{name}") and why in line, line
    # every other model counted, each with the numbers of a model counted alone
    heads = [line.split("  input")[0] for line in counted.stdout.splitlines() if "  input 1x3x8x8" in line]
    assert heads == [f"{F}:{name}" for name in ORDER if name in COUNTS]
    totals = [line for line in counted.stdout.splitlines() if line.startswith("total:")]
    assert totals == [f"total: {GOOD_MACS:,} MACs, 8,064 FLOPs, {GOOD_PARAMS} params, 288 elements written, "
                      "0.00 MiB read, 0.00 MiB written"] * len(COUNTS)
    # prints_in_forward's line and torch.jit.trace's FutureWarnings stay in their workers
    assert "a model that prints" not in counted.stdout + counted.stderr
    counted.clean()
    assert counted.seconds < 120  # two 5 s timeouts, not an hour's sleep


def test_count_json_parses_with_models_that_print_and_warn(tmp_path):
    # a print at import, a print in forward, torch.jit.trace's FutureWarnings
    specs = f"tests.fault_models_printimport:small,{F}:prints_in_forward,{F}:traced"
    cmd = Cmd(tmp_path, ["count", specs, "--format", "json"])
    assert cmd.code == 0, cmd.stderr
    objs = [json.loads(line) for line in cmd.stdout.splitlines()]
    # Linear 4 -> 2: 4 * 2 = 8 MACs, 4 * 2 + 2 = 10 parameters; the conv: 3,888 MACs, 112 parameters
    assert [(o["totals"]["macs"], o["totals"]["params"]) for o in objs] == [
        (8, 10), (GOOD_MACS, GOOD_PARAMS), (GOOD_MACS, GOOD_PARAMS)]
    assert cmd.errors() == []
    cmd.clean()


def test_count_of_a_scripted_model_for_training_is_one_line(tmp_path):
    cmd = Cmd(tmp_path, ["count", f"{F}:scripted", "--training"])
    assert cmd.code == 2 and cmd.stdout == ""
    (line,) = cmd.errors()
    assert "register_forward_pre_hook is not supported on ScriptModules" in line
    cmd.clean()


# ----- predict and roofline --measure ---------------------------------------------------------


def test_predict_fails_a_crashing_model_in_one_line(tmp_path):
    # fvcore: the model is traced too (a worker of its own); prints_in_forward prints in both
    specs = f"{F}:aborts,{F}:prints_in_forward"
    cmd = Cmd(tmp_path, ["predict", specs, "--tool", "fvcore", "--format", "json", "--timeout", "60"])
    assert cmd.code == 2, cmd.stderr
    (line,) = cmd.errors()
    assert line.startswith(f"reconcile: error: {F}:aborts") and "SIGABRT" in line
    (obj,) = [json.loads(line) for line in cmd.stdout.splitlines()]
    # fvcore counts one MAC per multiply-add as a "flop": the conv's 3,888
    assert obj["model"] == f"{F}:prints_in_forward" and obj["headline"]["flops"] == GOOD_MACS
    cmd.clean()


def test_roofline_measure_fails_a_crash_and_a_hang_in_one_line_each(tmp_path):
    # tests.fault_models' faults happen on real tensors only: the native count (meta) works, the
    # timing (CPU) meets the fault. Bounds of femtoseconds: nothing beats them (exit 2 from the
    # two failures, not 1 from the check)
    specs = "tests.fault_models:segfault,tests.fault_models:hang,tests.fault_models:good"
    cmd = Cmd(tmp_path, ["roofline", specs, "--measure", "--repeat", "1", "--timeout", "5",
                         "--hardware", "custom:peak=1e30,bandwidth=1e30"])
    assert cmd.code == 2, cmd.stderr
    first, second = cmd.errors()
    assert "tests.fault_models:segfault could not be measured" in first and "SIGSEGV" in first
    assert "tests.fault_models:hang could not be measured" in second and "no result after 5 s" in second
    assert cmd.stdout.count("measured forward (no hooks, best of 1)") == 1
    cmd.clean()


# ----- bad input: one line -------------------------------------------------------------------


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.run([sys.executable, "-m", "reconcile", *argv], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("argv,says", [
    (("--input-high", "99999999999999999999999"), "--input-high 99,999,999,999,999,999,999,999 must be an integer "
                                                   "from 1 to 9,223,372,036,854,775,807"),
    (("--input", "1x4:int32:2147483649"), "input high 2,147,483,649 must be an integer from 1 to 2,147,483,648"),
    (("--input", "1x4:long:9223372036854775808"), "from 1 to 9,223,372,036,854,775,807"),
])
def test_an_input_high_beyond_its_dtype_is_one_line(argv, says):
    proc = _cli("count", "resnet18", *argv)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert says in line, line


def test_the_largest_bounds_are_accepted():
    from reconcile.inputs import InputSpec, make_tensor

    # 2**63 - 1 and 2**31: the largest exclusive bounds torch.randint takes for int64 and int32
    for dtype, high in (("long", 2**63 - 1), ("int32", 2**31)):
        assert make_tensor(InputSpec((4,), dtype, high), "cpu").shape == (4,)


def test_twenty_thousand_inputs_make_short_lines(tmp_path):
    # counted (one forward of 20,000 arguments), the inputs line cut to the first and last few
    count = _cli("count", f"{F}:many_inputs", "--depth", "0")
    assert count.returncode == 0, count.stderr[-2000:]
    assert max(map(len, count.stdout.splitlines())) < 400
    assert f"({MANY:,} inputs, {MANY - 12:,} not shown)" in count.stdout
    tools = _cli("tools", f"{F}:many_inputs", "--tools", "native")
    assert tools.returncode == 0 and max(map(len, tools.stdout.splitlines())) < 500
    # refused: 20,000 keyword inputs forward(x) has no parameter for (a 149 KB line before)
    named = _cli("count", f"{F}:many_named_inputs")
    assert named.returncode == 2
    (line,) = named.stderr.splitlines()
    assert len(line) < 500 and f"({MANY:,} inputs, {MANY - 12:,} not shown)" in line


def test_every_command_that_runs_a_model_takes_a_timeout():
    from reconcile.cli import build_parser

    parser = build_parser()
    helps = {}
    for command in ("count", "predict", "roofline", "tools", "report"):
        sub = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001 - argparse keeps them here
        (action,) = [a for a in sub._actions if "--timeout" in a.option_strings]  # noqa: SLF001
        helps[command] = (action.default, action.help)
    # count, predict and roofline run one worker per model (no tools): their timeout is per model
    per = {c: "model" if c in ("count", "predict", "roofline") else "tool and model" for c in helps}
    assert helps == {c: (300.0, f"seconds per {per[c]}, counted from its worker's start (default 300)") for c in helps}


# ----- the Python API ------------------------------------------------------------------------

API = textwrap.dedent("""
    import torch, reconcile
    from tests.fault_models_count import changes_globals

    def state():
        return (torch.get_default_dtype(), torch.is_grad_enabled(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads(),
                torch.backends.cudnn.benchmark, torch.backends.mkldnn.enabled, torch.get_float32_matmul_precision(),
                torch.get_rng_state().tolist())

    torch.set_num_threads(2)
    model, x = changes_globals(), torch.zeros(1, 3, 8, 8)
    before = state()
    macs = reconcile.count(model, (x,)).totals["macs"]
    assert state() == before, (state()[:-1], before[:-1])

    class Raises(torch.nn.Module):
        def forward(self, x):
            torch.set_default_dtype(torch.float64)
            torch.use_deterministic_algorithms(True)
            raise ValueError("after changing torch's globals")

    try:
        reconcile.count(Raises(), (x,))
    except Exception as exc:
        print(type(exc).__name__)
    assert state() == before, (state()[:-1], before[:-1])
    print(macs)
""")


def test_the_api_puts_back_what_a_model_changed_in_torch():
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", API], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ReconcileError", str(GOOD_MACS)]


def test_the_api_says_what_it_cannot_restore():
    import reconcile

    doc = reconcile.count.__doc__
    assert "set_num_interop_threads" in doc and "patched" in doc and "reconcile count" in doc
