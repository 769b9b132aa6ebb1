"""Known values for small meta tensors, so a forward that reads its inputs' values runs on meta.

On the meta device tensors have shapes but no values, so ``.item()``, ``bool(t)`` and
``t.all()`` fail. Real models read values only from small tensors derived from their inputs:
transformers checks whether an attention mask is all ones (to skip the mask) and whether
position ids are packed. ``ShadowMode`` keeps, beside every small meta tensor computed only from
tensors whose values are known (the inputs, given by ``reconcile.inputs``, and tensors made by
factory ops such as ``torch.arange``), the same tensor computed on CPU; a value read of a meta
tensor is answered from it. The forward then takes the same branches as on CPU, so the count is
the CPU count, while the weights and the large activations stay on meta (free).

Guarantees: values are computed by the same aten op on CPU, never guessed; a tensor whose value
is not known exactly (it depends on a weight, or an in-place op wrote into it from an unknown
tensor) has no shadow, and reading it fails as it does on meta; counting never sees the shadow
ops (this mode sits below the counting mode).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

# tensors above this many elements get no shadow: values are read only from masks and ids
LIMIT = 1 << 20
ATTRIBUTE = "_reconcile_value"  # a meta input tensor's CPU values, set by reconcile.inputs
_READS = frozenset(("aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal"))
_META = torch.device("meta")
_CPU = torch.device("cpu")


def value_of(t: Any) -> torch.Tensor | None:
    """The CPU values attached to a meta input tensor, if any."""
    return getattr(t, ATTRIBUTE, None) if isinstance(t, torch.Tensor) else None


def attach(meta: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Give a meta tensor its values (same shape and dtype, on CPU) for ``ShadowMode``."""
    setattr(meta, ATTRIBUTE, values)
    return meta


class ShadowMode(TorchDispatchMode):
    def __init__(self, inputs: tuple[Any, ...]) -> None:
        super().__init__()
        self.known: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        for t in inputs:
            v = value_of(t)
            if v is not None:
                self.known[t] = v

    def _cpu(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.device.type == "meta":
            return self.known[a]
        if isinstance(a, torch.device) and a.type == "meta":
            return _CPU
        return a

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = func._schema.name
        if name in _READS:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if tensors and all(t.device.type != "meta" or t in self.known for t in tensors):
                return func(*tree_map(self._cpu, args), **tree_map(self._cpu, kwargs))
        out = func(*args, **kwargs)
        flat, _ = tree_flatten(out)
        outs = [o for o in flat if isinstance(o, torch.Tensor) and o.device.type == "meta"]
        if not outs:
            return out
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        known = all(a.device.type != "meta" or a in self.known for a in inputs)
        if not known or sum(o.numel() for o in outs) > LIMIT:
            self._forget_written(func, args, kwargs)
            return out
        try:
            shadow = func(*tree_map(self._cpu, args), **tree_map(self._cpu, kwargs))
        except Exception:  # noqa: BLE001 - an op CPU cannot run on these values: no shadow, as on meta
            self._forget_written(func, args, kwargs)
            return out
        for o, s in zip(flat, tree_flatten(shadow)[0]):
            if isinstance(o, torch.Tensor) and o.device.type == "meta" and isinstance(s, torch.Tensor):
                self.known[o] = s
        return out

    def _forget_written(self, func: Any, args: tuple, kwargs: dict) -> None:
        """An op that writes into a tensor with values it cannot compute makes its shadow stale."""
        for arg, value in zip(func._schema.arguments, list(args) + [kwargs.get(a.name) for a in
                                                                  func._schema.arguments[len(args):]]):
            if arg.alias_info is not None and arg.alias_info.is_write and isinstance(value, torch.Tensor):
                self.known.pop(value, None)
