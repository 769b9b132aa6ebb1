"""torch.utils.flop_counter.FlopCounterMode (FCM, torch 2.14.1): its rules, written once,
predicting ``get_total_flops()`` and ``get_flop_counts()`` per module and per op from the native
count alone.

FCM is a ``TorchDispatchMode`` like the native counter, so both see the same aten ops; FCM adds a
formula's FLOPs only for the ops of its registry (``FORMULAS``, from ``flop_registry`` in
``torch/utils/flop_counter.py``) and silently adds 0 for every other op. Its FLOPs are 2 per
multiply-accumulate and it never counts a bias add, so for an op it has a formula for its count
is exactly twice the native ``macs`` of that op (cause ``mac_vs_flop``); elementwise work, norms,
pools, softmax and activations have no formula and no MACs (nothing to explain against a MAC
reference); an op with MACs but no formula is ``unsupported_op``, named.

Rows (as the adapter reports them): every module that ran a formula op in its forward,
*inclusive* (FCM charges an op to every module on the call stack), keyed by ``named_modules()``
name, with ``flops`` and one count per op key (``"aten.convolution"``). Every row but the root is
marked ``reference["_inclusive"]``; the root's terms cover the whole model.

Where native and FCM see different ops: native counts on the meta device, where attention runs
its math path (two ``bmm``); FCM runs on CPU, where ``scaled_dot_product_attention`` runs as one
fused kernel (``_scaled_dot_product_flash_attention_for_cpu``, no formula) whenever torch's CPU
gate allows (``conventions.ptflops_aten.sdpa_fused_on_cpu``, shared with ptflops' aten backend, which
sees the same ops); recurrent layers run on CPU as per-gate ``addmm`` / ``mm`` except LSTM (one
fused ``mkldnn_rnn_layer``, no formula), as ptflops' aten backend records them.

Training (a native count with ``training``, FCM run around forward and backward): each backward op
is counted the same way; ``convolution_backward`` is exact for its input gradient but counts a
grouped convolution's weight gradient at ``2 * groups`` FLOPs per MAC (``conv_weight_grad_flops``,
cause ``groups_ignored``); a fused CPU attention's backward is one kernel with no formula. FCM
charges a backward op to every module its module tracker holds "open" then, not to the module
whose forward created the op's autograd node (where native charges it): a module call opens when
the gradients of all its outputs are complete and closes when those of all its positional inputs
are. So a downsample (whose input its block's main branch also reads) holds that branch's
backward, a layer whose input needs no gradient (the first conv) never closes, a module returning
its input tensor (``nn.Identity``) closes before it opens and stays open, and backward run before
the root opens (BertModel's pooler reads the encoder output it also returns) is in Global only
(the total-only record, cause ``outside_root``). The native training count records which modules
the tracker holds open during each backward op (``BackwardRow.held``, from the same hooks on the
same tensors, ``counter/held_open.py``), and each row's backward is the sum of the ops it was open
for (``held_backward``).

A module reachable by two paths (a shared block) is held by the caller of each call (``callers``).

Known limits (each shows as a residual, nothing is hidden): a child called from outside its
parent's forward (by its grandparent) is charged by FCM to its callers but predicted under its
``named_modules()`` parent (forward only: its backward follows the tracker record). A module held
outside the model's module tree and called in the forward is tracked by FCM (its hooks are
global) and not by native, which only matters if it is its callers' only way to open or close.
Totals (Global, per op, forward and backward) are exact.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from reconcile.conventions import common
from reconcile.conventions.base import INCLUSIVE, Convention, LayerPrediction, Number, Prediction, RuleDoc, Term, whole
from reconcile.counter.formulas import flops_of
from reconcile.records import ModuleRow, NativeCount, Phrase

# flop_registry of torch/utils/flop_counter.py (torch 2.14.1): op -> its formula, one line each.
# FLOPs are 2 * m * n * k for every product; bias and the added tensor of addmm / baddbmm ignored.
FORMULAS: dict[str, str] = {
    "aten.mm": "2 * m * n * k",
    "aten.addmm": "2 * m * n * k (the added bias ignored)",
    "aten.bmm": "2 * b * m * n * k",
    "aten.baddbmm": "2 * b * m * n * k (the added tensor ignored)",
    "aten._scaled_mm": "2 * m * n * k",
    "aten.convolution": "2 * B * prod(out spatial) * prod(kernel) * Cout * Cin/g (transposed: in spatial), bias ignored",
    "aten._convolution": "as aten.convolution",
    "aten.cudnn_convolution": "as aten.convolution",
    "aten.convolution_overrideable": "as aten.convolution",
    "aten._slow_conv2d_forward": "as aten.convolution",
    "aten.convolution_backward": "input gradient as a transposed conv of grad_out with the weight; weight "
                                 "gradient as conv(input, grad_out) with the batch and channel dims swapped, "
                                 "which ignores groups (see ``conv_backward_flops``)",
    "aten._scaled_dot_product_efficient_attention": "2 * 2 * B * h * Lq * Lk * d (two bmm), mask ignored",
    "aten._scaled_dot_product_flash_attention": "as above (CUDA)",
    "aten._scaled_dot_product_cudnn_attention": "as above (CUDA)",
    "aten._flash_attention_forward": "as above",
    "aten._efficient_attention_forward": "as above",
    "aten._scaled_dot_product_efficient_attention_backward": "5 bmm: recomputed scores, grad scores, grad v, q, k",
    "aten._scaled_dot_product_flash_attention_backward": "as above",
    "aten._scaled_dot_product_cudnn_attention_backward": "as above",
    "aten._flash_attention_backward": "as above",
    "aten._efficient_attention_backward": "as above",
}

# native op -> FCM's key for the same op, when FCM has a formula for it (CPU forward)
COUNTED: dict[str, str] = {
    "aten::mm": "aten.mm",
    "aten::addmm": "aten.addmm",
    "aten::bmm": "aten.bmm",
    "aten::baddbmm": "aten.baddbmm",
    "aten::convolution": "aten.convolution",
    "aten::_convolution": "aten._convolution",
}

_SDPA_MARK = "aten::_safe_softmax"  # native's math path of scaled_dot_product_attention (on meta)
_SDPA = "F.scaled_dot_product_attention"
_FUSED_SDPA = "aten._scaled_dot_product_flash_attention_for_cpu"


@dataclass
class Work:
    """What FCM counts of a set of native rows: MACs per FCM op key, and MAC work it has no
    formula for, by the op that does it: [macs, native flops]."""

    counted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    missed: dict[str, list[int]] = field(default_factory=dict)
    # FLOPs FCM adds beyond 2 per MAC: a grouped convolution's weight gradient, per op key
    grouped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    grouped_macs: int = 0  # the exact weight-gradient MACs of those convolutions
    forward: int = 0  # of ``counted``: the forward's MACs (the rest is backward)

    def miss(self, op: str, macs: int, flops: int) -> None:
        m = self.missed.setdefault(op, [0, 0])
        m[0] += macs
        m[1] += flops

    def add(self, other: "Work", share: Fraction | int = 1) -> None:
        for k, v in other.counted.items():
            self.counted[k] += whole(v * share)
        for k, (m, f) in other.missed.items():
            self.miss(k, whole(m * share), whole(f * share))
        for k, v in other.grouped.items():
            self.grouped[k] += whole(v * share)
        self.grouped_macs += whole(other.grouped_macs * share)
        self.forward += whole(other.forward * share)

    def minus(self, other: "Work") -> "Work":
        """This work less ``other`` (which it holds), entries that become zero dropped."""
        out = Work()
        out.add(self)
        out.add(other, -1)
        out.counted = defaultdict(int, {k: v for k, v in out.counted.items() if v})
        out.missed = {k: v for k, v in out.missed.items() if v != [0, 0]}
        out.grouped = defaultdict(int, {k: v for k, v in out.grouped.items() if v})
        return out

    def flops(self, key: str | None = None) -> Number:
        """FCM's FLOPs of this work (of one op key): 2 per counted MAC, plus the grouped error."""
        if key is not None:
            return 2 * self.counted.get(key, 0) + self.grouped.get(key, 0)
        return 2 * sum(self.counted.values()) + sum(self.grouped.values())

    @property
    def macs(self) -> Number:
        return sum(self.counted.values()) + sum(m for m, _ in self.missed.values())

    @property
    def any(self) -> bool:
        """FCM keeps a row for a module as soon as one formula op runs in it (even for 0 FLOPs)."""
        return bool(self.counted)


def forward_work(native: NativeCount, row: ModuleRow) -> Work:
    """The forward ops of one native row (exclusive) as FCM counts them on CPU."""
    from reconcile.conventions.ptflops_aten import AtenWork, attention_bmm, fused_where_run

    work = Work()
    sdpa = _SDPA_MARK in row.ops
    unfused = [c.components for c in row.torch_calls if c.func == _SDPA and not fused_where_run(native, c)]
    for op, comps in row.op_components.items():
        macs = comps.get("macs", 0)
        if op.startswith("module::"):  # a recurrent layer: the aten ops CPU runs it as
            rnn = AtenWork()
            rnn._recurrent(native, row, op)
            for key, m in rnn.macs_by_key.items():
                work.counted[key] += m
            for reason, (m, f) in rnn.missed.items():
                work.miss("aten.mkldnn_rnn_layer" if "LSTM" in reason else reason, m, f)
        elif op == "aten::bmm" and sdpa:
            counted, fused_macs = attention_bmm(native, row, macs)
            if counted:
                work.counted["aten.bmm"] += counted
            fused = {**comps, "macs": fused_macs}
            extra = flops_of(dict(row.op_components.get(_SDPA_MARK, {}))) - sum(
                flops_of({k: v for k, v in c.items() if k != "macs"}) for c in unfused)
            if fused.get("macs", 0):
                work.miss(_FUSED_SDPA, fused["macs"], flops_of(fused) + extra)
        elif op in COUNTED:
            work.counted[COUNTED[op]] += macs
        elif macs:
            work.miss(op.replace("::", "."), macs, flops_of(dict(comps)))
    work.forward = sum(work.counted.values())
    return work


def conv_weight_grad_flops(weight_grad_macs: int, groups: int) -> int:
    """FCM's FLOPs for a convolution's weight gradient: ``conv_backward_flop`` counts it as
    ``conv_flop_count(t(x), t(grad_out), t(grad_w))``, a convolution whose batch is x's channel
    dim (all Cin), whose output channels are grad_out's (Cout) and whose input channels are the
    batch, so ``2 * Cin * Cout * B * prod(kernel) * prod(out spatial)`` (transposed: the same with
    the input's spatial size): the exact weight gradient is
    ``B * prod(out spatial) * prod(kernel) * Cout * Cin/groups`` MACs, so FCM counts
    ``2 * groups`` FLOPs per MAC of it. Its input gradient (a transposed conv with the real
    weight) is exact: 2 per MAC."""
    return 2 * groups * weight_grad_macs


def _unfused_bwd_macs(row: ModuleRow) -> int:
    """A fused attention call's backward is one CPU kernel too (no formula), where native's math
    path runs two bmm per forward bmm with its MACs: of the row's backward bmm, FCM counts two per
    forward MAC of its unfused calls (the rest is fused)."""
    from reconcile.conventions.ptflops_aten import sdpa_fused_on_cpu

    return 2 * sum(c.components.get("macs", 0) for c in row.torch_calls
                   if c.func == _SDPA and not sdpa_fused_on_cpu(c))


def backward_work(native: NativeCount, row: ModuleRow, op_components: Mapping | None = None,
                  unfused_left: list[int] | None = None) -> Work:
    """The backward ops charged to one native row (the module whose forward created their autograd
    nodes) as FCM counts them on CPU; of ``op_components`` only (a part of the row's ops), with
    ``unfused_left`` the countable attention bmm MACs still left for the row, when given."""
    work = Work()
    if row.backward is None:
        return work
    groups = int(row.attrs.get("groups", 1) or 1)
    left = unfused_left if unfused_left is not None else [_unfused_bwd_macs(row)]
    sdpa_bwd = _SDPA_MARK in row.ops
    ops = row.backward.op_components if op_components is None else op_components
    for op, parts in ops.items():
        macs = {part: comps.get("macs", 0) for part, comps in parts.items()}
        total = sum(macs.values())
        if op == "aten::convolution_backward":
            work.counted["aten.convolution_backward"] += total
            weight = macs.get("weight", 0)
            if groups > 1 and weight:
                work.grouped["aten.convolution_backward"] += conv_weight_grad_flops(weight, groups) - 2 * weight
                work.grouped_macs += weight
        elif op == "aten::bmm" and sdpa_bwd:
            counted = min(left[0], total)
            left[0] -= counted
            if counted:
                work.counted["aten.bmm"] += counted
            if total - counted:
                work.miss(_FUSED_SDPA + "_backward", total - counted, 2 * (total - counted))
        elif op in COUNTED:
            work.counted[COUNTED[op]] += total
        elif total:
            comps = defaultdict(int)
            for part in parts.values():
                for k, v in part.items():
                    comps[k] += v
            work.miss(op.replace("::", "."), total, flops_of(dict(comps)))
    return work


def held_backward(native: NativeCount, row: ModuleRow) -> list[tuple[tuple[str, ...], Work]]:
    """One row's backward work as FCM counts it, split by the modules FCM's tracker held open when
    each op ran (``BackwardRow.held``, recorded by ``counter/held_open.py``): FCM charges each op to
    every one of them (and to Global), whichever module created the op's autograd node."""
    if row.backward is None:
        return []
    left = [_unfused_bwd_macs(row)]
    out = [(held, backward_work(native, row, ops, left)) for held, ops in row.backward.held]
    whole_row = backward_work(native, row)
    if sum(w.macs for _, w in out) != whole_row.macs or sum(w.flops() for _, w in out) != whole_row.flops():
        raise AssertionError(f"flopcountermode: the open-module record of {row.name!r} does not cover its backward")
    return out


def _terms(work: Work, where: str) -> tuple[Term, ...]:
    terms = []
    for key, macs in sorted(work.counted.items()):
        if macs:
            terms.append(Term("mac_vs_flop", macs, "flopcountermode.mac_vs_flop",
                              Phrase("FlopCounterMode counts 2 FLOPs per multiply-accumulate of {key!s}: "
                              "2 x {macs} MACs = {v}{where!s}", {"key": key, "macs": macs, "v": 2 * macs,
                                                                 "where": where})))
    for key, extra in sorted(work.grouped.items()):
        if extra:
            terms.append(Term("groups_ignored", extra, "flopcountermode.groups_ignored",
                              Phrase("FlopCounterMode's {key!s} formula ignores groups: the weight "
                              "gradient of grouped convolutions ({grouped_macs} MACs) is counted as if "
                              "dense, {extra} FLOPs more than 2 per MAC{where!s}", {"key": key,
                                                                                    "grouped_macs": work.grouped_macs,
                                                                                    "extra": extra, "where": where})))
    for op, (macs, flops) in sorted(work.missed.items()):
        terms.append(Term("unsupported_op", -macs, "flopcountermode.unsupported_op",
                          Phrase("FlopCounterMode has no formula for {op!s}: its {macs} MACs "
                          "({flops} FLOPs) count 0{where!s}", {"op": op, "macs": macs, "flops": flops, "where": where}),
                          flops=-flops))
    return tuple(terms)


class FlopCounterModeConvention(Convention):
    tool = "flopcountermode"
    unit = "FLOPs"
    metric = "flops"
    headline_metric = "flops"
    metrics = {"flops": "flops"}
    op_metrics = ("flops",)
    macs_per_unit = Fraction(1, 2)
    rules = (
        RuleDoc("unit", "FLOPs = 2 per multiply-accumulate, of the ops with a formula only; bias adds never counted"),
        RuleDoc("mechanism", "TorchDispatchMode over aten ops; each op charged to every module on the call stack "
                "(rows nest) and to 'Global', by module-tracker names (ResNet.layer1.0.conv1)"),
        *(RuleDoc(op, doc) for op, doc in FORMULAS.items()),
        RuleDoc("everything else (0, silently)", "elementwise, activations, norms, pools, softmax, embedding, mv, "
                "addmv, dot, CPU fused attention (_scaled_dot_product_flash_attention_for_cpu), CPU LSTM "
                "(mkldnn_rnn_layer): no formula, no decomposition to one"),
        RuleDoc("backward (training)", "each backward op charged to every module whose backward the tracker holds "
                "open: from when all its outputs' gradients are complete to when all its positional inputs' are "
                "(never, for inputs needing no gradient); Global holds what runs before the root opens"),
        RuleDoc("repeated modules", "every call counted, summed under one name"),
        RuleDoc("batch", "whole batch"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        """The forward as FCM counts it; with a training count (``native.training``), forward and
        backward, as ``--training`` runs FCM around both."""
        return self._predict(native, {r.name: forward_work(native, r) for r in native.rows})

    def flops_reference(self, native: NativeCount) -> int:
        if native.training is not None:
            return native.training.totals["training_flops"]
        return native.totals["flops"]

    def _predict(self, native: NativeCount, own: dict[str, Work]) -> Prediction:
        """Rows from each native row's own forward work (``own``): a module's row holds its own
        work and, through the call stack, the work of every module call made inside its calls. In
        training, each backward op is added to the rows of the modules FCM's tracker held open
        while it ran (``held_backward``); Global (the headline) holds every op once."""
        tree = common.Tree(native)
        held: dict[str, Work] = defaultdict(Work)
        root = Work()  # FCM's Global
        shared = callers(native, tree)
        # FCM's tracker names a module by its named_modules() name whichever path called it: a
        # shared module on a caller's path (serial_blocks1.0.cpe is coat's cpe1) holds the work as cpe1
        canonical = {alias: r.name for r in native.rows for alias in r.attrs.get("_aliases", ())}
        for r in native.rows:
            root.add(own[r.name])
            held[r.name].add(own[r.name])
            for path, share in shared.get(r.name, ((r.name, 1),)):
                for above in _above(path):
                    holder = above if above in tree.rows else canonical.get(above)
                    if holder is not None:
                        held[holder].add(own[r.name], share)
        training = native.training is not None
        if training:
            for r in native.rows:
                for modules, work in held_backward(native, r):
                    root.add(work)
                    for m in modules:
                        if m in tree.rows:
                            held[m].add(work)
        expected = native.training.totals["training_macs"] if training else native.totals["macs"]
        if root.macs != expected:  # every native MAC is counted or missed, exactly once
            raise AssertionError(f"flopcountermode convention mapped {root.macs} of {expected} native MACs")
        layers = [self._row(r, held[r.name], training) for r in native.rows
                  # no formula op ran in it: FCM keeps no row, but the MACs it misses are named
                  if r.name and r.calls and (held[r.name].any or held[r.name].missed)]
        unattributed: dict[str, Number] = {}
        unattributed_terms: dict[str, tuple[Term, ...]] = {}
        top = tree.rows.get("")
        if top is not None and top.calls and (held[""].any or held[""].missed):
            outside = root.minus(held[""])
            layers.insert(0, self._root_row(top, held[""], root, outside, training))
            if outside.flops():
                key = f"Global outside {top.type}"  # the adapter's key for Global less the root's row
                unattributed[key] = outside.flops()
                unattributed_terms[key] = (Term("outside_root", outside.flops(), "flopcountermode.outside_root",
                                                _outside_text(outside)),)
        headline = dict(self._values(root, training))
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline=headline,
                          unattributed=unattributed, unattributed_terms=unattributed_terms,
                          headline_reference=dict(headline))

    def _root_row(self, row: ModuleRow, work: Work, whole_model: Work, outside: Work,
                  training: bool) -> LayerPrediction:
        """The root's row. Its reference is the whole model's (it is the one row that does not
        nest); what FCM's Global holds beyond the row (backward run before the root opened) moves
        to the total-only record under ``outside_root``."""
        predicted = self._values(work, training)
        terms = _terms(whole_model, "")
        if outside.flops():
            terms = (*terms, Term("outside_root", -outside.flops(), "flopcountermode.outside_root",
                                  _outside_text(outside)))
        return LayerPrediction(row.name, row.type, row.calls, {**predicted, "flops": whole_model.macs}, predicted,
                               {"flops": terms})

    @staticmethod
    def _values(work: Work, training: bool) -> dict[str, Number]:
        values: dict[str, Number] = {"flops": work.flops()}
        if training:
            values["forward_flops"] = 2 * work.forward
            values["backward_flops"] = work.flops() - 2 * work.forward
        values.update({k: work.flops(k) for k in sorted(work.counted)})
        return values

    def _row(self, row: ModuleRow, work: Work, training: bool) -> LayerPrediction:
        predicted = self._values(work, training)
        # the per-op and forward / backward split values are predicted, not explained apart
        reference: dict = {**predicted, "flops": work.macs}
        if row.name:
            reference[INCLUSIVE] = 1
        return LayerPrediction(row.name, row.type, row.calls, reference, predicted, {"flops": _terms(work, "")})


def _outside_text(outside: Work) -> Phrase:
    return (Phrase("FlopCounterMode's Global holds {flops} FLOPs of backward that ran before its module "
            "tracker opened the root (the gradient of an output the model also uses inside, e.g. the encoder "
            "output BertModel's pooler reads, completes only after that use's backward): in the total, not in "
            "the root's row", {"flops": outside.flops()}))


def _above(path: str) -> list[str]:
    """The module paths strictly above ``path``, innermost first, ending with the root ``""``."""
    out = []
    while path:
        path = path.rpartition(".")[0]
        out.append(path)
    return out


def callers(native: NativeCount, tree: common.Tree) -> dict[str, tuple[tuple[str, Fraction], ...]]:
    """For a module reachable by more than one path (a shared block): each path it was called
    through, with that path's share of its work. Paths come from its parameters' aliases (a
    parameter of ``x.m`` also registered as ``y.m.0.weight`` puts the module at ``y.m.0``); each call
    goes to the path whose nearest called ancestor started a call last before it and is still
    running, weighted by the call's MACs (by calls when it has none). Shared ancestors are passed
    over (coat's cpe1 is called only from its serial blocks, so its own calls name no caller), and
    an ancestor's call counts as ended once a module outside it has started since (the native
    count records when calls start, not when they end: a module called by the root right after
    a block that also holds it returned, with no module call between, goes to the block). Modules
    with one path are absent: their work is held by their ``named_modules()`` ancestors."""
    paths: dict[str, set[str]] = defaultdict(set)
    for p in native.params:
        owner, _, leaf = p.name.rpartition(".")
        for alias in p.aliases:
            other, _, other_leaf = alias.rpartition(".")
            if other_leaf == leaf and other != owner and other not in tree.rows and owner in tree.rows:
                paths[owner].add(other)
    out: dict[str, tuple[tuple[str, Fraction], ...]] = {}
    if not paths:
        return out
    starts = sorted((c.order, r.name) for r in native.rows for c in r.call_records)
    orders = [o for o, _ in starts]
    paths_of = {r.name: (r.name, *r.attrs.get("_aliases", ())) for r in native.rows}

    def inside(module: str, above: str) -> bool:
        return not above or any(p.startswith(above + ".") for p in paths_of.get(module, (module,)))

    def caller_start(path: str, order: int) -> int:
        """When the call of ``path``'s nearest called ancestor that holds ``order`` began; -1 when
        that ancestor's last call before it had ended (a call of a module outside it came between:
        coat's root calls cpe2 itself after serial_blocks2.1 has returned)."""
        for above in _above(path):
            row_above = tree.rows.get(above)
            # an ancestor that is itself shared (coat's cpe1, called only from inside its serial
            # blocks) runs for whichever path called it: it says nothing about this path
            if row_above is not None and row_above.call_records and not row_above.attrs.get("_aliases"):
                began = max((c.order for c in row_above.call_records if c.order < order), default=-1)
                between = starts[bisect.bisect_right(orders, began):bisect.bisect_left(orders, order)]
                return began if all(inside(m, above) for _, m in between) else -1
        return -1

    for name, others in paths.items():
        row = tree.rows[name]
        if not row.call_records:
            continue
        candidates = [name, *sorted(others)]

        weights: dict[str, int] = defaultdict(int)
        by_macs = any(c.components.get("macs", 0) for c in row.call_records)
        for call in row.call_records:
            best = max(candidates, key=lambda path: caller_start(path, call.order))
            weights[best] += call.components.get("macs", 0) if by_macs else 1
        total = sum(weights.values())
        out[name] = tuple((path, Fraction(w, total)) for path, w in weights.items() if w)
    return out


CONVENTION = FlopCounterModeConvention()
