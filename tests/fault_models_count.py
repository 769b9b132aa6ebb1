"""Model factories that misbehave on purpose in every device, for ``tests/test_isolated.py``:
the commands that used to run the model in the command's own process (``count``, ``predict``,
``roofline --measure``) and the Python API.

Unlike ``tests/fault_models.py`` (faults on real tensors only, so the native counter still counts
them on meta), these faults happen wherever the model runs, meta included. Each factory's model is
a conv 3->4 k3 on (1, 3, 8, 8) unless it says otherwise: 4x6x6 = 144 outputs, 144 * 3 * 9 = 3,888
MACs, 4 * 3 * 9 = 108 parameters.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

SHAPE = (1, 3, 8, 8)
GOOD_MACS = 144 * 3 * 9  # 3,888
GOOD_PARAMS = 4 * 3 * 9  # 108


class _Conv(nn.Module):
    def __init__(self, fault=None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self._fault = fault

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fault is not None:
            self._fault()
        return torch.relu(self.conv(x))


def _factory(name: str, fault=None, **attrs):
    def make() -> nn.Module:
        return _Conv(fault)

    make.__name__ = name
    make.example_input_shape = SHAPE  # type: ignore[attr-defined]
    for key, value in attrs.items():
        setattr(make, key, value)
    return make


def _set_default_dtype() -> None:
    torch.set_default_dtype(torch.float64)


def _change_globals() -> None:
    # torch's process-wide settings a careless forward might flip; the API puts each one back
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = not torch.backends.cudnn.benchmark
    torch.backends.mkldnn.enabled = not torch.backends.mkldnn.enabled
    torch.set_float32_matmul_precision("medium")
    torch.manual_seed(1234)


def _print() -> None:
    print("a model that prints in forward")


def _abort() -> None:
    os.abort()


def _segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def _sleep() -> None:
    time.sleep(3600)


sets_default_dtype = _factory("sets_default_dtype", _set_default_dtype)
changes_globals = _factory("changes_globals", _change_globals)
prints_in_forward = _factory("prints_in_forward", _print)
aborts = _factory("aborts", _abort)
segfaults = _factory("segfaults", _segfault)
sleeps = _factory("sleeps", _sleep)
good = _factory("good")


def hanging_factory() -> nn.Module:
    time.sleep(3600)
    return _Conv()


hanging_factory.example_input_shape = SHAPE  # type: ignore[attr-defined]


def scripted() -> torch.jit.ScriptModule:
    return torch.jit.script(_Conv())


scripted.example_input_shape = SHAPE  # type: ignore[attr-defined]


def traced() -> torch.jit.ScriptModule:
    # torch.jit.trace warns (FutureWarning, on stderr) that it is deprecated: 4 lines
    return torch.jit.trace(_Conv(), torch.zeros(SHAPE))


traced.example_input_shape = SHAPE  # type: ignore[attr-defined]

MANY = 20_000


class _Sum(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.stack(xs).sum(0)


def many_inputs() -> nn.Module:
    return _Sum()


# 20,000 tensors of one element each: one 20,000-argument forward
many_inputs.example_inputs = lambda: tuple(torch.zeros(1) for _ in range(MANY))  # type: ignore[attr-defined]


def many_named_inputs() -> nn.Module:
    return _Conv()


# 20,000 keyword inputs, none of them a parameter of forward(x): refused, naming every one
many_named_inputs.example_inputs = lambda: {f"x{k}": torch.zeros(1) for k in range(MANY)}  # type: ignore[attr-defined]
