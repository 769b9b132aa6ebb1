"""Roll-ups of a ``NativeCount``'s rows: inclusive sums, modules by depth, work by operator, a DataFrame.

Pure functions over the rows; exact integers throughout. This module sits below ``records``: it
imports no record type at run time (only for annotations), so ``NativeCount``'s methods can call
it without an import circle. pandas is imported only by ``to_frame``. ``reconcile.views`` is the
public face (it re-exports these and adds the views of a training count).
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from reconcile.components import COMPONENTS, flops_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from reconcile.records import ModuleRow, NativeCount

_SUMMED = ("params", "params_trainable", "params_frozen", "buffers", "activations", "bytes_read", "bytes_written")


def ancestors(name: str) -> list[str]:
    """The names of every module enclosing ``name``, the root ``""`` first."""
    out = [""]
    parts = name.split(".") if name else []
    for i in range(1, len(parts)):
        out.append(".".join(parts[:i]))
    return out


_T = TypeVar("_T")
_MEMO: dict[tuple[int, str], Any] = {}


def memo(count: NativeCount, what: str, make: Callable[[NativeCount], _T]) -> _T:
    """``make(count)``, made once per count and ``what`` while the count lives (the explanation of
    a model asks each convention's questions of the same count, ten and more times). The value is
    shared: callers only read it."""
    key = (id(count), what)
    try:
        return _MEMO[key]
    except KeyError:
        pass
    value = _MEMO[key] = make(count)
    weakref.finalize(count, _MEMO.pop, key, None)  # an id is reused only after its object is gone
    return value


def shared_inclusive(count: NativeCount) -> dict[str, dict[str, int]]:
    """``inclusive(count)``, made once per count and shared: read it, never change it."""
    return memo(count, "inclusive", _inclusive)


def inclusive(count: NativeCount) -> dict[str, dict[str, int]]:
    """Per module: its own work plus all descendants' (components, flops and the summed fields)."""
    return {name: dict(d) for name, d in shared_inclusive(count).items()}


def _inclusive(count: NativeCount) -> dict[str, dict[str, int]]:
    names = {r.name for r in count.rows}
    acc: dict[str, Counter] = {r.name: Counter() for r in count.rows}
    for r in count.rows:
        own = Counter(r.components)
        for f in _SUMMED:
            own[f] += getattr(r, f)
        own["unknown_ops"] += sum(r.unknown_ops.values())
        targets = [r.name] + ([a for a in ancestors(r.name) if a in names] if r.name else [])
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

    incl = shared_inclusive(count) if include_inclusive else {}
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
    incl = shared_inclusive(count)
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
