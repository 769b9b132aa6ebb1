"""FlopCounterMode's module tracker, mirrored during a native training count: which modules
``torch.utils.module_tracker.ModuleTracker`` (torch 2.14.1) holds open while each backward op runs.

FCM charges every op to every module in its tracker's ``parents`` set (and to "Global"). In the
backward that set follows tensor hooks, not the module that created the node: a module call
*opens* when the gradients of all its forward outputs that require grad are complete (a
``register_multi_grad_hook`` on them, registered when the call returns) and *closes* when those of
all its positional inputs that require grad are (one registered when the call starts). This class
registers the same hooks, in the same order, on the same tensors of the native count's forward,
so during the native backward ``current()`` is the set FCM's tracker holds at the same point.

Guarantees:
- The tracker's rules and quirks are kept: ``parents`` is a set of names, so a module called
  twice opens and closes one entry (a second "enter" is a no-op, the first "exit" closes it);
  only positional arguments are inputs (its global pre-hook sees no kwargs) and outputs are
  flattened with ``torch.utils._pytree``; a call whose inputs need no gradient (the first layer)
  never closes; a module returning its input tensor itself (``nn.Identity``) registers its close
  hook before its open hook on one tensor, so it closes (a no-op), opens and stays open; the
  engine callback the tracker queues on its first backward "enter" empties the set when the
  backward ends. A module is named by its ``named_modules()`` name (first name of a module
  registered twice), which is where the FCM adapter puts the module's row.
- Nothing of the native count changes: the hooks run no aten op through the counting mode (the
  gradient accumulator of a leaf input is looked up with Python dispatch disabled), hold no
  gradient (unlike ``register_multi_grad_hook``, which buffers them) and are all removed by
  ``close()``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten


def _grad_node(t: torch.Tensor) -> Any:
    """The node whose execution completes ``t``'s gradient (``_get_grad_fn_or_grad_acc``)."""
    if t.grad_fn is not None:
        return t.grad_fn
    with torch._C._DisableTorchDispatch(), torch.enable_grad():  # its view_as is no model op
        return t.view_as(t).grad_fn.next_functions[0][0]


def _needing_grad(obj: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(obj)
    return [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]


class HeldOpen:
    """``parents`` of FCM's module tracker, minus "Global", for one model's forward and backward."""

    def __init__(self, model: torch.nn.Module, names: dict[int, str]) -> None:
        self.model = model
        self.names = names  # id(module) -> named_modules() name
        self.parents: set[str] = set()
        self._key: tuple[str, ...] | None = ()
        self._module_hooks: list[Any] = []
        self._handles: list[Any] = []  # tensor hooks, kept for the backward
        self._callback = False
        # nodes of the seeded outputs: FCM runs backward() of their sum, so they execute as inner
        # nodes; the native backward starts at them, and the engine, given one root, does not
        # list it among the nodes it will execute
        self.roots: set[Any] = set()

    def current(self) -> tuple[str, ...]:
        """The open modules, sorted (one tuple object per state, so it can key a dict cheaply)."""
        if self._key is None:
            self._key = tuple(sorted(self.parents))
        return self._key

    def __enter__(self) -> "HeldOpen":
        seen: set[int] = set()
        for mod in self.model.modules():
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            # first among the module's own hooks: FCM's global hooks run before them, so they see
            # the arguments and output before a hook of the model changes them
            self._module_hooks.append(mod.register_forward_pre_hook(self._pre, prepend=True))
            self._module_hooks.append(mod.register_forward_hook(self._post, prepend=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        """The forward ended. Every hook stays until ``close()``: FCM's context holds the backward
        too, where a module run again (activation checkpointing) registers hooks again."""

    def close(self) -> None:
        """Remove every hook (after the backward)."""
        for h in self._module_hooks:
            h.remove()
        self._module_hooks.clear()
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # ----- ModuleTracker's rules -----

    def _enter(self, name: str, in_backward: bool) -> None:
        if in_backward and not self._callback:
            # ModuleTracker._maybe_set_engine_callback: the set is emptied when the backward ends
            torch.autograd.Variable._execution_engine.queue_callback(self._reset)
            self._callback = True
        if name not in self.parents:
            self.parents.add(name)
            self._key = None

    def _exit(self, name: str) -> None:
        if name in self.parents:  # else the tracker logs that it is confused, and goes on
            self.parents.remove(name)
            self._key = None

    def _reset(self) -> None:
        self.parents = set()
        self._key = None
        self._callback = False

    def _pre(self, mod: torch.nn.Module, args: tuple) -> None:
        with torch._C.DisableTorchFunction():
            name = self.names[id(mod)]
            self._enter(name, False)
            tensors = _needing_grad(args)
            if tensors:
                self._when_all_grads(tensors, lambda: self._exit(name))

    def _post(self, mod: torch.nn.Module, args: tuple, output: Any) -> None:
        with torch._C.DisableTorchFunction():
            name = self.names[id(mod)]
            self._exit(name)
            tensors = _needing_grad(output)
            if tensors:
                self._when_all_grads(tensors, lambda: self._enter(name, True))

    def _when_all_grads(self, tensors: list[torch.Tensor], fn: Callable[[], None]) -> None:
        """``register_multi_grad_hook(tensors, fn, mode="all")`` without its gradient buffer: ``fn``
        runs when the hooks of as many tensors have fired as the engine will execute their nodes
        (counted at the first one), once per backward."""
        nodes = [_grad_node(t) for t in tensors]
        state: dict[int, list[int]] = {}

        def hook(_grad: torch.Tensor) -> None:
            task = torch._C._current_graph_task_id()
            seen = state.get(task)
            if seen is None:
                seen = state[task] = [0, sum(n in self.roots or torch._C._will_engine_execute_node(n) for n in nodes)]
            seen[0] += 1
            if seen[0] == seen[1]:
                del state[task]
                fn()

        for t in tensors:
            self._handles.append(t.register_hook(hook))
