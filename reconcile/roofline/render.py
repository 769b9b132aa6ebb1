"""Renderers of a ``Roofline``: a terminal table, a JSON-ready dict and Markdown. Pure functions
of the result; no torch. Counts stay exact integers in JSON; times and rates are floats."""

from __future__ import annotations

from typing import Any

from reconcile import numbers
from reconcile.roofline.core import FAMILIES, Roofline, faster_than_bound, module_bounds, tightest, why_faster

ASSUMPTIONS = (
    "Bytes: every tensor an op reads or writes, once per op, at its dtype; parameters are read once "
    "per op that uses them; views and allocations move nothing; an in-place op reads and writes its "
    "tensor. No reuse between ops: every operand comes from DRAM, so the roof is DRAM bandwidth. "
    "Peaks are dense (no sparsity). A layer's bound is max(FLOPs / peak, bytes / bandwidth); "
    "the model's is their sum (layers run one after another)."
)
# added when a platform has a cache roof (local, or custom with cache=): named hardware is DRAM-only
CACHE_ASSUMPTION = (
    "Except on a platform with a last-level cache figure (local: measured): there a layer whose "
    "working set (one call's reads + writes, an in-place op's tensor once) fits the cache may never "
    "reach DRAM, and its bound uses the cache's bandwidth (roof: cache). Named hardware is DRAM-only "
    "(no source in the table gives a cache bandwidth)."
)

ROOF_LABEL = {"dram": "DRAM", "cache": "cache"}


def assumptions(r: Roofline) -> str:
    """What the bytes and the roofs assume, for this result's platforms."""
    if any(p.platform.has_cache_roof for p in r.platforms):
        return ASSUMPTIONS + " " + CACHE_ASSUMPTION
    return ASSUMPTIONS


def seconds(s: float) -> str:
    """1.23 ms, 45.6 us, 2.10 s."""
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.2f} us"


def _intensity(x: Any) -> str:
    return "-" if x is None else f"{float(x):.2f}"


def _rate(x: float, unit: str) -> str:
    return f"{numbers.si(x)}{unit}"


def _header(r: Roofline) -> list[str]:
    shapes = ", ".join("x".join(map(str, s)) for s in r.input_shapes)
    what_if = f", weights as {r.weight_dtype} (what-if: parameter bytes only)" if r.weight_dtype else ""
    return [f"{r.model}: input {shapes} ({r.compute_dtype}), parameters {r.param_dtype}{what_if}",
            f"total {numbers.exact(r.flops)} FLOPs, {numbers.exact(r.bytes_read)} B read, "
            f"{numbers.exact(r.bytes_written)} B written, intensity {_intensity(r.intensity)} FLOP/B"]


def table(r: Roofline, limit: int | None = None) -> str:
    """One block per platform: its peak, bandwidth and ridge, then one line per layer."""
    lines = _header(r)
    for i, p in enumerate(r.platforms):
        pl = p.platform
        lines += ["", f"{pl.key} ({pl.name}): peak {_rate(pl.peak_flops, 'FLOP/s')} ({pl.peak_label}), "
                      f"bandwidth {_rate(pl.bandwidth, 'B/s')} (DRAM), ridge {pl.ridge:.1f} FLOP/B"
                      + (f"; cache {numbers.exact(pl.cache_bytes or 0)} B at {_rate(pl.cache_bandwidth or 0, 'B/s')}, "
                         f"ridge {pl.cache_ridge:.1f} FLOP/B" if pl.has_cache_roof else ""),
                  f"  lower bound {seconds(p.total_time_s)} (sum over layers); naive whole-model "
                  f"{seconds(p.naive_time_s)}"]
        bounds = module_bounds(r, i)
        meas = r.measured.module_s if r.measured and pl.here else {}
        head = (f"  {'layer':40s} {'type':18s} {'FLOPs':>14s} {'bytes':>14s} {'FLOP/B':>8s} {'bound':>7s} {'roof':>5s} "
                f"{'time bound':>11s}")
        lines.append(head + (f" {'measured':>11s}" if meas else ""))
        rows = list(zip(r.layers, p.times))
        for la, t in rows[:limit] if limit else rows:
            line = (f"  {la.label[:40]:40s} {la.type[:18]:18s} {numbers.exact(la.flops):>14s} {numbers.exact(la.bytes):>14s} "
                    f"{_intensity(la.intensity):>8s} {t.bound:>7s} {ROOF_LABEL[t.roof]:>5s} {seconds(t.time_s):>11s}")
            if meas and not r.per_op:
                got = meas.get(la.module)
                mark = "  < bound" if got is not None and bounds[la.module] > got else ""
                line += f" {seconds(got) if got is not None else '-':>11s}{mark}"
            lines.append(line)
        if r.measured and pl.here:
            lines += _measured_lines(r, i)
    return "\n".join(lines)


def _measured_lines(r: Roofline, i: int) -> list[str]:
    m = r.measured
    assert m is not None
    p = r.platforms[i]
    low = faster_than_bound(r, i)
    out = [f"  measured forward (no hooks, best of {m.repeat}): {seconds(m.total_s)}; summed bounds / measured = "
           f"{p.total_time_s / m.total_s:.3f}"]
    tight = tightest(r, i)
    if tight is not None:
        mod, b, g = tight
        out.append(f"  tightest layer: {mod or '(model)'}, bound {seconds(b)} / measured {seconds(g)} = {b / g:.3f}")
    if low:
        out.append(f"  {len(low)} layer(s) measured faster than their bound (a wrong count or a wrong bound: "
                   "reported, not clipped):")
        out += [f"    {mod or '(model)'}: bound {seconds(b)} > measured {seconds(g)} ({b / g:.2f}x): {why_faster(r, i, mod)}"
                for mod, b, g in low]
    else:
        out.append("  every layer's measured time is at or above its lower bound")
    return out


def to_json(r: Roofline) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "model": r.model,
        "input_shapes": [list(s) for s in r.input_shapes],
        "compute_dtype": r.compute_dtype,
        "param_dtype": r.param_dtype,
        "weight_dtype": r.weight_dtype,
        "rows_per": "op" if r.per_op else "module",
        "flops": r.flops,
        "bytes_read": r.bytes_read,
        "bytes_written": r.bytes_written,
        "assumptions": assumptions(r),
        "hardware": [],
    }
    for i, p in enumerate(r.platforms):
        pl = p.platform
        rows = []
        for la, t in zip(r.layers, p.times):
            row = {"module": la.module, "type": la.type, "family": la.family, "flops": la.flops,
                   "bytes": la.bytes, "bytes_read": la.bytes_read, "bytes_written": la.bytes_written,
                   "param_bytes": la.param_bytes,
                   "intensity": None if la.intensity is None else float(la.intensity),
                   "working_set": la.working_set, "bound": t.bound, "roof": t.roof,
                   "attainable_flops": t.attainable, "time_s": t.time_s}
            if pl.has_cache_roof:  # the bytes that must cross DRAM, what the dram roof divides
                row["dram_bytes"] = la.dram_floor(pl.cache_bytes or 0)
            if r.per_op:
                row["op"] = la.op
            rows.append(row)
        hw: dict[str, Any] = {"key": pl.key, "name": pl.name, "peak_flops": pl.peak_flops, "peak": pl.peak_label,
                              "bandwidth": pl.bandwidth, "ridge": pl.ridge, "cache_bytes": pl.cache_bytes,
                              "cache_bandwidth": pl.cache_bandwidth if pl.has_cache_roof else None,
                              "source": pl.source, "rows": rows,
                              "total_time_s": p.total_time_s, "naive_time_s": p.naive_time_s}
        if r.measured and pl.here:
            tight = tightest(r, i)
            hw["measured"] = {"total_s": r.measured.total_s, "repeat": r.measured.repeat,
                              "bound_over_measured": p.total_time_s / r.measured.total_s,
                              "tightest": None if tight is None else {
                                  "module": tight[0], "bound_s": tight[1], "measured_s": tight[2]},
                              "modules": {m: {"measured_s": r.measured.module_s.get(m), "bound_s": b}
                                          for m, b in module_bounds(r, i).items()},
                              "faster_than_bound": [{"module": m, "bound_s": b, "measured_s": g,
                                                     "why": why_faster(r, i, m)}
                                                    for m, b, g in faster_than_bound(r, i)]}
        obj["hardware"].append(hw)
    return obj


def by_family(r: Roofline, i: int) -> dict[str, dict[str, float]]:
    """family -> {"memory": seconds, "compute": seconds} on platform ``i``, families in fixed order."""
    out = {f: {"memory": 0.0, "compute": 0.0} for f in FAMILIES}
    for la, t in zip(r.layers, r.platforms[i].times):
        out[la.family][t.bound] += t.time_s
    return {f: v for f, v in out.items() if v["memory"] or v["compute"]}


def roofline_markdown(r: Roofline, top: int = 10) -> str:
    """A Markdown section for a report: per platform, the bound, the share of memory-bound time,
    and the costliest layers. Meant for ``make report`` once its renderer takes sections."""
    cached = any(p.platform.has_cache_roof for p in r.platforms)
    out = [f"### Roofline: {r.model}", "", "; ".join(_header(r)) + ".", "", assumptions(r), "",
           "| hardware | peak (FLOP/s) | bandwidth (B/s) | ridge (FLOP/B) | lower bound | naive bound | memory-bound time |",
           "|:---|---:|---:|---:|---:|---:|---:|"]
    for p in r.platforms:
        pl = p.platform
        mem = sum(t.time_s for t in p.times if t.bound == "memory")
        cache = (f"; cache {numbers.si(pl.cache_bandwidth or 0)} up to {numbers.exact(pl.cache_bytes or 0)} B"
                 if pl.has_cache_roof else "")
        out.append(f"| {pl.key} | {numbers.si(pl.peak_flops)} ({pl.peak_label}) | {numbers.si(pl.bandwidth)}{cache} | "
                   f"{pl.ridge:.1f} | {seconds(p.total_time_s)} | {seconds(p.naive_time_s)} | "
                   f"{numbers.percent(mem, p.total_time_s) if p.total_time_s else 'n/a'} |")
    if r.platforms:
        p = r.platforms[0]
        order = sorted(range(len(r.layers)), key=lambda k: (-p.times[k].time_s, k))[:top]
        out += ["", f"Costliest layers on {p.platform.key}:", ""]
        out += (["| layer | FLOPs | bytes | FLOP/B | bound | roof | time bound |", "|:---|---:|---:|---:|:---|:---|---:|"]
                if cached else ["| layer | FLOPs | bytes | FLOP/B | bound | time bound |", "|:---|---:|---:|---:|:---|---:|"])
        for k in order:
            la, t = r.layers[k], p.times[k]
            roof = f" {ROOF_LABEL[t.roof]} |" if cached else ""
            out.append(f"| `{la.label}` | {numbers.exact(la.flops)} | {numbers.exact(la.bytes)} | "
                       f"{_intensity(la.intensity)} | {t.bound} |{roof} {seconds(t.time_s)} |")
    return "\n".join(out) + "\n"
