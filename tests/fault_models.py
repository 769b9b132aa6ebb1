"""Model factories that misbehave on purpose, for ``tests/test_faults.py`` and ``tests/test_kill.py``.

Every fault happens inside ``forward`` and only on real (CPU) tensors: the native counter runs on
the meta device and must still count these models, while the CPU tools (thop, fvcore, ...) meet
the fault. Each factory has ``example_input_shape = (1, 3, 8, 8)``. ``good`` is the control:
conv 3->4 k3 on 8x8 gives 4x6x6 = 144 outputs, 144 * 3 * 9 = 3,888 MACs.
"""

from __future__ import annotations

import os
import sys
import time

import torch
from torch import nn

SHAPE = (1, 3, 8, 8)
GOOD_MACS = 144 * 3 * 9  # 3,888


class _Faulty(nn.Module):
    """conv -> relu; ``fault()`` runs in forward on real tensors only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)

    def fault(self) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":
            self.fault()
        return torch.relu(self.conv(x))


def _factory(name: str, fault):
    def make() -> nn.Module:
        model = _Faulty()
        model.fault = fault  # type: ignore[method-assign]
        return model

    make.__name__ = name
    make.example_input_shape = SHAPE  # type: ignore[attr-defined]
    return make


def _hang() -> None:
    while True:
        time.sleep(1)


def _abort() -> None:
    os.abort()


def _segfault() -> None:
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


def _exit() -> None:
    os._exit(3)  # no cleanup, no exception: the worker just disappears


def _sys_exit() -> None:
    sys.exit("a model that calls sys.exit")


def _alloc_too_much() -> None:
    # Safe on a shared machine: the address space of this (throwaway) process is first capped
    # at its current size plus 1 GiB, so the 64 GiB request fails at once whatever the
    # kernel's overcommit policy, and nothing is ever touched.
    import resource

    with open("/proc/self/statm") as fh:
        size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))
    torch.empty(64 * 2**30, dtype=torch.uint8).fill_(1)


def _print_megabytes() -> None:
    line = "x" * 99
    for _ in range(100_000):  # 100,000 lines of 100 bytes: 10 MB, to stdout and stderr alike
        print(line)
    sys.stdout.flush()
    os.write(2, b"y" * 1_000_000 + b"\n")


def _spawn_child_and_hang() -> None:
    import subprocess

    subprocess.Popen(["sleep", "3600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _hang()


def _changes_global_torch_state() -> None:
    # what a careless model (or tool) might do to its process; no other job may see any of it
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    torch.set_grad_enabled(True)
    torch.manual_seed(1234)
    nn.Conv2d.forward = lambda self, x: torch.zeros(1)  # type: ignore[method-assign]
    torch.nn.functional.relu = lambda x, inplace=False: x


def _kill_server() -> None:
    import signal

    os.kill(os.getppid(), signal.SIGKILL)  # a worker's parent is reconcile's fork server
    _hang()  # the worker itself dies with its server (PR_SET_PDEATHSIG)


NEW_SESSION_SLEEP = "3599"  # ``sleep 3599``: the process to look for


def new_session_sleepers() -> set[int]:
    """The pids of the ``sleep NEW_SESSION_SLEEP`` processes running now."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if fh.read() == f"sleep\0{NEW_SESSION_SLEEP}\0".encode():
                    found.add(int(entry))
        except (OSError, ValueError):
            continue
    return found


def server_killer():
    """An ``on_start`` callback that kills the worker fork server (SIGKILL) as the first job starts,
    and the list that then holds the killed server's pid."""
    import signal
    from multiprocessing import forkserver

    killed: list[int] = []

    def kill_server(job) -> None:
        if not killed:
            killed.append(forkserver._forkserver._forkserver_pid)
            os.kill(killed[0], signal.SIGKILL)

    return kill_server, killed


def _child_in_new_session() -> None:
    import subprocess

    # out of the worker's process group: killing the group does not reach it
    subprocess.Popen(["sleep", NEW_SESSION_SLEEP], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


hang = _factory("hang", _hang)
kills_server = _factory("kills_server", _kill_server)
child_in_new_session = _factory("child_in_new_session", _child_in_new_session)
abort = _factory("abort", _abort)
segfault = _factory("segfault", _segfault)
exit = _factory("exit", _exit)  # noqa: A001 - the fault's name
sys_exit = _factory("sys_exit", _sys_exit)
alloc_too_much = _factory("alloc_too_much", _alloc_too_much)
print_megabytes = _factory("print_megabytes", _print_megabytes)
spawn_child_and_hang = _factory("spawn_child_and_hang", _spawn_child_and_hang)
changes_global_torch_state = _factory("changes_global_torch_state", _changes_global_torch_state)
good = _factory("good", lambda: None)
# its forward takes 8 s on real tensors (on meta, native counts it at once): a run still in its
# middle when something is killed (tests/test_ray_lockdown.py kills the raylet)
slow = _factory("slow", lambda: time.sleep(8))


# ----- for the tests that run these models through the command line -------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(argv: list[str], tmp: str, **kwargs):
    """``python -m reconcile *argv`` from the project root in a session of its own (its id is the
    pid), with ``TMPDIR`` at ``tmp`` (empty), so that what the run leaves in the temporary folder
    (torch's compile cache folder included) is all that is found there afterwards."""
    import subprocess

    os.makedirs(tmp, exist_ok=True)
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TMPDIR=tmp, PYTHONPATH=path)
    return subprocess.Popen([sys.executable, "-m", "reconcile", *argv], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def session_processes(sid: int) -> list[str]:
    """Living processes (zombies are dead, only not yet reaped) of session ``sid``, as text."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode("ascii", errors="replace")
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] not in "ZX":
            found.append(f"{entry} {fields[0]} {cmd}")
    return found


def wait_for_session_end(sid: int, seconds: float) -> list[str]:
    """The processes of session ``sid`` still alive after up to ``seconds`` seconds."""
    deadline = time.monotonic() + seconds
    while True:
        alive = session_processes(sid)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.2)


# a factory whose spec, ``tests.fault_models:long_name_xxx...``, is 240 characters: longer than a
# file name may be once reconcile adds its suffixes (issue 19)
LONG_NAME = "long_name_" + "x" * (240 - len("tests.fault_models:long_name_"))
globals()[LONG_NAME] = _factory(LONG_NAME, lambda: None)
LONG_SPEC = f"tests.fault_models:{LONG_NAME}"
