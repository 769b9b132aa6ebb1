"""Tools pinned at another version, each in its own installed folder (``tool_versions.toml``).

Guarantees:
- a pin is one line of ``tool_versions.toml``: its name (what ``--tools`` takes), the tool it
  extends, the exact distribution and version, and where its API or rules differ, its own adapter
  and convention; nothing else in reconcile names a pinned version;
- each pin lives in ``<sys.prefix>/tools/<name>`` (``.venv/tools/thop@0.0.22``), installed by
  ``python -m reconcile.versions install`` (``make setup``) with ``pip install --no-deps
  --target``: never in the environment itself, so ``thop`` and ``ultralytics-thop``, which install
  the same ``thop`` module, coexist;
- only a worker of that pin puts the folder at the front of ``sys.path`` (``activate``), after
  dropping the environment's copy of the module, which the fork server preloaded; the caller's
  process and every other worker never see it;
- a pin whose folder is missing or holds another version is a one-line ``ReconcileError`` saying
  what to run, raised before any job starts (``check``).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from reconcile.errors import ReconcileError
from reconcile.tools import TABLE, Tool, _table_lines, all_tools, tools_root  # noqa: F401 - tools_root re-exported

Pin = Tool  # a pinned version is a ``reconcile.tools.Tool`` whose ``version`` is set


def _table() -> dict[str, Tool]:
    return {name: t for name, t in all_tools().items() if t.pinned}


def names() -> tuple[str, ...]:
    return tuple(_table_lines())


def get(name: str) -> Tool | None:
    """The pin called ``name``, or None for a tool of the environment."""
    return _table().get(name)


def installed_version(pin: Pin) -> str | None:
    """The version of ``pin.dist`` in its folder (its ``.dist-info``), None when there is none."""
    folder = pin.folder()
    if not folder.is_dir():
        return None
    for dist in metadata.distributions(path=[str(folder)]):
        if _normal(dist.metadata["Name"] or "") == _normal(pin.dist):
            return dist.version
    return None


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def check(name: str) -> Pin | None:
    """The pin called ``name`` if it is installed as pinned; None for a tool of the environment;
    a ReconcileError saying what to run when its folder is missing or holds another version."""
    pin = get(name)
    if pin is None:
        return None
    found = installed_version(pin)
    if found != pin.version:
        what = f"not installed in {pin.folder()}" if found is None else f"{found} in {pin.folder()}, not {pin.version}"
        raise ReconcileError(f"{name} ({pin.requirement}) is {what}: run `make setup` "
                             f"(or `{pin.install_command()}`)")
    return pin


def activate(pin: Pin) -> None:
    """In a worker (never in the caller): make ``import <pin.module>`` load the pinned copy. The
    fork server preloaded the environment's copy, so its modules are dropped first."""
    prefix = pin.module + "."
    for key in [k for k in sys.modules if k == pin.module or k.startswith(prefix)]:
        del sys.modules[key]
    sys.path.insert(0, str(pin.folder()))
    importlib.invalidate_caches()


def install(names_: tuple[str, ...] = (), quiet: bool = True) -> list[str]:
    """Install every pin (or those named) whose folder does not hold its version; returns their
    names. Each goes to a temporary folder beside its place, renamed into place when pip is done,
    so an interrupted install leaves no folder that looks complete."""
    done = []
    root = tools_root()
    for pin in _table().values():
        if names_ and pin.name not in names_:
            continue
        if installed_version(pin) == pin.version:
            continue
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{pin.name}."))
        try:
            cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(tmp),
                   pin.requirement]
            if quiet:
                cmd.insert(4, "--quiet")
            subprocess.run(cmd, check=True)
            if pin.folder().exists():
                shutil.rmtree(pin.folder())
            os.replace(tmp, pin.folder())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        done.append(pin.name)
    return done


def main(argv: list[str] | None = None) -> int:
    """``python -m reconcile.versions install [NAME...]`` (make setup) or ``list``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["install"]:
        for name in install(tuple(args[1:])):
            print(f"installed {name} ({get(name).requirement}) in {get(name).folder()}")
        return 0
    if args[:1] == ["list"]:
        for pin in _table().values():
            print(f"{pin.name}\t{pin.requirement}\t{installed_version(pin) or 'not installed'}\t{pin.folder()}")
        return 0
    print("usage: python -m reconcile.versions install [NAME...] | list", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
