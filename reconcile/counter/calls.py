"""Which Python-level torch call produced the aten work: a light record kept beside the aten count.

The aten level cannot tell ``a @ b`` from ``torch.matmul(a, b)`` or ``x.softmax(-1)`` from
``F.softmax(x, -1)``: both reach the same kernel. Tools that patch Python names (ptflops) see one
and not the other. ``CallMode`` is a ``TorchFunctionMode`` that notes, per module, each call of a
function in ``WATCHED`` with its arguments' shapes and the native components the call did.

Guarantees:
- Only the outermost torch call is seen (a torch function mode is off while its handler runs), as
  a tool patching Python names sees it: ``F.softmax`` is one call, not also ``Tensor.softmax``.
- Calls not in ``WATCHED`` cost one dict lookup and are not recorded.
- Nothing is changed: the call runs with its own arguments, and its result is returned as is.
"""

from __future__ import annotations

import opcode
import sys
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from reconcile.records import TensorMeta, TorchCall

_SIMPLE = (int, float, bool, str, type(None))

_F_NAMES = ("linear", "relu", "prelu", "elu", "relu6", "gelu", "silu", "softmax", "upsample", "interpolate",
            "scaled_dot_product_attention", "batch_norm", "conv1d", "conv2d", "conv3d",
            *(f"{k}_pool{d}d" for d in (1, 2, 3) for k in ("avg", "max", "adaptive_avg", "adaptive_max")))
_TORCH_NAMES = ("matmul", "mm", "bmm", "addmm", "baddbmm", "einsum", "mul", "add", "softmax")
_TENSOR_NAMES = ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm", "mul", "add", "softmax")


# ``a @ b`` and ``a.matmul(b)`` reach the mode as the same ``Tensor.matmul``: the caller's
# current instruction tells them apart (BINARY_OP with its operator number, CPython >= 3.11)
_BINARY_OP = opcode.opmap.get("BINARY_OP")
_OPERATORS = {("Tensor.matmul", 4): "Tensor.__matmul__", ("Tensor.add", 0): "Tensor.__add__",
              ("Tensor.mul", 5): "Tensor.__mul__"}
_AMBIGUOUS = frozenset(k[0] for k in _OPERATORS)


def _operator(label: str) -> str:
    """``label``, or the operator it was called through when the caller used one."""
    if _BINARY_OP is None:
        return label
    frame = sys._getframe(2)
    code = frame.f_code.co_code
    i = frame.f_lasti
    if 0 <= i < len(code) - 1 and code[i] == _BINARY_OP:
        return _OPERATORS.get((label, code[i + 1]), label)
    return label


def watched() -> dict[Any, str]:
    """Function object -> label, read from the current ``torch`` / ``torch.nn.functional``."""
    out: dict[Any, str] = {}
    for name in _F_NAMES:
        if hasattr(F, name):
            out[getattr(F, name)] = f"F.{name}"
    for name in _TORCH_NAMES:
        out.setdefault(getattr(torch, name), f"torch.{name}")
    for name in _TENSOR_NAMES:
        out.setdefault(getattr(torch.Tensor, name), f"Tensor.{name}")
    return out


def _value(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return TensorMeta(tuple(int(d) for d in a.shape), str(a.dtype).removeprefix("torch."))
    if isinstance(a, _SIMPLE):
        return a
    if isinstance(a, (tuple, list)) and all(isinstance(x, _SIMPLE) for x in a):
        return tuple(a)
    return None


class CallMode(TorchFunctionMode):
    """Records watched calls into ``sink(module_name, TorchCall)``; ``top()`` gives the running
    frame (its ``module`` name and live ``components``)."""

    def __init__(self, top: Callable[[], Any], sink: Callable[[str, TorchCall], None],
                 skip: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self._top = top
        self._sink = sink
        self._skip = skip  # modules whose calls need no record (torch.nn layers: their forward is known)
        self.watched = watched()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        try:
            label = self.watched.get(func)
        except TypeError:  # an unhashable callable
            label = None
        if label is None:
            return func(*args, **kwargs)
        frame = self._top()
        if frame.module in self._skip:
            return func(*args, **kwargs)
        if label in _AMBIGUOUS:
            label = _operator(label)
        before = dict(frame.components)
        out = func(*args, **kwargs)
        after = frame.components
        delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        self._sink(frame.module, TorchCall(label, tuple(_value(a) for a in args),
                                           tuple((k, _value(v)) for k, v in kwargs.items()), delta))
        return out
