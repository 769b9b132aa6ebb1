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
gate allows (``conventions.ptflops.sdpa_fused_on_cpu``, shared with ptflops' aten backend, which
sees the same ops); recurrent layers run on CPU as per-gate ``addmm`` / ``mm`` except LSTM (one
fused ``mkldnn_rnn_layer``, no formula), as ptflops' aten backend records them.

Known limits (each shows as a residual, nothing is hidden): a module's row is predicted from its
``named_modules()`` subtree, so a module called from another module's forward than its parent's
(a shared block, a child called by its grandparent) is charged by FCM to its actual callers and
shows as a residual in their rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from reconcile.conventions import common
from reconcile.conventions.base import INCLUSIVE, Convention, LayerPrediction, Prediction, RuleDoc, Term
from reconcile.counter.formulas import flops_of
from reconcile.records import ModuleRow, NativeCount
from reconcile.report.numbers import exact

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

    def miss(self, op: str, macs: int, flops: int) -> None:
        m = self.missed.setdefault(op, [0, 0])
        m[0] += macs
        m[1] += flops

    def add(self, other: "Work") -> None:
        for k, v in other.counted.items():
            self.counted[k] += v
        for k, (m, f) in other.missed.items():
            self.miss(k, m, f)

    @property
    def any(self) -> bool:
        """FCM keeps a row for a module as soon as one formula op runs in it (even for 0 FLOPs)."""
        return bool(self.counted)


def forward_work(native: NativeCount, row: ModuleRow) -> Work:
    """The forward ops of one native row (exclusive) as FCM counts them on CPU."""
    from reconcile.conventions.ptflops import _AtenWork, sdpa_fused_on_cpu

    work = Work()
    sdpa = _SDPA_MARK in row.ops
    unfused = [c.components for c in row.torch_calls if c.func == _SDPA and not sdpa_fused_on_cpu(c)]
    unfused_macs = sum(c.get("macs", 0) for c in unfused)
    for op, comps in row.op_components.items():
        macs = comps.get("macs", 0)
        if op.startswith("module::"):  # a recurrent layer: the aten ops CPU runs it as
            rnn = _AtenWork()
            rnn._recurrent(native, row, op)
            for key, m in rnn.macs_by_key.items():
                work.counted[key] += m
            for reason, (m, f) in rnn.missed.items():
                work.miss("aten.mkldnn_rnn_layer" if "LSTM" in reason else reason, m, f)
        elif op == "aten::bmm" and sdpa:
            if unfused_macs:
                work.counted["aten.bmm"] += unfused_macs
            fused = {k: v - (unfused_macs if k == "macs" else 0) for k, v in comps.items()}
            extra = flops_of(dict(row.op_components.get(_SDPA_MARK, {}))) - sum(
                flops_of({k: v for k, v in c.items() if k != "macs"}) for c in unfused)
            if fused.get("macs", 0):
                work.miss(_FUSED_SDPA, fused["macs"], flops_of(fused) + extra)
        elif op in COUNTED:
            work.counted[COUNTED[op]] += macs
        elif macs:
            work.miss(op.replace("::", "."), macs, flops_of(dict(comps)))
    return work


def _terms(work: Work, where: str) -> tuple[Term, ...]:
    terms = []
    for key, macs in sorted(work.counted.items()):
        if macs:
            terms.append(Term("mac_vs_flop", macs, f"FlopCounterMode counts 2 FLOPs per multiply-accumulate of {key}: "
                              f"2 x {exact(macs)} MACs = {exact(2 * macs)}{where}"))
    for op, (macs, flops) in sorted(work.missed.items()):
        terms.append(Term("unsupported_op", -macs, f"FlopCounterMode has no formula for {op}: its {exact(macs)} MACs "
                          f"({exact(flops)} FLOPs) count 0{where}", flops=-flops))
    return tuple(terms)


class FlopCounterModeConvention(Convention):
    tool = "flopcountermode"
    unit = "FLOPs"
    metric = "flops"
    headline_metric = "flops"
    metrics = {"flops": "flops"}
    op_metrics = ("flops",)
    rules = (
        RuleDoc("unit", "FLOPs = 2 per multiply-accumulate, of the ops with a formula only; bias adds never counted"),
        RuleDoc("mechanism", "TorchDispatchMode over aten ops; each op charged to every module on the call stack "
                "(rows nest) and to 'Global', by module-tracker names (ResNet.layer1.0.conv1)"),
        *(RuleDoc(op, doc) for op, doc in FORMULAS.items()),
        RuleDoc("everything else (0, silently)", "elementwise, activations, norms, pools, softmax, embedding, mv, "
                "addmv, dot, CPU fused attention (_scaled_dot_product_flash_attention_for_cpu), CPU LSTM "
                "(mkldnn_rnn_layer): no formula, no decomposition to one"),
        RuleDoc("repeated modules", "every call counted, summed under one name"),
        RuleDoc("batch", "whole batch"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        own = {r.name: forward_work(native, r) for r in native.rows}
        layers = []
        root_work = Work()
        for r in native.rows:
            work = Work()
            for sub in tree.subtree(r.name):
                work.add(own[sub.name])
            if r.name == "":
                root_work = work
            if not (r.calls and work.any):
                continue
            layers.append(self._row(tree, r, work))
        headline = {"flops": 2 * sum(root_work.counted.values()),
                    **{k: 2 * v for k, v in sorted(root_work.counted.items())}}
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline=headline,
                          headline_reference=dict(headline))

    @staticmethod
    def _row(tree: common.Tree, row: ModuleRow, work: Work) -> LayerPrediction:
        mapped = sum(work.counted.values()) + sum(m for m, _ in work.missed.values())
        if mapped != tree.macs(row.name):  # every native MAC is counted or missed, exactly once
            raise AssertionError(f"flopcountermode convention mapped {mapped} of {tree.macs(row.name)} native MACs "
                                 f"in {row.name!r}")
        per_op = {k: 2 * v for k, v in sorted(work.counted.items())}
        reference: dict = {"flops": tree.macs(row.name), **per_op}
        predicted = {"flops": sum(per_op.values()), **per_op}
        if row.name:
            reference[INCLUSIVE] = 1
        return LayerPrediction(row.name, row.type, row.calls, reference, predicted, {"flops": _terms(work, "")})


CONVENTION = FlopCounterModeConvention()
