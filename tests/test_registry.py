"""The tool and source registries are the only lists: every entry's adapter and convention
import, the command line offers exactly the registry's names, nothing else in the run's path names
a tool, and a counter defined only by its two files and one entry runs, is predicted and explained."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from reconcile import conventions, pipeline, runner, tools
from reconcile.cli import build_parser, main
from reconcile.config import RunConfig
from reconcile.sources import SOURCES, with_zoo

ROOT = Path(__file__).resolve().parent.parent


def _attr(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", tools.names())
def test_every_tool_has_an_adapter_and_a_convention_that_import(name):
    tool = tools.get(name)
    assert _attr(tool.adapter).name == name or tool.pinned  # a pin's adapter may be its tool's
    assert _attr(tool.convention) is conventions.get(name)
    if tool.training_adapter:
        assert issubclass(_attr(tool.training_adapter), _attr(tool.adapter))
    assert tool.cost > 0


def test_one_reference_and_the_default_run():
    assert [t.name for t in tools.all_tools().values() if t.reference] == ["native"]
    # the default run: every tool of the environment and ultralytics-thop (default = true in its line)
    assert tools.defaults() == ("native", "thop", "ultralytics-thop", "ptflops", "ptflops-aten", "torchstat",
                                "torchsummary", "fvcore", "mmengine", "torchinfo", "flopcountermode",
                                "torchprofile", "torchscan", "torchscan-ops", "pthflops")
    # opt-in: each imports for seconds (DeepSpeed ~5 s; calflops imports transformers and timm)
    assert [t.name for t in tools.all_tools().values() if not t.default and not t.pinned] == [
        "deepspeed", "calflops", "flops-profiler"]
    assert pipeline.parse_tools("thop") == ("native", "thop")
    # training jobs and helper jobs resolve through the registry, nothing else
    assert runner.adapter_spec("native-training") == "reconcile.adapters.native:NativeTrainingAdapter"
    assert runner.adapter_spec("flopcountermode-training").endswith(":FlopCounterModeTrainingAdapter")
    assert tools.get("thop").job(training=True) == "thop"  # no training adapter: its forward only


def _choices(command: str, option: str) -> tuple[str, ...]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return tuple(action.choices)


def test_the_command_line_offers_the_registries_names():
    assert _choices("predict", "--tool") == tools.names()
    assert _choices("zoo", "--source") == _choices("models", "--source") == with_zoo() \
        == ("torchvision", "timm", "transformers")


@pytest.mark.parametrize("path", ["runner.py", "processes.py", "worker.py", "pipeline.py", "cli.py", "zoo.py",
                                  "config.py", "executors.py", "versions.py", "models.py", "conventions/__init__.py",
                                  "sources/__init__.py"])
def test_nothing_else_in_the_runs_path_names_a_tool(path):
    text = (ROOT / "reconcile" / path).read_text()
    # (the input probe is left out: "inputs" is also a field and a JSON key)
    named = [n for n in (*tools.names(), tools.TRACE) if f'"{n}"' in text or f"'{n}'" in text]
    assert named == []


@pytest.mark.parametrize("kind", list(SOURCES))
def test_every_source_module_has_the_source_functions(kind):
    module = SOURCES[kind].load()
    for fn in ("resolve", "default_inputs", "factory", "published"):
        assert callable(getattr(module, fn)), fn
    if SOURCES[kind].zoo_file:
        assert callable(module.names) and SOURCES[kind].ci_sample()


def test_a_source_with_published_columns_says_what_they_are():
    """The zoo page prints a source's published_note above its published columns: a new source
    with columns and no note was a KeyError when its page was written (the notes were a dict in
    reconcile.zoo, keyed by source); now it cannot be declared."""
    import dataclasses

    from reconcile.sources import Source

    assert all(s.published_note for s in SOURCES.values() if s.published_columns)
    with pytest.raises(ValueError, match="published_note"):
        Source("mine", "reconcile.sources.user", published_columns=(("gmacs", "my GMACs"),))
    assert dataclasses.replace(SOURCES["timm"], published_note="x").published_note == "x"


# ----- a counter is two files and one entry --------------------------------------------------------

PARAMSUM = tools.Tool("paramsum", "tests.tool_paramsum_adapter:ParamSumAdapter",
                      "tests.tool_paramsum_convention:CONVENTION", default=False)
SPEC = "tests.tool_paramsum_adapter:tiny"


@pytest.fixture
def paramsum(monkeypatch):
    monkeypatch.setattr(tools, "BUILTIN", tools.BUILTIN + (PARAMSUM,))


def test_a_tool_of_one_entry_is_unknown_without_it():
    with pytest.raises(Exception, match="unknown tool 'paramsum'"):
        RunConfig(tools=("paramsum",))


def test_a_tool_of_one_entry_runs_and_is_explained(paramsum, capsys):
    (mr,) = pipeline.collect([SPEC], RunConfig(tools=pipeline.parse_tools("paramsum"), timeout=120))
    assert [r.tool for r in mr.runs] == ["native", "paramsum"]
    run = mr.runs[1]
    assert run.status == "ok", run.error_message
    assert run.headline == {"params": 120}  # 4*3*3*3 + 4 (conv) + 4 + 4 (batch norm) = 120
    report = pipeline.reconcile_model(mr)
    (explained,) = [t for t in report.tools if t.tool == "paramsum"]
    assert explained.status == "ok" and not any(explained.headline.residual.values())
    # predicted from the native count alone, through the command line's choices
    assert main(["predict", SPEC, "--tool", "paramsum"]) == 0
    out = capsys.readouterr().out
    assert "headline: params 120" in out
