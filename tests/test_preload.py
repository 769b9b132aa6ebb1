"""What the worker fork server imports before it forks (``processes.PRELOAD``, each run's tools'
``Tool.preload``, each source's ``Source.preload``): a command preloads only its own tools and its
run's sources (its server is stopped as it ends; its first run, finding a model's inputs, runs no
tool but preloads the command's), the API the modules of every default tool (its server serves the
process's later runs too). torchvision and pandas are not preloaded for a run
that does not use them (1.2 s of torchvision for a native count of a transformers model)."""

from __future__ import annotations

import pytest

from reconcile import pipeline, processes, runner, tools
from reconcile.cli import main
from reconcile.config import RunConfig
from reconcile.sources import preload_for


def test_each_source_and_tool_brings_its_own_modules():
    assert "torchvision" not in processes.PRELOAD and "pandas" not in processes.PRELOAD
    assert preload_for(["resnet18"]) == ("torchvision",)  # a name without a colon is torchvision's
    assert preload_for(["timm:resnet18", "hf:BertModel"]) == ("timm", "transformers")
    assert preload_for(["tests.fault_models:good"]) == ()
    assert tools.preload(["native"], every_default=False) == ("reconcile.counter.core",)
    assert tools.preload(["native", "thop"], every_default=False) == ("reconcile.counter.core", "thop")
    every = tools.preload(["native"])
    assert {"thop", "ptflops", "fvcore.nn", "torchstat"} <= set(every)  # torchstat imports pandas


@pytest.fixture
def preloads(monkeypatch) -> list[tuple[str, ...]]:
    """The preload of every fork server a run asks for, in order (the servers still start)."""
    asked: list[tuple[str, ...]] = []
    real = runner._forkserver_context

    def recording(extra=()):
        asked.append(tuple(extra))
        return real(extra)

    monkeypatch.setattr(runner, "_forkserver_context", recording)
    return asked


def test_a_command_preloads_only_its_tools_and_sources(preloads, capsys):
    assert processes.served_tools() is None
    assert main(["count", "tests.fault_models:good", "--format", "json"]) == 0
    # the first run finds the inputs of the callable (no tool), the second counts it
    assert preloads == [(), ("reconcile.counter.core",)]
    preloads.clear()
    assert main(["tools", "resnet18", "--tools", "native,thop", "--format", "json"]) == 0
    assert preloads and set(preloads) == {("reconcile.counter.core", "thop", "torchvision")}
    preloads.clear()
    assert main(["tools", "hf:BertModel:num_hidden_layers=1", "--tools", "native,thop", "--format", "json"]) == 0
    assert preloads and set(preloads) == {("reconcile.counter.core", "thop", "transformers")}  # the probe's too
    assert processes.served_tools() is None  # the command's setting ends with it


def test_the_api_preloads_every_default_tool(preloads):
    (mr,) = pipeline.collect(["tests.fault_models:good"], RunConfig(tools=("native",), timeout=120))
    assert mr.native is not None and not mr.error
    assert preloads and set(preloads) == {tools.preload(["native"])}
    runner.shutdown()


def _huge_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("AnonHugePages:"))


def _thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().partition("[")[2].partition("]")[0]
    except OSError:
        return "never"


@pytest.mark.skipif(_thp_mode() == "never", reason="this kernel gives no transparent huge pages")
@pytest.mark.parametrize("caller", [None, "glibc.malloc.hugetlb=0"])
def test_the_fork_server_asks_for_huge_pages_and_the_callers_tunable_wins(monkeypatch, caller):
    # the server's malloc asks for transparent huge pages (half the page faults of a zoo job here,
    # benchmarks/bench.py --only pages): the server holds some in huge pages (155 MB of its 446 MB
    # here), none when the caller's own GLIBC_TUNABLES says hugetlb=0 (it comes after ours, and
    # glibc takes the last setting of a name); the caller's environment is as it was
    import os
    from multiprocessing import forkserver

    if caller is None:
        monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    else:
        monkeypatch.setenv("GLIBC_TUNABLES", caller)
    runner.shutdown()
    try:
        with processes.one_command():  # a server preloading native's modules only (2 s, not 4)
            (mr,) = pipeline.collect(["tests.fault_models:good"], RunConfig(tools=("native",), timeout=120))
        assert mr.native is not None and not mr.error
        huge = _huge_kb(forkserver._forkserver._forkserver_pid)
        assert (huge > 0) if caller is None else (huge == 0), huge
        assert processes.server_tunables(caller) == "glibc.malloc.hugetlb=1" + (f":{caller}" if caller else "")
        assert os.environ.get("GLIBC_TUNABLES") == caller and "RECONCILE_CALLER" not in os.environ
    finally:
        runner.shutdown()
