"""Pictures: pure functions from result records to PNG bytes. Imports no torch.

Deterministic: the same records give byte-identical PNGs. Matplotlib's Agg canvas is used
directly (no pyplot, no global backend switch), with a fixed size, dpi and font (DejaVu Sans,
shipped with matplotlib), inside an ``rc_context`` so no global setting leaks, and PNG metadata
without the Software/timestamp entries. Colours are fixed per cause by its place in the cause
catalogue (``CAUSES``), so a cause has the same colour in every report.
"""

from __future__ import annotations

import io
from fractions import Fraction

from reconcile.conventions.base import CAUSES
from reconcile import numbers
from reconcile.report.model import ModelReport

# matplotlib's tab20, tab20b and tab20c without their reds: red is kept for the residual alone.
# One colour per cause (a test checks there are enough); new ones are appended, so a cause keeps
# its colour when the catalogue grows at its end
_PALETTE = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#9467bd", "#c5b0d5",
    "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
    "#17becf", "#9edae5", "#393b79", "#5254a3", "#637939", "#8ca252", "#8c6d31", "#bd9e39",
    "#6b6ecf", "#9c9ede", "#b5cf6b", "#cedb9c", "#e7ba52", "#e7cb94", "#7b4173", "#a55194",
    "#ce6dbd", "#de9ed6", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#fdd0a2",
)
RESIDUAL_COLOUR = "#e00000"
CAUSE_COLOURS: dict[str, str] = {cid: _PALETTE[i] for i, cid in enumerate(CAUSES)}

_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "svg.hashsalt": "reconcile",
    "path.simplify": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_DPI = 100
_WIDTH = 10.0  # inches


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _signed_si(x: int | Fraction) -> str:
    if x == 0:
        return "0"
    return ("+" if x > 0 else "−") + numbers.si(abs(x), 2)


def tool_bars(r: ModelReport) -> list[tuple[str, int | Fraction, int | Fraction, list[tuple[str, int | Fraction]], int | Fraction]]:
    """What the model picture draws, as data: per tool with an explained op count,
    ``(label, native reference, tool's total, [(cause, signed amount)] in catalogue order,
    signed residual)``; the reference plus the causes plus the residual is the tool's total."""
    out = []
    for t in r.tools:
        if t.status != "ok" or t.tool == "native" or t.main not in t.summaries:
            continue
        s = t.summaries[t.main]
        if not s.is_ops or s.raw_total is None:
            continue
        causes = [(cid, s.causes[cid]) for cid in CAUSES if s.causes.get(cid)]
        residual = s.raw_total - s.reference - sum((v for _, v in causes), 0)
        out.append((t.tool, s.reference, s.raw_total, causes, residual))
    return out


def model_png(r: ModelReport) -> bytes | None:
    """One horizontal bar per tool, from the native MACs to the tool's own number, split into
    its named causes (right of zero: adds, left: removes), the residual in red. Each tool has its
    own scale (torchstat's 2x and thop's +0.003% both stay readable); the axis is the gap to
    native in the tool's own unit. None when there is nothing to draw."""
    from matplotlib import rc_context

    with rc_context(_RC):
        fig = model_figure(r)
        return None if fig is None else _png(fig)


def model_figure(r: ModelReport):
    """``model_png``'s figure (call it inside ``rc_context(_RC)``), laid out so that no two labels
    overlap and none passes the figure's edge."""
    bars = tool_bars(r)
    if not bars:
        return None
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    present = [cid for cid in CAUSES if any(cid == c for _, _, _, cs, _ in bars for c, _ in cs)]
    any_residual = any(res for *_, res in bars)
    n = len(bars)
    fig = Figure(figsize=(_WIDTH, 0.9 + 0.62 * n + 0.25 * ((len(present) + any_residual + 2) // 3)))
    native = r.native_totals.get("macs", 0)
    # a bar measured against another native figure (FlopCounterMode around a training step: the
    # forward + backward MACs) says so in the title and on its own line
    other = [(tool, ref) for tool, ref, *_ in bars if ref != native]
    against = "".join(f"; {tool}: to native's {'forward + backward' if r.training is not None else 'own'} "
                      f"{numbers.si(ref)} MACs" for tool, ref in other)
    fig.suptitle(f"{r.model}: where each tool's number comes from (gap to native {numbers.si(native)} MACs"
                 f"{against}, each bar on its own scale)", x=0.01, ha="left", fontsize=10)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    inside: list[tuple] = []  # (axes, text, "also" entry, segment's ends) of each in-bar label
    also: dict[object, list[str]] = {}  # per axes: the causes listed above its bar
    for ax, (tool, ref, total, causes, residual) in zip(axes, bars):
        segments = list(causes) + ([("residual", residual)] if residual else [])
        right = left = 0.0
        for cid, amount in segments:
            v = float(amount)
            start = right if v > 0 else left
            colour = RESIDUAL_COLOUR if cid == "residual" else CAUSE_COLOURS[cid]
            ax.barh(0, v, left=start, height=0.6, color=colour, edgecolor="black" if cid == "residual" else "white",
                    linewidth=0.6, hatch="xx" if cid == "residual" else None)
            if v > 0:
                right += v
            else:
                left += v
        gap = float(total - ref)
        ax.plot([gap], [0], marker="D", color="black", markersize=4)
        span = max(right - left, abs(gap), 1.0)
        ax.set_xlim(left - 0.02 * span, right + 0.02 * span if right > 0 else 0.02 * span)
        ax.set_ylim(-0.5, 0.5)
        ax.set_yticks([])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_ylabel(tool, rotation=0, ha="right", va="center", fontsize=9)
        ax.xaxis.set_major_formatter(_si_formatter())
        ax.tick_params(axis="x", labelsize=7)
        # a segment wide enough carries its name; the others are listed above the bar
        small = []
        right = left = 0.0
        for cid, amount in segments:
            v = float(amount)
            start = right if v > 0 else left
            label = f"{cid} {_signed_si(amount)}"
            if abs(v) >= 0.12 * span:
                text = ax.text(start + v / 2, 0, label, ha="center", va="center", fontsize=7,
                               color="white" if cid in ("residual", "mac_vs_flop") else "black")
                inside.append((ax, text, label, start, start + v))
            else:
                small.append(label)
            if v > 0:
                right += v
            else:
                left += v
        also[ax] = small
        share = abs(Fraction(total - ref) / ref) if ref else None
        pct = "n/a" if share is None else ("<0.01%" if 0 < share < Fraction(1, 10000) else numbers.percent(total - ref, ref, 2))
        mark = f", residual {_signed_si(residual)}" if residual else ""
        base = f"native {_signed_si(total - ref)}" if ref == native else \
            f"native {numbers.si(ref)} {_signed_si(total - ref)}"
        ax.set_title(f"{numbers.si(total)} = {base} ({pct}){mark}", loc="right", fontsize=8, pad=2)
    handles = [Patch(facecolor=CAUSE_COLOURS[c], label=c) for c in present]
    if any_residual:
        handles.append(Patch(facecolor=RESIDUAL_COLOUR, edgecolor="black", hatch="xx", label="residual (unexplained)"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=8)
    legend_h = 0.25 * ((len(handles) + 2) // 3) + 0.2
    fig.subplots_adjust(left=0.16, right=0.98, top=1 - 0.55 / fig.get_figheight(),
                        bottom=legend_h / fig.get_figheight(), hspace=1.1)
    _fit_labels(fig, axes, inside, also, legend_h)
    return fig


def _fit_labels(fig, axes, inside, also, legend_h: float) -> None:
    """Keep every label readable: a title wider than the figure is broken before its parenthesis,
    the figure growing by a line; tick labels that would pass the figure's right edge narrow the
    plots; a cause's name wider than its segment (or running into the next) moves to the "also:"
    list above its bar; an "also:" list that would run into the bar's total on the right keeps
    what fits and says how many more."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    width = fig.bbox.width
    title = fig._suptitle
    if title.get_window_extent(renderer).x1 > width - 2 and " (" in title.get_text():
        head, _, tail = title.get_text().partition(" (")
        title.set_text(f"{head}\n({tail}")
        fig.set_figheight(fig.get_figheight() + 0.2)
        fig.subplots_adjust(top=1 - 0.75 / fig.get_figheight(), bottom=legend_h / fig.get_figheight())
        renderer = FigureCanvasAgg(fig).get_renderer()
    for _ in range(3):  # narrower plots may get other ticks: check again
        over = max((label.get_window_extent(renderer).x1 - (width - 2) for ax in axes for label in shown_ticks(ax)),
                   default=0.0)
        if over <= 0:
            break
        fig.subplots_adjust(right=fig.subplotpars.right - over / width)
    for ax, text, label, x0, x1 in inside:
        ends = ax.transData.transform([(x0, 0), (x1, 0)])[:, 0]
        if text.get_window_extent(renderer).width + 4 > abs(ends[1] - ends[0]):
            text.remove()
            also[ax].append(label)
    for ax in axes:
        small = also[ax]
        if not small:
            continue
        limit = ax._right_title.get_window_extent(renderer).x0 - 8
        for keep in range(len(small), -1, -1):
            more = f", +{len(small) - keep} more (in the report)" if keep < len(small) else ""
            ax.set_title("also: " + ", ".join(small[:keep]) + more if keep else f"also: {len(small)} more (in the report)",
                         loc="left", fontsize=7, pad=2)
            if ax._left_title.get_window_extent(renderer).x1 <= limit:
                break


def shown_ticks(ax) -> list:
    """The x tick labels an axes draws (those within its limits, with text)."""
    lo, hi = sorted(ax.get_xlim())
    return [t for t in ax.get_xticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]


def _si_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: _signed_si(Fraction(x).limit_denominator(1)) if x else "0")


def zoo_ratios(rows) -> dict[str, list[float]]:
    """Per tool (main op count), its total divided by native MACs, one value per model
    (``zoo_rows.PageRow``s, or the ``ModelReport``s they are made from)."""
    from reconcile.zoo_rows import rows_of

    out: dict[str, list[float]] = {}
    for row in rows_of(rows):
        for tool, ratio in row.ratios().items():
            out.setdefault(tool, []).append(ratio)
    return out


def zoo_png(reports) -> bytes | None:
    """A strip plot: per tool, one dot per model at its total / native MACs (log scale), the
    median marked (of an even count: the mean of the middle two). None when no model has a
    native count."""
    from matplotlib import rc_context

    with rc_context(_RC):
        fig = zoo_figure(reports)
        return None if fig is None else _png(fig)


def _zoo_ticks(lo: float, hi: float) -> list[float]:
    """Tick values over [lo, hi] (ratios, lo > 0): the coarsest of 1-2-5 per decade, then finer
    steps, that gives at least four ticks; a narrow range gets evenly spaced round values."""
    import math

    from matplotlib.ticker import MaxNLocator

    for subs in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                 for m in subs]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= 4:
            return ticks
    return [float(t) for t in MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi and t > 0]


def zoo_figure(reports):
    """``zoo_png``'s figure (call it inside ``rc_context(_RC)``)."""
    import statistics

    ratios = zoo_ratios(reports)
    if not ratios:
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    tools = list(ratios)
    fig = Figure(figsize=(_WIDTH, 0.8 + 0.45 * len(tools)))
    ax = fig.subplots()
    for i, tool in enumerate(tools):
        vals = sorted(ratios[tool])
        # deterministic jitter: spread the dots of a tool over a band by their rank
        ys = [i + 0.3 * ((k % 7) / 6 - 0.5) for k in range(len(vals))]
        ax.scatter(vals, ys, s=14, color=_PALETTE[(2 * i) % len(_PALETTE)], alpha=0.8, edgecolors="none")
        mid = statistics.median(vals)
        ax.plot([mid, mid], [i - 0.3, i + 0.3], color="black", linewidth=1.2)
    ax.axvline(1.0, color="black", linewidth=0.6, linestyle=":")
    ax.set_xscale("log")
    values = [v for vs in ratios.values() for v in vs if v > 0] + [1.0]
    lo, hi = min(values), max(values)
    pad = (hi / lo) ** 0.04 if hi > lo else 1.01
    ax.set_xlim(lo / pad, hi * pad)
    ticks = _zoo_ticks(lo / pad, hi * pad)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:.6g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(range(len(tools)), tools)
    ax.invert_yaxis()
    ax.set_xlabel("tool's main total / native MACs (one dot per model, bar: median)")
    ax.set_title(f"{len(reports)} models: each tool's number relative to native MACs", loc="left", fontsize=10)
    fig.subplots_adjust(left=0.15, right=0.97, top=1 - 0.4 / fig.get_figheight(), bottom=0.5 / fig.get_figheight())
    return fig
