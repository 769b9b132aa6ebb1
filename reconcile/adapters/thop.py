"""Adapter for thop 0.1.1 (``thop.profile``): what thop counts, keyed by module name.

Guarantees, for a run with status ``ok``:

* ``headline``: ``macs`` (thop's ``total_ops``) and ``params`` (``total_params``), exactly as
  ``thop.profile(model, inputs=inputs, ret_layer_info=True)`` returned them, as ints (thop sums
  float64 buffers; a non-integral value would be kept as an exact ``Fraction``).
  ``units``: ``{"macs": "MACs", "params": "params"}``.
* ``layers``: one row per *terminal* entry of thop's nested ``ret_layer_info`` dict, i.e. every
  module thop reports without going further down: modules with a rule (Conv, BN, Linear, ReLU,
  pools, ...) and childless modules without one (GELU, Identity, GroupNorm: thop reports them
  as 0 ops and 0 params). ``raw = {"ops": ..., "params": ...}`` is thop's own pair for that
  entry. Rows are exclusive: a terminal entry has no descendants in thop's tree. ``key`` is the
  dotted path through the nested dict. A module reachable through two parents gets one row per
  path, the first named by its ``named_modules()`` name, each other by its own path: thop's
  ``model.apply`` hooks it once per path (so each call is counted once per path) and
  ``dfs_count`` adds it under each.
  ``calls`` counts forward calls of the module during thop's single forward pass.
  If the root is itself terminal (e.g. a bare ``nn.Conv2d``) it is row ``""``; otherwise a
  row ``""`` appears only if the root's own ``total_ops`` is non-zero, holding exactly that.
* Reconciliation: ``sum(row.raw["ops"]) == headline["macs"]`` and
  ``sum(row.raw["params"]) == headline["params"]``; ``unattributed`` is empty because thop's
  total is by construction the sum of its per-layer entries. thop never counts the root's own
  parameters (``dfs_count`` starts the root at 0), so a root row has ``params`` 0.
* ``warnings``: Python warnings, root-logger records (thop logs through ``logging.warning``)
  and printed ``[WARN]`` lines, ANSI colours stripped. thop's routine ``[INFO] Register ...``
  lines are swallowed and not kept.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from dataclasses import replace
from typing import Any, Iterator

from reconcile.adapters.base import Adapter, ToolFailure, capture_output, counting_calls, exact_number, module_names
from reconcile.records import ToolLayer, ToolRun

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _RootLogCapture(logging.Handler):
    """thop logs through the root logger: collect WARNING+ records and keep every existing root
    handler (a CLI's stream handler, say) from writing them to the terminal meanwhile."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @contextlib.contextmanager
    def installed(self) -> Iterator["_RootLogCapture"]:
        root = logging.getLogger()
        saved = root.handlers[:]
        root.handlers = [self]
        try:
            yield self
        finally:
            root.handlers = saved


def _printed_warnings(text: str) -> list[str]:
    lines = (_ANSI.sub("", line).strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("[INFO]")]


class ThopAdapter(Adapter):
    name = "thop"
    distribution = "thop"
    # runs on CPU as its users run it. Tried on meta first (2026-12-07) its runs equalled its CPU
    # runs on all 51 zoo samples, but a model whose CPU forward crashes or runs out of memory
    # counted there where the user's thop fails (tests/test_faults.py), and on small models meta
    # was slower (2.9 s against 2.3 s over 20 timm models): docs/development.md

    def attempted(self) -> str:
        return "thop.profile(deepcopy(model), inputs=inputs, ret_layer_info=True)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        # thop registers total_ops/total_params buffers on every module and removes them only
        # from modules that got a hook: run it on a copy so the caller's model keeps its state.
        work = copy.deepcopy(model)
        names = module_names(work)
        logs = _RootLogCapture()
        with capture_output() as cap, logs.installed():
            import thop

            with counting_calls(work) as calls:
                total_ops, total_params, tree = thop.profile(work, inputs=tuple(inputs), ret_layer_info=True)

        macs, params = exact_number(total_ops), exact_number(total_params)
        layers: list[ToolLayer] = []

        def walk(module: Any, path: str, entries: dict) -> None:
            for child_name, (ops, prm, sub) in entries.items():
                child = module.get_submodule(child_name)
                key = f"{path}.{child_name}" if path else child_name
                if sub:
                    walk(child, key, sub)
                else:
                    layer = self._layer(child, names, calls, key, ops, prm)
                    # a module registered under several parents: dfs_count adds it under each
                    # path, a row each; the first path is its name, each other keeps its path
                    layers.append(layer if key == layer.module else replace(layer, module=key))

        walk(work, "", tree)
        # dfs_count adds the root's own total_ops and never its parameters.
        root_ops = macs - sum(layer.raw["ops"] for layer in layers)
        if not tree or root_ops != 0:  # a childless root is itself thop's only entry
            layers.insert(0, self._layer(work, names, calls, "", root_ops, 0))

        warnings = [*cap.warnings, *logs.messages, *_printed_warnings(cap.stdout), *_printed_warnings(cap.stderr)]
        return self.ok(
                        headline={"macs": macs, "params": params},
            units={"macs": "MACs", "params": "params"},
            layers=tuple(layers),
            unattributed={},
            warnings=tuple(warnings),
            notes=(
                "run on a deepcopy: thop leaves total_ops/total_params buffers on modules without a rule",
                "temporary forward hooks on the copy count each module's calls",
            ),
        )

    @staticmethod
    def _layer(module: Any, names: dict[int, str], calls: dict[int, int], key: str, ops: Any, params: Any) -> ToolLayer:
        return ToolLayer(
            module=names[id(module)],
            type=type(module).__name__,
            calls=calls.get(id(module), 0),
            raw={"ops": exact_number(ops), "params": exact_number(params)},
            key=key,
        )


class UltralyticsThopAdapter(ThopAdapter):
    """ultralytics-thop 2.2.3 (``thop.profile``, the same call as thop 0.1.1), from its own folder.

    Its ``ret_layer_info`` entries are inclusive (a module's own ``total_ops`` plus its children's;
    a module reached through two parents counted once), and its total adds the functional
    products it counts outside every module with a rule of its own (``torch.matmul``,
    ``F.linear``, ``einsum``, SDPA), which no entry holds. Rows: every module that has no
    children, runs a rule with a count of its own, or holds parameters directly; ``raw["ops"]`` is
    its own count (its entry minus the children it added), ``raw["params"]`` the parameters it
    holds directly, each tensor once (the total is ``model.parameters()``, each tensor once).
    ``unattributed``: the functional counts by function (``functional:torch.matmul``), read by
    wrapping the tool's ``functional_hooks`` for the run (values unchanged; restored after).
    Reconciliation: rows plus ``unattributed`` equal ``macs``; rows' params equal ``params``.
    """

    name = "ultralytics-thop"
    distribution = "ultralytics-thop"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        work = copy.deepcopy(model)
        names = module_names(work)
        logs = _RootLogCapture()
        functional: dict[str, Any] = {}
        with capture_output() as cap, logs.installed():
            import importlib

            import thop

            tp = importlib.import_module("thop.profile")  # the module: ``thop.profile`` is its function

            originals = dict(tp.functional_hooks)

            def labelled(rule: Any, label: str) -> Any:
                def count(args: Any, kwargs: Any, y: Any) -> Any:
                    value = rule(args, kwargs, y)
                    functional[label] = functional.get(label, 0) + exact_number(value)
                    return value
                return count

            for fn, rule in originals.items():
                tp.functional_hooks[fn] = labelled(rule, f"functional:{_function_label(fn)}")
            try:
                with counting_calls(work) as calls:
                    total_ops, total_params, tree = thop.profile(work, inputs=tuple(inputs), ret_layer_info=True)
            finally:
                tp.functional_hooks.clear()
                tp.functional_hooks.update(originals)

        macs, params = exact_number(total_ops), exact_number(total_params)
        layers: list[ToolLayer] = []
        counted: set[int] = set()
        owned: set[int] = set()

        def own_params(module: Any) -> int:
            n = 0
            for p in module.parameters(recurse=False):
                if id(p) not in owned:
                    owned.add(id(p))
                    n += p.numel()
            return n

        def walk(module: Any, path: str, entries: dict) -> Any:
            """The ops this module's entry added up from its children (thop's dfs_count order)."""
            added = 0
            for child_name, (ops, _prm, sub) in entries.items():
                child = module.get_submodule(child_name)
                key = f"{path}.{child_name}" if path else child_name
                prm = own_params(child)  # before its children: parameters() order, a tied tensor at its first owner
                below = walk(child, key, sub)
                if id(child) in counted:
                    continue
                counted.add(id(child))
                own = exact_number(ops) - below
                if not sub or own or prm:
                    layers.append(self._layer(child, names, calls, key, own, prm))
                added += exact_number(ops)
            return added

        root_params = own_params(work)
        children = walk(work, "", tree)
        extra = sum(functional.values())
        root_ops = macs - children - extra
        if not tree or root_ops or root_params:
            layers.insert(0, self._layer(work, names, calls, "", root_ops, root_params))
        warnings = [*cap.warnings, *logs.messages, *_printed_warnings(cap.stdout), *_printed_warnings(cap.stderr)]
        return self.ok(
                        headline={"macs": macs, "params": params}, units={"macs": "MACs", "params": "params"},
            layers=tuple(layers), unattributed={k: v for k, v in functional.items() if v},
            warnings=tuple(warnings),
            notes=("run on a deepcopy, as thop 0.1.1",
                   "rows are each module's own count: its ret_layer_info entry minus the children it added",
                   "functional counts labelled by wrapping thop.profile.functional_hooks for the run",
                   "temporary forward hooks on the copy count each module's calls"),
        )


def _function_label(fn: Any) -> str:
    import torch

    for prefix, space in (("torch", torch), ("F", torch.nn.functional), ("Tensor", torch.Tensor),
                          ("Tensor", torch._C.TensorBase)):  # Tensor methods live on TensorBase
        for attr, value in vars(space).items():
            if value is fn:
                return f"{prefix}.{attr}"
    return getattr(fn, "__qualname__", repr(fn))


class Thop0022Adapter(Adapter):
    """thop 0.0.22 (2019) as the articles ran it: ``thop.profile(model, input_size=shape)``.

    It makes its own all-zero float32 input of ``input_size`` (one input only), hooks every
    module without children whose exact type has a rule, and keeps ``total_ops`` and
    ``total_params`` as float32 buffers: each module's count is *assigned* per call (the last call
    wins) and rounded to float32, and the total is a float32 sum over leaves in ``modules()``
    order. Rows: every leaf, ``raw = {"ops", "params"}`` as its float32 buffers (exact integers).
    The headline is the float32 sum thop returned, which can differ from the rows' exact sum.
    """

    name = "thop@0.0.22"
    distribution = "thop"

    def attempted(self) -> str:
        return "thop.profile(deepcopy(model), input_size=shape)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        if len(inputs) != 1:
            raise ToolFailure(f"thop 0.0.22 takes one input_size; this model takes {len(inputs)} inputs",
                              TypeError("profile(model, input_size)"))
        work = copy.deepcopy(model)
        names = module_names(work)
        shape = tuple(int(d) for d in inputs[0].shape)
        with capture_output() as cap:
            import thop

            with counting_calls(work) as calls:
                total_ops, total_params = thop.profile(work, input_size=shape, verbose=False)
        layers = []
        for mod in work.modules():
            if list(mod.children()) or "total_ops" not in mod._buffers:
                continue
            layers.append(ToolLayer(module=names[id(mod)], type=type(mod).__name__, calls=calls.get(id(mod), 0),
                                    raw={"ops": exact_number(mod.total_ops), "params": exact_number(mod.total_params)},
                                    key=names[id(mod)]))
        return self.ok(
                        headline={"macs": exact_number(total_ops), "params": exact_number(total_params)},
            units={"macs": "MACs", "params": "params"}, layers=tuple(layers),
            warnings=tuple([*cap.warnings, *_printed_warnings(cap.stdout), *_printed_warnings(cap.stderr)]),
            notes=(f"thop 0.0.22 runs its own torch.zeros({shape}) input, float32",
                   "run on a deepcopy: thop 0.0.22 leaves total_ops/total_params buffers on every leaf"),
        )
