"""The Ray executor (issue 14): the same results as the local pool, faults contained the same
way, and a zoo run that is interrupted resumes to the same table.

One local Ray instance with 2 CPUs serves the whole module (``executors.session``), as a zoo run
keeps one for all its models.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from reconcile import cli, executors, zoo  # noqa: E402
from reconcile.runner import Job  # noqa: E402
from tests.fault_models import GOOD_MACS, SHAPE  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# ten models across two sources, the smallest of several families, so both runs fit in CI
TEN = ("squeezenet1_1", "mnasnet0_5", "shufflenet_v2_x0_5", "mobilenet_v3_small", "regnet_x_400mf",
       "timm:regnetx_002", "timm:mobilenetv3_small_100", "timm:convnext_atto", "timm:levit_128s",
       "timm:ghostnet_100")
TOOLS = "native,thop,fvcore"


@pytest.fixture(scope="module")
def ray_session():
    with executors.session("ray", None, 2):
        assert executors.cluster_cpus() == 2
        yield


def _zoo(out: Path, *extra: str) -> int:
    return cli.main(["zoo", "--models", ",".join(TEN), "--tools", TOOLS, "--out", str(out), *extra])


@pytest.mark.slow
def test_ray_and_local_write_the_same_zoo_and_reports(ray_session, tmp_path, capsys):
    assert _zoo(tmp_path / "local") == 0
    assert _zoo(tmp_path / "ray", "--executor", "ray") == 0
    for name in ("zoo.md", "zoo.png"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    table = (tmp_path / "ray" / "zoo.md").read_text()
    for model in TEN:
        assert model in table
    # the per-model reports too, byte for byte, for one model of each source
    two = "squeezenet1_1,timm:regnetx_002"
    for ex in ("local", "ray"):
        assert cli.main(["report", two, "--tools", TOOLS, "--out", str(tmp_path / f"r-{ex}"), "--executor", ex]) == 0
    files = sorted(p.name for p in (tmp_path / "r-local").iterdir())
    assert {"squeezenet1_1.md", "squeezenet1_1.json", "timm_regnetx-002.md", "index.md"} <= set(files)
    for name in files:
        assert (tmp_path / "r-local" / name).read_bytes() == (tmp_path / "r-ray" / name).read_bytes(), name


@pytest.mark.slow
def test_faults_are_contained_on_ray_as_locally(ray_session):
    def job(model: str) -> Job:
        return Job(f"tests.fault_models:{model}", "thop", input_shape=SHAPE)

    # ultralytics-thop is a pinned tool in a folder of its own: its worker on Ray finds it too
    jobs = [job("good"), job("hang"), job("segfault"), job("alloc_too_much"), job("good"),
            Job("tests.fault_models:good", "native", input_shape=SHAPE, device="meta"),
            Job("tests.fault_models:good", "ultralytics-thop", input_shape=SHAPE)]
    runs = executors.run(jobs, executor="ray", timeout=15)
    assert [r.status for r in runs] == ["ok", "timeout", "failed", "failed", "ok", "ok", "ok"], runs[-1].error_message
    assert runs[6].headline["macs"] == GOOD_MACS
    # the good model among them: conv 3->4 k3 on 8x8, 4 * 6 * 6 * 3 * 9 = 3,888 MACs
    assert runs[0].headline["macs"] == runs[4].headline["macs"] == GOOD_MACS
    assert runs[5].headline["macs"] == GOOD_MACS
    assert "no result after 15 s" in runs[1].error_message
    assert "SIGSEGV" in runs[2].error_message
    assert "allocate" in runs[3].error_message.lower()


def test_an_interrupted_zoo_resumes_to_the_same_table(tmp_path):
    models = "squeezenet1_1,mnasnet0_5,shufflenet_v2_x0_5,regnet_x_400mf"
    args = [sys.executable, "-m", "reconcile", "zoo", "--models", models, "--tools", TOOLS]
    whole = subprocess.run([*args, "--out", str(tmp_path / "whole")], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut"
    kept = out / ".zoo-runs" / "torchvision"
    proc = subprocess.Popen([*args, "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(kept.glob("*.gz"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C at a terminal
    proc.communicate(timeout=60)
    if (out / "zoo.md").exists():
        pytest.skip("the run finished before it could be interrupted")
    first = sorted(p.name for p in kept.glob("*.gz"))
    assert 2 <= len(first) < 4
    again = subprocess.run([*args, "--out", str(out), "--resume"], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(kept from an earlier run)") == len(first)
    assert (out / "zoo.md").read_bytes() == (tmp_path / "whole" / "zoo.md").read_bytes()
    assert (out / "zoo.png").read_bytes() == (tmp_path / "whole" / "zoo.png").read_bytes()


def test_a_kept_result_is_used_only_for_the_same_tools_timeout_and_versions(tmp_path):
    from tests.test_zoo_kept import small_runs

    kept = small_runs("resnet18")  # a ModelRuns: kept files are checked to hold one (issue 19)
    key = zoo.run_key("resnet18", ("native", "thop"), 600.0)
    path = tmp_path / zoo.kept_file("resnet18")
    path.write_bytes(zoo.dump_runs(key, kept))
    assert zoo.load_runs(path, key) == kept
    assert zoo.load_runs(path, zoo.run_key("resnet18", ("native",), 600.0)) is None
    assert zoo.load_runs(path, zoo.run_key("resnet18", ("native", "thop"), 60.0)) is None
    assert zoo.load_runs(path, {**key, "versions": {**key["versions"], "torch": "0.0"}}) is None
    path.write_bytes(b"not a result")
    assert zoo.load_runs(path, key) is None
    assert zoo.dump_runs(key, kept) == zoo.dump_runs(key, kept)  # same bytes: no timestamp


@pytest.mark.parametrize("argv, words", [
    (["zoo", "--models", "resnet18", "--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["report", "resnet18", "--ray-address", "1.2.3.4:6379"], "--ray-address needs --executor ray"),
])
def test_executor_mistakes_are_one_line(argv, words, capsys, tmp_path):
    assert cli.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_an_unreachable_cluster_is_one_line(tmp_path):
    # nothing listens on port 1: refused at once (Ray alone would retry for minutes)
    done = subprocess.run([sys.executable, "-m", "reconcile", "zoo", "--models", "resnet18", "--tools", "native",
                           "--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "could not reach the Ray cluster at '127.0.0.1:1'" in err[0], done.stderr
    assert not (tmp_path / "zoo.md").exists()


_LEAVES_NOTHING = """
from reconcile import executors
from reconcile.runner import Job
runs = executors.run([Job("tests.fault_models:good", t, input_shape=(1, 3, 8, 8)) for t in ("thop", "fvcore")],
                     executor="ray", timeout=120)
print(" ".join(r.status for r in runs))
"""


@pytest.mark.slow
def test_a_ray_run_leaves_nothing_in_the_temporary_folder(tmp_path):
    # Ray ends its workers (and their fork servers) with SIGKILL: their pymp-* folders must still go
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", _LEAVES_NOTHING], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "ok"]
    assert sorted(os.listdir(tmp_path)) == []
