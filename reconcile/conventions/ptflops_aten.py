"""ptflops 0.7.5 with ``backend='aten'`` (tool "ptflops-aten"): its rules, predicting
``get_model_complexity_info`` from the native count alone.

Rows are the root's direct children, each inclusive of its subtree; only aten ``mm``, ``bmm``,
``addmm`` and ``convolution`` count (``addmm`` and ``convolution`` with their bias), whole batch;
``Global:<op>`` is the root's own work. References: native MACs of the same scope for op counts,
native parameters (each tensor once) for params.
"""

from __future__ import annotations

from collections import defaultdict

from reconcile.conventions import common
from reconcile.conventions.base import (
    Convention, LayerPrediction, Number, Prediction, RuleDoc, Term, numel, sdpa_qkv, whole,
)
from reconcile.conventions.ptflops_shared import GATES, SDPA_MARK, TOTAL_ONLY, call_shape
from reconcile.counter.formulas import flops_of
from reconcile.records import CallRecord, ModuleRow, NativeCount, Phrase, TensorMeta, TorchCall


# aten op -> the components ptflops' ``ATEN_OPS_MAPPING`` counts (mm / bmm: MACs; addmm and
# convolution: MACs + one bias add per output element)
ATEN_COUNTED: dict[str, tuple[str, ...]] = {
    "aten::mm": ("macs",),
    "aten::bmm": ("macs",),
    "aten::addmm": ("macs", "bias"),
    "aten::convolution": ("macs", "bias"),
    "aten::_convolution": ("macs", "bias"),
}


def _aten_key(op: str) -> str:
    return op.replace("::", ".")


_SDPA = "F.scaled_dot_product_attention"
_FLASH_DTYPES = ("float32", "float64", "bfloat16", "float16")


def sdpa_fused_on_cpu(call: TorchCall) -> bool:
    """Whether CPU runs this scaled_dot_product_attention as the fused flash kernel (one op no tool
    has a rule for) or as its math decomposition (matmul, softmax, matmul: bmm that ptflops-aten
    counts). torch's CPU gate (``use_flash_attention_cpp``): 4-D q, k, v (3-D ones, and a 3-D
    mask, with a batch of 1 put in front: measured on torch 2.14.1) of one float dtype, one
    batch, one head dim, the same heads (or q heads a multiple of k's with ``enable_gqa``, or one k
    and v head), no
    dropout, last dims contiguous, nonzero lengths, and a mask (if any) that does not require grad,
    of 2 dims or of 4 dims (1 or B, 1 or heads), whose last two dims are L or 1 and S or 1."""
    kw = dict(call.kwargs)
    q, k, v = sdpa_qkv(call)
    if not all(isinstance(t, TensorMeta) for t in (q, k, v)) or not len(q.shape) == len(k.shape) == len(v.shape):
        return False
    lift = len(q.shape) == 3  # 3-D q, k, v (and a 3-D mask) run as 4-D with one batch: timm's samvit
    if lift:
        q, k, v = (TensorMeta((1, *t.shape), t.dtype) for t in (q, k, v))
    if len(q.shape) != 4:
        return False
    if len({t.dtype for t in (q, k, v)}) != 1 or q.dtype not in _FLASH_DTYPES:
        return False
    dropout = call.args[4] if len(call.args) > 4 else kw.get("dropout_p", 0.0)
    if dropout:
        return False
    gqa = bool(kw.get("enable_gqa")) and k.shape[1] and q.shape[1] % k.shape[1] == 0
    # one k/v head broadcasts to q's heads without enable_gqa too (timm's MultiQueryAttention2d in
    # mobilenetv4_hybrid: q 1x4x256x64, k and v 1x1x64x64 run fused; measured on torch 2.14.1)
    heads_ok = q.shape[1] == k.shape[1] or gqa or k.shape[1] == 1
    if q.shape[0] != k.shape[0] or k.shape[:2] != v.shape[:2] or not heads_ok or not (q.shape[3] == k.shape[3] == v.shape[3]):
        return False
    if 0 in (q.shape[2], k.shape[2]) or not call.facts.get("last_dim_contiguous", True):
        return False
    mask = call.args[3] if len(call.args) > 3 else kw.get("attn_mask")
    if isinstance(mask, TensorMeta):
        if call.facts.get("mask_requires_grad"):
            return False
        m = (1, *mask.shape) if lift and len(mask.shape) == 3 else mask.shape
        if len(m) < 2 or m[-2] not in (q.shape[2], 1) or m[-1] not in (k.shape[2], 1):
            return False
        if len(m) == 4:
            return m[0] in (1, q.shape[0]) and m[1] in (1, q.shape[1])
        return len(m) == 2
    return True


def attention_bmm(native: NativeCount, row: ModuleRow, bmm_macs: int) -> tuple[int, int]:
    """A row's ``aten::bmm`` MACs where it runs attention: ``(counted, fused)``. The fused calls'
    MACs run as one kernel no tool has a rule for; the rest runs as bmm: the unfused calls' math
    path and any bmm of the row outside attention (maxvit's relative position bias, an einsum
    lookup beside its attention call). With no attention call recorded, all of it is fused."""
    calls = [c for c in row.torch_calls if c.func == _SDPA]
    if not calls:
        return 0, bmm_macs
    fused = sum(c.components.get("macs", 0) for c in calls if fused_where_run(native, c))
    return bmm_macs - fused, fused


def fused_where_run(native: NativeCount, call: TorchCall) -> bool:
    """Whether the tool's run fuses this attention call: only on CPU (``sdpa_fused_on_cpu``); a
    tool run on meta (``native.tool_device``) sees the math path's ``bmm``, as native does."""
    return native.tool_device == "cpu" and sdpa_fused_on_cpu(call)


class AtenWork:
    """What the aten backend counts of a set of native rows: per-op buckets, the bias inside them,
    and the MAC work it does not count, by reason."""

    def __init__(self) -> None:
        self.buckets: dict[str, int] = defaultdict(int)
        self.bias = 0
        self.counted_macs = 0
        self.macs_by_key: dict[str, int] = defaultdict(int)  # bucket -> the MACs in it
        self.missed: dict[str, list[int]] = {}  # reason -> [macs, flops]

    def miss(self, reason: str, macs: int, flops: int) -> None:
        m = self.missed.setdefault(reason, [0, 0])
        m[0] += macs
        m[1] += flops

    def add_row(self, native: NativeCount, row: ModuleRow) -> None:
        sdpa = SDPA_MARK in row.ops
        # attention calls CPU runs unfused (math path): their bmm are counted like any other
        unfused = [c.components for c in row.torch_calls if c.func == _SDPA and not fused_where_run(native, c)]
        for op, comps in row.op_components.items():
            if op.startswith("module::"):
                self._recurrent(native, row, op)
            elif op == "aten::bmm" and sdpa:
                counted, fused_macs = attention_bmm(native, row, comps.get("macs", 0))
                if counted:
                    self.buckets["aten.bmm"] += counted
                    self.counted_macs += counted
                    self.macs_by_key["aten.bmm"] += counted
                fused = {**comps, "macs": fused_macs}
                extra = flops_of(dict(row.op_components.get(SDPA_MARK, {}))) - sum(
                    flops_of({k: v for k, v in c.items() if k != "macs"}) for c in unfused)
                if fused.get("macs", 0):
                    self.miss("scaled_dot_product_attention runs as one fused CPU kernel (no rule)",
                              fused.get("macs", 0), flops_of(fused) + extra)
            elif op in ATEN_COUNTED:
                value = sum(comps.get(c, 0) for c in ATEN_COUNTED[op])
                self.buckets[_aten_key(op)] += value
                self.bias += value - comps.get("macs", 0)
                self.counted_macs += comps.get("macs", 0)
                self.macs_by_key[_aten_key(op)] += comps.get("macs", 0)
            elif comps.get("macs"):
                self.miss(f"{op} has no rule", comps["macs"], flops_of(dict(comps)))

    def _recurrent(self, native: NativeCount, row: ModuleRow, op: str) -> None:
        """CPU recurrent layers: LSTM (no projection) is one fused mkldnn_rnn_layer (no rule); the
        others run per-gate linears: the layer-0 input projection over the whole sequence (addmm,
        or mm + an uncounted add when the time-major input is not contiguous), the hidden
        projection per step (addmm; mm without bias) and LSTM's h projection (mm)."""
        a = row.attrs
        if a["mode"] == "LSTM" and not a.get("proj_size"):
            self.miss("LSTM runs as one fused mkldnn_rnn_layer on CPU (no rule)", row.macs, row.flops)
            return
        g, h = GATES[a["mode"]], a["hidden_size"]
        out_h = a.get("proj_size") or h
        dirs = 2 if a["bidirectional"] else 1
        for call in row.call_records:
            x = call_shape(call)
            steps = x[0] * x[1] if len(x) == 3 else x[0]
            strided = len(x) == 3 and x[0] > 1 and x[1] > 1 and a["batch_first"] != _rnn_batch_first_output(native, call)
            for layer in range(a["num_layers"]):
                in_l = a["input_size"] if layer == 0 else out_h * dirs
                b = steps * g * h * dirs if a["bias"] else 0
                for macs, bias in ((steps * g * h * in_l * dirs, 0 if layer == 0 and strided else b),
                                   (steps * g * h * out_h * dirs, b)):
                    key = "aten.addmm" if bias else "aten.mm"
                    self.buckets[key] += macs + bias
                    self.bias += bias
                    self.counted_macs += macs
                    self.macs_by_key[key] += macs
                if out_h != h:
                    self.buckets["aten.mm"] += steps * h * out_h * dirs
                    self.counted_macs += steps * h * out_h * dirs
                    self.macs_by_key["aten.mm"] += steps * h * out_h * dirs


def _rnn_batch_first_output(native: NativeCount, call: CallRecord) -> bool:
    """Whether this call's input is the output of the module call just before it, a batch_first
    recurrent layer: that output is a transposed view, so the time-major input is contiguous."""
    if not call.inputs:
        return False
    for row in native.rows:
        for prev in row.call_records:
            if prev.order == call.order - 1:
                return (row.attrs.get("mode") in GATES and bool(row.attrs.get("batch_first"))
                        and bool(prev.outputs) and prev.outputs[0].shape == call.inputs[0].shape)
    return False


class PtflopsAtenConvention(Convention):
    tool = "ptflops-aten"
    unit = "Mac"
    metric = "macs"
    headline_metric = "macs"
    metrics = {"macs": "macs", "params": "params"}
    per_sample = False
    rules = (
        RuleDoc("unit", "MACs of the aten ops below, whole batch"),
        RuleDoc("matching", "TorchDispatchMode over aten ops; per-op buckets for each direct child of the root "
                "(inclusive of its subtree) and 'Global'"),
        RuleDoc("mm / bmm", "prod(A) x B[-1]: the MACs"),
        RuleDoc("addmm", "MACs + rows x out (the bias; F.linear with a bias on 2-D or contiguous input)"),
        RuleDoc("convolution", "B x prod(w) x S_out (transposed: S_in) + N_out when there is a bias"),
        RuleDoc("scaled_dot_product_attention (CPU)", "one fused flash kernel (0) unless torch's CPU gate refuses it "
                "(a mask that requires grad, as a learned position bias does when tools run with grad on; a 3-D mask; "
                "non-contiguous last dims; ...): then its math path's two bmm count"),
        RuleDoc("everything else", "0: norms, activations, pools, add/mul, baddbmm, fused SDPA and the fused CPU LSTM; "
                "F.linear on a non-contiguous N-d input runs as mm + add, so its bias is not counted"),
        RuleDoc("RNN / GRU (CPU)", "per-gate addmm/mm: MACs + biases, but the layer-0 input bias is an uncounted add "
                "when the time-major input is not contiguous"),
        RuleDoc("params", "trainable only (frozen left out), each tensor once; no per-layer params"),
        RuleDoc("batch", "whole batch"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        layers: list[LayerPrediction] = []
        total = 0
        root = tree.rows[""]
        uncalled = AtenWork()  # subtrees of direct children that never run their own forward
        for child in (tree.rows[n] for n in tree.children.get("", ())):
            work = AtenWork()
            for r in tree.subtree(child.name):
                work.add_row(native, r)
            ref = tree.macs(child.name)
            reference = {"macs": ref, "params": tree.params(child.name)}
            if not child.calls and work.buckets:
                # its pre-hook never fires (a ModuleList whose members the root calls directly):
                # the work of its subtree is counted in 'Global'
                for r in tree.subtree(child.name):
                    uncalled.add_row(native, r)
                terms = (Term(TOTAL_ONLY, -work.counted_macs, "ptflops_aten.never_called",
                              Phrase("{type!s} {name!s} is never called itself, so "
                              "the {counted_macs} MACs of its members are counted in 'Global' only",
                                     {"type": child.type, "name": child.name, "counted_macs": work.counted_macs})),
                         *(t for t in self._terms(work, child) if t.cause != "bias"))
                layers.append(LayerPrediction(child.name, child.type, child.calls, reference, {"macs": 0},
                                              {"macs": terms}))
                continue
            predicted: dict[str, Number] = dict(work.buckets)
            predicted["macs"] = sum(work.buckets.values())
            total += predicted["macs"]
            terms = self._terms(work, child)
            layers.append(LayerPrediction(child.name, child.type, child.calls, reference, predicted,
                                          {"macs": terms} if terms else {}))
        work = AtenWork()
        work.add_row(native, root)
        glob: dict[str, int] = defaultdict(int)
        glob_macs: dict[str, int] = defaultdict(int)
        for w in (work, uncalled):
            for k, v in w.buckets.items():
                glob[k] += v
            for k, v in w.macs_by_key.items():
                glob_macs[k] += v
        unattributed = {f"Global:{op}": v for op, v in glob.items() if v}
        u_terms: dict[str, tuple[Term, ...]] = {}
        for op in unattributed:
            key = op.removeprefix("Global:")
            macs = glob_macs.get(key, 0)
            ts = [Term(TOTAL_ONLY, macs, "ptflops_aten.global",
                       Phrase("the {macs} MACs of {key!s} outside any called direct child of "
                       "{type!s} are counted in 'Global' only", {"macs": macs, "key": key, "type": root.type}))]
            if unattributed[op] != macs:
                ts.append(Term("bias", unattributed[op] - macs, "ptflops_aten.bias.2",
                               Phrase("{key!s} counts its bias adds: {v}", {"key": key, "v": unattributed[op] - macs})))
            u_terms[op] = tuple(ts)
        total += sum(unattributed.values())
        terms = self._terms(work, root)
        if work.counted_macs:
            terms = (Term(TOTAL_ONLY, -work.counted_macs, "ptflops_aten.root_children",
                          Phrase("ptflops-aten names only the root's direct children: the "
                          "{counted_macs} MACs of {type!s}.forward itself are in 'Global' only",
                                 {"counted_macs": work.counted_macs, "type": root.type})),
                     *(t for t in terms if t.cause != "bias"))
        if root.macs or terms or root.params:
            layers.append(LayerPrediction("", root.type, root.calls, {"macs": root.macs, "params": root.params},
                                          {"macs": 0}, {"macs": terms} if terms else {}))
        params = sum(p.numel for p in native.params if p.trainable)
        frozen = native.totals["params"] - params
        headline_terms = {"params": (Term("params_frozen", -frozen, "ptflops_aten.params_frozen.3",
                                          Phrase("ptflops leaves out {frozen} frozen "
                                          "parameters (requires_grad=False)", {"frozen": frozen})),)} if frozen else {}
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline={"macs": total, "params": params},
                          unattributed=unattributed, unattributed_terms=u_terms, headline_terms=headline_terms,
                          headline_reference={"macs": total, "params": native.totals["params"]})

    @staticmethod
    def _terms(work: AtenWork, row: ModuleRow) -> tuple[Term, ...]:
        terms = []
        if work.bias:
            terms.append(Term("bias", work.bias, "ptflops_aten.bias",
                              Phrase("aten addmm / convolution in {type!s} count their bias adds: "
                              "{bias}", {"type": row.type, "bias": work.bias})))
        for reason, (macs, flops) in work.missed.items():
            terms.append(Term("unsupported_op", -macs, "ptflops_aten.unsupported_op",
                              Phrase("ptflops-aten misses {macs} MACs ({flops} FLOPs) "
                              "in {type!s}: {reason!s}", {"macs": macs, "flops": flops, "type": row.type,
                                                          "reason": reason}), flops=-flops))
        return tuple(terms)


CONVENTION = PtflopsAtenConvention()
