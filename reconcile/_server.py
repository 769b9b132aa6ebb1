"""Imported only by the worker fork server (``reconcile.processes.PRELOAD``), never by a caller.

The server exits once the caller that started it is gone, even killed by SIGKILL: by SIGTERM
(``PR_SET_PDEATHSIG``, set before the server imports torch, so even while it does) or, later, by
EOF on its "alive" pipe (workers drop their copy of it). When it exits:
- every worker still running is killed with its whole process group, and so is every process
  below it that leads a group of its own (a group worker's tool children), so neither a hung tool
  nor a process the model started outlives the run (workers also die with the server by
  ``PR_SET_PDEATHSIG``, but that would spare their children); the server is a subreaper
  (``PR_SET_CHILD_SUBREAPER``), so a process a job started in a new session, orphaned, is its
  child too and is killed with them;
- if the caller died without cleaning up, its ``pymp-*`` folder (which holds the server's socket)
  is removed. A caller that is still alive removes it itself at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys


def _caller() -> tuple[int, bool]:
    """The pid of the process that started this server, and whether its main thread did (set by
    ``processes._forkserver_context`` in the environment, removed here so workers do not see it)."""
    pid, _, main = os.environ.pop("RECONCILE_CALLER", "").partition(",")
    return (int(pid) if pid.isdigit() else os.getppid()), main == "1"


_SIGNALLED = []  # the signal that stopped this server, if one did


def _stop(signum: int, frame: object) -> None:
    _SIGNALLED.append(signum)
    raise SystemExit(128 + signum)  # a normal exit: the clean-up below runs


def _caller_gone() -> bool:
    """Whether the caller has died. ``PR_SET_PDEATHSIG`` comes when the caller's main thread
    ends; ``getppid()`` changes only once its last thread has, and a thread of the caller may
    still be ending (importing a module from disk) for a while, its main thread a zombie. So a
    server stopped by a signal also reads the caller's state, for up to 3 s. A caller's own
    ``shutdown`` signals only a server that did not stop on EOF; a live caller removes its
    folder itself."""
    import time

    deadline = time.monotonic() + (3.0 if _SIGNALLED else 0.0)
    while True:
        if os.getppid() != _CALLER or _state(_CALLER) in ("Z", "X", ""):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _state(pid: int) -> str:
    """A process's state letter from /proc ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", errors="replace")
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2 :].split()[0]


def _children() -> list[int]:
    """This server's descendants, its own children first: a worker, and below a group worker
    (``reconcile.model_group``) each tool's child, which leads a process group of its own."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode("ascii", errors="replace")
        except OSError:
            continue
        parent[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])  # after "(comm)": state, ppid, ...
    pids, level = [], [os.getpid()]
    while level:
        level = [pid for pid, ppid in parent.items() if ppid in level]
        pids += level
    return pids


def _clean_up() -> None:
    if os.getpid() != _SERVER:  # a process forked from a worker that exits normally: not ours to do
        return
    try:
        children = _children()
    except OSError:  # no /proc: the workers still die with this process (PR_SET_PDEATHSIG)
        children = []
    for pid in children:  # read before any is killed: a tool's child dies with its group worker
        for kill in (os.killpg, os.kill):  # a worker (and a tool's child) leads its group once started
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if _caller_gone():  # the caller could not remove its temporary folder
        folder = os.path.dirname(_ADDRESS)
        if os.path.basename(folder).startswith("pymp-"):
            shutil.rmtree(folder, ignore_errors=True)
    # registered first, this hook runs last: skip tearing down torch & co (over a second), which
    # the caller's shutdown() would otherwise wait for at the end of every command
    os._exit(0)


def _fork_server_listener() -> int | None:
    """The fd of the fork server's socket while multiprocessing's fork server imports its preload
    list (this module's only legitimate importer: its ``main`` is on the stack), else None."""
    frame = sys._getframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith(os.path.join("multiprocessing", "forkserver.py")):
            return frame.f_locals.get("listener_fd")
        frame = frame.f_back
    return None


def _socket_path(fd: int | None) -> str:
    """Where the server listens: a file in the caller's ``pymp-*`` folder (known before the
    server sets ``_forkserver_address``, which it does only after its imports)."""
    if fd is None:
        return ""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, os.dup(fd)) as sock:
            name = sock.getsockname()
    except OSError:
        return ""
    return name if isinstance(name, str) else ""


_LISTENER = _fork_server_listener()
_CALLER, _FROM_MAIN_THREAD = _caller() if _LISTENER is not None else (0, False)
_ADDRESS = _socket_path(_LISTENER)
_SERVER = os.getpid()

def _become_subreaper() -> None:
    """Processes a job starts in a session of their own (``start_new_session=True``) leave the
    worker's group; with this, once the worker is gone they become this server's children, not
    init's, so the caller can end them when the job settles (``processes._end_orphans``) and this
    server at its exit (``_clean_up``)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # not Linux: such a process outlives the run, as before
        pass


if _CALLER:  # imported anywhere else, this module does nothing
    atexit.register(_clean_up)
    signal.signal(signal.SIGTERM, _stop)
    _become_subreaper()
    if _FROM_MAIN_THREAD:  # the signal follows the thread that started us, not the process
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # not Linux: the "alive" pipe still ends the server
            pass
    if os.getppid() != _CALLER:  # the caller died while this server was starting
        raise SystemExit(1)
