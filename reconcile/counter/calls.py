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
from collections import defaultdict
import sys
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from reconcile.records import TensorMeta, TorchCall

_SIMPLE = (int, float, bool, str, type(None))

_F_NAMES = ("linear", "relu", "prelu", "elu", "relu6", "gelu", "silu", "softmax", "upsample", "interpolate",
            "scaled_dot_product_attention", "batch_norm", "rms_norm", "conv1d", "conv2d", "conv3d", "normalize",
            *(f"{k}_pool{d}d" for d in (1, 2, 3) for k in ("avg", "max", "adaptive_avg", "adaptive_max")))
_TORCH_NAMES = ("matmul", "mm", "bmm", "addmm", "baddbmm", "einsum", "mul", "add", "softmax", "min", "max")
_TENSOR_NAMES = ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm", "mul", "add", "softmax",
                 "reshape_as", "expand_as", "clamp_min", "min", "max")


# ``a @ b`` and ``a.matmul(b)`` reach the mode as the same ``Tensor.matmul``: the caller's
# current instruction tells them apart (BINARY_OP, CPython >= 3.11; also ``0 + t`` and ``n += t``
# with a Python number on the left, which reach the tensor's reflected operator)
_BINARY_OP = opcode.opmap.get("BINARY_OP")
_OPERATORS = {"Tensor.matmul": "Tensor.__matmul__", "Tensor.add": "Tensor.__add__", "Tensor.mul": "Tensor.__mul__"}
_AMBIGUOUS = frozenset(_OPERATORS)


def _operator(label: str) -> str:
    """``label``, or the operator it was called through when the caller used one."""
    if _BINARY_OP is None:
        return label
    frame = sys._getframe(2)
    code = frame.f_code.co_code
    i = frame.f_lasti
    if 0 <= i < len(code) and code[i] == _BINARY_OP:
        return _OPERATORS[label]
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
    """Records watched calls per module name in ``calls`` (and their global order in ``order``);
    ``top()`` gives the running frame (its ``module`` name and live ``components``)."""

    def __init__(self, top: Callable[[], Any], skip: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self._top = top
        self.calls: dict[str, list[TorchCall]] = defaultdict(list)
        self.order: list[tuple[str, int]] = []  # (module, index in calls[module]) in call order
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
        facts = _sdpa_facts(args, kwargs) if label == SDPA else {}
        own = self.calls[frame.module]
        self.order.append((frame.module, len(own)))
        own.append(TorchCall(label, tuple(_value(a) for a in args), tuple((k, _value(v)) for k, v in kwargs.items()),
                             delta, facts))
        return out


SDPA = "F.scaled_dot_product_attention"


def sdpa_mask(args: tuple, kwargs: dict) -> Any:
    return args[3] if len(args) > 3 else kwargs.get("attn_mask")


def _sdpa_facts(args: tuple, kwargs: dict) -> dict[str, Any]:
    """What CPU's fused-kernel choice needs beyond shapes. ``mask_requires_grad`` is filled in by a
    second forward with grad enabled (``mask_grads``): counting runs under ``no_grad``."""
    tensors = [t for t in (*args[:3], sdpa_mask(args, kwargs)) if isinstance(t, torch.Tensor)]
    return {"last_dim_contiguous": all(t.dim() == 0 or t.stride(-1) == 1 for t in tensors),
            "mask_requires_grad": False}


class MaskGrads(TorchFunctionMode):
    """In call order, whether each scaled_dot_product_attention mask requires grad."""

    def __init__(self) -> None:
        super().__init__()
        self.flags: list[bool] = []
        self._sdpa = F.scaled_dot_product_attention

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is self._sdpa:
            mask = sdpa_mask(args, kwargs)
            self.flags.append(bool(isinstance(mask, torch.Tensor) and mask.requires_grad))
        return func(*args, **kwargs)
