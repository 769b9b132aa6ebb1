"""Models whose build misbehaves, for ``tests/test_model_group.py``: a group worker builds a
model once for all of its tools, so a fault in the build meets the group worker, not a tool's
child. Each has ``example_input_shape = (1, 3, 8, 8)``; the model is ``fault_models``'s ``good``.
"""

from __future__ import annotations

import os

from tests.fault_models import SHAPE, good


def _after(fault):
    def make():
        fault()
        return good()

    make.example_input_shape = SHAPE  # type: ignore[attr-defined]
    return make


def _raise() -> None:
    raise RuntimeError("a model whose build raises")


def _exit() -> None:
    os._exit(3)  # the process building it disappears


build_raises = _after(_raise)
build_exits = _after(_exit)
