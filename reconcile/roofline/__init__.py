"""Memory access cost, arithmetic intensity and the roofline, per layer, on named hardware.

``roofline(native_count, hardware)`` -> ``Roofline``; ``hardware`` names entries of the sourced
table (``hardware.toml``), ``custom:peak=...,bandwidth=...``, ``local`` (this machine, measured
once and cached) or ``Platform`` objects. Renderers (``render``, ``plot``) are pure functions of
the result and import no torch.
"""

from __future__ import annotations

import sys
import types
from typing import Sequence

from reconcile.records import NativeCount
from reconcile.roofline.core import Layer, Measured, OnPlatform, Roofline, faster_than_bound, roofline as _roofline
from reconcile.roofline.hardware import Platform, custom, named, split_keys, table

__all__ = ["Layer", "Measured", "OnPlatform", "Platform", "Roofline", "compute_dtype", "faster_than_bound", "platforms",
           "roofline", "table"]


def platforms(hardware: str | Sequence[str | Platform], dtype: str = "float32", tf32: bool = False) -> list[Platform]:
    """Resolve hardware names (``a100-80gb``, ``custom:peak=..,bandwidth=..``, ``local``) for a compute dtype."""
    keys = split_keys(hardware) if isinstance(hardware, str) else list(hardware)
    out: list[Platform] = []
    for k in keys:
        if isinstance(k, Platform):
            out.append(k)
        elif k == "local":
            from reconcile.roofline import local

            out.append(local.platform(dtype))
        elif k.startswith("custom:"):
            out.append(custom(k))
        else:
            out.append(named(k, dtype, tf32))
    return out


def roofline(native: NativeCount, hardware: str | Sequence[str | Platform] = "a100-80gb", *, per_op: bool = False,
             weight_dtype: str | None = None, tf32: bool = False, measured: Measured | None = None) -> Roofline:
    """The roofline of a native count on each hardware (peak chosen by the compute dtype)."""
    return _roofline(native, platforms(hardware, compute_dtype(native), tf32), per_op=per_op,
                     weight_dtype=weight_dtype, measured=measured)


def compute_dtype(native: NativeCount) -> str:
    """The dtype whose peak bounds the model: its first floating input's (token ids: float32)."""
    floats = [d for d in native.input_dtypes if d in ("float32", "float16", "bfloat16")]
    return floats[0] if floats else "float32"


class _CallableModule(types.ModuleType):
    """``reconcile.roofline(native, hardware)`` computes a roofline while ``reconcile.roofline.plot``
    and the other submodules stay reachable under the same name."""

    def __call__(self, native: NativeCount, hardware: str | Sequence[str | Platform] = "a100-80gb",
                 **kwargs: object) -> Roofline:
        return roofline(native, hardware, **kwargs)  # type: ignore[arg-type]


sys.modules[__name__].__class__ = _CallableModule
