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
  counts are unchanged, only their scope is filled.
* Reconciliation: the rows sum to ``headline["macs"]``; ``unattributed`` is empty (a node
  outside every module scope is the root's).
* ``warnings``: Python warnings raised during the run: torchprofile's ``No handlers found:
  "<op>". Skipped.``, one per traced node without a handler (counted as 0), is its only report of
  what it skipped (no scope, no count), and is kept as it is.
* A model with a ``None`` among its inputs is traced through ``flat_io``'s wrapper (the Nones put
  back in place): ``profile_macs`` takes positional tensors only. The wrapper's own nodes are
  the root's.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from reconcile.adapters.base import Adapter, capture_output, counting_calls, exact_number, flat_io, module_names
from reconcile.counter.traced import module_scopes
from reconcile.records import ToolLayer, ToolRun


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
        target, notes = work, []
        if not all(isinstance(a, torch.Tensor) for a in args):
            # profile_macs takes positional tensors only (no kwargs): a None between them (GPT-2's
            # past_key_values before attention_mask) is put back by a wrapper, as for fvcore
            target, args = flat_io(work, args)
            notes.append("traced through a wrapper that puts the model's None inputs back in place "
                         "(profile_macs takes positional tensors only); its own nodes are the root's")
        with capture_output() as cap:
            from torchprofile import profile_macs

            with module_scopes(work), counting_calls(work) as calls:
                per_node = profile_macs(target, args if len(args) != 1 else args[0], reduction=None)

        macs: Counter = Counter({name: 0 for name in known})
        for node, value in per_node.items():
            macs[_module_of(node.scope, known)] += exact_number(value)
        total = sum(macs.values())
        by_id = {id(m): m for _, m in work.named_modules(remove_duplicate=False)}
        layers, seen = [], set()
        for key, name in names.items():
            if name in seen:  # a module registered under two names: one row, under its first name
                continue
            seen.add(name)
            module = by_id[key]
            raw: dict[str, Any] = {"macs": macs[name]}
            layers.append(ToolLayer(module=name, type=type(module).__name__, calls=calls.get(key, 0), raw=raw,
                                    key=name))
        return self.ok(
                        headline={"macs": total},
            units={"macs": "MACs"},
            layers=tuple(layers),
            unattributed={},
            warnings=tuple([*cap.warnings, *_lines(cap.stdout), *_lines(cap.stderr)]),
            notes=(
                "profile_macs(model, inputs, reduction=None) summed: what the default reduction=sum returns",
                "run on a deepcopy with forward hooks pushing each module's name as the trace scope "
                "(torchprofile records none); counts unchanged",
                *notes,
            ),
        )


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
