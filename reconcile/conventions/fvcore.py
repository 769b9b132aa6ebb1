"""fvcore 0.1.5.post20221221: its rules, written once, predicting ``FlopCountAnalysis``,
``ActivationCountAnalysis`` and ``parameter_count`` per module.

Rows (as the fvcore adapter reports them): every module, *inclusive* of its descendants (fvcore's
"owner" mode charges an op to the module whose forward ran it and to all its ancestors), with
``flops`` (fvcore's "flop" is one multiply-add), ``activations``, ``params`` and the
``unsupported:<op>`` call counts of the subtree. Every row but the root is marked
``reference["_inclusive"]``; the root's terms cover the whole model.

What fvcore's trace sees in each module's own forward, op by op, and fvcore's handle for each,
is ``conventions.fvcore_ops`` (``traced_work``); this file adds rows up, names what only the
trace holds, and explains each difference.

What only a trace holds. The unsupported-op calls are first predicted from the eager ops (the
reference). When the native count carries reconcile's own trace of the same forward
(``NativeCount.traced``, made when fvcore is compared), the difference per module and op is named
on top of it: nodes that compute on traced sizes alone (``h * w``, ``1 - x.shape[1]``: Python
ints eagerly, 0-dim tensors in a trace; swin, volo, halonet, tf_efficientnet's same padding) are
``trace_size_arithmetic``; the rest is ``trace_differs``: code that takes another branch under
``torch.jit.is_tracing()`` (transformers' mask building) and ops the trace drops because nothing
returned uses them (an op-level dead-code rule native's module-level liveness cannot give).
Without that record (``reconcile predict``, a count made by hand) they are a residual. The flops
and activations are never taken from the trace: they come from the eager ops alone.
"""

from __future__ import annotations

from collections import Counter

from reconcile.conventions import common
from reconcile.conventions.base import INCLUSIVE, Convention, LayerPrediction, Prediction, RuleDoc, Term
from reconcile.conventions.fvcore_ops import FLOP_HANDLES, IGNORED, Work, traced_work
from reconcile.records import ModuleRow, NativeCount, Phrase, TracedOps


def _calls(n: int) -> str:
    return Phrase("{n} call" + ("" if n == 1 else "s"), {"n": n})


def _flop_terms(work: list[Work], tool: str = "fvcore") -> tuple[Term, ...]:
    groups: dict[tuple, list[Work]] = {}
    for w in work:
        groups.setdefault((w.status, w.cause, w.op, w.per, w.rule), []).append(w)
    terms = []
    for (status, cause, op, per, rule), ws in groups.items():
        calls = sum(w.calls for w in ws)
        macs = sum(w.macs for w in ws)
        flops = sum((w.flops for w in ws), 0)
        nflops = sum(w.native_flops for w in ws)
        if status == "handled" and flops != macs:
            n = sum(w.elements for w in ws)
            extra = sum(w.batch_stats for w in ws)
            if extra:  # a BatchNorm module on batch statistics: its eval count, then what training adds
                low = ws[0].eval_per
                terms.append(Term(cause, flops - macs - extra, "fvcore.batch_statistics",
                                  Phrase("{tool!s} counts {op!s} at {low!s} per element with "
                                  "running statistics: {low!s} x {n} = {v} ({calls!s})", {"tool": tool, "op": op,
                                                                                          "low": low, "n": n,
                                                                                          "v": low * n,
                                                                                          "calls": _calls(calls)})))
                terms.append(Term("train_mode", extra, "fvcore.train_mode",
                                  Phrase("in training mode (the model was not put in eval()) BatchNorm "
                                  "normalises with the batch's statistics, "
                                  "which {tool!s} counts at {per!s} per element, {v!s} more: "
                                  "{v!s} x {n} = {extra}", {"tool": tool, "per": per, "v": per - low, "n": n,
                                                            "extra": extra})))
            elif cause in ("norm", "interpolate", "pool"):
                terms.append(Term(cause, flops - macs, "fvcore.per_element",
                                  Phrase("{tool!s} counts {op!s} at {per!s} per {rule!s}: "
                                  "{per!s} x {n} = {flops} ({calls!s})", {"tool": tool, "op": op, "per": per,
                                                                          "rule": rule, "n": n, "flops": flops,
                                                                          "calls": _calls(calls)})))
            else:
                terms.append(Term("formula", flops - macs, "fvcore.formula",
                                  Phrase("{tool!s}'s {op!s} handle gives {flops} where the "
                                  "MAC count is {macs} ({calls!s})", {"tool": tool, "op": op, "flops": flops,
                                                                      "macs": macs, "calls": _calls(calls)})))
        elif status == "unsupported" and (macs or nflops):
            left = Phrase("{macs} MACs ({nflops} FLOPs)", {"macs": macs,
                                                           "nflops": nflops}) if macs else Phrase("{nflops} FLOPs",
                                                                                                  {"nflops": nflops})
            terms.append(Term("unsupported_op", -macs, "fvcore.unsupported_op.2",
                              Phrase("{tool!s} has no handle for {op!s} ({calls!s}): counted "
                              "as 0, leaving out {left!s}", {"tool": tool, "op": op, "calls": _calls(calls),
                                                             "left": left}), flops=-nflops))
        elif status == "dropped" and (macs or nflops):
            terms.append(Term(cause if cause == "dead_code" else "unsupported_op", -macs, "fvcore.trace_dropped",
                              Phrase("{tool!s}'s trace has no "
                              "{op!s}: {note!s} ({nflops} FLOPs not counted)", {"tool": tool, "op": op,
                                                                                "note": ws[0].note, "nflops": nflops}),
                              flops=-nflops))
    return tuple(terms)


def _act_terms(work: list[Work], tool: str = "fvcore") -> tuple[Term, ...]:
    groups: dict[str, list[Work]] = {}
    for w in work:
        if w.acts != w.acts_ref:
            groups.setdefault(w.op, []).append(w)
    terms = []
    for op, ws in groups.items():
        dead = [w for w in ws if w.cause == "dead_code"]
        if dead:
            missed = sum(w.acts_ref - w.acts for w in dead)
            terms.append(Term("dead_code", -missed, "fvcore.dead_code",
                              Phrase("{tool!s}'s trace drops {op!s} whose result nothing returned uses: "
                              "its {missed} output elements are not counted", {"tool": tool, "op": op,
                                                                               "missed": missed})))
        ws = [w for w in ws if w.cause != "dead_code"]
        if not ws:
            continue
        missed = sum(w.acts_ref - w.acts for w in ws)
        terms.append(Term("unsupported_op", -missed, "fvcore.unsupported_op",
                          Phrase("{tool!s}'s activation count has no handle for {op!s} "
                          "({calls!s}): its {missed} output elements are not counted", {"tool": tool, "op": op,
                                                                                        "calls": _calls(sum((w.calls for w in ws))), "missed": missed})))
    return tuple(terms)


def _unsupported(work: list[Work], activations: bool = False) -> dict[str, int]:
    c: Counter = Counter()
    for w in work:
        if w.status == "unsupported" or (activations and w.status == "handled" and not w.act_handled):
            c[w.op] += w.calls
    return {op: n for op, n in sorted(c.items()) if n}


# ----- what only the trace holds (``NativeCount.traced``: reconcile's own trace of the model) ---------

TRACE_CAUSES = ("trace_size_arithmetic", "trace_differs")


def _listed(op: str) -> bool:
    """A traced op fvcore lists as unsupported: no flop handle, not ignored."""
    return op not in FLOP_HANDLES and op not in IGNORED


def trace_only(name: str, work: list[Work], traced: TracedOps) -> list[Work]:
    """The unsupported-op calls fvcore's trace holds in module ``name``'s own forward beyond (or
    short of) what the eager ops predict (``work``), from reconcile's own trace of the same
    forward: the nodes computing on traced sizes alone first (``trace_size_arithmetic``), the
    rest of the difference after (``trace_differs``: another path under tracing, or dropped as
    unused). Sizes already modelled from eager ops (MultiheadAttention's) are not added twice."""
    eager = _unsupported(work)
    have = {op: n for op, n in traced.ops.get(name, {}).items() if _listed(op)}
    sizes = traced.on_sizes.get(name, {})
    out = []
    for op in sorted(set(eager) | set(have)):
        extra = have.get(op, 0) - eager.get(op, 0)
        size = max(0, min(sizes.get(op, 0), extra))
        if size:
            out.append(Work(op, size, "unsupported", cause="trace_size_arithmetic"))
        if extra - size:
            out.append(Work(op, extra - size, "unsupported", cause="trace_differs"))
    return out


def _trace_terms(work: list[Work]) -> dict[str, tuple[Term, ...]]:
    by: dict[str, list[Term]] = {}
    totals: Counter = Counter()
    for w in work:
        if w.cause in TRACE_CAUSES:
            totals[(w.op, w.cause)] += w.calls
    for (op, cause), n in sorted(totals.items()):
        if not n:
            continue
        if cause == "trace_size_arithmetic":
            text = (Phrase("fvcore's jit trace records Python arithmetic on traced sizes as {calls!s} of {op!s} here "
                    "(sizes are 0-dim tensors in a trace): no eager op runs for it", {"calls": _calls(n), "op": op}))
        elif n > 0:
            text = (Phrase("the jit trace holds {calls!s} of {op!s} more than the eager forward ran here: code that checks "
                    "torch.jit.is_tracing() takes another path under a trace", {"calls": _calls(n), "op": op}))
        else:
            text = (Phrase("the jit trace holds {calls!s} of {op!s} fewer than the eager forward ran here: the trace drops "
                    "ops whose result nothing returned uses, and code under a trace can take another path",
                           {"calls": _calls(-n), "op": op}))
        by.setdefault(f"unsupported:{op}", []).append(Term(cause, n, f"fvcore.{cause}.{'more' if n > 0 else 'fewer'}",
                                                           text))
    return {k: tuple(v) for k, v in by.items()}


class FvcoreConvention(Convention):
    tool = "fvcore"
    unit = "flops"  # fvcore's name; one "flop" is one multiply-add
    metric = "flops"
    headline_metric = "flops"
    metrics = {"flops": "flops", "params": "params", "activations": "activations"}
    op_metrics = ("flops",)
    rules = (
        RuleDoc("unit", "\"flops\" are multiply-adds (one fused MAC = one flop); bias adds never counted"),
        RuleDoc("mechanism", "torch.jit trace; each traced op charged to its module and every ancestor (rows nest)"),
        RuleDoc("Conv / ConvTranspose (aten::_convolution)", "the conv MACs: N_out * Cin/g * K (transposed N_in * Cout/g * K)"),
        RuleDoc("Linear / addmm / mm / matmul / bmm", "the MACs (prod(A) * B[-1]); einsum: np.einsum_path flops / 2"),
        RuleDoc("BatchNorm (aten::batch_norm)", "eval N * (2 if affine else 1); training N * (5 if affine else 4); "
                "F.batch_norm by its own training argument, whatever the module's mode"),
        RuleDoc("padding=\"same\" / \"valid\" convs", "aten::_convolution_mode: no handle, 0 flops and 0 activations"),
        RuleDoc("LayerNorm / GroupNorm / InstanceNorm", "N * (5 if affine else 4); affine = a weight is passed"),
        RuleDoc("upsample_nearest2d / upsample_bilinear2d / grid_sampler", "1 / 4 / 4 per output element"),
        RuleDoc("adaptive_avg_pool2d", "1 per input element (native sees a 1x1 pool as aten::mean)"),
        RuleDoc("ignored (0, silently)", "relu, relu_, clamp, dropout, max, cat, stack, views, shape arithmetic (_IGNORED_OPS), prim::"),
        RuleDoc("unsupported (0, counted in unsupported_ops)", "add, add_, mul, max_pool, avg_pool, softmax, gelu, silu, "
                "sigmoid, hardswish, relu6, mean, sum, embedding, pad, baddbmm, scaled_dot_product_attention, lstm, gru, ..."),
        RuleDoc("MultiheadAttention", "linear (projections) + 2 bmm with need_weights; SDPA (0) without; "
                "traced size arithmetic adds 4 aten::mul + 1 aten::div (+1 unflatten) per call"),
        RuleDoc("activations", "output elements of _convolution, addmm, bmm, einsum, matmul, linear only"),
        RuleDoc("dead code", "a module call whose result nothing the model returns uses is not in the trace: 0"),
        RuleDoc("trace-only ops", "size arithmetic on traced shapes and torch.jit.is_tracing() branches are traced "
                "ops (listed as unsupported) that no eager op shows; named from reconcile's own trace of the model"),
        RuleDoc("params", "named_parameters() under the module's name: tied once, frozen included, buffers excluded"),
        RuleDoc("repeated modules", "every call traced and counted"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        own = {r.name: traced_work(r, meta=native.device == "meta") for r in native.rows}
        if native.traced is not None:  # what only a trace holds, from reconcile's own trace
            for name, work in own.items():
                work.extend(trace_only(name, work, native.traced))
        layers = []
        for r in native.rows:
            work = [w for sub in tree.subtree(r.name) for w in own[sub.name]]
            layers.append(self._row(tree, r, work))
        root = next(p for p in layers if p.module == "")
        headline = {k: root.predicted[k] for k in ("flops", "activations", "params")}
        headline.update({k: v for k, v in root.predicted.items() if k.startswith("unsupported:")})
        every = [w for ws in own.values() for w in ws]
        headline.update({f"unsupported_activations:{op}": n for op, n in _unsupported(every, activations=True).items()})
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline=headline,
                          headline_reference=dict(headline))

    def _row(self, tree: common.Tree, row: ModuleRow, work: list[Work]) -> LayerPrediction:
        ref_macs = tree.macs(row.name)
        mapped = sum(w.macs for w in work)
        if mapped != ref_macs:  # every native rule op passes through exactly one Work
            raise AssertionError(f"{self.tool} convention mapped {mapped} of {ref_macs} native MACs in {row.name!r}")
        flops = sum((w.flops for w in work), 0)
        acts = sum(w.acts for w in work)
        params = tree.params(row.name)
        reference = {"flops": ref_macs, "activations": sum(w.acts_ref for w in work), "params": params}
        predicted = {"flops": flops, "activations": acts, "params": params}
        # op-call counts, not explained against native: the reference is what the eager ops map to,
        # the trace's own ops are named causes on top of it
        eager = [w for w in work if w.cause not in TRACE_CAUSES]
        predicted.update({f"unsupported:{op}": n for op, n in _unsupported(work).items()})
        reference.update({f"unsupported:{op}": n for op, n in _unsupported(eager).items()})
        terms = _trace_terms(work)
        for key in terms:
            reference.setdefault(key, 0)
        if row.name:
            reference[INCLUSIVE] = 1
        return LayerPrediction(row.name, row.type, row.calls, reference, predicted,
                               {"flops": _flop_terms(work, self.tool), "activations": _act_terms(work, self.tool), **terms})


CONVENTION = FvcoreConvention()
