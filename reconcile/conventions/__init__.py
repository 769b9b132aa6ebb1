"""Each tool's counting convention, written once and used both to predict its numbers and to
explain them. ``get(tool)`` imports the convention lazily; none imports torch or the tool."""

from __future__ import annotations

import importlib

from reconcile.conventions.base import Convention

def get(tool: str) -> Convention:
    """The convention of ``tool``, as its registry entry names it (``reconcile.tools``; a pinned
    version's own, else its tool's)."""
    from reconcile import tools

    spec = tools.get(tool).convention  # an unknown tool: a ReconcileError naming the known ones
    if not spec:
        raise ImportError(f"{tool} has no convention yet")
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def available() -> dict[str, Convention]:
    """Every convention that is implemented, by tool name."""
    from reconcile import tools

    out = {}
    for tool in tools.names():
        try:
            out[tool] = get(tool)
        except (ImportError, AttributeError):
            continue
    return out


def table() -> dict[str, Convention]:
    """``reconcile.conventions()``: every implemented convention, by tool name."""
    return available()


class _CallableModule(type(importlib)):
    """Lets ``reconcile.conventions()`` return the table while ``reconcile.conventions.get`` and
    the submodules stay reachable under the same name."""

    def __call__(self) -> dict[str, Convention]:
        return table()


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
