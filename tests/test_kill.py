"""Stopping ``reconcile report`` by a signal at several moments: while it starts (1 s), while
the worker fork server imports torch (4 s), while workers run and one hangs with a child
process of its own (8 s, or once that child exists).

- SIGINT and SIGTERM: one line, exit code 128 + the signal (130, 143), no report half-written
  (here none: the run cannot have finished), no process of the run left once it has exited,
  nothing left in the temporary folder;
- SIGKILL: nothing can clean up in the killed process, yet its fork server and workers end by
  themselves within seconds (the server dies with its caller and kills its workers' process
  groups), and the temporary folder is left empty at any moment: the command's pymp-* folder is
  removed by a watcher process started before the folder is even named
  (``processes._watch_folder``), and by the fork server once it runs.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from reconcile.progress import PREFIX  # progress lines (one per model) are not errors

from tests.fault_models import session_processes, start, wait_for_session_end

SPECS = "tests.fault_models:spawn_child_and_hang,tests.fault_models:good"


def wait_for_process(sid: int, needle: str) -> None:
    """Wait (up to 60 s) until a process of session ``sid`` has ``needle`` in its command line."""
    deadline = time.monotonic() + 60
    while not any(needle in p for p in session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(needle in p for p in session_processes(sid)), session_processes(sid)


@pytest.mark.parametrize("moment", [1, 4, 8])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_run_leaves_nothing(tmp_path, sig, moment):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    proc = start(["report", SPECS, "--input-shape", "1,3,8,8", "--tools", "native,thop", "--timeout", "120",
                  "--out", str(out)], str(tmp))
    time.sleep(moment)
    if moment == 8:  # make sure the hang has started, with its child process
        wait_for_process(proc.pid, "sleep 3600")
    assert proc.poll() is None, proc.communicate()  # still running: the hang lasts 120 s
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=30)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        # the fork server may be importing torch (it dies at the next Python line it runs)
        assert wait_for_session_end(proc.pid, 30) == []
    else:
        assert proc.returncode == 128 + sig
        lines = [line for line in (stdout + stderr).strip().splitlines() if not line.startswith(PREFIX)]
        assert lines == ["reconcile: error: " + ("interrupted" if sig == signal.SIGINT else f"stopped by {sig.name}")]
        # the command stops its fork server before it exits; what is left is at most exiting
        assert wait_for_session_end(proc.pid, 10) == []
    assert not out.exists()  # no report was complete, so none was written, not even the folder
    assert sorted(os.listdir(tmp)) == []


@pytest.mark.parametrize("moment", [0.2, 0.3, 0.35, 0.4, 0.5])
def test_a_sigkill_before_the_fork_server_runs_leaves_nothing(tmp_path, moment):
    """SIGKILL at a fixed moment, whatever has started. Made at the command's start with only the
    fork server to remove it, 4 runs of 24 killed at 0.1-3 s left a pymp-* folder, all at 0.2-0.3 s;
    made just before the server's start, 4 of 18 at 0.35-0.4 s, and in full suites under load
    at 0.5 s and once the server's process existed (before it had imported its clean-up). Now a
    watcher started before the folder is named removes it (``test_the_watcher_removes_...``)."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    proc = start(["report", SPECS, "--input-shape", "1,3,8,8", "--tools", "native,thop", "--timeout", "120",
                  "--out", str(out)], str(tmp))
    time.sleep(moment)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert wait_for_session_end(proc.pid, 30) == []
    assert not out.exists()
    assert sorted(os.listdir(tmp)) == []


def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch, capsys):
    """A SIGINT 0.2 s after start landed before the command's signal handlers were set (while it
    built its parser and imported its modules): a traceback of 18 lines, exit -2. Now main()
    catches it there too: the same one line and 130 as later."""
    from reconcile import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["report", "resnet18"]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == ["reconcile: error: interrupted"]


def test_the_watcher_removes_the_folder_of_a_process_killed_by_sigkill(tmp_path):
    """The window no test above can aim at: the pymp-* folder made, no fork server yet, SIGKILL.
    A process reserves its folder (which starts the watcher), makes it, writes a file in it and
    kills itself: the watcher removes the folder and exits."""
    import subprocess
    import sys

    script = ("import os, signal\n"
              "from reconcile import processes\n"
              "folder = processes._reserved_temp_dir()\n"
              "os.makedirs(os.path.join(folder, 'inductor'))\n"
              "print(folder, flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr
    folder = stdout.strip()
    assert folder.startswith(str(tmp_path / "pymp-"))
    deadline = time.monotonic() + 10
    while os.path.exists(folder) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(os.listdir(tmp_path)) == []
    assert wait_for_session_end(proc.pid, 10) == []  # the watcher has exited too
