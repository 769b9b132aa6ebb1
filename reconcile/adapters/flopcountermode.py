"""Adapter for torch's own counter, ``torch.utils.flop_counter.FlopCounterMode`` (FCM), run the way
its users run it: ``with FlopCounterMode(display=False, depth=None) as m: model(*inputs)``, on a
copy of the model, with grad enabled (its documented use), in the mode the caller gave.

Guarantees, for a run with status ``ok``:

* Training (``FlopCounterModeTrainingAdapter``, ``--training``): the context also holds
  ``backward()`` of the sum of every floating-point output that requires grad (the outputs the
  native training count seeds), and rows and headline gain ``forward_flops`` (the counts read after
  the forward) and ``backward_flops`` (the rest). FCM's module tracker charges a backward op to
  every module whose backward is "open": from when the gradients of all its outputs are complete
  to when those of all its inputs are, so a module whose input was used earlier (a downsample
  beside its block's main branch) also holds that branch's backward.
* ``headline``: ``flops`` = ``get_total_flops()`` (FCM's "Global" row: every counted op, 2 FLOPs
  per multiply-accumulate, bias adds never counted), and ``"<op>"`` = Global's count per aten op
  as FCM keys it (``"aten.convolution"``, ``"aten.addmm"``); an exact int each.
* ``layers``: one row per key of ``get_flop_counts()`` but ``Global``, **inclusive** as FCM
  counts (an op is charged to every module on the call stack when it runs), re-keyed from FCM's
  module-tracker names (``ResNet.layer1.0.conv1``) to ``named_modules()`` names by ``fcm_keys``:
  ``raw = {"flops": its total, "<op>": its count per op}``; ``key`` is FCM's name; ``calls``
  counts forward calls (hooks on the copy, removed after).
* ``unattributed``: ``{"Global outside <root>": n}`` when Global holds FLOPs the root row does
  not (work run outside the model's own forward): the root row plus it is Global. A key that names
  no module of the model (a module held outside the module tree and called in the forward: FCM
  names it by its class alone) is kept in ``notes``; its FLOPs are inside its callers' rows.

FCM's names are class paths: the module first called is its class name and every child is
``parent.child`` (named_children), assigned when the first call walks the tree. A module
reachable by two paths keeps the *last* path walked while its children keep the paths under the
first (FCM stops walking at a module it has seen); a module called several times sums into one
row; a module called from inside another module's forward is charged to that caller whatever its
path. ``fcm_keys`` reproduces the naming exactly and maps each name to the module object, so a
shared module's row lands on its canonical (first) ``named_modules()`` name.
"""

from __future__ import annotations

import copy
from typing import Any

from reconcile.adapters.base import Adapter, capture_output, counting_calls, fcm_keys, module_names
from reconcile.records import Number, ToolLayer, ToolRun

GLOBAL = "Global"


def op_key(packet: Any) -> str:
    """FCM's op key as it prints it: ``str(torch.ops.aten.mm)`` is ``"aten.mm"``."""
    return str(packet)


class FlopCounterModeAdapter(Adapter):
    name = "flopcountermode"
    distribution = "torch"
    training = False  # FlopCounterModeTrainingAdapter: forward + backward

    def attempted(self) -> str:
        return "torch.utils.flop_counter.FlopCounterMode(display=False, depth=None) around deepcopy(model)(*inputs)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        # FCM's hooks are global and removed on exit, but a forward in train mode updates batch
        # norm statistics and a backward fills .grad: a copy keeps the caller's model as it was
        work = copy.deepcopy(model)
        names = module_names(work)
        keys = fcm_keys(work)
        forward: dict[str, dict[Any, int]] | None = None
        with capture_output(loggers=("torch.utils.module_tracker",)) as cap:
            with torch.enable_grad(), counting_calls(work) as calls:
                counter = FlopCounterMode(display=False, depth=None)
                with counter:
                    out = work(*inputs)
                    if self.training:
                        forward = counter.get_flop_counts()  # the rows as they stand after the forward
                        loss = _loss(out)
                        loss.backward()
            counts = counter.get_flop_counts()
            total = counter.get_total_flops()
        warnings = tuple([*cap.warnings, *cap.log, *(line for text in (cap.stdout, cap.stderr)
                                                     for line in text.splitlines() if line.strip())])
        return self._record(work, names, keys, calls, counts, total, warnings, forward)

    def _record(self, work: Any, names: dict[int, str], keys: dict[str, Any], calls: dict[int, int],
                counts: dict[str, dict[Any, int]], total: int, warnings: tuple[str, ...],
                forward: dict[str, dict[Any, int]] | None = None) -> ToolRun:
        layers: list[ToolLayer] = []
        unattributed: dict[str, Number] = {}
        outside_tree: list[str] = []
        root_key = type(work).__name__
        for key in sorted(counts, key=lambda k: (k != root_key, k)):
            if key == GLOBAL:
                continue
            per_op = {op_key(op): int(n) for op, n in counts[key].items()}
            flops = sum(per_op.values())
            module = keys.get(key)
            if module is None or id(module) not in names:
                outside_tree.append(f"FlopCounterMode row {key!r} names no module of the model: {flops} FLOPs, "
                                    "counted in its callers' rows")
                continue
            raw: dict[str, Number] = {"flops": flops}
            if forward is not None:
                raw["forward_flops"] = sum(forward.get(key, {}).values())
                raw["backward_flops"] = flops - raw["forward_flops"]
            raw.update(sorted(per_op.items()))
            layers.append(ToolLayer(module=names[id(module)], type=type(module).__name__, calls=calls.get(id(module), 0),
                                    raw=raw, key=key))
        glob = {op_key(op): int(n) for op, n in counts.get(GLOBAL, {}).items()}
        root = sum(counts.get(root_key, {}).values())
        outside = int(total) - root
        if outside:
            unattributed[f"{GLOBAL} outside {root_key}"] = outside
        headline: dict[str, Number] = {"flops": int(total)}
        notes = ["run on a deepcopy with grad enabled, as FlopCounterMode's documentation runs it",
                 "temporary forward hooks on the copy count each module's calls"]
        if forward is not None:
            headline["forward_flops"] = sum(forward.get(GLOBAL, {}).values())
            headline["backward_flops"] = int(total) - headline["forward_flops"]
            notes.append("forward + backward: backward() of the sum of every floating-point output that requires "
                         "grad, inside the context; forward_flops is get_total_flops() read after the forward")
        headline.update(sorted(glob.items()))
        units = {k: "FLOPs" for k in headline}
        return ToolRun(tool=self.name, version=self.version(), status="ok", headline=headline, units=units,
                       layers=tuple(layers), unattributed=unattributed, warnings=warnings,
                       notes=(*notes, *outside_tree))


def _loss(out: Any) -> Any:
    """The scalar FCM's users call ``backward()`` on: the sum of every floating-point output that
    requires grad, the outputs the native training count seeds with ones (the same gradients; a
    sum and its backward have no FLOP formula, so they add nothing)."""
    from reconcile.counter.core import _grad_outputs
    from reconcile.errors import ReconcileError

    seeded = _grad_outputs(out)
    if not seeded:
        raise ReconcileError("the forward returned no floating-point tensor that requires grad: nothing to "
                             "backpropagate")
    loss = seeded[0].sum()
    for t in seeded[1:]:
        loss = loss + t.sum()
    return loss


class FlopCounterModeTrainingAdapter(FlopCounterModeAdapter):
    """FlopCounterMode around forward + backward (``--training``): rows and headline as above,
    plus ``forward_flops`` and ``backward_flops`` (the counts read after the forward, and the rest)."""

    training = True

    def attempted(self) -> str:
        return ("torch.utils.flop_counter.FlopCounterMode(display=False, depth=None) around "
                "deepcopy(model)(*inputs) and backward() of the sum of its outputs")
