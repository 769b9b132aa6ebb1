"""Why tools disagree: ``core`` explains one tool's run against the native count, ``pair`` two
tools against each other.

The package is callable: ``reconcile.explain(a, b)`` is ``pair.explain_pair(a, b)``. Importing
``reconcile.explain.core`` binds this package as ``reconcile.explain``, replacing any function of
that name, so the package itself is the function (as ``reconcile.conventions`` is its table),
whatever was imported first.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from reconcile.explain.core import ToolExplanation
    from reconcile.explain.pair import PairExplanation


def explain(a: "ToolExplanation", b: "ToolExplanation") -> "PairExplanation":
    """Why tool ``a`` and tool ``b`` disagree on the same model: per module and per cause."""
    from reconcile.explain.pair import explain_pair

    return explain_pair(a, b)


class _CallableModule(types.ModuleType):
    """``reconcile.explain(a, b)`` explains a pair while ``reconcile.explain.core`` and
    ``reconcile.explain.pair`` stay reachable under the same name."""

    def __call__(self, a: "ToolExplanation", b: "ToolExplanation") -> "PairExplanation":
        return explain(a, b)


sys.modules[__name__].__class__ = _CallableModule
