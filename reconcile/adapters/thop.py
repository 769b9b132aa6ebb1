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
  path, both named by its first ``named_modules()`` name: thop's ``model.apply`` hooks it once
  per path (so each call is counted once per path) and ``dfs_count`` reports it under each.
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
from typing import Any, Iterator

from reconcile.adapters.base import Adapter, capture_output, counting_calls, exact_number, module_names
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
                    layers.append(self._layer(child, names, calls, key, ops, prm))

        walk(work, "", tree)
        # dfs_count adds the root's own total_ops and never its parameters.
        root_ops = macs - sum(layer.raw["ops"] for layer in layers)
        if not tree or root_ops != 0:  # a childless root is itself thop's only entry
            layers.insert(0, self._layer(work, names, calls, "", root_ops, 0))

        warnings = [*cap.warnings, *logs.messages, *_printed_warnings(cap.stdout), *_printed_warnings(cap.stderr)]
        return ToolRun(
            tool=self.name,
            version=self.version(),
            status="ok",
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
