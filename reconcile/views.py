"""Derived views of a ``NativeCount``: inclusive roll-ups, by depth, by operator, DataFrames.

Pure functions over records; exact integers throughout. pandas is imported only by the
functions that return a DataFrame.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from reconcile.counter.formulas import flops_of
from reconcile.records import COMPONENTS, ModuleRow, NativeCount

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_SUMMED = ("params", "params_trainable", "params_frozen", "buffers", "activations", "bytes_read", "bytes_written")


def _ancestors(name: str) -> list[str]:
    out = [""]
    parts = name.split(".") if name else []
    for i in range(1, len(parts)):
        out.append(".".join(parts[:i]))
    return out


def inclusive(count: NativeCount) -> dict[str, dict[str, int]]:
    """Per module: its own work plus all descendants' (components, flops and the summed fields)."""
    names = {r.name for r in count.rows}
    acc: dict[str, Counter] = {r.name: Counter() for r in count.rows}
    for r in count.rows:
        own = Counter(r.components)
        for f in _SUMMED:
            own[f] += getattr(r, f)
        own["unknown_ops"] += sum(r.unknown_ops.values())
        targets = [r.name] + ([a for a in _ancestors(r.name) if a in names] if r.name else [])
        for t in targets:
            acc[t].update(own)
    result = {}
    for name, c in acc.items():
        comps = {k: c[k] for k in COMPONENTS if c[k]}
        d = dict(comps)
        d["flops"] = flops_of(comps)
        d["macs"] = comps.get("macs", 0)
        for f in _SUMMED + ("unknown_ops",):
            d[f] = c[f]
        result[name] = d
    return result


def intensity(flops: int, bytes_moved: int) -> Fraction | None:
    """Arithmetic intensity, FLOPs per byte moved (read + written); None when nothing moved."""
    return Fraction(flops, bytes_moved) if bytes_moved else None


def _row_dict(r: ModuleRow) -> dict[str, Any]:
    d: dict[str, Any] = {
        "module": r.name,
        "type": r.type,
        "depth": r.depth,
        "calls": r.calls,
        "macs": r.macs,
        "flops": r.flops,
    }
    for k in COMPONENTS:
        if k != "macs":
            d[k] = r.components.get(k, 0)
    d.update(
        params=r.params,
        params_trainable=r.params_trainable,
        params_frozen=r.params_frozen,
        buffers=r.buffers,
        output_elements=r.output_elements,
        activations=r.activations,
        bytes_read=r.bytes_read,
        bytes_written=r.bytes_written,
        unknown_ops=sum(r.unknown_ops.values()),
    )
    return d


def to_frame(count: NativeCount, include_inclusive: bool = True) -> "pd.DataFrame":
    """One row per module (``named_modules()`` order). Exclusive columns, plus ``*_incl``
    roll-ups of macs, flops and params when ``include_inclusive``."""
    import pandas as pd

    incl = inclusive(count) if include_inclusive else {}
    rows = []
    for r in count.rows:
        d = _row_dict(r)
        if include_inclusive:
            d["macs_incl"] = incl[r.name]["macs"]
            d["flops_incl"] = incl[r.name]["flops"]
            d["params_incl"] = incl[r.name]["params"]
        rows.append(d)
    return pd.DataFrame(rows).set_index("module")


def by_depth(count: NativeCount, depth: int) -> list[dict[str, Any]]:
    """Modules at depth <= ``depth`` with inclusive totals, in ``named_modules()`` order."""
    incl = inclusive(count)
    out = []
    for r in count.rows:
        if r.depth <= depth:
            d = {"module": r.name, "type": r.type, "depth": r.depth, "calls": r.calls}
            d.update(incl[r.name])
            out.append(d)
    return out


def by_operator(count: NativeCount) -> dict[str, dict[str, int]]:
    """aten op -> calls and components summed over all modules; unknown ops with ``counted=0``."""
    ops: dict[str, Counter] = {}
    for r in count.rows:
        for op, n in r.ops.items():
            c = ops.setdefault(op, Counter())
            c["calls"] += n
            c.update(r.op_components.get(op, {}))
        for op, n in r.unknown_ops.items():
            ops.setdefault(op, Counter())["calls"] += n
            ops[op]["unknown"] = 1
        for op, n in r.zero_cost_ops.items():
            ops.setdefault(op, Counter())["calls"] += n
    result = {}
    for op, c in sorted(ops.items()):
        comps = {k: c[k] for k in COMPONENTS if c[k]}
        result[op] = {"calls": c["calls"], "macs": comps.get("macs", 0), "flops": flops_of(comps),
                      "unknown": c["unknown"], **{k: v for k, v in comps.items() if k != "macs"}}
    return result


def training_by_depth(count: NativeCount, depth: int) -> list[dict[str, Any]]:
    """Modules at depth <= ``depth`` of a training count (``count(..., training=True)``), inclusive:
    forward MACs / FLOPs, backward MACs per ``GRAD_PARTS`` part, backward FLOPs, their sum."""
    from reconcile.records import GRAD_PARTS

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
        targets = [r.name] + ([a for a in _ancestors(r.name) if a in names] if r.name else [])
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
