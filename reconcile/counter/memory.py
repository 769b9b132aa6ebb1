"""Training memory of a training count, exact on meta: what is live at each op, and what autograd saves.

Guarantees:
- Bytes are counted per storage, once: views and ``detach`` share their base's storage. A storage
  is live from the op that created it until the last tensor referencing it is freed (a finalizer
  on each tensor the dispatcher returns); parameters, buffers and the model's inputs exist before
  the step and are counted apart, never as live work.
- Saved activations are measured, not estimated: a ``saved_tensors_hooks`` pack hook sees every
  tensor autograd keeps for the backward, filed under the module innermost when it was saved
  (parameters and inputs are resident and left out). The pack hook returns the tensor itself, so
  lifetimes are autograd's own.
- The trace holds no tensor: finalizers keep only storage keys.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any, Callable, Iterable

import torch

from reconcile.records import TrainingMemory


def _key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s._cdata, s.nbytes()


class MemoryTrace:
    """Live bytes of storages made during the step, sampled after every op."""

    def __init__(self, resident: Iterable[torch.Tensor], where: Callable[[], str]) -> None:
        self.resident = {_key(t)[0] for t in resident}
        self._where = where  # the module innermost now (forward) or being differentiated (backward)
        self._refs: Counter = Counter()  # storage -> live tensors referencing it
        self._bytes: dict[int, int] = {}
        self.live = 0
        self.peak = 0
        self.peak_at = ""
        self.phase = "forward"
        self.phase_peak: dict[str, int] = {}
        self.saved_ids: set[int] = set()
        self.saved_by_module: Counter = Counter()
        self.outputs: list[tuple[str, int, int, int, int]] = []
        self._finalizers: list[Any] = []
        # storage key -> id; a key is forgotten when its storage dies, since the address can be reused
        self._ids: dict[int, int] = {}
        self._next = 0

    def _id(self, key: int) -> int:
        i = self._ids.get(key)
        if i is None:
            i = self._ids[key] = self._next
            self._next += 1
        return i

    def module_output(self, module: str, output: Any) -> None:
        """A module call returned ``output``: remember its storages (forward only)."""
        stack = [output]
        while stack:
            o = stack.pop()
            if isinstance(o, torch.Tensor):
                key, nbytes = _key(o)
                self.outputs.append((module, self._id(key), nbytes, o.numel(), o.element_size()))
            elif isinstance(o, (list, tuple)):
                stack.extend(reversed(o))
            elif isinstance(o, dict):
                stack.extend(reversed(list(o.values())))

    def allocated(self, out: Any, op: str) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self._track(t)
        if self.live > self.phase_peak.get(self.phase, -1):
            self.phase_peak[self.phase] = self.live
        if self.live > self.peak:
            self.peak = self.live
            self.peak_at = f"{self.phase}: {self._where() or '(model)'} {op}"

    def _track(self, t: torch.Tensor) -> None:
        key, nbytes = _key(t)
        if key in self.resident:
            return
        if self._refs[key] == 0:
            self._bytes[key] = nbytes
            self.live += nbytes
        self._refs[key] += 1
        self._finalizers.append(weakref.finalize(t, self._release, key))

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self._ids.pop(key, None)
            self.live -= self._bytes.pop(key)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """``saved_tensors_hooks`` pack hook: count each saved storage once, return the tensor."""
        key, nbytes = _key(t)
        if key not in self.resident and self._id(key) not in self.saved_ids:
            self.saved_ids.add(self._id(key))
            self.saved_by_module[self._where()] += nbytes
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def close(self) -> None:
        for f in self._finalizers:
            f.detach()
        self._finalizers.clear()


def summary(trace: MemoryTrace, model: torch.nn.Module, inputs: tuple[Any, ...], live_after: int) -> TrainingMemory:
    params = {id(p): p for p in model.parameters()}.values()
    buffers = {id(b): b for b in model.buffers()}.values()
    ins = [t for t in inputs if isinstance(t, torch.Tensor)]
    return TrainingMemory(
        params=sum(p.numel() * p.element_size() for p in params),
        trainable=sum(p.numel() * p.element_size() for p in params if p.requires_grad),
        buffers=sum(b.numel() * b.element_size() for b in buffers),
        inputs=sum(t.numel() * t.element_size() for t in ins),
        saved=sum(trace.saved_by_module.values()),
        saved_by_module=dict(trace.saved_by_module),
        forward_peak=trace.phase_peak.get("forward", 0),
        backward_peak=trace.phase_peak.get("backward", 0),
        after_backward=live_after,
        peak_at=trace.peak_at,
        outputs=tuple(trace.outputs),
        saved_storages=tuple(sorted(trace.saved_ids)),
    )
