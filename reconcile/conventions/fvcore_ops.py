"""fvcore 0.1.5.post20221221, op by op: what its ``torch.jit`` trace records in one module's own
forward (``traced_work``: one ``Work`` per traced op, all its calls) and what its handles count of
each, with the native work behind it. ``conventions.fvcore`` (and ``torchprofile``, which traces
the same way) builds rows and sentences from these. Imports no torch.

fvcore traces with ``torch.jit`` and sees TorchScript-level ops; the native counter sees the aten
ops they dispatch to. So each native module's own ops are first mapped to the traced ops fvcore
would see (``_TRACED``, class overrides, and whole-module rules for attention and recurrent
layers), then fvcore's handle for that op is applied. References: op counts against native
``macs``; ``params`` against native parameters (each tensor once, like ``named_parameters()``);
``activations`` against the output elements of native's multiply-accumulate ops (conv, mm, addmm,
bmm, baddbmm, attention's two products, a recurrent layer's output sequence), which is what
``ActivationCountAnalysis`` means by an activation.

Python-level calls the trace keeps whole come from the native call record
(``ModuleRow.torch_calls``): ``reshape_as``, ``expand_as``, ``clamp_min`` and ``F.normalize``'s
inner ops are traced as unsupported ops native never sees; ``F.batch_norm`` is counted by the
call's own ``training`` flag; a conv with ``padding="same"`` is ``aten::_convolution_mode`` (no
handle); the mask add of ``F.scaled_dot_product_attention`` is inside its one traced op.

Known limits (each shows as a residual, nothing is hidden). Output elements of a functional
``mm`` / ``bmm`` / bias-free conv run in a parent's ``forward`` come from the native record's
per-op element counts (``ModuleRow.op_elements``). A functional
``adaptive_avg_pool2d`` to 1x1 reaches native as a keepdim ``aten::mean`` over the last two
dims, filed apart as ``POOL_MEAN``; a user's own ``x.mean((-1, -2), keepdim=True)`` is
indistinguishable from it and would be predicted as a pool. ``einsum`` reaches native as ``bmm``
(predicted as a matmul's MACs; fvcore counts a general einsum as numpy's ``einsum_path`` "Optimized
FLOP count" halved, which numpy prints to 4 significant digits: maxvit_tf's relative-position
lookups, 16,562 and 62,426 MACs, are 16,560 and 62,450 to fvcore);
``F.relu6`` is traced as ``aten::relu6`` but predicted as ``aten::hardtanh`` (right for
``nn.ReLU6``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from fractions import Fraction

from reconcile.conventions.base import Number, n_in, n_out, numel, sdpa_qkv, whole
from reconcile.counter.formulas import POOL_MEAN, flops_of
from reconcile.records import ModuleRow, TensorMeta

# fvcore/nn/jit_analysis.py _IGNORED_OPS, verbatim: zero, silently (prim:: ops are ignored too).
IGNORED = frozenset((
    "aten::Int", "aten::ScalarImplicit", "aten::__and__", "aten::arange", "aten::bitwise_not", "aten::cat",
    "aten::chunk", "aten::clamp", "aten::clamp_", "aten::constant_pad_nd", "aten::contiguous", "aten::copy_",
    "aten::detach", "aten::dropout", "aten::empty", "aten::eq", "aten::expand", "aten::flatten", "aten::floor",
    "aten::floor_divide", "aten::full", "aten::full_like", "aten::gather", "aten::ge", "aten::gt", "aten::index",
    "aten::index_put_", "aten::masked_fill", "aten::max", "aten::narrow", "aten::new_empty", "aten::new_full",
    "aten::new_zeros", "aten::nonzero", "aten::ones", "aten::permute", "aten::relu", "aten::relu_",
    "aten::remainder", "aten::reshape", "aten::roll", "aten::select", "aten::size", "aten::slice", "aten::split",
    "aten::split_with_sizes", "aten::squeeze", "aten::stack", "aten::t", "aten::to", "aten::transpose",
    "aten::type_as", "aten::unbind", "aten::unsqueeze", "aten::unsqueeze_", "aten::view", "aten::zeros",
    "aten::zeros_like",
))

# flop_count.py _DEFAULT_SUPPORTED_OPS: traced op -> its rule (computed in ``_handled``).
FLOP_HANDLES = {
    "aten::_convolution": "B * prod(w) * prod(out spatial) (transposed: in spatial): the conv MACs, bias ignored",
    "aten::addmm": "m * k * n, bias ignored",
    "aten::linear": "prod(input) * out_features, bias ignored",
    "aten::mm": "prod(A) * B[-1]",
    "aten::matmul": "prod(A) * B[-1]",
    "aten::bmm": "n * c * t * d",
    "aten::einsum": "two equations special-cased, else np.einsum_path flops / 2",
    "aten::batch_norm": "eval N * (2 if affine else 1); training N * (5 if affine else 4)",
    "aten::group_norm": "N * (5 if affine else 4)",
    "aten::layer_norm": "N * (5 if affine else 4)",
    "aten::instance_norm": "N * (5 if affine else 4)",
    "aten::upsample_nearest2d": "1 per output element",
    "aten::upsample_bilinear2d": "4 per output element",
    "aten::adaptive_avg_pool2d": "1 per input element",
    "aten::grid_sampler": "4 per output element",
}
# activation_count.py _DEFAULT_SUPPORTED_OPS: output elements of these; everything else unsupported.
ACT_HANDLES = frozenset(("aten::_convolution", "aten::addmm", "aten::bmm", "aten::einsum", "aten::matmul", "aten::linear"))

# Native (dispatch-level) rule op -> the op fvcore's trace records for it, where the names differ.
_TRACED: dict[str, str] = {
    "aten::convolution": "aten::_convolution", "aten::conv1d": "aten::_convolution",
    "aten::conv2d": "aten::_convolution", "aten::conv3d": "aten::_convolution",
    "aten::addmm": "aten::linear", "aten::bmm": "aten::matmul",
    "aten::mv": "aten::matmul", "aten::addmv": "aten::matmul", "aten::dot": "aten::matmul",
    "aten::native_batch_norm": "aten::batch_norm", "aten::_native_batch_norm_legit": "aten::batch_norm",
    "aten::_native_batch_norm_legit_no_training": "aten::batch_norm",
    "aten::native_layer_norm": "aten::layer_norm", "aten::native_group_norm": "aten::group_norm",
    "aten::_fused_rms_norm": "aten::rms_norm", "aten::native_dropout": "aten::dropout",
    "aten::_softmax": "aten::softmax", "aten::_log_softmax": "aten::log_softmax",
    "aten::max_pool1d_with_indices": "aten::max_pool1d", "aten::max_pool2d_with_indices": "aten::max_pool2d",
    "aten::max_pool3d_with_indices": "aten::max_pool3d",
    "aten::_adaptive_avg_pool1d": "aten::adaptive_avg_pool1d", "aten::_adaptive_avg_pool2d": "aten::adaptive_avg_pool2d",
    "aten::_adaptive_avg_pool3d": "aten::adaptive_avg_pool3d",
    "aten::_prelu_kernel": "aten::prelu", "aten::log_sigmoid_forward": "aten::log_sigmoid",
    "aten::rrelu_with_noise": "aten::rrelu", "aten::grid_sampler_2d": "aten::grid_sampler",
    "aten::clamp_min": "aten::clamp", "aten::clamp_max": "aten::clamp",
    "aten::_embedding_bag": "aten::embedding_bag",
}
# Native no-arithmetic ops that the trace records as an op fvcore does not ignore (-> unsupported).
# Every other native view / copy / alloc op is taken as traced-and-ignored: most are (view,
# reshape, flatten, transpose, cat, contiguous), and the rest cannot be told apart from them.
_TRACED_ZERO_COST = {
    "aten::embedding": "aten::embedding", "aten::constant_pad_nd": "aten::pad",
    "aten::reflection_pad1d": "aten::pad", "aten::reflection_pad2d": "aten::pad", "aten::reflection_pad3d": "aten::pad",
    "aten::replication_pad1d": "aten::pad", "aten::replication_pad2d": "aten::pad", "aten::replication_pad3d": "aten::pad",
    "aten::pixel_shuffle": "aten::pixel_shuffle", "aten::pixel_unshuffle": "aten::pixel_unshuffle",
    "aten::where": "aten::where", "aten::repeat": "aten::repeat", "aten::flip": "aten::flip",
    "aten::index_select": "aten::index_select", "aten::masked_fill_": "aten::masked_fill_",
    "aten::fill_": "aten::fill_", "aten::zero_": "aten::zero_",
    "aten::unfold": "aten::unfold", "aten::im2col": "aten::im2col", "aten::col2im": "aten::col2im",
}
# Python-level calls (native call record) the trace keeps as one op of that name, where native
# sees only the views or copies they decompose to
_TRACED_CALLS = {"Tensor.reshape_as": "aten::reshape_as", "Tensor.expand_as": "aten::expand_as"}
_RECURRENT_TRACED = {"LSTM": "aten::lstm", "GRU": "aten::gru"}

_NN = "torch.nn.modules."
_CONV = tuple(f"{_NN}conv.Conv{d}d" for d in (1, 2, 3))
_CONV_T = tuple(f"{_NN}conv.ConvTranspose{d}d" for d in (1, 2, 3))
_LINEAR = f"{_NN}linear.Linear"
_BATCH_NORM = f"{_NN}batchnorm._BatchNorm"
_INSTANCE_NORM = f"{_NN}instancenorm._InstanceNorm"
_ADAPTIVE_AVG2D = f"{_NN}pooling.AdaptiveAvgPool2d"
_UPSAMPLE = f"{_NN}upsampling.Upsample"
_MHA = f"{_NN}activation.MultiheadAttention"
_DROPOUT = f"{_NN}dropout._DropoutNd"
# Dropout modules: the one op the trace records per call, in train and eval alike (then "_" when
# in-place). Only aten::dropout is in _IGNORED_OPS; the others are unsupported even in eval, where
# native sees no op at all.
_DROPOUT_TRACED = {
    f"{_NN}dropout.Dropout": "aten::dropout", f"{_NN}dropout.Dropout1d": "aten::feature_dropout",
    f"{_NN}dropout.Dropout2d": "aten::feature_dropout", f"{_NN}dropout.Dropout3d": "aten::feature_dropout",
    f"{_NN}dropout.AlphaDropout": "aten::alpha_dropout", f"{_NN}dropout.FeatureAlphaDropout": "aten::feature_alpha_dropout",
}

# Traced ops per call of F.multi_head_attention_forward (torch 2.14, batched, no masks) that fvcore
# has no handle for, besides the attention itself: ``bsz * num_heads`` for the q/k/v views and
# ``tgt_len * bsz`` for the output reshape are traced as tensor ``aten::mul``; ``embed_dim //
# num_heads`` as ``aten::div``; the packed in-projection's ``unflatten``.
_MHA_SIZE_MULS = 4
_MHA_SIZE_DIVS = 1


def _isa(row: ModuleRow, *classes: str) -> bool:
    """The module is one of ``classes`` or a subclass of one."""
    mro = (row.attrs.get("class", ""), *row.attrs.get("bases", ()))
    return any(c in mro for c in classes)


@dataclass(frozen=True)
class Work:
    """One traced op (all its calls) in one module's own forward, as fvcore sees it, with the native
    work behind it. ``status``: "handled" (a flop handle), "ignored" (in ``_IGNORED_OPS``),
    "unsupported" (no handle: 0, listed by ``unsupported_ops()``), "dropped" (native ran it, the
    traced graph does not contain it)."""

    op: str
    calls: int
    status: str
    flops: Number = 0  # fvcore's flop count
    macs: int = 0  # native MACs of the same work
    native_flops: int = 0  # native FLOPs of the same work
    acts: int = 0  # fvcore's activation count
    acts_ref: int = 0  # native output elements of the MAC ops in this work
    cause: str = ""  # cause of flops - macs for a handled op
    per: Number = 0  # fvcore's factor per element, for the sentence
    elements: int = 0  # the elements that factor multiplies
    rule: str = ""  # what the factor is per, e.g. "element (eval, affine)", "output element"
    note: str = ""  # why a dropped op is not in the trace
    batch_stats: Number = 0  # the part of ``flops`` a BatchNorm module counts for batch statistics (training mode)
    eval_per: Number = 0  # BatchNorm: the factor with running statistics, for the sentence

    @property
    def act_handled(self) -> bool:
        return self.op in ACT_HANDLES


class _Pool:
    """A module's own native rule ops not yet mapped to traced ops: op -> (calls, components).
    Every call is taken exactly once, so the mapped MACs add up to the module's native MACs."""

    def __init__(self, row: ModuleRow) -> None:
        self.ops: dict[str, tuple[int, dict[str, int]]] = {
            op: (calls, dict(row.op_components.get(op, {}))) for op, calls in row.ops.items()
        }

    def calls(self, op: str) -> int:
        return self.ops.get(op, (0, {}))[0]

    def take(self, op: str, calls: int | None = None, known: dict[str, int] | None = None) -> tuple[int, dict[str, int]]:
        """Take ``calls`` calls of ``op`` (all when None). A part gets the components ``known`` says
        are its own, and its share of the others pro rata (the record keeps no per-call split);
        the rest keeps exactly what is left."""
        have, comps = self.ops.pop(op, (0, {}))
        calls = have if calls is None else min(calls, have)
        if calls == have:
            return calls, comps
        known = known or {}
        part = {k: min(v, known[k]) if k in known else v * calls // have for k, v in comps.items()}
        self.ops[op] = (have - calls, {k: v - part[k] for k, v in comps.items()})
        return calls, part


def _ignored_or_unsupported(op: str, calls: int, comps: dict[str, int]) -> Work:
    macs, nflops = comps.get("macs", 0), flops_of(comps)
    if op in IGNORED:
        return Work(op, calls, "ignored", macs=macs, native_flops=nflops)
    acts_ref = comps.get("bias", 0) if op == "aten::baddbmm" else 0  # baddbmm: one add per output
    return Work(op, calls, "unsupported", macs=macs, native_flops=nflops, acts_ref=acts_ref)


# ----- handled ops: element counts recovered from the native record -----------------------------


def _call_outputs(row: ModuleRow) -> int:
    return sum(n_out(c) for c in row.call_records)


def _call_inputs(row: ModuleRow) -> int:
    return sum(n_in(c) for c in row.call_records)


def _op_outputs(row: ModuleRow, op: str, calls: int) -> int:
    """Output elements of ``calls`` calls of aten ``op`` in this module's own work (pro rata when
    only some of its calls are taken, like the components). The bmm beside recorded attention
    calls are what is left once the calls' own two bmm each are set apart."""
    elements = row.op_elements.get(op)
    have = row.ops.get(op, 0)
    if elements is None or not have:
        return 0
    total = elements[1]
    if op == "aten::bmm":  # set apart the attention calls' two bmm each and the einsum calls' one
        for per, part in ((2, _sdpa_bmm_outputs(row)), (1, _einsum_bmm_outputs(row))):
            if part is not None and 0 < calls <= have - per * part[0]:
                have, total = have - per * part[0], total - part[1]
    return total * min(calls, have) // have


def _einsum_bmm_outputs(row: ModuleRow) -> tuple[int, int] | None:
    """(calls, output elements) of the row's recorded einsum calls, when ``_einsums`` takes them."""
    parts = _einsum_parts(row)
    return None if parts is None else (len(parts), sum(out for *_, out in parts))


def _recorded_sdpa(row: ModuleRow) -> list | None:
    """The row's recorded scaled_dot_product_attention calls, when every call native's math path
    ran (one ``_safe_softmax`` each) is recorded; None otherwise."""
    recorded = [c for c in row.torch_calls if c.func == "F.scaled_dot_product_attention"]
    return recorded if recorded and len(recorded) == row.ops.get("aten::_safe_softmax", 0) else None


def _sdpa_bmm_outputs(row: ModuleRow) -> tuple[int, int] | None:
    """(calls, output elements of their two bmm each: scores and output) of the row's attention
    calls, when every call is recorded (``_recorded_sdpa``) with its q, k and v shapes."""
    recorded = _recorded_sdpa(row)
    if recorded is None:
        return None
    out = 0
    for c in recorded:
        q, k, v = sdpa_qkv(c)
        if not all(isinstance(t, TensorMeta) for t in (q, k, v)):
            return None
        rows = numel(q.shape[:-1])
        out += rows * k.shape[-2] + rows * v.shape[-1]
    return len(recorded), out


def _conv_outputs(row: ModuleRow, op: str, calls: int, comps: dict[str, int]) -> int:
    if "bias" in comps:  # one bias add per output element
        return comps["bias"]
    a = row.attrs
    if _isa(row, *_CONV):
        return comps["macs"] // (a["in_channels"] // a["groups"] * numel(a["kernel_size"]))
    if _isa(row, *_CONV_T):
        return _call_outputs(row)
    return _op_outputs(row, op, calls)  # a functional conv without bias in a parent's forward


def _norm_affine(row: ModuleRow) -> tuple[int, bool]:
    """(affine tensors native counted, whether fvcore sees an affine weight). Without attributes
    (a functional norm in a parent's forward) weight and bias are assumed."""
    if "has_weight" not in row.attrs:
        return 2, True
    w, b = bool(row.attrs["has_weight"]), bool(row.attrs.get("has_bias"))
    return int(w) + int(b), w


def _norm_work(op: str, calls: int, comps: dict[str, int], per: int, n: int, rule: str, eval_per: int = 0) -> Work:
    """``eval_per``: for a BatchNorm module on batch statistics, its factor with running statistics;
    the rest of ``per`` is the ``train_mode`` part."""
    return Work(op, calls, "handled", flops=per * n, native_flops=flops_of(comps), cause="norm", per=per,
                elements=n, rule=f"element ({rule})", batch_stats=(per - eval_per) * n if eval_per else 0,
                eval_per=eval_per)


def _batch_norm(row: ModuleRow, calls: int, comps: dict[str, int]) -> Work:
    """aten::batch_norm, or aten::instance_norm for an InstanceNorm module (F.instance_norm runs
    native_batch_norm over a reshaped input). Native counts 2 per element when running statistics
    are used, (5 + affine tensors) otherwise; in a norm module the element count comes from its
    calls, which tells the two apart whatever the module's training flag says now."""
    norm = comps.get("norm", 0)
    n_aff, affine = _norm_affine(row)
    n = _call_inputs(row) if _isa(row, _BATCH_NORM, _INSTANCE_NORM) else 0
    recorded = [c for c in row.torch_calls if c.func == "F.batch_norm"]
    if not n and recorded:  # functional: the call's own training flag decides (nfnet's weight standardisation)
        return _functional_batch_norm(recorded, calls, comps)
    if not n:  # functional: the enclosing module's flag decides which formula native used
        n = norm // (5 + n_aff) if row.attrs.get("training", False) else norm // 2
    batch_stats = norm != 2 * n
    aff = "affine" if affine else "no affine"
    if _isa(row, _INSTANCE_NORM):
        return _norm_work("aten::instance_norm", calls, comps, 5 if affine else 4, n, aff)
    if batch_stats:  # batchnorm_flop_jit's training branch is norm_flop_counter(1)
        if not row.attrs.get("track_running_stats", True):  # batch statistics in eval too: no mode difference
            return _norm_work("aten::batch_norm", calls, comps, 5 if affine else 4, n, f"no running statistics, {aff}")
        # in eval the running statistics would be used: the part above that count is train_mode
        return _norm_work("aten::batch_norm", calls, comps, 5 if affine else 4, n, f"training, {aff}",
                          eval_per=2 if affine else 1)
    return _norm_work("aten::batch_norm", calls, comps, 2 if affine else 1, n, f"eval, {aff}")


def _functional_batch_norm(recorded: list, calls: int, comps: dict[str, int]) -> Work:
    """F.batch_norm calls from the native call record: batchnorm_flop_jit reads the call's
    ``training`` argument (not the module's flag) and whether a weight is passed."""
    flops = n_all = 0
    for c in recorded:
        args, kw = c.args, dict(c.kwargs)
        x = args[0] if args else kw.get("input")
        weight = args[3] if len(args) > 3 else kw.get("weight")
        training = args[5] if len(args) > 5 else kw.get("training", False)
        affine = weight is not None
        n = numel(x.shape) if x is not None else 0
        per = (5 if affine else 4) if training else (2 if affine else 1)
        flops += per * n
        n_all += n
    first = recorded[0]
    training = first.args[5] if len(first.args) > 5 else dict(first.kwargs).get("training", False)
    rule = "element (F.batch_norm, training=True)" if training else "element (F.batch_norm, training=False)"
    per = Fraction(flops, n_all) if n_all else 0
    return Work("aten::batch_norm", calls, "handled", flops=flops, native_flops=flops_of(comps), cause="norm",
                per=whole(per), elements=n_all, rule=rule)


def _per_element(op: str, calls: int, comps: dict[str, int], per: int, n: int, of: str, cause: str) -> Work:
    return Work(op, calls, "handled", flops=per * n, native_flops=flops_of(comps), cause=cause, per=per,
                elements=n, rule=f"{of} element")


def _matmul(traced: str, calls: int, comps: dict[str, int], out: int) -> Work:
    macs = comps.get("macs", 0)
    return Work(traced, calls, "handled", flops=macs, macs=macs, native_flops=flops_of(comps), acts=out, acts_ref=out)


def _handled(row: ModuleRow, op: str, traced: str, calls: int, comps: dict[str, int]) -> Work:
    """A traced op with a flop handle."""
    if traced == "aten::_convolution":
        return _matmul(traced, calls, comps, _conv_outputs(row, op, calls, comps))
    if traced == "aten::linear":  # addmm: one bias add per output element
        return _matmul(traced, calls, comps, comps.get("bias", 0))
    if traced == "aten::matmul":  # a functional matmul: the output size of the aten op behind it
        return _matmul(traced, calls, comps, _op_outputs(row, op, calls))
    if traced in ("aten::batch_norm", "aten::instance_norm"):
        return _batch_norm(row, calls, comps)
    if traced in ("aten::layer_norm", "aten::group_norm"):
        n_aff, affine = _norm_affine(row)
        n = comps.get("norm", 0) // (5 + n_aff)
        return _norm_work(traced, calls, comps, 5 if affine else 4, n, "affine" if affine else "no affine")
    if traced in ("aten::upsample_bilinear2d", "aten::grid_sampler"):  # native: 7 per output element
        return _per_element(traced, calls, comps, 4, comps.get("interpolate", 0) // 7, "output", "interpolate")
    if traced == "aten::upsample_nearest2d":  # native counts nearest as 0: sizes from the module's calls
        n = _call_outputs(row) if _isa(row, _UPSAMPLE) else _op_outputs(row, op, calls)
        return _per_element(traced, calls, comps, 1, n, "output", "interpolate")
    if traced == "aten::adaptive_avg_pool2d":
        if op in ("aten::mean", POOL_MEAN):  # a 1x1 adaptive pool reaches native as mean: 1 per input element
            n = comps.get("reduction", 0)
        else:  # native: the window of every output element, N_in when the windows tile the input
            n = _call_inputs(row) if _isa(row, _ADAPTIVE_AVG2D) else comps.get("pool", 0)
        return _per_element(traced, calls, comps, 1, n, "input", "pool")
    raise AssertionError(f"no prediction for handled op {traced}")  # pragma: no cover


def _padding_mode_conv(row: ModuleRow) -> bool:
    """A conv with ``padding="same"`` / ``"valid"`` (a string): traced as ``aten::_convolution_mode``."""
    if _isa(row, *_CONV) and isinstance(row.attrs.get("padding"), str):
        return True
    return any(c.func in ("F.conv1d", "F.conv2d", "F.conv3d")
               and isinstance(c.args[4] if len(c.args) > 4 else dict(c.kwargs).get("padding"), str)
               for c in row.torch_calls)


def _one(row: ModuleRow, op: str, calls: int, comps: dict[str, int]) -> Work:
    """One native rule op as fvcore's trace sees it, in the module ``row``."""
    if op.startswith("module::"):
        return _recurrent(row, op, calls, comps)
    traced = _TRACED.get(op, op)
    if traced == "aten::_convolution" and _padding_mode_conv(row):
        return Work("aten::_convolution_mode", calls, "unsupported", macs=comps.get("macs", 0),
                    native_flops=flops_of(comps), acts_ref=_conv_outputs(row, op, calls, comps))
    if op == POOL_MEAN or (op == "aten::mean" and _isa(row, _ADAPTIVE_AVG2D)):
        traced = "aten::adaptive_avg_pool2d"
    elif op in ("aten::native_batch_norm", "aten::_native_batch_norm_legit",
                "aten::_native_batch_norm_legit_no_training") and _isa(row, _INSTANCE_NORM):
        traced = "aten::instance_norm"
    elif op == "aten::mm":
        if _isa(row, _LINEAR):
            return _matmul("aten::linear", calls, comps, comps.get("macs", 0) // row.attrs["in_features"])
        traced = "aten::matmul"
    if traced in FLOP_HANDLES:
        return _handled(row, op, traced, calls, comps)
    return _ignored_or_unsupported(traced, calls, comps)


# ----- a module's own forward as fvcore's trace sees it --------------------------------------------


def _linears(pool: _Pool) -> list[Work]:
    """F.linear on a non-contiguous N-d input dispatches as mm + add(bias): one traced aten::linear,
    whose output size is the bias add's. An add whose operand is a parameter named ``*bias`` is
    native's "bias"; it is paired with an mm only as far as there are mm calls."""
    adds, comps = pool.ops.get("aten::add", (0, {}))
    paired = min(pool.calls("aten::mm"), adds) if "bias" in comps else 0
    if not paired:
        return []
    mm_calls, mm = pool.take("aten::mm", paired)
    _, add = pool.take("aten::add", paired)
    out = add.get("bias", 0)
    macs = mm.get("macs", 0)
    return [Work("aten::linear", mm_calls, "handled", flops=macs, macs=macs,
                 native_flops=flops_of(mm) + flops_of(add), acts=out, acts_ref=out)]


def _sdpa_masks(row: ModuleRow) -> tuple[int, int]:
    """(float masks, bool masks) of the recorded scaled_dot_product_attention calls: native's math
    path adds a float mask (aten::add) and first turns a bool one into a float one (aten::where)."""
    floats = bools = 0
    for c in row.torch_calls:
        if c.func == "F.scaled_dot_product_attention":
            mask = c.args[3] if len(c.args) > 3 else dict(c.kwargs).get("attn_mask")
            if isinstance(mask, TensorMeta):
                if mask.dtype == "bool":
                    bools += 1
                else:
                    floats += 1
    return floats, bools


# torch.min(a, b) / torch.max(a, b) of two tensors: eagerly aten::minimum / aten::maximum, traced
# under the name called (aten::min unsupported, aten::max ignored)
_BINARY_MIN_MAX = {"min": ("aten::minimum", "aten::min"), "max": ("aten::maximum", "aten::max")}


def _binary(call) -> bool:
    other = call.args[1] if len(call.args) > 1 else dict(call.kwargs).get("other")
    return isinstance(other, TensorMeta)


def _generic(row: ModuleRow, meta: bool = False) -> list[Work]:
    pool = _Pool(row)
    work = _linears(pool)
    floats, bools = _sdpa_masks(row)
    if pool.calls("aten::_safe_softmax"):
        # the attention calls' own products, when each call is recorded: a row may run other bmm
        # beside them (maxvit_tf's relative-position lookup, an einsum), which are not theirs
        recorded = _recorded_sdpa(row)
        own = None if recorded is None else sum(c.components.get("macs", 0) for c in recorded)
        work.append(_functional_sdpa(pool, floats + bools, own))
    einsum = _einsums(row, pool)
    if einsum is not None:
        work.append(einsum)
    for name, (eager, traced) in _BINARY_MIN_MAX.items():
        n = sum(1 for c in row.torch_calls if c.func in (f"torch.{name}", f"Tensor.{name}") and _binary(c))
        if n and pool.calls(eager):
            calls, comps = pool.take(eager, n)
            work.append(_ignored_or_unsupported(traced, calls, comps))
    work.extend(_one(row, op, calls, comps) for op, (calls, comps) in list(pool.ops.items()))
    # F.normalize is traced with its inner ops: clamp_min (not the ignored clamp native's maps to) and expand_as
    normalize = sum(1 for c in row.torch_calls if c.func == "F.normalize")
    clamp_min = sum(1 for c in row.torch_calls if c.func == "Tensor.clamp_min") + normalize
    if clamp_min:
        work.append(Work("aten::clamp_min", clamp_min, "unsupported"))
    traced_calls = Counter(_TRACED_CALLS[c.func] for c in row.torch_calls if c.func in _TRACED_CALLS)
    traced_calls["aten::expand_as"] += normalize
    work.extend(Work(op, n, "unsupported") for op, n in traced_calls.items() if n)
    if meta:
        # ``t[i] = 3``: on CPU (and in a trace) one aten::fill_; on meta the number is made a tensor
        # (aten::scalar_tensor) and copied in (aten::copy_, ignored)
        filled = min(row.zero_cost_ops.get("aten::scalar_tensor", 0), row.zero_cost_ops.get("aten::copy_", 0))
        if filled:
            work.append(Work("aten::fill_", filled, "unsupported"))
    for op, calls in {**row.zero_cost_ops, **row.unknown_ops}.items():
        traced = _TRACED_ZERO_COST.get(op) if op in row.zero_cost_ops else op
        if _isa(row, _INSTANCE_NORM) and op == "aten::repeat":
            traced = None  # F.instance_norm repeats weight and bias below the traced op
        if op == "aten::where" and bools:
            calls -= bools  # inside the traced attention call
        if traced is not None and traced not in IGNORED and calls > 0:
            work.append(Work(traced, calls, "unsupported"))
    return work


def _recurrent(row: ModuleRow, op: str, calls: int, comps: dict[str, int]) -> Work:
    """nn.LSTM / GRU / RNN: one traced aten::lstm / gru / rnn_tanh / rnn_relu per call, no handle."""
    kind = op.removeprefix("module::")
    traced = _RECURRENT_TRACED.get(kind) or ("aten::rnn_relu" if row.attrs.get("nonlinearity") == "relu" else "aten::rnn_tanh")
    return Work(traced, calls, "unsupported", macs=comps.get("macs", 0), native_flops=flops_of(comps),
                acts_ref=_call_outputs(row))


def _einsum_operands(call) -> tuple[str, list[tuple[int, ...]]] | None:
    """(equation, operand shapes) of a recorded ``torch.einsum`` call of two operands."""
    eq = call.args[0] if call.args else None
    ops = [a for a in call.args[1:] if isinstance(a, TensorMeta)]
    if not isinstance(eq, str) or len(ops) != 2 or "..." in eq or "->" not in eq:
        return None
    return eq.replace(" ", ""), [tuple(a.shape) for a in ops]


def fvcore_einsum(equation: str, shapes: list[tuple[int, ...]]) -> int:
    """fvcore's ``einsum_flop_jit``: the equation's letters renamed in order of appearance; two
    equations special-cased; any other is numpy's ``einsum_path`` "Optimized FLOP count", which
    numpy prints to 4 significant digits ("%.3e"), halved and floored (a MAC is one flop)."""
    import numpy as np

    order = dict.fromkeys(k for k in equation if k.isalpha())
    eq = equation.translate({ord(x): 97 + i for i, x in enumerate(order)})
    if eq == "abc,abd->acd":
        n, c, t = shapes[0]
        return n * c * t * shapes[-1][-1]
    if eq == "abc,adc->adb":
        n, t, g = shapes[0]
        return n * t * g * shapes[-1][1]
    arrays = [np.broadcast_to(np.zeros(()), s) for s in shapes]  # shapes only: no memory
    text = np.einsum_path(eq, *arrays, optimize="optimal")[1]
    line = next(x for x in text.split("\n") if "optimized flop" in x.lower())
    return int(np.floor(float(line.split(":")[-1]) / 2))


def _einsum_output(equation: str, shapes: list[tuple[int, ...]]) -> int:
    ins, out = equation.split("->")
    size = {k: d for term, shape in zip(ins.split(","), shapes) for k, d in zip(term, shape)}
    return numel(tuple(size[k] for k in out))


def _einsum_parts(row: ModuleRow) -> list[tuple[int, int, int]] | None:
    """(native MACs, fvcore's count, output elements) of each of the row's recorded
    ``torch.einsum`` calls, when every one has two operands; None otherwise (or with none)."""
    calls = [c for c in row.torch_calls if c.func == "torch.einsum"]
    parsed = [_einsum_operands(c) for c in calls]
    if not calls or any(p is None for p in parsed):
        return None
    return [(c.components.get("macs", 0), fvcore_einsum(eq, shapes), _einsum_output(eq, shapes))
            for c, (eq, shapes) in zip(calls, parsed)]


def _einsums(row: ModuleRow, pool: _Pool) -> Work | None:
    """The row's recorded two-operand ``torch.einsum`` calls, each one ``bmm`` to native: one traced
    ``aten::einsum`` each, counted by fvcore's einsum handle (not a matmul's MACs); None when a
    call is not of that kind or native's bmm do not hold them all."""
    parts = _einsum_parts(row)
    if parts is None:
        return None
    macs = sum(m for m, _, _ in parts)
    have, comps = pool.ops.get("aten::bmm", (0, {}))
    if have < len(parts) or comps.get("macs", 0) < macs:
        return None
    n, taken = pool.take("aten::bmm", len(parts), {"macs": macs})
    out = sum(o for _, _, o in parts)
    return Work("aten::einsum", n, "handled", flops=sum(f for _, f, _ in parts), macs=taken.get("macs", 0),
                native_flops=flops_of(taken), acts=out, acts_ref=out)


def _functional_sdpa(pool: _Pool, masked: int = 0, bmm_macs: int | None = None) -> Work:
    """F.scaled_dot_product_attention: one traced op with no handle; native (math backend) sees per
    call 2 bmm, 2 mul (q and k scaled) and a _safe_softmax. Output elements assume self-attention
    with equal q and v head sizes (the native record keeps no op shapes): B*h*L*L + B*h*L*d.
    ``bmm_macs``: the calls' own bmm MACs when recorded (else a pro-rata share of the row's bmm)."""
    calls, comps = pool.take("aten::_safe_softmax")
    total: Counter = Counter(comps)
    total.update(pool.take("aten::bmm", 2 * calls, None if bmm_macs is None else {"macs": bmm_macs})[1])
    total.update(pool.take("aten::mul", 2 * calls)[1])
    if masked:  # the math path adds the mask to the scores
        total.update(pool.take("aten::add", masked)[1])
    out = total.get("softmax", 0) // 5 + total.get("elementwise", 0) // 2
    return Work("aten::scaled_dot_product_attention", calls, "unsupported", macs=total.get("macs", 0),
                native_flops=flops_of(dict(total)), acts_ref=out)


def _mha(row: ModuleRow) -> list[Work]:
    """nn.MultiheadAttention traced through F.multi_head_attention_forward (no fast path: the trace
    runs with grad enabled). The projections are ``aten::linear`` (handled, bias ignored). With
    need_weights (native: ``_softmax``) the products are two ``aten::bmm`` (handled), then an
    unsupported ``aten::softmax`` and the ``aten::mul`` that scales q; the head-averaged weights
    (``aten::mean``) are assumed discarded by the caller, so the trace drops them. Without
    need_weights (native: SDPA's math decomposition) it is one unsupported
    ``aten::scaled_dot_product_attention``. Masks are not modelled (their ops go the generic way)."""
    a = row.attrs
    calls = row.calls
    h, e = a["num_heads"], a["embed_dim"]
    lin_out = scores = attn_out = 0
    for c in row.call_records:
        q, k = c.inputs[0].shape, c.inputs[1].shape
        if len(q) == 2:  # unbatched (L, E)
            b, lq, s = 1, q[0], k[0]
        elif a.get("batch_first"):
            b, lq, s = q[0], q[1], k[1]
        else:
            lq, b, s = q[0], q[1], k[0]
        lin_out += (lq + 2 * s) * b * e + lq * b * e  # in-projections of q, k, v, then out_proj
        scores += b * h * lq * s
        attn_out += b * lq * e
    pool = _Pool(row)
    lin = _linears(pool)
    lin_calls = sum(w.calls for w in lin) + pool.calls("aten::mm") + pool.calls("aten::addmm")
    mm = pool.take("aten::mm")[1]
    addmm = pool.take("aten::addmm")[1]
    macs = sum(w.macs for w in lin) + mm.get("macs", 0) + addmm.get("macs", 0)
    nflops = sum(w.native_flops for w in lin) + flops_of(mm) + flops_of(addmm)
    work = [Work("aten::linear", lin_calls, "handled", flops=macs, macs=macs, native_flops=nflops,
                 acts=lin_out, acts_ref=lin_out)]
    in_proj = lin_calls // max(calls, 1) - 1
    size_muls = _MHA_SIZE_MULS
    if in_proj < 3:  # q is k is v: one packed linear; k is v: q and kv linears; else three
        work.append(Work("aten::unflatten", calls, "unsupported"))
    if in_proj == 2:  # w.split([E, E * 2]) and b.split(...): E * 2 is traced as a tensor mul
        size_muls += 2 if row.components.get("bias") else 1
    work.append(Work("aten::div", calls * _MHA_SIZE_DIVS, "unsupported"))
    if pool.calls("aten::_safe_softmax"):
        sdpa = _functional_sdpa(pool)
        work.append(replace(sdpa, acts_ref=scores + attn_out))
        work.append(Work("aten::mul", calls * size_muls, "unsupported"))
    else:
        bmm_calls, bmm = pool.take("aten::bmm")
        work.append(_matmul("aten::bmm", bmm_calls, bmm, scores + attn_out))
        mul_calls, mul = pool.take("aten::mul")
        work.append(Work("aten::mul", calls * size_muls + mul_calls, "unsupported", native_flops=flops_of(mul)))
        if pool.calls("aten::mean"):
            _, mean = pool.take("aten::mean")
            work.append(Work("aten::mean", 0, "dropped", native_flops=flops_of(mean),
                             note="the head-averaged attention weights are unused, so the trace drops them"))
    work.extend(_one(row, op, n, comps) for op, (n, comps) in list(pool.ops.items()))
    return work


def _dropout(row: ModuleRow) -> list[Work] | None:
    """A dropout module: one traced op per call standing for everything native saw inside."""
    mro = (row.attrs.get("class", ""), *row.attrs.get("bases", ()))
    traced = next((_DROPOUT_TRACED[c] for c in mro if c in _DROPOUT_TRACED), None)
    if traced is None:  # a dropout class fvcore's trace was not checked against: the generic way
        return None
    traced += "_" if row.attrs.get("inplace") else ""
    comps: Counter = Counter()
    for c in row.op_components.values():
        comps.update(c)
    return [_ignored_or_unsupported(traced, row.calls, dict(comps))]


def traced_work(row: ModuleRow, meta: bool = False) -> list[Work]:
    """What fvcore's trace records in this module's own forward (exclusive), with native behind it.
    ``meta``: the native count ran on the meta device (a few ops dispatch otherwise there)."""
    if not row.calls:
        return []
    if row.call_records and not any(c.used for c in row.call_records):
        # nothing the model returns depends on it: the trace has none of its ops
        return [replace(w, status="dropped", calls=0, flops=0, acts=0, cause="dead_code",
                        note="nothing the model returns uses its result, so the trace drops it")
                for w in _traced_work(row, meta)]
    return _traced_work(row, meta)


def _traced_work(row: ModuleRow, meta: bool = False) -> list[Work]:
    if _isa(row, _MHA):
        return _mha(row)
    if _isa(row, _DROPOUT):
        work = _dropout(row)
        if work is not None:
            return work
    return _generic(row, meta)
