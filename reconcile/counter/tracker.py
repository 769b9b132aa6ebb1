"""Which module is executing: a stack of module calls, kept by hooks on one model's modules.

Guarantees: hooks are registered only on the modules of the model being counted (never global
hooks), forward hooks use ``always_call`` so an exception still pops the stack, and every hook is
removed on exit, also when the forward raised. Work outside any module call is charged to the
root (``""``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from reconcile.records import TensorMeta


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a (nested) structure, each at its own dtype."""
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            total += o.numel() * o.element_size()
        elif isinstance(o, torch.nn.utils.rnn.PackedSequence):
            stack.append(o.data)
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return total


def tensor_metas(obj: Any) -> tuple[TensorMeta, ...]:
    """Shapes and dtypes of every tensor in a (nested) argument structure, in order."""
    out: list[TensorMeta] = []

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            out.append(TensorMeta(tuple(int(d) for d in o.shape), _dtype_name(o.dtype)))
        elif isinstance(o, torch.nn.utils.rnn.PackedSequence):
            walk(o.data)
        elif isinstance(o, (list, tuple)):
            for x in o:
                walk(x)
        elif isinstance(o, dict):
            for x in o.values():
                walk(x)

    walk(obj)
    return tuple(out)


@dataclass
class CallFrame:
    """Accumulates the exclusive work of one running module call."""

    module: str
    index: int
    order: int
    inputs: tuple[TensorMeta, ...]
    kwargs_only: bool
    components: dict[str, int] = field(default_factory=dict)
    suppressed: bool = False  # work inside is counted by a module-level rule instead
    ruled: bool = False  # this call is the one counted by a module-level rule
    input_bytes: int = 0  # bytes of the tensor arguments, kept for module-level rules


class ModuleStack:
    """Hook-driven stack of module calls. ``on_enter`` may return components that replace the
    module's inner op counts (module-level rules such as recurrent layers)."""

    def __init__(
        self,
        model: torch.nn.Module,
        on_exit: Callable[[CallFrame, torch.nn.Module, Any], None],
        module_rule: Callable[[torch.nn.Module, tuple, dict], dict[str, int] | None],
    ) -> None:
        self.model = model
        self.names: dict[int, str] = {}
        for name, mod in model.named_modules(remove_duplicate=False):
            self.names.setdefault(id(mod), name)
        self.calls: dict[str, int] = {}
        self.frames: list[CallFrame] = []
        self.order = 0
        self._on_exit = on_exit
        self._module_rule = module_rule
        self._handles: list[Any] = []
        self.root = CallFrame(module="", index=-1, order=-1, inputs=(), kwargs_only=False)

    @property
    def top(self) -> CallFrame:
        return self.frames[-1] if self.frames else self.root

    def __enter__(self) -> "ModuleStack":
        seen: set[int] = set()
        for mod in self.model.modules():
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            self._handles.append(mod.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._handles.append(mod.register_forward_hook(self._post, always_call=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _pre(self, mod: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        # the hooks' own shape reads are no model calls: keep them out of torch function modes
        with torch._C.DisableTorchFunction():
            self._enter(mod, args, kwargs)

    def _enter(self, mod: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        name = self.names[id(mod)]
        index = self.calls.get(name, 0)
        self.calls[name] = index + 1
        inputs = tensor_metas(args)
        kwargs_only = not inputs and bool(kwargs)
        if kwargs:
            inputs = inputs + tensor_metas(kwargs)
        frame = CallFrame(name, index, self.order, inputs, kwargs_only)
        self.order += 1
        parent_suppressed = self.top.suppressed
        if parent_suppressed:
            frame.suppressed = True
        else:
            replaced = self._module_rule(mod, args, kwargs)
            if replaced is not None:
                frame.components.update(replaced)
                frame.suppressed = frame.ruled = True
                frame.input_bytes = tensor_bytes((args, kwargs))
        self.frames.append(frame)

    def _post(self, mod: torch.nn.Module, args: tuple, output: Any) -> None:
        if not self.frames:
            return
        frame = self.frames.pop()
        with torch._C.DisableTorchFunction():
            self._on_exit(frame, mod, output)
