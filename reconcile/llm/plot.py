"""The picture of prefill against decode: arithmetic intensity per layer of each phase on one
roofline. PNG bytes, a pure function of ``roofline.PhaseRoofline`` records (no torch, no pyplot
state; deterministic as ``reconcile.roofline.plot``)."""

from __future__ import annotations

from typing import Sequence

from reconcile.roofline.plot import DPI, RC, SIZE, _png  # noqa: F401 - one canvas and PNG writer

_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple")


def phases_png(results: Sequence, index: int = 0) -> bytes:
    """Each phase's layers (of its last forward) at (FLOPs / byte, attainable FLOP/s) on platform
    ``index``: prefill's matmuls near or past the ridge, decode's far left of it."""
    import matplotlib
    from matplotlib.figure import Figure

    pl = results[0].platforms[index].platform
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=SIZE)
        ax = fig.add_subplot(1, 1, 1)
        xs: list[float] = []
        for k, r in enumerate(results):
            rf = r.layers[-1]
            times = rf.platforms[index].times
            pts = [(float(la.intensity), t.attainable) for la, t in zip(rf.layers, times) if la.intensity and la.flops]
            xs += [x for x, _ in pts]
            ax.scatter([x for x, _ in pts], [y for _, y in pts], s=14, alpha=0.6, color=_COLOURS[k % len(_COLOURS)],
                       edgecolors="none", label=f"{r.phase}: {len(pts)} layers, whole forward "
                       f"{float(r.platforms[index].steps[-1].intensity):.1f} FLOP/B")
        lo = min(xs + [pl.ridge]) / 4
        hi = max(xs + [pl.ridge]) * 4
        grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        ax.plot(grid, [min(pl.peak_flops, pl.bandwidth * x) for x in grid], color="black", lw=1.5,
                label=f"roof: {pl.peak_label} {pl.peak_flops:.3g} FLOP/s, {pl.bandwidth:.3g} B/s")
        ax.axvline(pl.ridge, color="grey", ls=":", lw=1, label=f"ridge {pl.ridge:.1f} FLOP/B")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("arithmetic intensity (FLOPs / byte moved, as counted)")
        ax.set_ylabel("attainable FLOP/s")
        ax.set_title(f"prefill against decode on {pl.key} ({pl.name})")
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        return _png(fig)
