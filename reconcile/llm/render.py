"""Markdown and JSON-ready data for a phase's rules of thumb, roofline and tools: pure functions of
the records (``rules.explain_phase``, ``roofline.phase_roofline``, ``adapters.phase.PhaseToolRun``),
no torch; numbers formatted only here (``reconcile.numbers``)."""

from __future__ import annotations

from typing import Any, Sequence

from reconcile import numbers
from reconcile.report.sentences import phrase, sentence


def _n(x: Any) -> str:
    return numbers.exact(x)


def _signed(x: int) -> str:
    return ("+" if x > 0 else "−" if x < 0 else "") + numbers.exact(abs(x))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    marks = {"l": ":---", "r": "---:"}
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def rules_markdown(phase: str, rules: Sequence[Any]) -> list[str]:
    """The rules of thumb against the exact count of ``phase``, each gap split into its causes."""
    out = [f"### Rules of thumb against the exact count: {phase}", ""]
    for rule in rules:
        gap = rule.predicted - rule.exact
        out += [f"**{rule.name}**: {phrase(rule.formula)} = {_n(rule.predicted)} FLOPs; exact {_n(rule.exact)}: "
                f"the rule is off by {_signed(gap)} ({numbers.percent(gap, rule.exact, 2)}), split into:", ""]
        out += _table(["cause", "FLOPs the rule counts more (+) or less (−)", "why"],
                      [[g.cause, _signed(g.amount), sentence(g)] for g in rule.gaps]
                      + [["**sum**", f"**{_signed(gap)}**", ""]], "lrl") + [""]
    return out


def rules_plain(rules: Sequence[Any]) -> list[dict]:
    return [{"id": r.id, "name": r.name, "formula": phrase(r.formula), "predicted": r.predicted, "exact": r.exact,
             "gaps": [{"cause": g.cause, "amount": g.amount, "text": sentence(g)} for g in r.gaps]} for r in rules]


def _tps(x: float) -> str:
    return f"{x:,.1f}"


def roofline_markdown(r: Any) -> list[str]:
    """Per platform: each forward's bound as counted and its floor, the tokens-per-second upper
    bound, and (decode) the batch where a step turns compute-bound."""
    out = [f"### Roofline: {r.phase} ({r.dtype} peaks)", "",
           "Floor: the weights read (an embedding: the rows looked up), the KV cache read and the keys and values "
           "appended, nothing else; as counted: every op's reads and writes of the eager forward (activations, the "
           "cache's copy on every step), layer by layer.", ""]
    rows = []
    for p in r.platforms:
        pl = p.platform
        for s in p.steps:
            rows.append([pl.key, s.label, _n(s.flops), _n(s.floor_bytes), _n(s.bytes), numbers.ratio(s.intensity),
                         f"{s.floor_time_s * 1e3:.3f} ms ({s.bound})", f"{s.time_s * 1e3:.3f} ms",
                         _tps(s.tokens_per_s)])
    out += _table(["hardware", "forward", "FLOPs", "bytes (floor)", "bytes (counted)", "FLOP/B (counted)",
                   "bound (floor)", "bound (counted, per layer)", "tokens/s at most"], rows, "llrrrrrrr") + [""]
    crit = [(p.platform.key, p.platform.ridge, p.critical_batch, p.critical_batch_weights) for p in r.platforms
            if p.critical_batch_weights is not None or p.critical_batch is not None]
    if crit:
        out += ["Batch where the decode step turns compute-bound (B f / peak ≥ (W + B k) / bandwidth; f FLOPs and k "
                "cache bytes per sequence, W the weights read once per batch):", ""]
        out += _table(["hardware", "ridge FLOP/B", "with the KV cache", "weights only (k = 0)"],
                      [[k, f"{ridge:.1f}", str(c) if c is not None else "never (the cache alone is memory-bound)",
                        str(w) if w is not None else "never"] for k, ridge, c, w in crit], "lrrr") + [""]
    return out


def tools_markdown(phase: str, runs: Sequence[Any]) -> list[str]:
    """Each tool on the forwards of the phase: its total, the native one, the residual, or why it failed."""
    out = [f"### Counters on {phase}", ""]
    rows = []
    for run in runs:
        if run.status == "ok":
            native = sum(e.native_macs for e in run.explanations)
            rows.append([run.tool, _n(run.headline("macs")), _n(native), _n(run.residual), ""])
        else:
            rows.append([run.tool, "failed", "", "", run.reason])
    return out + _table(["tool", "MACs (its headline, summed over the forwards)", "native MACs", "residual",
                         "why it failed"], rows, "lrrrl") + [""]


def roofline_plain(r: Any) -> dict:
    """A phase's roofline as JSON-ready data (exact integers; times in seconds, rates as floats)."""
    return {"phase": r.phase, "dtype": r.dtype, "platforms": {
        p.platform.key: {"peak_flops": p.platform.peak_flops, "bandwidth": p.platform.bandwidth,
                         "ridge": p.platform.ridge, "critical_batch": p.critical_batch,
                         "critical_batch_weights": p.critical_batch_weights,
                         "steps": [{"forward": s.label, "tokens": s.tokens, "flops": s.flops, "bytes": s.bytes,
                                    "floor_bytes": s.floor_bytes, "time_s": s.time_s, "floor_time_s": s.floor_time_s,
                                    "bound": s.bound, "tokens_per_s": s.tokens_per_s} for s in p.steps]}
        for p in r.platforms}}


def tools_plain(runs: Sequence[Any]) -> list[dict]:
    return [{"tool": run.tool, "status": run.status, "reason": run.reason,
             "macs": run.headline("macs") if run.status == "ok" else None,
             "native_macs": sum(e.native_macs for e in run.explanations),
             "residual": run.residual if run.status == "ok" else None,
             "steps": [s.label for s in run.steps]} for run in runs]
