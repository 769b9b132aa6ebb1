"""Roofline pictures as PNG bytes: pure functions of a ``Roofline`` (no torch, no pyplot state).

Deterministic: the Agg canvas, a fixed size, dpi and font (DejaVu Sans, shipped with matplotlib),
and PNG metadata without the software version, so the same result gives the same bytes.
"""

from __future__ import annotations

import io
import math

from reconcile.roofline.core import Roofline
from reconcile.roofline.render import by_family, seconds

SIZE = (8.0, 5.5)  # inches
DPI = 110
RC = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "svg.hashsalt": "reconcile",
      "path.simplify": True}


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def roofline_png(r: Roofline, index: int = 0, labels: int = 10) -> bytes:
    """Log-log roofline on platform ``index``: the roof min(peak, bandwidth * I) (and, dashed, the
    cache roof when the platform has one), one point per layer at (intensity, attainable FLOP/s on
    its own roof), its area proportional to its time bound, the ``labels`` costliest labelled;
    measured points (FLOPs / measured time) hollow, when measured."""
    import matplotlib

    from matplotlib.figure import Figure

    p = r.platforms[index]
    pl = p.platform
    pts = [(float(la.intensity), t.attainable, t.time_s, la, t.bound)
           for la, t in zip(r.layers, p.times) if la.intensity and la.flops]
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=SIZE)
        ax = fig.add_subplot(1, 1, 1)
        xs = [x for x, *_ in pts] or [1.0]
        lo = min(min(xs), pl.ridge) / 4
        hi = max(max(xs), pl.ridge) * 4
        grid = [lo * (hi / lo) ** (k / 200) for k in range(201)]
        ax.plot(grid, [min(pl.peak_flops, pl.bandwidth * x) for x in grid], color="black", lw=1.5,
                label=f"roof: {pl.peak_label} {pl.peak_flops:.3g} FLOP/s, {pl.bandwidth:.3g} B/s")
        ax.axvline(pl.ridge, color="grey", ls=":", lw=1, label=f"ridge {pl.ridge:.1f} FLOP/B")
        if pl.has_cache_roof:
            cbw = pl.cache_bandwidth or 0.0
            ax.plot(grid, [min(pl.peak_flops, cbw * x) for x in grid], color="black", lw=1, ls="--",
                    label=f"cache roof: {cbw:.3g} B/s for working sets up to {(pl.cache_bytes or 0) / 2**20:.0f} MiB")
        tmax = max((t for *_, t, _la, _b in pts), default=1.0) or 1.0
        for bound, colour in (("memory", "tab:blue"), ("compute", "tab:red")):
            sel = [q for q in pts if q[4] == bound]
            if sel:
                ax.scatter([q[0] for q in sel], [q[1] for q in sel], s=[12 + 400 * q[2] / tmax for q in sel],
                           color=colour, alpha=0.6, edgecolors="none", label=f"{bound}-bound layer (area ~ time)")
        got = []
        if r.measured and pl.here:
            got = [(x, la.flops / r.measured.module_s[la.module]) for x, _a, _t, la, _b in pts
                   if not r.per_op and r.measured.module_s.get(la.module)]
            if got:
                ax.scatter([g[0] for g in got], [g[1] for g in got], s=14, facecolors="none",
                           edgecolors="tab:green", label="measured (FLOPs / measured time)")
        # the costliest layers, those at the same point (repeated blocks) under one label
        groups: dict[tuple[float, float], list[str]] = {}
        for x, y, _t, la, _b in sorted(pts, key=lambda q: (-q[2], q[3].label))[:labels]:
            groups.setdefault((round(math.log10(x), 2), round(math.log10(y), 2)), []).append(la.label)
        for k, ((lx, ly), names) in enumerate(sorted(groups.items())):
            text = names[0] + (f" (+{len(names) - 1} alike)" if len(names) > 1 else "")
            ax.annotate(text, (10**lx, 10**ly), xytext=(6, -12 - 11 * (k % 4)), textcoords="offset points",
                        fontsize=7, arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "grey"})
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ys = [y for _x, y, *_ in pts] + [g[1] for g in got] or [pl.peak_flops]
        ax.set_ylim(min(min(ys), pl.bandwidth * lo) / 2, pl.peak_flops * 3)
        ax.set_xlabel("arithmetic intensity (FLOPs / byte moved)")
        ax.set_ylabel("attainable FLOP/s")
        ax.set_title(f"{r.model} on {pl.key} ({pl.name}): lower bound {seconds(p.total_time_s)}")
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        return _png(fig)


def family_png(r: Roofline, index: int = 0) -> bytes:
    """Stacked bars: time bound per layer family, memory-bound and compute-bound parts."""
    import matplotlib

    from matplotlib.figure import Figure

    p = r.platforms[index]
    fams = by_family(r, index)
    names = list(fams)
    mem = [fams[f]["memory"] * 1e3 for f in names]
    comp = [fams[f]["compute"] * 1e3 for f in names]
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=SIZE)
        ax = fig.add_subplot(1, 1, 1)
        pos = list(range(len(names)))
        ax.bar(pos, mem, color="tab:blue", label="memory-bound")
        ax.bar(pos, comp, bottom=mem, color="tab:red", label="compute-bound")
        ax.set_xticks(pos, names, rotation=15)
        ax.set_ylabel("time lower bound (ms)")
        ax.set_title(f"{r.model} on {p.platform.key}: {seconds(p.total_time_s)} by layer family")
        ax.legend()
        ax.grid(True, axis="y", lw=0.4, alpha=0.5)
        fig.tight_layout()
        return _png(fig)


def files(r: Roofline) -> dict[str, bytes]:
    """File name -> PNG bytes, two pictures per platform."""
    out = {}
    stem = r.model.replace(":", "_").replace("/", "_")
    for i, p in enumerate(r.platforms):
        key = p.platform.key
        out[f"{stem}-{key}-roofline.png"] = roofline_png(r, i)
        out[f"{stem}-{key}-families.png"] = family_png(r, i)
    return out


