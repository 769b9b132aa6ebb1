"""JSON (the contract for automation) and per-layer CSV. Pure functions; imports no torch.

JSON keeps at least: ``model``, ``input_shape``, ``native.totals``, and per tool in ``tools``:
``status``, ``version``, ``unit``, ``total`` (raw), ``normalized`` (``macs``, ``flops``),
``residual`` (sum of absolute per-layer residuals), and ``layers`` with ``module``, ``type``,
``calls``, ``raw``, ``predicted``, ``residual``, ``causes`` (each ``id``, ``amount``, ``text``).
Non-integer exact values are strings ``"n/d"``.
"""

from __future__ import annotations

import csv
import io
import json
from fractions import Fraction
from typing import Any

from reconcile.explain.core import LayerExplanation, ToolExplanation
from reconcile.records import to_plain
from reconcile.report.model import ModelReport
from reconcile.report.sentences import phrase, sentence


def _num(x: Any) -> Any:
    if isinstance(x, Fraction):
        return int(x) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"
    return x


def _layer(le: LayerExplanation, metric: str) -> dict[str, Any]:
    causes = [{"metric": m, "id": c.id, "kind": c.kind, "amount": _num(c.amount), "flops": _num(c.flops),
               "text": sentence(c)}
              for m, cs in le.causes.items() for c in cs]
    return {
        "module": le.module,
        "type": le.type,
        "calls": le.calls,
        "call": le.call,
        "raw": {k: _num(v) for k, v in le.raw.items()},
        "predicted": {k: _num(v) for k, v in le.predicted.items()},
        "reference": {k: _num(v) for k, v in le.reference.items() if not k.startswith("_")},
        "residual": {k: _num(v) for k, v in le.residual.items()},
        "causes": causes,
    }


def _tool(t: ToolExplanation) -> dict[str, Any]:
    run = t.run
    d: dict[str, Any] = {
        "status": t.status,
        "version": t.version,
        "unit": run.units.get(t.main, t.unit),
        "total": _num(t.raw_total),
        "normalized": {k: _num(v) for k, v in t.normalized.items()},
        "residual": _num(t.residual),
        "explained_share": _num(t.explained_share()),
        "headline": {k: _num(v) for k, v in run.headline.items()},
        "units": dict(run.units),
        "metrics": {
            k: {"row_key": s.row_key, "total": _num(s.raw_total), "reference": _num(s.reference),
                "causes": {c: _num(v) for c, v in s.causes.items()}, "residual": _num(s.residual),
                "headline_not_rows": _num(s.headline_not_rows),
                "normalized": {n: _num(v) for n, v in s.normalized.items()},
                "explained_share": _num(s.explained_share())}
            for k, s in t.summaries.items()
        },
        "layers": [_layer(le, t.metric) for le in t.layers],
        "unattributed": _layer(t.unattributed, t.metric) if t.unattributed else None,
        "warnings": list(run.warnings),
        "notes": list(run.notes),
        "seconds": None,  # timings are left out so that reports are byte-identical across runs
    }
    if t.status != "ok":
        d["error"] = {"type": run.error_type, "message": run.error_message, "attempted": run.attempted}
    return d


def _roof_layer(la: Any, t: Any) -> dict[str, Any]:
    """One layer's roofline on one platform (the Markdown names the costliest few)."""
    return {"module": la.module, "type": la.type, "op": la.op, "family": la.family, "flops": la.flops,
            "bytes_read": la.bytes_read, "bytes_written": la.bytes_written, "param_bytes": la.param_bytes,
            "intensity": _num(la.intensity), "bound": t.bound, "time_s": t.time_s}


def model_json(r: ModelReport, index: dict | None = None) -> str:
    obj = {
        "model": r.model,
        "input_shape": list(r.input_shape),
        "input_dtype": r.input_dtype,
        "inputs": list(r.inputs),
        "mode": r.mode,
        "native_device": r.native_device,
        "versions": dict(r.versions),
        "published": to_plain(dict(r.published)),
        "native": {"totals": dict(r.native_totals), "components": dict(r.native_components)},
        "tools": {t.tool: _tool(t) for t in r.tools},
    }
    if r.error:
        obj["error"] = r.error
    if r.roofline is not None:
        obj["roofline"] = {p.platform.key: {"peak_flops": p.platform.peak_flops, "bandwidth": p.platform.bandwidth,
                                            "ridge": p.platform.ridge, "total_time_s": p.total_time_s,
                                            "naive_time_s": p.naive_time_s,
                                            "layers": [_roof_layer(la, t) for la, t in zip(r.roofline.layers, p.times)]}
                           for p in r.roofline.platforms}
    if r.training is not None:
        obj["training"] = training_plain(r.training)
    if index is not None:
        obj["index"] = index  # this model's row of index.md
    return json.dumps(obj, indent=1, sort_keys=False) + "\n"


def training_plain(t: Any) -> dict:
    """A ``TrainingSummary`` as JSON-ready data (storage-level memory detail left out), each rule's
    formula and each gap's sentence rendered as text."""
    d = to_plain(t)
    for rule, plain in zip(t.rules, d["rules"]):
        plain["formula"] = phrase(rule.formula)
        plain["gaps"] = [_gap_plain(g) for g in rule.gaps]
    for size, plain in zip(t.pass_sizes, d["pass_sizes"]):
        plain["terms"] = [_gap_plain(g) for g in size.terms]
    if d.get("memory"):
        d["memory"] = {k: v for k, v in d["memory"].items() if k not in ("outputs", "saved_storages")}
    return d


def _gap_plain(g: Any) -> dict:
    return {"cause": g.cause, "amount": to_plain(g.amount), "text": sentence(g)}


CSV_FIELDS = ("model", "tool", "module", "type", "calls", "call", "metric", "raw", "predicted", "reference",
              "residual", "causes")


def layers_csv(r: ModelReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for t in r.tools:
        rows = list(t.layers) + ([t.unattributed] if t.unattributed else [])
        for le in rows:
            for metric in sorted(set(le.raw) | set(le.predicted)):
                causes = ";".join(f"{c.id}={_num(c.amount)}" for c in le.causes.get(metric, ()))
                w.writerow([r.model, t.tool, le.module, le.type, le.calls, "" if le.call is None else le.call, metric,
                            _num(le.raw.get(metric, "")), _num(le.predicted.get(metric, "")),
                            _num(le.reference.get(metric, "")), _num(le.residual.get(metric, "")), causes])
    return buf.getvalue()


def count_plain(name: str, inputs: Any, result: Any, depth: int) -> dict[str, Any]:
    """``reconcile count --format json``: one model's native count (``NativeCount``) down to
    ``depth``, as plain data (storage-level training memory stays in the Python record)."""
    plain = to_plain(result)
    inp = inputs[0]
    obj = {
        "model": name,
        "input_shape": list(inp.shape),
        "input_dtype": inp.dtype,
        "inputs": [i.describe() for i in inputs],
        "device": result.device,
        "totals": plain["totals"],
        "components": plain["components"],
        "tied": plain["tied"],
        "modules": [_count_row(r) for r in plain["rows"] if r["depth"] <= depth],
    }
    if result.training is not None:
        obj["training"] = {k: v for k, v in plain["training"].items() if k != "seeded"}
        if obj["training"].get("memory"):
            obj["training"]["memory"] = {k: v for k, v in obj["training"]["memory"].items()
                                         if k not in ("outputs", "saved_storages")}
        for m, r in zip(obj["modules"], (r for r in plain["rows"] if r["depth"] <= depth)):
            m["backward"] = r["backward"]
    return obj


def _count_row(r: dict) -> dict:
    keep = ("name", "type", "depth", "calls", "components", "flops", "params", "params_trainable",
            "params_frozen", "buffers", "output_elements", "activations", "bytes_read", "bytes_written",
            "ops", "unknown_ops")
    d = {k: r[k] for k in keep}
    d["module"] = d.pop("name")
    d["calls_detail"] = [
        {"inputs": [t["shape"] for t in c["inputs"]], "outputs": [t["shape"] for t in c["outputs"]],
         "components": c["components"]}
        for c in r["call_records"]
    ]
    return d


def tool_runs_plain(mr: Any) -> dict[str, Any]:
    """``reconcile tools --format json``: one model's runs, exactly as the tools reported them."""
    return {"model": mr.name, "input_shape": list(mr.input.shape), "input_dtype": mr.input.dtype,
            "inputs": [i.describe() for i in mr.inputs], "tools": {r.tool: to_plain(r) for r in mr.runs}}


def prediction_plain(name: str, conv: Any, input_shape: Any, pred: Any) -> dict[str, Any]:
    """``reconcile predict --format json``: what ``conv``'s tool would report, row by row, with the
    sentence of each term."""
    return {"model": name, "tool": conv.tool, "input_shape": list(input_shape),
            "unit": conv.unit, "headline": to_plain(dict(pred.headline)),
            "unattributed": to_plain(dict(pred.unattributed)),
            "layers": [{"module": p.module, "type": p.type, "calls": p.calls, "call": p.call,
                        "predicted": to_plain(dict(p.predicted)),
                        "terms": {m: [{"cause": t.cause, "amount": to_plain(t.amount), "text": sentence(t)}
                                      for t in ts] for m, ts in p.terms.items()}}
                       for p in pred.layers]}
