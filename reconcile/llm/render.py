"""A ``PhaseCount`` as plain data (JSON) and as text; a phase's rules of thumb, roofline and tools as
markdown and JSON-ready data (``rules.explain_phase``, ``roofline.phase_roofline``,
``llm.phase_tools.PhaseToolRun``). Pure: imports no torch; numbers formatted only here."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Sequence

from reconcile import numbers
from reconcile.llm.count import QUANTITIES, PhaseCount
from reconcile.report.sentences import phrase, sentence


def _num(v: Any) -> Any:
    """Exact numbers: an int as is, a Fraction as an int when whole, else "p/q"."""
    if isinstance(v, Fraction):
        return v.numerator if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    return v


def plain(pc: PhaseCount, depth: int = 3) -> dict[str, Any]:
    """The JSON object of a phase count (``reconcile count --decode N --format json``)."""
    out: dict[str, Any] = {
        "model": pc.model,
        "phase": pc.phase.text,
        "kind": pc.phase.kind,
        "batch": pc.phase.batch,
        "tokens": pc.tokens,
        "totals": pc.totals,
        "per_token": {q: _num(v) for q, v in pc.per_token.items()},
        "steps": [{"label": s.step.label, "batch": s.step.batch, "tokens": s.step.tokens, "past": s.step.past,
                   "logits_to_keep": s.step.logits, **s.totals} for s in pc.steps],
        "layers": pc.layers(depth),
        "kv_cache": {"tokens": pc.kv.tokens, "batch": pc.kv.batch, "dtype": pc.kv.dtype,
                     "entry_bytes": pc.kv.entry_bytes, "bytes_per_token": pc.kv.bytes_per_token,
                     "total_bytes": pc.kv.total_bytes, "layers": pc.kv.layers, "kv_heads": pc.kv.kv_heads,
                     "head_dim": pc.kv.head_dim, "sliding_window": pc.kv.sliding_window,
                     "sliding_layers": pc.kv.sliding_layers},
        "decode_cost": {q: {"variable": p.variable, "coefficients": [_num(c) for c in p.coefficients],
                            "holds": p.holds, "checks": [[x, c, _num(pr)] for x, c, pr in p.checks]}
                        for q, p in pc.decode_cost.items()},
        "prefill_cost": {q: {"variable": p.variable, "coefficients": [_num(c) for c in p.coefficients],
                             "holds": p.holds, "checks": [[x, c, _num(pr)] for x, c, pr in p.checks]}
                         for q, p in pc.prefill_cost.items()},
        "generation_parts": {k: _num(v) for k, v in (pc.generation_parts() or {}).items()},
        "notes": list(pc.notes),
    }
    if pc.routing is not None:
        r = pc.routing
        out["routing"] = {"num_experts": r.num_experts, "top_k": r.top_k, "expert_modules": list(r.expert_modules),
                          "expert_macs": r.expert_macs, "all_experts_macs": _num(r.all_experts_macs), "rule": r.rule}
    return out


_LABELS = {"macs": "MACs", "flops": "FLOPs", "bytes_read": "bytes read", "bytes_written": "bytes written",
           "weight_bytes": "  of which weights", "kv_read": "  KV cache read", "kv_appended": "  KV cache appended",
           "other_bytes": "  activations and copies", "params_touched": "parameters touched"}


def _fmt(v: Any) -> str:
    if isinstance(v, Fraction):
        return f"{v.numerator:,}" if v.denominator == 1 else f"{float(v):,.1f}"
    return f"{v:,}"


def text(pc: PhaseCount) -> str:
    """The phase as a small table: totals and per token, each step of a generation, the cache."""
    lines = [f"{pc.model}: {pc.phase.text} ({len(pc.steps)} forward pass{'es' if len(pc.steps) != 1 else ''}, "
             f"{pc.tokens:,} token{'s' if pc.tokens != 1 else ''})"]
    per = pc.per_token
    w = max(len(v) for v in _LABELS.values())
    lines.append(f"  {'':<{w}}  {'total':>22}  {'per token':>22}")
    for q in QUANTITIES:
        lines.append(f"  {_LABELS[q]:<{w}}  {_fmt(pc.totals[q]):>22}  {_fmt(per[q]):>22}")
    if len(pc.steps) > 1:
        lines.append("  steps (MACs):")
        for s in pc.steps:
            lines.append(f"    {s.step.label:<28} {s.totals['macs']:>22,}")
    if pc.decode_cost:
        m = pc.decode_cost["macs"]
        a = m.coefficients[0]
        b = m.coefficients[1] if len(m.coefficients) > 1 else Fraction(0)
        lines.append(f"  one decode step at KV length N: {_fmt(a)} + {_fmt(b)} x N MACs "
                     f"({'checked on' if m.holds else 'does NOT hold on'} N = "
                     f"{', '.join(str(x) for x, _, _ in m.checks)})")
    if pc.prefill_cost:
        m = pc.prefill_cost["macs"]
        c = list(m.coefficients) + [Fraction(0)] * (3 - len(m.coefficients))
        lines.append(f"  prefill of P tokens: {_fmt(c[0])} + {_fmt(c[1])} x P + {_fmt(c[2])} x P^2 MACs "
                     f"({'checked on' if m.holds else 'does NOT hold on'} P = "
                     f"{', '.join(str(x) for x, _, _ in m.checks)})")
    parts = pc.generation_parts()
    if parts is not None:
        lines.append(f"  generation = prefill {_fmt(parts['prefill'])} + (T-1) a {_fmt(parts['constant'])} "
                     f"+ b (T-1) P {_fmt(parts['linear_in_P'])} + b (T-1)(T-2)/2 {_fmt(parts['quadratic_in_T'])} "
                     f"= {_fmt(parts['total'])} MACs")
    kv = pc.kv
    win = f", sliding window {kv.sliding_window} on {kv.sliding_layers} layers" if kv.sliding_window else ""
    lines.append(f"  KV cache ({kv.dtype}, {kv.kv_heads} KV heads x {kv.head_dim}{win}): {kv.bytes_per_token:,} bytes "
                 f"per token, {kv.total_bytes:,} bytes at {kv.tokens:,} tokens x batch {kv.batch}")
    if pc.routing is not None:
        r = pc.routing
        lines.append(f"  experts: top-{r.top_k} of {r.num_experts}: {r.expert_macs:,} expert MACs counted; "
                     f"all experts on every token would be {_fmt(r.all_experts_macs)}")
    lines += [f"  note: {n}" for n in pc.notes]
    return "\n".join(lines)


def markdown(pcs: list[PhaseCount], roofs: Sequence[Any] = (), picture: str = "") -> str:
    """The report's section for a model's phases (``report --decode N``): one block per phase, its
    rules of thumb and (``roofs``: one ``PhaseRoofline`` per phase) its roofline; ``picture``: the
    prefill-against-decode picture's file name, shown when a prefill and a decode are both there."""
    if not pcs:
        return ""
    lines = [f"## Language-model phases: {pcs[0].model}", "",
             "Counted by the native counter with a `DynamicCache` filled to each step's length "
             "(docs/language-models.md); exact integers, per token over batch x tokens processed.", ""]
    for i, pc in enumerate(pcs):
        lines += [f"### {pc.phase.text}", "", "```", text(pc), "```", ""]
        if pc.rules:
            lines += rules_markdown(pc.phase.text, pc.rules)
        if pc.tools:
            lines += tools_markdown(pc.phase.text, pc.tools)
        if i < len(roofs):
            lines += roofline_markdown(roofs[i])
    kinds = {r.phase.split(":")[0] for r in roofs}
    if picture and {"prefill", "decode"} <= kinds:
        lines += ["### Prefill against decode", "", f"![arithmetic intensity per layer, prefill against decode]({picture})", ""]
    return "\n".join(lines)


# ----- rules of thumb, roofline and tools per phase ----------------------------------------


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
            rows.append([run.tool, _n(run.main_total()), f"{run.main} ({run.unit})", _n(native), _n(run.residual), ""])
        else:
            rows.append([run.tool, "failed", "", "", "", run.reason])
    return out + _table(["tool", "its main total, summed over the forwards", "as the tool names it", "native MACs",
                         "residual", "why it failed"], rows, "lrlrrl") + [""]


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
             "total": run.main_total() if run.status == "ok" else None,
             "total_key": run.main if run.status == "ok" else None, "unit": run.unit if run.status == "ok" else None,
             "native_macs": sum(e.native_macs for e in run.explanations),
             "residual": run.residual if run.status == "ok" else None,
             "steps": [s.label for s in run.steps]} for run in runs]
