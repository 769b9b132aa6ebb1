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
* the **operator view** (row ``torchscan-ops``): ``FlopCounterMode`` around the same forward
  ("Operator forward FLOPs"), not modelled here yet.

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

from reconcile.adapters.base import Adapter, capture_output, exact_number, module_names
from reconcile.records import ToolLayer, ToolRun


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
        # torchscan removes its hooks and restores the training flags; a copy keeps the caller's
        # model out of a failed run all the same
        work = copy.deepcopy(model)
        names = module_names(work)
        by_path = {path: names[id(m)] for path, m in work.named_modules()}
        types = {path: type(m).__name__ for path, m in work.named_modules()}
        with capture_output() as cap:
            import torchscan

            report = torchscan.summary(work, args=tuple(inputs))
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
        return ToolRun(
            tool=self.name,
            version=self.version(),
            status="ok",
            headline=headline,
            units={"macs": "MACs", "params": "params"},
            layers=layers,
            unattributed={},
            warnings=tuple([*cap.warnings, *diagnostics]),
            notes=(
                "summary(model, args=inputs): the model's own inputs instead of input_shape's random ones",
                f"MACs status: {totals['macs']['status']} (torchscan prints a partial total as 'known')",
                "per-layer params: the printed Param # (parameters + buffers); calls of a module summed",
            ),
        )
