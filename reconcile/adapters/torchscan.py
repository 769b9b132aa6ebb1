"""Adapter for torchscan 0.2.0 (``torchscan.summary``), run the way its users run it:
``summary(model, args=inputs)`` (the README's entry point, with the model's own inputs instead of
``input_shape``'s random ones, so token ids stay integers), which prints a table and returns the
report dict it printed from (``crawl_module``'s). torchscan puts the model in ``eval()`` and runs
it under ``torch.no_grad()`` itself, then restores the training flags.

torchscan's summary holds two views of one forward, which users read apart:

* the **module view** (row ``torchscan``): forward hooks on every module; each *metric leaf* (a
  module without children, or an ``nn.MultiheadAttention``) gets its ``modules/macs.py`` formula
  per call, summed into "Multiply-Accumulations" (MACs), printed "known" (partial) when a module
  type has no formula ("Module type not supported": 0). The table's per-layer "Param #" is the
  module's own parameters *plus its buffers*, each tensor once in call order (MHA: its
  subtree); "Total params" is ``model.parameters()`` only.
* the **operator view** (row ``torchscan-ops``, ``TorchscanOpsAdapter``): torchscan's
  ``measure_flops`` runs ``FlopCounterMode(display=False)`` (and a recorder of every aten op) around
  the same forward, still under ``eval()`` and ``no_grad`` ("Operator forward FLOPs", printed
  "known" when an observed op has no formula and is not one torchscan lists as free).

Guarantees, for a run with status ``ok`` (the module view):

* ``headline``: ``macs`` (``report["totals"]["macs"]``: its value, or its known value when
  partial) and ``params`` (``totals["parameters"]``), exact ints. ``units``: MACs, params.
* ``layers``: one row per module torchscan hooked and that ran (``named_modules()`` names; calls
  summed): ``raw["params"]`` the printed "Param #" (parameters + buffers, each tensor once over the
  run), and for a metric leaf ``raw["macs"]``, the known MACs of its calls. Rows are exclusive.
* Reconciliation: the metric leaves' ``macs`` sum to ``headline["macs"]``; ``unattributed`` is
  empty. The rows' ``params`` sum to parameters + buffers, not to ``headline["params"]``.
* ``warnings``: torchscan's diagnostics (unsupported module, missing tensors), one line each.
"""

from __future__ import annotations

import copy
from typing import Any

from reconcile.adapters.base import Adapter, capture_output, exact_number, fcm_keys, keep, kept, module_names
from reconcile.records import Number, ToolLayer, ToolRun


SUMMARY = "torchscan.summary"


def _summary(model: Any, inputs: tuple[Any, ...]) -> tuple[dict[str, Any], list[str], list[str], Any]:
    """``torchscan.summary(deepcopy(model), args=inputs)``, what it printed and logged captured:
    ``(report, warnings, module tracker log lines, the model it ran on)``. Both views make this one
    call: in a model group the view that runs first keeps the report for the other
    (``base.keep``), which then reads the rows of ``model`` itself, the same module tree as the
    copy's (``tests/test_torchscan_once.py``: the same records as with a call each)."""
    from importlib.util import find_spec

    found_at = find_spec("torchscan")  # the module this run imports (a pinned version's folder makes its own call)
    call = f"{SUMMARY} of {found_at.origin if found_at is not None else None}"
    found = kept(call)
    if found is not None:
        report, warned, logged = found
        return report, list(warned), list(logged), model
    # torchscan removes its hooks and restores the training flags; a copy keeps the caller's
    # model out of a failed run all the same
    work = copy.deepcopy(model)
    with capture_output(loggers=("torch.utils.module_tracker",)) as cap:
        import torchscan

        report = torchscan.summary(work, args=tuple(inputs))
    keep(call, (report, tuple(cap.warnings), tuple(cap.log)))
    return report, cap.warnings, cap.log, work


def _known(result: Any) -> Any:
    if result is None:
        return None
    return result["value"] if result["status"] == "complete" else result["known_value"]


class TorchscanAdapter(Adapter):
    name = "torchscan"
    distribution = "torchscan"

    def attempted(self) -> str:
        return "torchscan.summary(deepcopy(model), args=inputs)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        report, warned, _, work = _summary(model, inputs)
        names = module_names(work)
        by_path = {path: names[id(m)] for path, m in work.named_modules()}
        types = {path: type(m).__name__ for path, m in work.named_modules()}
        rows: dict[str, dict[str, Any]] = {}
        calls: dict[str, int] = {}
        for layer in report["layers"]:
            name = by_path.get(layer["path"], layer["path"])
            raw = rows.setdefault(name, {"params": 0})
            calls[name] = calls.get(name, 0) + 1
            p, b = layer["parameters"], layer["buffers"]
            raw["params"] += int(p["trainable"]) + int(p["frozen"]) + int(b["elements"])
            if "macs" in layer["metrics"]:
                value = _known(layer["metrics"]["macs"])
                raw["macs"] = raw.get("macs", 0) + (exact_number(value) if value is not None else 0)
        layers = tuple(ToolLayer(module=name, type=types.get(name, ""), calls=calls[name], raw=raw, key=name)
                       for name, raw in rows.items())
        totals = report["totals"]
        macs = _known(totals["macs"])
        headline = {"macs": exact_number(macs) if macs is not None else 0,
                    "params": exact_number(totals["parameters"]["value"])}
        diagnostics = [f"{d.get('code')}: {d.get('path', d.get('operator', ''))}: {d.get('message')}"
                       for d in report["diagnostics"]]
        return self.ok(
                        headline=headline,
            units={"macs": "MACs", "params": "params"},
            layers=layers,
            unattributed={},
            warnings=tuple([*warned, *diagnostics]),
            notes=(
                "summary(model, args=inputs): the model's own inputs instead of input_shape's random ones",
                f"MACs status: {totals['macs']['status']} (torchscan prints a partial total as 'known')",
                "per-layer params: the printed Param # (parameters + buffers); calls of a module summed",
            ),
        )


class TorchscanOpsAdapter(Adapter):
    """torchscan's operator view, read from the report ``summary`` returns (what it printed from):

    * ``headline``: ``flops`` = ``report["operator_flops"]["total"]`` (its value, or its known value
      when partial: "Operator forward FLOPs"), and ``"<op>"`` = its ``by_operator`` count per aten
      op (``"aten.convolution"``): FlopCounterMode's Global, an exact int each. Unit: FLOPs.
    * ``layers``: one row per key of ``by_module`` (FlopCounterMode's module-tracker names, a
      module's FLOPs *inclusive* of every module it called), re-keyed to ``named_modules()`` names
      by ``fcm_keys``; ``raw = {"flops": n}`` (torchscan keeps no per-module split by op);
      ``calls`` the module's calls, from the report's per-call layer entries.
    * ``unattributed``: ``{"Global outside <root>": n}`` when the total holds FLOPs the root's row
      does not. ``warnings``: torchscan's ``uncounted_operator`` diagnostics, one line each.
    """

    name = "torchscan-ops"
    distribution = "torchscan"

    def attempted(self) -> str:
        return "torchscan.summary(deepcopy(model), args=inputs)['operator_flops']"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        report, warned, logged, work = _summary(model, inputs)
        names = module_names(work)
        keys = fcm_keys(work)
        by_path = {path: names[id(m)] for path, m in work.named_modules()}
        ops = report["operator_flops"]
        calls: dict[str, int] = {}
        for layer in report["layers"]:
            name = by_path.get(layer["path"], layer["path"])
            calls[name] = calls.get(name, 0) + 1
        layers: list[ToolLayer] = []
        outside_tree: list[str] = []
        root_key = type(work).__name__
        for key, flops in sorted(ops["by_module"].items(), key=lambda kv: (kv[0] != root_key, kv[0])):
            module = keys.get(key)
            if module is None or id(module) not in names:
                outside_tree.append(f"torchscan operator row {key!r} names no module of the model: {flops} FLOPs, "
                                    "counted in its callers' rows")
                continue
            name = names[id(module)]
            layers.append(ToolLayer(module=name, type=type(module).__name__, calls=calls.get(name, 0),
                                    raw={"flops": int(flops)}, key=key))
        total = ops["total"]
        flops = int(total["value"] if total["value"] is not None else total["known_value"] or 0)
        headline: dict[str, Number] = {"flops": flops}
        headline.update(sorted((k, int(v)) for k, v in ops["by_operator"].items()))
        unattributed: dict[str, Number] = {}
        outside = flops - int(ops["by_module"].get(root_key, 0))
        if outside:
            unattributed[f"Global outside {root_key}"] = outside
        diagnostics = [f"{d.get('code')}: {d.get('operator', d.get('path', ''))}: {d.get('message')}"
                       for d in ops["diagnostics"]]
        return self.ok(
                        headline=headline,
            units={k: "FLOPs" for k in headline},
            layers=tuple(layers),
            unattributed=unattributed,
            warnings=tuple([*warned, *logged, *diagnostics]),
            notes=(
                "summary(model, args=inputs): the model's own inputs instead of input_shape's random ones",
                f"Operator forward FLOPs status: {total['status']} (torchscan prints a partial total as 'known')",
                "per-layer rows: torchscan's operator by_module, inclusive (a module holds the modules it called)",
                *outside_tree,
            ),
        )
