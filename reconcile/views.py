"""Derived views of a ``NativeCount``: inclusive roll-ups, by depth, by operator, DataFrames, and
the per-module view of a training count.

Pure functions over records; exact integers throughout. The roll-ups themselves live in
``reconcile.rollup`` (below ``records``, so that ``NativeCount``'s methods can call them) and are
re-exported here. pandas is imported only by the functions that return a DataFrame.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any

from reconcile.components import flops_of
from reconcile.records import GRAD_PARTS, NativeCount
from reconcile.rollup import ancestors, by_depth, by_operator, inclusive, to_frame

__all__ = ["by_depth", "by_operator", "inclusive", "intensity", "to_frame", "training_by_depth"]


def intensity(flops: int, bytes_moved: int) -> Fraction | None:
    """Arithmetic intensity, FLOPs per byte moved (read + written); None when nothing moved."""
    return Fraction(flops, bytes_moved) if bytes_moved else None


def training_by_depth(count: NativeCount, depth: int) -> list[dict[str, Any]]:
    """Modules at depth <= ``depth`` of a training count (``count(..., training=True)``), inclusive:
    forward MACs / FLOPs, backward MACs per ``GRAD_PARTS`` part, backward FLOPs, their sum."""
    names = {r.name for r in count.rows}
    acc: dict[str, Counter] = {r.name: Counter() for r in count.rows}
    for r in count.rows:
        own: Counter = Counter()
        own["forward_macs"] = r.macs
        own["forward_flops"] = r.flops
        b = r.backward
        if b is not None:
            for part in GRAD_PARTS:
                comps = b.part(part)
                own[f"backward_macs_{part}"] = comps.get("macs", 0)
                own["backward_flops"] += flops_of(comps)
            own["backward_unknown_ops"] = sum(b.unknown_ops.values())
        targets = [r.name] + ([a for a in ancestors(r.name) if a in names] if r.name else [])
        for t in targets:
            acc[t].update(own)
    out = []
    for r in count.rows:
        if r.depth > depth:
            continue
        c = acc[r.name]
        d: dict[str, Any] = {"module": r.name, "type": r.type, "depth": r.depth,
                             "forward_macs": c["forward_macs"], "forward_flops": c["forward_flops"]}
        for part in GRAD_PARTS:
            d[f"backward_macs_{part}"] = c[f"backward_macs_{part}"]
        d["backward_macs"] = sum(c[f"backward_macs_{p}"] for p in GRAD_PARTS)
        d["backward_flops"] = c["backward_flops"]
        d["training_macs"] = d["forward_macs"] + d["backward_macs"]
        d["training_flops"] = d["forward_flops"] + d["backward_flops"]
        d["backward_unknown_ops"] = c["backward_unknown_ops"]
        out.append(d)
    return out
