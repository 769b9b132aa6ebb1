"""Which module calls' results the model's output depends on: what a tracer keeps.

``torch.jit`` tracing (fvcore) drops work whose result nothing uses: a pooler whose output a
wrapper never returns. The counter notes, for every tensor a module call returns, which module
calls ran an op on it; a call is *used* when one of its output tensors is part of the model's
output or is consumed by an op in a used call (the root's own forward always is).

Guarantees: tensors are held by weak references only (nothing is kept alive); a tensor id reused
after its tensor died is never mistaken for it. The answer is per call and transitive through
calls, not through ops inside one forward (an op whose own result is discarded still uses its inputs).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

Key = tuple[str, int]  # (module name, call index); ("", -1): outside any module call


class Liveness:
    def __init__(self) -> None:
        self._by_id: dict[int, int] = {}  # id(tensor) -> record index
        self._refs: list[Any] = []  # weak reference per record
        self._producers: list[list[Key]] = []
        self._consumers: list[set[Key]] = []

    def produced(self, key: Key, output: Any) -> None:
        """A module call returned ``output``: remember each of its tensors."""
        for t in _flat(output):
            i = self._by_id.get(id(t))
            if i is not None and self._refs[i]() is t:
                self._producers[i].append(key)  # a parent returning its child's tensor
                continue
            self._by_id[id(t)] = len(self._refs)
            self._refs.append(weakref.ref(t))
            self._producers.append([key])
            self._consumers.append(set())

    def consumed(self, key: Key, args: tuple) -> None:
        """An op ran in call ``key`` with ``args``."""
        by_id = self._by_id
        for a in args:
            if isinstance(a, torch.Tensor):
                i = by_id.get(id(a))
                if i is not None and self._refs[i]() is a:
                    self._consumers[i].add(key)
            elif isinstance(a, (list, tuple)):
                for t in a:
                    i = by_id.get(id(t))
                    if i is not None and self._refs[i]() is t:
                        self._consumers[i].add(key)

    def used(self, outputs: Any, roots: set[Key]) -> set[Key]:
        """The used calls, given the model's ``outputs`` and the calls that are used anyway."""
        final = {id(t) for t in _flat(outputs)}
        final_records = {self._by_id[i] for i in final if i in self._by_id}
        live = set(roots) | {("", -1)}
        changed = True
        while changed:
            changed = False
            for i, producers in enumerate(self._producers):
                if all(p in live for p in producers):
                    continue
                if i in final_records or self._consumers[i] & live:
                    for p in producers:
                        if p not in live:
                            live.add(p)
                            changed = True
        return live


def _flat(obj: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    stack = [obj]
    seen: set[int] = set()
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            out.append(o)
        elif id(o) in seen or o is None or isinstance(o, (int, float, bool, str)):
            continue
        elif isinstance(o, (list, tuple)):
            seen.add(id(o))
            stack.extend(o)
        elif isinstance(o, dict):
            seen.add(id(o))
            stack.extend(o.values())
        elif hasattr(o, "__dict__") and not isinstance(o, (torch.nn.Module, type)):
            seen.add(id(o))  # a cache object returned beside the tensors: its tensors are outputs too
            stack.extend(vars(o).values())
    return out
