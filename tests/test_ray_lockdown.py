"""A local Ray instance locked down (issue 19): every process of the run listens on the loopback
interface only, its folder is private (0700), a stop signal ends the run with the documented exit
code and one line (no Ray dump), and a SIGKILL of reconcile leaves no Ray process and no folder;
an address that is not Ray is a one-line error at once.

Each case starts a local Ray instance (about 15 s here), so the cases are few and marked slow.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

pytest.importorskip("ray")

from tests.fault_models import ROOT  # noqa: E402

LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _listeners() -> dict[int, list[str]]:
    """Listening TCP sockets by inode: their local addresses, from /proc/net/tcp and tcp6."""
    found: dict[int, list[str]] = {}
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open(f"/proc/net/{name}") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hexaddr, port = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc/net holds the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            addr = socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, raw)
            found.setdefault(int(fields[9]), []).append(f"{addr}:{int(port, 16)}")
    return found


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _sockets_of(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    except OSError:
        pass
    return inodes


def _naming(text: str) -> list[str]:
    """Living processes whose command line or environment holds ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for name in ("cmdline", "environ"):
            try:
                with open(f"/proc/{entry}/{name}", "rb") as fh:
                    if text.encode() in fh.read():
                        with open(f"/proc/{entry}/stat") as st:
                            if st.read().rsplit(")", 1)[1].split()[0] not in "ZX":
                                found.append(entry)
                        break
            except OSError:
                continue
    return found


@pytest.fixture
def short_tmp():
    # short, so that Ray's own folder goes in it (a long TMPDIR sends it to /tmp: socket path limits)
    folder = tempfile.mkdtemp(prefix="rl-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _start(tmp: str) -> subprocess.Popen:
    env = dict(os.environ, TMPDIR=tmp, PYTHONPATH=str(ROOT))
    # hang: thop hangs on it until the timeout, so the run is in the middle when it is stopped
    return subprocess.Popen([sys.executable, "-m", "reconcile", "zoo", "--models", "tests.fault_models:hang",
                             "--tools", "native,thop", "--timeout", "120", "--executor", "ray",
                             "--out", os.path.join(tmp, "out")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_ray_workers(proc: subprocess.Popen, seconds: float = 240) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        pids = _tree(proc.pid)
        names = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/comm") as fh:
                    names.append(fh.read().strip())
            except OSError:
                pass
        if any(n.startswith("ray::") and "IDLE" not in n and "Agent" not in n and "RuntimeEnv" not in n
               for n in names) or sum(n.startswith("ray::") for n in names) >= 3:
            time.sleep(3)  # the task has started its fork server
            return _tree(proc.pid)
        time.sleep(0.2)
    raise AssertionError(f"no Ray workers: {proc.communicate(timeout=60)}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_local_ray_run_is_private_and_stops_cleanly(short_tmp, sig):
    proc = _start(short_tmp)
    try:
        pids = _wait_for_ray_workers(proc)
        if sig == signal.SIGTERM:  # once is enough: every listener of the run, on loopback only
            listening = _listeners()
            seen = {addr for pid in pids for inode in _sockets_of(pid) for addr in listening.get(inode, [])}
            assert len(seen) >= 4, seen  # GCS, raylet (2), the driver and each worker
            assert all(addr.rsplit(":", 1)[0] in LOOPBACK for addr in seen), seen
            folders = [f for f in os.listdir(short_tmp) if f.startswith("reconcile-ray-")]
            assert len(folders) == 1
            assert os.stat(os.path.join(short_tmp, folders[0])).st_mode & 0o777 == 0o700
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + sig, err
        assert err.strip().splitlines() == [f"reconcile: error: stopped by {signal.Signals(sig).name}"], err
    deadline = time.monotonic() + 60
    while (_naming(short_tmp) or os.listdir(short_tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _naming(short_tmp) == []  # no raylet, GCS, DashboardAgent, RuntimeEnvAgent or worker left
    assert os.listdir(short_tmp) == []  # nor its session folder


class _Http(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_address_that_is_not_ray_is_one_line_at_once(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Http)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "reconcile", "zoo", "--models", "resnet18", "--tools", "native",
                               "--executor", "ray", "--ray-address", address, "--out", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
    finally:
        server.shutdown()
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and f"'{address}' is not a Ray cluster: it answered '" in err[0], done.stderr
    assert took < 30  # Ray alone retries for minutes
    assert not (tmp_path / "zoo.md").exists()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


@pytest.mark.slow
def test_a_killed_raylet_is_silent_and_its_jobs_run_again(short_tmp):
    """SIGKILL of the local instance's raylet while its tasks run (the model's forward sleeps 8 s
    on CPU, so thop and fvcore are mid-job): before, about 44 lines of the raylet's log reached
    stdout (into --format json's output) from Ray's driver, and the jobs ended as
    LocalRayletDiedError, not retried; now stdout is the one JSON line, every tool ran (on a new
    local instance), and nothing is left."""
    env = dict(os.environ, TMPDIR=short_tmp, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "reconcile", "tools", "tests.fault_models:slow", "--input-shape",
                             "1,3,8,8", "--tools", "native,thop,fvcore", "--timeout", "120", "--executor", "ray",
                             "--format", "json"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        raylet = None
        while raylet is None and time.monotonic() < deadline and proc.poll() is None:
            pids = _tree(proc.pid)
            if any(_comm(p).startswith("ray::_job_on") for p in pids):
                raylet = next((p for p in pids if _comm(p) == "raylet"), None)
            time.sleep(0.2)
        assert raylet is not None, proc.communicate(timeout=60)
        time.sleep(2)  # the tasks' fork servers are up, their jobs running
        os.kill(raylet, signal.SIGKILL)
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    (line,) = out.strip().splitlines()  # nothing of Ray's in stdout
    runs = json.loads(line)["tools"]
    assert {t: r["status"] for t, r in runs.items()} == {"native": "ok", "thop": "ok", "fvcore": "ok"}
    # conv 3->4 k3 on 8x8: 144 outputs x 27 = 3,888 MACs
    assert runs["thop"]["headline"]["macs"] == 3888
    assert [x for x in err.splitlines() if not x.startswith("reconcile: progress")] == []
    deadline = time.monotonic() + 60
    while (_naming(short_tmp) or os.listdir(short_tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _naming(short_tmp) == [] and os.listdir(short_tmp) == []


@pytest.mark.slow
def test_a_ray_session_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    """Ray's import reads RAY_DISABLE_FAILURE_SIGNAL_HANDLER (set by reconcile before it) and
    ray.init sets PYTHONBREAKPOINT for good: both are gone again once the session ends."""
    from reconcile import executors

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", raising=False)
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray connection of this process is open: the session would reuse it")
    from reconcile.runner import Job

    before = dict(os.environ)
    with executors.session("ray"):
        assert ray.is_initialized()
        assert os.environ.get("PYTHONBREAKPOINT")  # what Ray sets, while it runs
    assert not ray.is_initialized()
    assert dict(os.environ) == before
    # the same through executors.run, which starts its own session (and first checks Ray is there)
    (run,) = executors.run([Job("tests.fault_models:good", "thop", input_shape=(1, 3, 8, 8))], executor="ray",
                           timeout=120)
    assert (run.status, run.headline["macs"]) == ("ok", 3888)  # 144 outputs x 27
    assert not ray.is_initialized()
    assert dict(os.environ) == before


@pytest.mark.parametrize("base, kept", [
    # Ray's longest socket path under the folder it gets: "/reconcile-ray-" + 8 characters +
    # "/ray/session_" + "2026-12-05_12-14-43_881331" (26) + "_" + a 7-digit pid +
    # "/sockets/plasma_store" = 15 + 8 + 13 + 26 + 1 + 7 + 21 = 91 bytes; a socket path holds 107,
    # so a temporary folder of up to 107 - 91 = 16 bytes is kept
    ("/tmp", True),
    ("/tmp/w0abcdefgh", True),  # 15 bytes: a test worker's (tests/conftest.py)
    ("/tmp/w10abcdefgh", True),  # 16
    ("/tmp/w100abcdefgh", False),  # 17
    ("/tmp/rt-gw0-fgdnkuq9", False),  # 20: the folder that made Ray fail (a 110-byte path)
])
def test_a_long_temporary_folder_moves_rays_sockets_to_tmp(monkeypatch, base, kept):
    from reconcile import executors

    monkeypatch.setattr(tempfile, "tempdir", base)
    assert executors._short_temp_dir() == (base if kept else "/tmp")
    worst = os.path.join(base, "reconcile-ray-abcdefgh", "ray", "session_2026-12-05_12-14-43_881331_4194304",
                         "sockets", "plasma_store")
    assert (len(worst) <= 107) == kept
