"""The native dispatch-level counter. ``count(model, inputs)`` returns a ``NativeCount``."""

from reconcile.counter.core import count

__all__ = ["count"]
