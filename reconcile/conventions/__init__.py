"""Each tool's counting convention, written once and used both to predict its numbers and to
explain them. ``get(tool)`` imports the convention lazily; none imports torch or the tool."""

from __future__ import annotations

import importlib

from reconcile.conventions.base import Convention

# tool name -> "module:attribute" of its Convention instance
REGISTRY: dict[str, str] = {
    "native": "reconcile.conventions.native:CONVENTION",
    "thop": "reconcile.conventions.thop:CONVENTION",
    "ptflops": "reconcile.conventions.ptflops:CONVENTION",
    "ptflops-aten": "reconcile.conventions.ptflops_aten:CONVENTION",
    "torchstat": "reconcile.conventions.torchstat:CONVENTION",
    "torchsummary": "reconcile.conventions.torchsummary:CONVENTION",
    "fvcore": "reconcile.conventions.fvcore:CONVENTION",
    "flopcountermode": "reconcile.conventions.flopcountermode:CONVENTION",
    "torchinfo": "reconcile.conventions.torchinfo:CONVENTION",
    "mmengine": "reconcile.conventions.mmengine:CONVENTION",
    "torchprofile": "reconcile.conventions.torchprofile:CONVENTION",
    "torchscan": "reconcile.conventions.torchscan:CONVENTION",
    "torchscan-ops": "reconcile.conventions.torchscan_ops:CONVENTION",
    "pthflops": "reconcile.conventions.pthflops:CONVENTION",
    "deepspeed": "reconcile.conventions.deepspeed:CONVENTION", "calflops": "reconcile.conventions.calflops:CONVENTION", "flops-profiler": "reconcile.conventions.flops_profiler:CONVENTION",
}


def get(tool: str) -> Convention:
    from reconcile import versions

    pin = versions.get(tool)  # a pinned version: its own convention, else its tool's
    spec = REGISTRY.get(tool) or (pin and (pin.convention or REGISTRY.get(pin.tool)))
    if not spec:
        from reconcile.errors import ReconcileError

        raise ReconcileError(f"unknown tool {tool!r}: choose from {', '.join([*REGISTRY, *versions.names()])}")
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def available() -> dict[str, Convention]:
    """Every convention that is implemented, by tool name."""
    from reconcile import versions

    out = {}
    for tool in (*REGISTRY, *versions.names()):
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
