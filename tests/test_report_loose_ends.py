"""Issue 21's "reports with loose ends", each on synthetic records with numbers worked by hand:
what each picture bar is measured against, double_count rows, a figure with no printed total,
warnings quoted once, and pictures whose labels neither overlap nor pass the figure's edge."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from reconcile.explain.core import Cause, LayerExplanation, MetricSummary, ToolExplanation
from reconcile.records import Phrase, ToolRun
from reconcile.report import plot
from reconcile.report.markdown import layers_section, other_metrics_section, totals_section
from reconcile.report.model import ModelReport

NATIVE = {"macs": 1000, "flops": 2000, "params": 0, "params_trainable": 0, "params_frozen": 0, "buffers": 0,
          "bytes_read": 0, "bytes_written": 0, "activations": 0}


def _tool(name: str, total: int, reference: int, causes: dict, layers=(), unattributed=None, warnings=(),
          extra: dict | None = None) -> ToolExplanation:
    summaries = {"ops": MetricSummary("ops", "ops", total, reference, causes, 0, is_ops=True, rows_total=total)}
    summaries.update(extra or {})
    run = ToolRun(name, "1.0", "ok", headline={"ops": total}, units={"ops": "ops"}, warnings=list(warnings))
    return ToolExplanation(name, "1.0", "ok", "ops", "ops", run, tuple(layers), unattributed, summaries=summaries,
                           main="ops", native_macs=NATIVE["macs"])


def _report(*tools: ToolExplanation, training=None, model: str = "synthetic") -> ModelReport:
    return ModelReport(model, (1, 3, 8, 8), "float32", {"torch": "x"}, NATIVE, {}, tools, training=training)


def test_a_bar_measured_against_the_training_macs_says_so():
    # native forward 1,000 MACs; backward 2,000 (input + weight gradients) -> forward + backward 3,000.
    # fcm counts 2 FLOPs per MAC of the whole step: 2 x 3,000 = 6,000, gap +3,000 = mac_vs_flop, against 3,000;
    # thop 1,010 against the forward's 1,000: +10 bias
    fcm = _tool("flopcountermode", 6000, 3000, {"mac_vs_flop": 3000})
    thop = _tool("thop", 1010, 1000, {"bias": 10})
    from matplotlib import rc_context

    with rc_context(plot._RC):
        # a name as long as "timm:efficientvit_b0": the title no longer fits on one line
        fig = plot.model_figure(_report(thop, fcm, training=object(), model="timm:efficientvit_b0"))
        _check_labels(fig)
        title = fig._suptitle.get_text().replace("\n", " ")
        right = [ax._right_title.get_text() for ax in fig.axes if ax._right_title.get_text()]
    assert "gap to native 1.000 K MACs; flopcountermode: to native's forward + backward 3.000 K MACs" in title
    assert right == ["1.010 K = native +10 (1.00%)", "6.000 K = native 3.000 K +3.00 K (100.00%)"]


def _relu_row(name: str, n: int) -> LayerExplanation:
    text = Phrase("tally counts ReLU at 1 per element: {n}", {"n": n})
    return LayerExplanation(name, "ReLU", 1, None, {"ops": n}, {"ops": n}, {"ops": 0}, {"ops": 0},
                            {"ops": (Cause("activation", "convention", n, "tally.activation", text),)})


def test_double_count_has_rows_and_sentences_like_every_other_cause():
    # two ReLUs of 100 and 200 elements, each counted by its module hook (activation +300) and again
    # by the patched F.relu, in the total only: double_count +100 + 200 = +300; total 1,000 + 300 + 300 = 1,600
    dc = Phrase("{fname!s} counted by the hook of {who!s} and again by the patched {fname!s}: +{amount}",
                {"fname": "F.relu", "who": "2 modules: ReLU x 2", "amount": 300})
    unattributed = LayerExplanation("(total only)", "", 0, None, {"functional:F.relu": 300},
                                    {"functional:F.relu": 300}, {"functional:F.relu": 0}, {"functional:F.relu": 0},
                                    {"functional:F.relu": (Cause("double_count", "coverage", 300,
                                                                 "tally.double_count", dc),)})
    tool = _tool("tally", 1600, 1000, {"activation": 300, "double_count": 300},
                 layers=(_relu_row("a", 100), _relu_row("b", 200)), unattributed=unattributed)
    text = "\n".join(layers_section(_report(tool)))
    assert "| (in the total only) F.relu | functional | 1 | 0 | +300 | 2 |" in text
    assert ("- **double_count**: counts the same work twice (a module hook plus a patched functional). [2] tally: "
            "F.relu counted by the hook of 2 modules: ReLU x 2 and again by the patched F.relu: +300") in text
    assert "2 modules differ from the native MAC count in some tool, and 1 function a tool counts in its total outside" in text


def test_a_figure_with_no_printed_total_shows_the_sum_of_its_rows():
    # torchsummary prints the batch as -1, so np.prod of each output shape is negative: rows of
    # 1x2 and 1x4 outputs give -2 + -4 = -6 against native 2 + 4 = 6: gap -6 - 6 = -12 = memory_model
    prod = MetricSummary("output_prod", "output_prod", None, 6, {"memory_model": -12}, 0, rows_total=-6)
    tool = _tool("torchsummary", 1000, 1000, {}, extra={"output_prod": prod})
    text = "\n".join(other_metrics_section(_report(tool)))
    assert "output_prod −6 (sum of its rows) vs native 6 −12 = memory_model −12" in text


def test_a_warning_printed_twice_is_quoted_once():
    w, v = "f: Unsupported operator aten::max_pool2d encountered 5 time(s)", "f: Unsupported operator aten::x"
    text = "\n".join(totals_section(_report(_tool("mm", 1000, 1000, {}, warnings=(w, w, v)))))
    assert text.count(w) == 1
    assert f"mm 3 (`{w}` (x2), `{v}`)" in text


def _texts(fig):
    """Every label the figure draws, as (text, window box)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    texts = [t for t in (fig._suptitle, *fig.texts) if t is not None]
    for leg in fig.legends:
        texts += leg.get_texts()
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts, ax.xaxis.label, ax.yaxis.label,
                  *plot.shown_ticks(ax)]
        lo, hi = sorted(ax.get_ylim())
        texts += [t for t in ax.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]
    texts = list({id(t): t for t in texts}.values())  # the suptitle is one of fig.texts too
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts
            if t.get_visible() and t.get_text() and t.figure is not None], fig.bbox


def _check_labels(fig) -> None:
    boxes, edge = _texts(fig)
    for text, box in boxes:
        assert edge.x0 <= box.x0 and box.x1 <= edge.x1 and edge.y0 <= box.y0 and box.y1 <= edge.y1, \
            f"{text!r} is cut off by the figure's edge: {box} not in {edge}"
    for (a, ba), (b, bb) in itertools.combinations(boxes, 2):
        inter_w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
        inter_h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
        assert inter_w <= 0 or inter_h <= 0, f"{a!r} overlaps {b!r}"


def _crowded() -> ModelReport:
    # like timm:efficientvit_b0's torchstat bar: one large cause and five small ones whose names make an
    # "also:" list longer than the space left of the total; ptflops-aten's axis ends at +500 K, whose tick
    # label is centred on the plot's right edge
    small = {"per_output_minus_one": -27_800, "bias": 4_892, "norm": 78_000, "activation": 752,
             "functional_not_seen": -25_600}
    torchstat = _tool("torchstat", 1_000_000 + 976_700 + sum(small.values()), 1_000_000,
                      {"mac_vs_flop": 976_700, **small})
    aten = _tool("ptflops-aten", 1_000_000 + 490_220, 1_000_000, {"bias": 490_220})
    # two causes of near equal size whose names are wider than their segments
    pair = _tool("thop", 1_000_000 + 2_000 + 2_100, 1_000_000, {"norm": 2_000, "pool": 2_100, "activation": 1})
    r = _report(torchstat, aten, pair)
    return dataclasses.replace(r, native_totals={**NATIVE, "macs": 1_000_000})


def test_the_model_picture_has_no_overlapping_or_cut_off_label():
    from matplotlib import rc_context

    with rc_context(plot._RC):
        _check_labels(plot.model_figure(_crowded()))


def test_the_zoo_picture_of_two_models_has_a_scale_and_a_true_median():
    # two models: tally at 1.0x and 2.0x native; the median of two values is their mean, 1.5x
    one = _report(_tool("tally", 1000, 1000, {}))
    two = _report(_tool("tally", 2000, 1000, {"mac_vs_flop": 1000}))
    from matplotlib import rc_context

    with rc_context(plot._RC):
        fig = plot.zoo_figure([one, two])
        _check_labels(fig)
        ax = fig.axes[0]
        ticks = [t.get_text() for t in plot.shown_ticks(ax)]
        medians = [line.get_xdata()[0] for line in ax.get_lines() if len(line.get_xdata()) == 2
                   and line.get_xdata()[0] == line.get_xdata()[1] and line.get_linestyle() == "-"]
    assert len(ticks) >= 3 and "1x" in ticks and "2x" in ticks, ticks
    assert medians == [pytest.approx(1.5)]
