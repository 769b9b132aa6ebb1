"""The native dispatch-level counter. ``count(model, inputs)`` returns a ``NativeCount``.

``formulas`` (the rules) imports no torch, so conventions and reports can read the cost table
without paying for torch; only ``count`` imports the dispatch machinery.
"""

from __future__ import annotations

from typing import Any


def count(model: Any, inputs: Any, **kwargs: Any):
    from reconcile.counter.core import count as _count

    return _count(model, inputs, **kwargs)


__all__ = ["count"]
