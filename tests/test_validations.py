"""What can be checked before the first tool runs is checked then, as one line and exit code 2
(issue 21): the output folder (a write probe: root passes ``os.access`` everywhere, /proc too),
empty arguments, the input dtype each tool can count (a tool that cannot is recorded as not
run, with why); and what every ``--help`` says: SPEC's every source, one --timeout default."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from reconcile import cli, pipeline, tools
from reconcile.atomic import check_writable
from reconcile.config import TIMEOUT, ZOO_TIMEOUT, RunConfig
from reconcile.sources import SOURCES

from tests.fault_models import GOOD_MACS, start

ROOT = Path(__file__).resolve().parents[1]
HANG = "tests.fault_models:hang"  # runs for the whole --timeout: a check made after the tools is 60 s late


def _immutable(folder: Path) -> bool:
    """``folder`` made unwritable even for root (chattr +i); False where that is not allowed."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return True
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


@pytest.mark.parametrize("where", ["/proc/nope", "/sys/nope", "", " ", "file", "file/below", "unwritable/x",
                                   "x" * 300])
def test_an_unwritable_out_is_refused_before_any_tool_runs(tmp_path, where):
    (tmp_path / "file").write_text("not a folder")
    if where.startswith("unwritable") and not _immutable(tmp_path / "unwritable"):
        pytest.skip("cannot make a folder unwritable here (chattr +i refused)")
    out = where if where.startswith("/") or not where.strip() else str(tmp_path / where)
    t0 = time.monotonic()
    proc = start(["report", HANG, "--input-shape", "1,3,8,8", "--tools", "native,thop", "--timeout", "60",
                  "--out", out], str(tmp_path / "tmp"))
    try:
        stdout, stderr = proc.communicate(timeout=50)
    finally:
        proc.kill()
        subprocess.run(["chattr", "-i", str(tmp_path / "unwritable")], capture_output=True)
    took = time.monotonic() - t0
    lines = stderr.strip().splitlines()
    assert proc.returncode == 2 and stdout == "" and len(lines) == 1, (proc.returncode, stdout, stderr)
    expected = "--out is empty" if not where.strip() else f"cannot write reports to {out!r}"
    assert lines[0].startswith(f"reconcile: error: {expected}"), lines
    # at once: the hanging model would have held a tool for 60 s (measured: /proc/nope was refused
    # after the tools ran, 13 s on resnet18; now about 0.5 s, the interpreter's start)
    assert took < 30
    assert os.listdir(tmp_path / "tmp") == []  # no fork server was started, no pymp-* folder made
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"file", "tmp"} | (
        {"unwritable"} if where.startswith("unwritable") else set()))  # the probe's folders removed


def test_a_missing_out_folder_is_not_made_by_the_probe(tmp_path):
    out = tmp_path / "a" / "b" / "c"
    assert check_writable(str(out)) == out
    assert not (tmp_path / "a").exists()  # made by the probe, removed again: made when a report is written


def test_roofline_plot_folder_is_checked_first(capsys):
    code = cli.main(["roofline", HANG, "--input-shape", "1,3,8,8", "--plot", "/proc/nope", "--timeout", "60"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.splitlines() == ["reconcile: error: cannot write pictures to '/proc/nope': No such file or "
                                "directory: choose another folder with --plot"]


@pytest.mark.parametrize("argv, message", [
    (["report", "resnet18", "--tools", ",,,"], "--tools names no tool (',,,')"),
    (["report", "resnet18", "--tools", ""], "--tools names no tool ('')"),
    (["tools", "resnet18", "--tools", " , "], "--tools names no tool (' , ')"),
    (["zoo", "--models", "", "--tools", "thop"], "no model given"),
    (["zoo", "--models", ",", "--tools", "thop"], "no model given"),
    (["zoo", "--source", "timm", "--published", "--models", ""], "no model given"),
    (["report", "", "--tools", "thop"], "no model given"),
    (["count", ","], "no model given"),
    (["report", "resnet18", "--out", ""], "--out is empty"),
    (["count", "resnet18", "--input-dtype", ""], "unknown input dtype ''"),  # was float32, silently
    (["tools", "resnet18", "--executor", "ray", "--ray-address", ""], "--ray-address is empty"),  # was "a local
    # Ray instance: Invalid address format", after the inputs were probed
    # before the model is counted (a hanging one holds its worker for the 60 s)
    (["roofline", HANG, "--input-shape", "1,3,8,8", "--timeout", "60", "--hardware", "custom:peak=x"],
     "bad --hardware 'custom:peak=x'"),
    (["roofline", HANG, "--input-shape", "1,3,8,8", "--timeout", "60", "--hardware", "local,h900"],
     "unknown hardware 'h900'"),
])
def test_empty_arguments_are_one_line_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)  # nothing may be written: a default --out would land here
    t0 = time.monotonic()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert time.monotonic() - t0 < 30  # found before any model or tool ran
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"reconcile: error: {message}"), err
    assert os.listdir(tmp_path) == []


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_spec_help_names_every_source():
    helps = {name: next(a.help for a in p._actions if a.dest == "specs")
             for name, p in _subparsers().items() if any(a.dest == "specs" for a in p._actions)}
    assert sorted(helps) == ["count", "predict", "report", "roofline", "tools"]
    for name, text in helps.items():
        for source in SOURCES.values():
            assert source.spec and source.spec in text, (name, source.kind)
        for form in ("resnet18", "timm:NAME", "hf:ClassName", "package.module:callable"):
            assert form in text


def test_one_timeout_default_everywhere():
    defaults = {name: next(a for a in p._actions if a.dest == "timeout")
                for name, p in _subparsers().items() if any(a.dest == "timeout" for a in p._actions)}
    assert sorted(defaults) == ["count", "predict", "report", "roofline", "tools", "zoo"]
    for name, action in defaults.items():
        want = ZOO_TIMEOUT if name == "zoo" else TIMEOUT
        assert action.default == want and f"(default {want:g})" in action.help, name
    assert RunConfig().timeout == TIMEOUT
    # what the README and the docs say, from the same two numbers (300, 600)
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"{TIMEOUT:g} s by default, {ZOO_TIMEOUT:g} s for `zoo`" in readme
    running = " ".join((ROOT / "docs" / "running-tools.md").read_text().split())
    assert f"default {TIMEOUT:g} s, {ZOO_TIMEOUT:g} s for `zoo`" in running
    # no other default named anywhere in the docs
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in re.finditer(r"default (\d+) ?s\b", " ".join(doc.read_text().split())):
            assert float(m.group(1)) in (TIMEOUT, ZOO_TIMEOUT), (doc.name, m.group(0))


def test_a_tool_that_cannot_count_the_dtype_is_not_run():
    assert tools.get("torchstat").cannot_run("float32") == ""
    assert "not in float16" in tools.get("torchsummary").cannot_run("float16")
    assert tools.get("thop").cannot_run("bfloat16") == ""  # no limit recorded: it runs
    config = RunConfig(tools=pipeline.parse_tools("thop,torchstat,torchsummary"), input_shape=(1, 3, 8, 8),
                       input_dtype="float16", timeout=120)
    (mr,) = pipeline.collect(["tests.fault_models:good"], config)
    runs = {r.tool: r for r in mr.runs}
    assert list(runs) == ["native", "thop", "torchstat", "torchsummary"]  # in the order asked for
    for name in ("torchstat", "torchsummary"):
        assert (runs[name].status, runs[name].error_type) == ("not run", "UnsupportedDtype")
        assert runs[name].error_message == (f"{name} counts models in float32 only (it makes its own float32 "
                                            "input), not in float16; to count with it, leave out --input-dtype float16")
        assert runs[name].seconds == 0.0 and runs[name].version  # never started; its version still recorded
    # conv 3->4 k3 on 8x8: 144 outputs x 27 = 3,888 MACs, in float16 too
    assert runs["thop"].status == "ok" and runs["thop"].headline["macs"] == GOOD_MACS == 3888
