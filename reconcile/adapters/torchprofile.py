"""Adapter for torchprofile 0.1.0 (``torchprofile.profile_macs``), run the way its users run it:
``profile_macs(model, inputs)`` on the model in the mode the caller gave (eval), with grad
enabled (its README example; under ``torch.no_grad()`` a ``MultiheadAttention`` takes the fused
fast path and the trace fails), positional inputs only (it rejects keyword arguments).

torchprofile traces the forward with ``torch.jit._get_trace_graph`` and sums one handler per
traced op (``handlers.HANDLER_MAP``): MACs only, no parameter count. Its total is
``sum(profile_macs(model, inputs, reduction=None).values())``, which is what the default
``reduction=sum`` returns; the adapter calls it once with ``reduction=None`` to keep the per-node
counts.

Guarantees, for a run with status ``ok``:

* ``headline``: ``macs``, torchprofile's total, an exact int. ``units``: ``{"macs": "MACs"}``.
  There is no parameter figure: torchprofile has none.
* ``layers``: one row per module (``named_modules()`` names, root ``""``, a module registered
  twice under its first name), **exclusive**: ``raw["macs"]`` is the sum of torchprofile's own
  per-node counts for the traced nodes whose innermost module scope is that module (nodes its
  own ``forward`` ran, not its children's). torchprofile's ``_get_trace_graph`` records no module
  scopes (every ``Node.scope`` is empty), so the adapter pushes each module's name as the trace
  scope around its forward, with forward hooks on a copy, as fvcore does: the nodes and their
  counts are unchanged, only their scope is filled. ``raw["unhandled:<op>"]``: calls of traced
  ops torchprofile has no handler for (it warns ``No handlers found`` and skips them: 0).
* Reconciliation: the rows sum to ``headline["macs"]``; ``unattributed`` is empty (a node
  outside every module scope is the root's).
* ``warnings``: Python warnings raised during the run (torchprofile's ``No handlers found``).
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from typing import Any, Iterator

from reconcile.adapters.base import Adapter, ToolFailure, capture_output, counting_calls, exact_number, module_names
from reconcile.records import ToolLayer, ToolRun


@contextlib.contextmanager
def _module_scopes(model: Any) -> Iterator[None]:
    """Each module's ``named_modules()`` name pushed as the jit trace scope around its forward;
    the hooks are removed on exit."""
    import torch

    names = module_names(model)

    def push(name: str) -> Any:
        def hook(module: Any, args: Any) -> None:
            state = torch._C._get_tracing_state()
            if state:
                state.push_scope(name)
        return hook

    def pop(module: Any, args: Any, output: Any) -> None:
        state = torch._C._get_tracing_state()
        if state:
            state.pop_scope()

    handles = []
    try:
        for key, module in {id(m): m for _, m in model.named_modules(remove_duplicate=False)}.items():
            handles.append(module.register_forward_pre_hook(push(names[key])))
            handles.append(module.register_forward_hook(pop))
        yield
    finally:
        for h in handles:
            h.remove()


def _module_of(scope: str, known: set[str]) -> str:
    """The innermost pushed scope of a node: the last part of its scope path."""
    last = scope.split("/")[-1] if scope else ""
    return last if last in known else ""


class TorchprofileAdapter(Adapter):
    name = "torchprofile"
    distribution = "torchprofile"

    def attempted(self) -> str:
        return "torchprofile.profile_macs(deepcopy(model), inputs, reduction=None)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        import torch

        # scope hooks and call-count hooks go on a copy: the caller's model keeps no hooks
        work = copy.deepcopy(model)
        names = module_names(work)
        known = set(names.values())
        args = tuple(inputs)
        if not all(isinstance(a, torch.Tensor) for a in args):
            raise ToolFailure("torchprofile traces tensor inputs only: this model takes a non-tensor input",
                              TypeError("profile_macs(model, args): args must be tensors"))
        graphs: list[Any] = []
        with capture_output() as cap:
            import importlib

            from torchprofile import profile_macs
            from torchprofile.handlers import HANDLER_MAP

            profile = importlib.import_module("torchprofile.profile")  # the module, not the function
            original = profile.trace

            def keeping(*a: Any, **kw: Any) -> Any:  # the graph profile_macs walks, kept to list its skipped nodes
                graph = original(*a, **kw)
                graphs.append(graph)
                return graph

            profile.trace = keeping
            try:
                with _module_scopes(work), counting_calls(work) as calls:
                    per_node = profile_macs(work, args if len(args) != 1 else args[0], reduction=None)
            finally:
                profile.trace = original

        macs: Counter = Counter({name: 0 for name in known})
        for node, value in per_node.items():
            macs[_module_of(node.scope, known)] += exact_number(value)
        total = sum(macs.values())
        unhandled: dict[str, Counter] = {}
        for node in (n for g in graphs for n in g.nodes):  # warned "No handlers found", skipped: 0
            if node.operator not in HANDLER_MAP:
                unhandled.setdefault(_module_of(node.scope, known), Counter())[node.operator] += 1
        by_id = {id(m): m for _, m in work.named_modules(remove_duplicate=False)}
        layers = []
        for key, name in names.items():
            if name in (layer.module for layer in layers):
                continue
            module = by_id[key]
            raw: dict[str, Any] = {"macs": macs[name]}
            raw.update({f"unhandled:{op}": n for op, n in sorted(unhandled.get(name, Counter()).items())})
            layers.append(ToolLayer(module=name, type=type(module).__name__, calls=calls.get(key, 0), raw=raw,
                                    key=name))
        return ToolRun(
            tool=self.name,
            version=self.version(),
            status="ok",
            headline={"macs": total},
            units={"macs": "MACs"},
            layers=tuple(layers),
            unattributed={},
            warnings=tuple([*cap.warnings, *_lines(cap.stdout), *_lines(cap.stderr)]),
            notes=(
                "profile_macs(model, inputs, reduction=None) summed: what the default reduction=sum returns",
                "run on a deepcopy with forward hooks pushing each module's name as the trace scope "
                "(torchprofile records none); counts unchanged",
            ),
        )


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
