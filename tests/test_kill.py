"""Stopping ``reconcile report`` by a signal at several moments: while it starts (1 s), while
the worker fork server imports torch (4 s), while workers run and one hangs with a child
process of its own (8 s, or once that child exists).

- SIGINT and SIGTERM: one line, exit code 128 + the signal (130, 143), no report half-written
  (here none: the run cannot have finished), no process of the run left once it has exited,
  nothing left in the temporary folder;
- SIGKILL: nothing can clean up in the killed process, yet its fork server and workers end by
  themselves within seconds (the server dies with its caller and kills its workers' process
  groups), and the temporary folder is left empty (the server removes the caller's pymp-*
  folder). So SIGKILL is sent once the fork server runs: before it exists, no process is left
  that could remove the folder the command has already made.
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
    elif sig == signal.SIGKILL:
        # only a process that outlives the caller can clean up after a SIGKILL: the fork server.
        # The command makes its pymp-* folder first thing (cli.main: torch's compile cache goes
        # there) and starts the server a moment later (0.2 s quiet, over 1 s on a busy machine):
        # a SIGKILL in between leaves that folder with no process to remove it, which the old
        # fixed sleep hit under load. So kill once the server runs (moment 1: while it starts
        # up, before its torch import is done).
        wait_for_process(proc.pid, "multiprocessing.forkserver")
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
    """SIGKILL at a fixed moment, whatever has started: the command's pymp-* folder is made only
    just before its fork server starts (``processes._made_temp_dir``), so a kill before then finds no
    folder to leave, and one after finds a server that removes it. Made at the command's start
    (as before), 4 runs of 24 killed at 0.1-3 s left a pymp-* folder, all at 0.2-0.3 s; made
    before multiprocessing's resource tracker started (a fork and exec), 4 of 18 at 0.35-0.4 s."""
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
