"""Files written whole or not at all: a folder checked writable before any tool runs, and a set
of files each written to a temporary file beside its place and renamed into place only once all
were written, with the stop signals held back meanwhile. Imports nothing of reconcile's but its
errors, so every layer that writes (reports, the zoo's kept runs, a language model's phases) can.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path
from typing import Iterator

from reconcile.errors import ReconcileError


def check_writable(out: str, option: str = "--out", what: str = "reports") -> Path:
    """``out`` as a Path once it is known that reports can be written there, before any tool runs.
    A write probe, not ``os.access`` (which says yes to root, and to /proc): the folders missing
    on the way are made, a file is made and removed in the last, and the folders made are removed
    again, so a run that writes nothing leaves nothing (``write_files`` makes them for good)."""
    if not out or not out.strip():
        raise ReconcileError(f"{option} is empty: give the folder the {what} go to")
    path = Path(out)
    made: list[Path] = []
    try:
        missing = []
        parent = path
        while not parent.is_dir():
            if parent.exists() or parent.is_symlink():  # a file (or a dangling link) where a folder must be
                raise NotADirectoryError(20, "Not a directory")
            missing.append(parent)
            if parent == parent.parent:
                break
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".reconcile-check-", delete=True) as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as exc:
        raise ReconcileError(f"cannot write {what} to {out!r}: {exc.strerror or exc}: "
                             f"choose another folder with {option}") from exc
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP arriving inside are acted on (by their own handlers) on exit.
    Python-level, not ``pthread_sigmask``: a signal blocked in this thread would still be taken by
    another thread of the process, and its Python handler run here at once."""
    pending: list[int] = []
    saved = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            saved[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    except ValueError:  # not the main thread: signals are not ours to hold
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


class WriteFailed(ReconcileError):
    """A file could not be written (a full disk, a quota, a name the file system refuses): none of
    that call's files were, and no temporary file is left."""


def write_files(folder: Path, files: dict[str, str | bytes]) -> None:
    """Write every file whole or none: all are rendered first, each goes to a temporary file in
    the same folder, and they are renamed into place only once all were written, with SIGINT,
    SIGTERM and SIGHUP held back while they are. Files get the usual ``0o666 & ~umask``. Text is
    written as UTF-8 with ``\n`` line ends, bytes (pictures) as they are. A file that cannot be
    written (``ENOSPC``, ``EDQUOT``, ``ENAMETOOLONG``) is ``WriteFailed``, one line naming it; the
    temporary files are removed, so the folder holds what it held before."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReconcileError(f"cannot write reports to {str(folder)!r}: {exc.strerror or exc}: "
                             "choose another folder with --out") from exc
    mode = 0o666 & ~_umask()
    temps: list[tuple[str, Path]] = []
    name = ""
    try:
        try:
            for name, text in files.items():
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
                temps.append((name, Path(tmp)))  # before writing: a failed write must not leave it
                os.fchmod(fd, mode)  # mkstemp makes 0600
                if isinstance(text, bytes):
                    with os.fdopen(fd, "wb") as fb:
                        fb.write(text)
                else:
                    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                        fh.write(text)
            with _signals_held():
                for name, tmp in temps:
                    os.replace(tmp, folder / name)
                temps.clear()
        except OSError as exc:
            raise WriteFailed(f"could not write {name} in {str(folder)!r}: {exc.strerror or exc}") from exc
    finally:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)
