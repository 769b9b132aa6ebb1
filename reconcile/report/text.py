"""Plain-text tables for the terminal. Pure functions of plain data; imports no torch."""

from __future__ import annotations

from typing import Any, Sequence

from reconcile import numbers


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def count_table(model: str, input_shapes: Sequence[Sequence[int]], device: str, totals: dict[str, int],
                rows: Sequence[dict[str, Any]]) -> str:
    """Per-module table of a native count: inclusive totals per module, indented by depth."""
    headers = ["module", "type", "calls", "params", "MACs", "FLOPs", "activations", "FLOP/B", "unknown ops"]
    right = [False, False, True, True, True, True, True, True, True]
    body = []
    for r in rows:
        label = ("  " * r["depth"]) + (r["module"].rsplit(".", 1)[-1] if r["module"] else "(model)")
        moved = r["bytes_read"] + r["bytes_written"]
        body.append([
            label,
            r["type"],
            str(r["calls"]),
            numbers.si(r["params"]),
            numbers.si(r["macs"]),
            numbers.si(r["flops"]),
            numbers.si(r["activations"]),
            numbers.ratio(r["flops"] / moved if moved else None),
            str(r["unknown_ops"]) if r["unknown_ops"] else "",
        ])
    from reconcile.inputs import elide

    shapes = elide(["x".join(str(d) for d in s) for s in input_shapes])
    head = f"{model}  input {shapes}  (counted on {device})"
    foot = (
        f"total: {numbers.exact(totals['macs'])} MACs, {numbers.exact(totals['flops'])} FLOPs, "
        f"{numbers.exact(totals['params'])} params, {numbers.exact(totals['activations'])} elements written, "
        f"{numbers.mib(totals['bytes_read'])} read, {numbers.mib(totals['bytes_written'])} written"
    )
    if totals.get("unknown_ops"):
        foot += f"; {totals['unknown_ops']} op calls had no rule and were NOT counted (see --format json)"
    return "\n".join([head, table(headers, body, right), foot])


def training_table(model: str, rows: Sequence[dict[str, Any]], totals: dict[str, int], seed: str) -> str:
    """Per-module table of a training count: forward and backward MACs (inclusive), the backward
    split into input-gradient, weight-gradient and other work."""
    headers = ["module", "type", "fwd MACs", "bwd input", "bwd weight", "bwd other", "fwd+bwd MACs",
               "fwd+bwd FLOPs", "unknown ops"]
    right = [False, False, True, True, True, True, True, True, True]
    body = []
    for r in rows:
        label = ("  " * r["depth"]) + (r["module"].rsplit(".", 1)[-1] if r["module"] else "(model)")
        other = r["backward_macs_shared"] + r["backward_macs_accumulate"]
        body.append([label, r["type"], numbers.si(r["forward_macs"]), numbers.si(r["backward_macs_input"]),
                     numbers.si(r["backward_macs_weight"]), numbers.si(other) if other else "",
                     numbers.si(r["training_macs"]), numbers.si(r["training_flops"]),
                     str(r["backward_unknown_ops"]) if r["backward_unknown_ops"] else ""])
    t = totals
    foot = (
        f"training (forward + backward): {numbers.exact(t['training_macs'])} MACs, "
        f"{numbers.exact(t['training_flops'])} FLOPs; backward {numbers.exact(t['backward_macs'])} MACs = "
        f"input gradients {numbers.exact(t['backward_macs_input'])} + weight gradients "
        f"{numbers.exact(t['backward_macs_weight'])}"
    )
    other = t["backward_macs_shared"] + t["backward_macs_accumulate"]
    if other:
        foot += f" + other {numbers.exact(other)}"
    if t.get("backward_unknown_ops"):
        foot += f"; {t['backward_unknown_ops']} backward op calls had no rule and were NOT counted"
    return "\n".join([f"{model}  training: {seed}", table(headers, body, right), foot])


def tool_runs_table(mr: Any) -> str:
    """``reconcile tools``: one model's runs, a line each, the headline as the tool reports it."""
    from reconcile.inputs import describe

    rows = []
    for r in mr.runs:
        head = ", ".join(f"{k} {numbers.exact(v) if not isinstance(v, str) else v}" for k, v in r.headline.items()
                         if not k.startswith("unsupported")) if r.status == "ok" else f"{r.error_type}: {r.error_message}"
        rows.append([r.tool, r.version, r.status, f"{r.seconds:.1f}s", head])
    return f"{mr.name}  input {describe(mr.inputs)}\n" + table(
        ["tool", "version", "status", "time", "headline (as the tool reports it)"], rows, [False, False, False, True, False])


def prediction_table(name: str, conv: Any, pred: Any) -> str:
    """``reconcile predict``: what ``conv``'s tool would report, a row per layer with why it differs
    from native, and its headline."""
    from reconcile.report.sentences import sentence

    # the tool's row metrics: its main op count first (torchsummary has none: params, outputs)
    keys = list(dict.fromkeys(k for k in conv.metrics.values() if k))
    keys = [k for k in keys if any(k in p.predicted for p in pred.layers)] or [conv.metric]
    rows = [[p.module or "(model)", p.type, str(p.calls) + ("" if p.call is None else f" #{p.call}"),
             *(numbers.exact(p.predicted.get(k, 0)) for k in keys),
             "; ".join(sentence(t) for k in keys for t in p.terms.get(k, ()))] for p in pred.layers]
    return "\n".join([
        f"{name}: what {conv.tool} would report (predicted from the native count; {conv.tool} was not run)",
        table(["module", "type", "calls", *keys, "why it differs from native"], rows,
              [False, False, True, *([True] * len(keys)), False]),
        "headline: " + ", ".join(f"{k} {numbers.exact(v)}" for k, v in pred.headline.items())])
