"""reconcile: run every PyTorch cost counter on one model and explain every difference."""

from __future__ import annotations

from reconcile.errors import ReconcileError

__all__ = ["ReconcileError", "count", "__version__"]
__version__ = "0.1.0"


def count(model, inputs, **kwargs):
    """Count ``model`` on ``inputs`` with the native counter. See ``reconcile.counter.count``."""
    from reconcile.counter import count as _count

    return _count(model, inputs, **kwargs)
