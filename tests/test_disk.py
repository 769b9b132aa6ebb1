"""What is written when writing fails (issue 19): a model name too long for the file system gets a
shortened, still unique file stem; a full disk loses only the files that could not be written, with
one line saying so, and leaves no temporary file. The full disk is simulated: in the reconcile
process, every write of the files named ``FULL`` raises ``ENOSPC`` (a real small tmpfs, as root, gives
the same lines: see the issue's closing note)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from reconcile.progress import PREFIX
from reconcile.report.files import STEM_LIMIT, file_stem
from tests.fault_models import LONG_SPEC

ROOT = Path(__file__).resolve().parent.parent

# runs ``reconcile ARGV...`` with writes of files whose name holds FULL failing with ENOSPC
_FULL_DISK = textwrap.dedent("""
    import errno, os, sys

    real = os.fdopen
    FULL = sys.argv[1]

    class Full:
        def __init__(self, f):
            self.f = f
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_write = os.write

    def write(fd, data):  # the zoo's rows file is appended with os.write
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if FULL in os.path.basename(name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return f
        return Full(f) if FULL in os.path.basename(name) else f

    if __name__ == "__main__":
        os.fdopen, os.write = fdopen, write
        from reconcile import cli
        sys.exit(cli.main(sys.argv[2:]))
""")


def _run(tmp_path: Path, full: str, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return subprocess.run([sys.executable, "-c", _FULL_DISK, full, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(PREFIX)]


def test_long_names_get_short_unique_stems():
    a, b = "tests.models:" + "a" * 300, "tests.models:" + "a" * 299 + "b"
    for name in (a, b, "x" * 250, "é" * 200):
        assert len(file_stem(name).encode()) <= STEM_LIMIT
    assert file_stem(a) != file_stem(b)  # the same first 100 bytes, different names
    assert file_stem(a).startswith("tests.models_" + "a" * 20) and "~" in file_stem(a)
    assert file_stem("resnet18") == "resnet18" and file_stem("my_pkg:make") == "my-pkg_make"  # short: as before
    assert len(LONG_SPEC) == 240


def test_a_240_character_model_name_is_reported(tmp_path):
    out = tmp_path / "out"
    done = _run(tmp_path, "nothing-is-full", "report", LONG_SPEC, "--tools", "native,thop", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert _errors(done.stderr) == []
    stem = file_stem(LONG_SPEC)
    assert len(stem.encode()) <= STEM_LIMIT
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.md", f"{stem}.md", f"{stem}.json", f"{stem}.csv", f"{stem}.png"])
    assert f"({stem}.md)" in (out / "index.md").read_text()
    assert os.listdir(tmp_path / "tmp") == []


def test_a_full_disk_loses_only_the_model_it_could_not_write(tmp_path):
    out = tmp_path / "out"
    first, second = "tests.fault_models:good", "tests.fault_models:hang"  # hang: only on CPU, native counts on meta
    done = _run(tmp_path, f"{file_stem(second)}.csv", "report", f"{first},{second}", "--tools", "native",
                "--out", str(out))
    assert done.returncode == 2, done.stderr
    errors = _errors(done.stderr)
    assert "Traceback" not in done.stderr
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"reconcile: error: could not write {file_stem(second)}.csv in ")
    assert "No space left on device" in errors[0] and f"the report of {second} was not written" in errors[0]
    names = sorted(p.name for p in out.iterdir())  # the first model whole, none of the second, the index
    assert names == sorted(["index.md", *(f"{file_stem(first)}.{x}" for x in ("md", "json", "csv"))])  # no tool: no picture
    assert file_stem(second) not in (out / "index.md").read_text()
    assert os.listdir(tmp_path / "tmp") == []


def test_a_full_disk_while_keeping_zoo_results_loses_only_what_it_could_not_write(tmp_path):
    out = tmp_path / "out"
    specs = "tests.fault_models:good,tests.fault_models:hang"
    argv = ("zoo", "--models", specs, "--tools", "native", "--out", str(out))
    done = _run(tmp_path, ".runs.json.gz", *argv)  # the runs files cannot be written, the rows file can
    assert done.returncode == 0, done.stderr
    errors = _errors(done.stderr)
    assert "Traceback" not in done.stderr
    assert len(errors) == 2, done.stderr
    # a line per model as it completes, in whatever order they do (the hang may finish first under load)
    for spec in specs.split(","):
        (line,) = [e for e in errors if e.startswith(f"reconcile: {spec}: ")]
        assert line.startswith(f"reconcile: {spec}: its runs could not be kept (could not write ")
        assert "No space left on device" in line and line.endswith("; --resume takes it from its row")
    assert sorted(p.name for p in out.iterdir()) == [".zoo-runs", "zoo.md", "zoo.png"]
    assert os.listdir(out / ".zoo-runs" / "torchvision") == ["rows.jsonl"]  # no .tmp left, no runs file
    assert os.listdir(tmp_path / "tmp") == []
    page = (out / "zoo.md").read_bytes()
    # and --resume takes both from their rows: nothing runs, the page is the same
    (tmp_path / "tmp").rmdir()
    again = _run(tmp_path, "nothing-is-full", *argv, "--resume")
    assert again.returncode == 0, again.stderr
    assert _errors(again.stderr) == [] and again.stdout.count("(kept from an earlier run)") == 2, again.stdout
    assert (out / "zoo.md").read_bytes() == page


def test_a_full_disk_that_loses_both_a_zoo_models_runs_and_its_row_says_so(tmp_path):
    out = tmp_path / "out"
    # "s.json" is in both "<model>.runs.json.gz" and "rows.jsonl", in neither zoo.md nor zoo.png
    done = _run(tmp_path, "s.json", "zoo", "--models", "tests.fault_models:good", "--tools", "native",
                "--out", str(out))
    assert done.returncode == 0, done.stderr
    (line,) = _errors(done.stderr)
    assert line.startswith("reconcile: tests.fault_models:good: its result could not be kept for --resume "
                           "(could not write "), line
    assert line.count("No space left on device") == 2, line
    assert sorted(p.name for p in out.iterdir()) == [".zoo-runs", "zoo.md", "zoo.png"]
    assert os.listdir(out / ".zoo-runs" / "torchvision") in ([], ["rows.jsonl"])  # made, nothing written in it
    assert os.listdir(tmp_path / "tmp") == []
