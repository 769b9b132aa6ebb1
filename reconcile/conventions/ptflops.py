"""ptflops 0.7.5 with its default backend: its rules, written once, predicting
``get_model_complexity_info``. The aten backend is ``ptflops_aten``, 0.7.0 is ``ptflops_07``
(module hooks of this file with its own formulas), what they share ``ptflops_shared``.

``CONVENTION`` (tool "ptflops": ``backend='pytorch'``, ``count_functional`` on, as shipped).
Rows are the modules whose *exact* type has a hook, found the way ptflops' ``accumulate_flops``
walks ``children()`` from the root: a hooked module is atomic, a module reached by two paths is
two rows, a hooked module below another hooked one is "shadowed" (a row outside the total).
A row's ``__flops__`` is its hook count summed over its calls, whole batch; its ``macs`` is that
divided by the batch (the ``per_sample`` term sits on each row). The patched
``torch.nn.functional`` and tensor ops add whole-batch counts that belong to no row: they are
predicted per label in ``unattributed``. Only the ``int()`` truncation of the total is a
headline term.

References: native MACs of the same scope for op counts, native parameters (each tensor once)
for params. It predicts from the ``NativeCount`` alone. In a user-written ``forward`` the
native record of Python-level calls (``ModuleRow.torch_calls``) says which patched name ran
(``torch.matmul`` and not ``@``, ``F.softmax`` and not ``x.softmax``): ``PATCHED``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping

from reconcile.conventions import common
from reconcile.conventions.base import (
    Convention, INCLUSIVE, LayerPrediction, Number, Prediction, RuleDoc, Term, joined, n_in, numel, whole,
)
from reconcile.conventions.ptflops_shared import GATES, NN, TOTAL_ONLY, call_shape, out_shape, types
from reconcile.counter.formulas import flops_of
from reconcile.records import ModuleRow, NativeCount, ParamInfo, Phrase, TensorMeta, TorchCall

# ===== pytorch backend: module hooks (``pytorch_ops.MODULES_MAPPING``) ==========================

# "macs" or a cause id -> (amount over all calls of the module, whole batch; how ptflops got it)
Parts = dict[str, tuple[int, str]]


@dataclass(frozen=True)
class Hook:
    doc: str
    fn: Callable[[ModuleRow, frozenset[str]], Parts]
    # the hook counts only the module's own work: the layers inside it, atomic under it, go uncounted
    own_work_only: bool = False


def _conv(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """K * Cin * (Cout/g) per output position (transposed: per input position) x B, + N_out bias."""
    a = row.attrs
    per = numel(a["kernel_size"]) * a["in_channels"] * (a["out_channels"] // a["groups"])
    transposed = row.attrs["class"].rsplit(".", 1)[-1].startswith("ConvTranspose")
    macs = bias = 0
    for c in row.call_records:
        x, out = call_shape(c), out_shape(c)
        macs += per * x[0] * numel((x if transposed else out)[2:])
        if a.get("has_bias"):
            bias += x[0] * numel(out[1:])
    return {"macs": (macs, "K x Cin x Cout/g per position"), "bias": (bias, "one add per output element")}


def _deform_conv(row: ModuleRow, names: frozenset[str]) -> Parts:
    """torchvision DeformConv2d: conv plus (24, or 25 with a mask) x K per output position."""
    a = row.attrs
    k = numel(a["kernel_size"])
    per = k * a["in_channels"] * (a["out_channels"] // a["groups"])
    macs = extra = bias = 0
    for c in row.call_records:
        x, out = call_shape(c), out_shape(c)
        positions = x[0] * numel(out[2:])
        macs += per * positions
        extra += k * (24 + (1 if len(c.inputs) >= 3 else 0)) * positions
        if a.get("has_bias"):
            bias += x[0] * numel(out[1:])
    return {"macs": (macs, "K x Cin x Cout/g per position"), "formula": (extra, "bilinear sampling at 24-25 per tap"),
            "bias": (bias, "one add per output element")}


def _linear(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """(in x out + out bias) x prod(input.shape[:-1])."""
    macs = bias = 0
    for c in row.call_records:
        x, out = call_shape(c), out_shape(c)
        rows_ = numel(x[:-1])
        macs += x[-1] * out[-1] * rows_
        if row.attrs.get("has_bias"):
            bias += out[-1] * rows_
    return {"macs": (macs, "in x out per row"), "bias": (bias, "one add per output element")}


def _activation(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """output.numel()."""
    return {"activation": (sum(numel(out_shape(c)) for c in row.call_records), "1 per output element")}


def _pool(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """input.numel()."""
    return {"pool": (sum(n_in(c) for c in row.call_records), "1 per input element")}


def _norm(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """input.numel(), doubled when the module has ``affine`` set (LayerNorm has no such attribute)."""
    k = 2 if row.attrs.get("affine") else 1
    elements = sum(n_in(c) for c in row.call_records)
    how = "2 per element (affine)" if k == 2 else "1 per element" + (
        " (LayerNorm has elementwise_affine, not affine)" if "elementwise_affine" in row.attrs else "")
    return {"norm": (k * elements, Phrase("{how!s}: {k!s} x {elements}", {"how": how, "k": k, "elements": elements}))}


def _upsample(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """output[0].numel(): the first sample's elements only."""
    return {"interpolate": (sum(numel(out_shape(c)[1:]) for c in row.call_records),
                            "1 per output element of the first sample")}


_GATE_OPS = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 7, "LSTM": 10}  # ptflops' rnn_flops: H, 7H, 10H per step


def _rnn(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """per layer |W_ih| + |W_hh| + gate ops (H, 7H, 10H) + |b_ih| + |b_hh|, x shape[0] x shape[1] (x2 bidirectional)."""
    a = row.attrs
    mode, h = a["mode"], a["hidden_size"]
    g, out_h = GATES[mode], a.get("proj_size") or h
    dirs = 2 if a["bidirectional"] else 1
    w = gates = b = 0
    for layer in range(a["num_layers"]):  # ptflops reads the forward direction's weights only
        w += g * h * ((a["input_size"] if layer == 0 else out_h * dirs) + out_h)
        gates += _GATE_OPS[mode] * h
        b += 2 * g * h if a["bias"] else 0
    units = sum(call_shape(c)[0] * call_shape(c)[1] * dirs for c in row.call_records)
    return {"macs": (w * units, "|W_ih| + |W_hh| per step"), "bias": (b * units, "|b_ih| + |b_hh| per step"),
            "rnn_gates": (gates * units, f"{_GATE_OPS[mode]}H gate operations per step")}


_CELL_MODES = {"RNNCell": "RNN_TANH", "GRUCell": "GRU", "LSTMCell": "LSTM"}


def _rnn_cell(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """|W_ih| + |W_hh| + gate ops + |b_ih| + |b_hh|, x input.shape[0]."""
    a = row.attrs
    mode, h = _CELL_MODES[row.type], a["hidden_size"]
    g = GATES[mode]
    units = sum(call_shape(c)[0] for c in row.call_records)
    return {"macs": (g * h * (a["input_size"] + h) * units, "|W_ih| + |W_hh| per sample"),
            "bias": ((2 * g * h if a["bias"] else 0) * units, "|b_ih| + |b_hh| per sample"),
            "rnn_gates": (_GATE_OPS[mode] * h * units, f"{_GATE_OPS[mode]}H gate operations per sample")}


def _mha(row: ModuleRow, names: frozenset[str]) -> Parts:
    """B x [L*E q scaling + L*E^2 + S*kdim^2 + S*vdim^2 + (L+2S)*E in-proj bias + h*(L*S*dh + L*S + L*S*dv) + L*vdim*(vdim+1)]."""
    a = row.attrs
    in_bias = f"{row.name}.in_proj_bias" in names
    macs = bias = scale = softmax = 0
    for c in row.call_records:
        q, k, v = (call_shape(c, i) for i in range(3))
        b, li = (q[0], 1) if a.get("batch_first") else (q[1], 0)
        e, kd, vd = q[2], k[2], v[2]
        ql, kl, vl = q[li], k[li], v[li]
        h = a["num_heads"]
        macs += b * (ql * e * e + kl * kd * kd + vl * vd * vd + h * ql * kl * (e // h + vd // h) + ql * vd * vd)
        bias += b * (((ql + kl + vl) * e if in_bias else 0) + ql * vd)
        scale += b * ql * e
        softmax += b * h * ql * kl
    return {"macs": (macs, "projections and attention products"),
            "bias": (bias, "in-projection bias (if any) and out-projection bias (always)"),
            "elementwise": (scale, "query scaling, 1 per query element"),
            "softmax": (softmax, "1 per attention score")}


def _timm_attention(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """timm Attention: B x [N*hd*h q scaling + h*(N*N*hd QK^T + N*N softmax + N*N*hd AV)]; qkv and proj not counted."""
    a = row.attrs
    h, hd = a["num_heads"], a["head_dim"]
    macs = scale = softmax = 0
    for c in row.call_records:
        b, n = call_shape(c)[0], call_shape(c)[1]
        macs += b * h * 2 * n * n * hd
        scale += b * n * hd * h
        softmax += b * h * n * n
    return {"macs": (macs, "QK^T and AV"), "elementwise": (scale, "query scaling, 1 per query element"),
            "softmax": (softmax, "1 per attention score")}


HOOKS: dict[str, Hook] = {}
for _cls in types("conv", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"):
    HOOKS[_cls] = Hook("Conv / ConvTranspose: K x Cin x Cout/g x B x S_out (transposed: S_in) + N_out bias", _conv)
for _cls in types("activation", "ReLU", "PReLU", "ELU", "LeakyReLU", "ReLU6", "GELU"):
    HOOKS[_cls] = Hook("ReLU / PReLU / ELU / LeakyReLU / ReLU6 / GELU: N_out", _activation)
for _d in (1, 2, 3):
    for _cls in types("pooling", f"MaxPool{_d}d", f"AvgPool{_d}d", f"AdaptiveMaxPool{_d}d", f"AdaptiveAvgPool{_d}d"):
        HOOKS[_cls] = Hook("Max / Avg / AdaptiveMax / AdaptiveAvg pools: N_in", _pool)
for _cls in (types("batchnorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
             + types("instancenorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")
             + types("normalization", "GroupNorm", "LayerNorm")):
    HOOKS[_cls] = Hook("BatchNorm / InstanceNorm / GroupNorm / LayerNorm: N_in, x2 when `affine` (never for LayerNorm)", _norm)
HOOKS[f"{NN}linear.Linear"] = Hook("Linear: (in x out + out bias) x prod(input.shape[:-1])", _linear)
HOOKS[f"{NN}upsampling.Upsample"] = Hook("Upsample (exact type): output[0].numel(), the first sample only", _upsample)
for _cls in types("rnn", "RNN", "GRU", "LSTM"):
    HOOKS[_cls] = Hook("RNN / GRU / LSTM: per layer |W_ih|+|W_hh| + H/7H/10H + biases, x shape[0] x shape[1] (x2 bidirectional)", _rnn)
for _cls in types("rnn", "RNNCell", "GRUCell", "LSTMCell"):
    HOOKS[_cls] = Hook("RNN / GRU / LSTM cells: |W_ih|+|W_hh| + H/7H/10H + biases, x batch", _rnn_cell)
HOOKS[f"{NN}activation.MultiheadAttention"] = Hook(
    "MultiheadAttention: B x [L*E + L*E^2 + S*kdim^2 + S*vdim^2 + (L+2S)*E + h*(L*S*dh + L*S + L*S*dv) + L*vdim*(vdim+1)]", _mha)
# registered by ptflops when timm is importable (timm.models.vision_transformer.Attention is this class)
HOOKS["timm.layers.attention.Attention"] = Hook(
    "timm Attention (exact type, when timm is importable): B x [N*hd*h + h*(2*N*N*hd + N*N)]; its qkv / proj Linears "
    "are not counted", _timm_attention, own_work_only=True)
HOOKS["torchvision.ops.deform_conv.DeformConv2d"] = Hook("torchvision DeformConv2d: conv + (24, 25 with mask) x K per position", _deform_conv)


def _hooked(row: ModuleRow, hooks: Mapping[str, Hook] = HOOKS) -> bool:
    return row.attrs.get("class") in hooks


# ===== pytorch backend: patched functionals and tensor ops (``patch_functional``) ===============

# torch.nn classes whose forward is one call of a patched function: label -> count per call N_in.
_F_BY_MODULE: dict[str, str] = {
    **dict.fromkeys(types("activation", "ReLU"), "F.relu"),
    **dict.fromkeys(types("activation", "ELU"), "F.elu"),
    **dict.fromkeys(types("activation", "GELU"), "F.gelu"),
    **dict.fromkeys(types("activation", "SiLU"), "F.silu"),
    **dict.fromkeys(types("activation", "PReLU"), "F.prelu"),
    **dict.fromkeys(types("activation", "Softmax", "Softmax2d"), "F.softmax"),
    **{c: f"F.{kind}_pool{d}d" for d in (1, 2, 3) for kind, name in
       (("max", "MaxPool"), ("avg", "AvgPool"), ("adaptive_avg", "AdaptiveAvgPool"), ("adaptive_max", "AdaptiveMaxPool"))
       for c in types("pooling", f"{name}{d}d")},
}
_UPSAMPLE = f"{NN}upsampling.Upsample"  # forward calls F.interpolate(input, size, scale_factor, ...)
_MHA = f"{NN}activation.MultiheadAttention"  # F.multi_head_attention_forward

_FAMILY = {"F.relu": "activation", "F.gelu": "activation", "F.elu": "activation", "F.silu": "activation",
           "F.prelu": "activation", "F.relu6": "activation", "F.softmax": "softmax", "F.interpolate": "interpolate",
           "F.upsample": "interpolate", "torch.mul": "elementwise", "torch.add": "elementwise"}


def _family(fname: str) -> str:
    if "pool" in fname:
        return "pool"
    return _FAMILY.get(fname, "formula")


def _label(fname: str) -> str:
    return f"functional:{fname}" if fname.startswith("F.") else f"tensor_op:{fname.rsplit('.', 1)[-1]}"


@dataclass(frozen=True)
class Caught:
    """One patched function's count of one module's own work."""

    fname: str  # "F.relu", "torch.matmul", ...
    count: Number | None  # ptflops' count; None when the native record cannot tell it
    macs: int  # native MACs of the work
    flops: int  # native FLOPs of the work
    ops: tuple[str, ...]  # aten ops of the work
    components: Mapping[str, int] | None = None  # native components of the work (None: those of ``ops``)
    # how ``count`` differs from ``macs`` when the work has MACs: cause -> amount (default: "formula")
    parts: Mapping[str, Number] | None = None


def _forward_class(row: ModuleRow) -> str:
    """The class whose forward ran: the module's own, or the first torch.nn base that patches."""
    for cls in (row.attrs.get("class", ""), *row.attrs.get("bases", ())):
        if cls in _F_BY_MODULE or cls in (_UPSAMPLE, _MHA):
            return cls
    return row.attrs.get("class", "")


def _user_forward(row: ModuleRow) -> bool:
    """A forward written outside torch.nn (containers and torch.nn layers call no patched function)."""
    classes = (row.attrs.get("class", ""), *row.attrs.get("bases", ()))
    return not any(c.startswith(NN) and c != f"{NN}module.Module" for c in classes)


def _interpolate_count(a: Mapping, x: tuple[int, ...]) -> Number:
    """ptflops' ``_interpolate_functional_flops_hook`` for F.interpolate(x, size, scale_factor, ...)."""
    d = len(x) - 2
    size, scale = a.get("size"), a.get("scale_factor")
    if size is not None:
        return (numel(size) if isinstance(size, tuple) else int(size) ** d) * x[0] * x[1]
    if isinstance(scale, tuple) and len(scale) == d:
        return numel(x) * numel(tuple(int(s) for s in scale))  # np.prod(..., dtype=int64) truncates each factor
    v = numel(x) * scale ** d  # a float, as in ptflops
    return int(v) if float(v).is_integer() else Fraction(v)


def patched_calls(row: ModuleRow) -> list[Caught]:
    """What ptflops' patched functions count of this module's own (exclusive) work."""
    if not row.calls:
        return []
    fwd = _forward_class(row)
    if fwd in _F_BY_MODULE:
        return [Caught(_F_BY_MODULE[fwd], sum(n_in(c) for c in row.call_records), row.macs, row.flops, tuple(row.ops))]
    if fwd == _UPSAMPLE:
        count = sum((_interpolate_count(row.attrs, call_shape(c)) for c in row.call_records), 0)
        return [Caught("F.interpolate", count, row.macs, row.flops, tuple(row.ops))]
    if fwd == _MHA:
        # need_weights=True runs torch.bmm (torch.baddbmm with a mask) and softmax; otherwise SDPA
        if "aten::_softmax" not in row.ops:
            return []
        out = []
        for op, fname in (("aten::bmm", "torch.bmm"), ("aten::baddbmm", "torch.baddbmm"), ("aten::_softmax", "F.softmax")):
            comps = row.op_components.get(op)
            if comps is None:
                continue
            count = comps.get("macs", 0) + comps.get("bias", 0) if op != "aten::_softmax" else comps.get("softmax", 0) // 5
            out.append(Caught(fname, count, comps.get("macs", 0), flops_of(dict(comps)), (op,)))
        return out
    if not _user_forward(row):
        return []
    return _recorded_calls(row)


def _tensor(v: object) -> tuple[int, ...] | None:
    return v.shape if isinstance(v, TensorMeta) else None


def _arg(call: TorchCall, i: int, name: str) -> object:
    if len(call.args) > i:
        return call.args[i]
    return dict(call.kwargs).get(name)


def _numel_count(call: TorchCall) -> tuple[Number, dict]:
    """``_numel_functional_flops_hook``: input.numel()."""
    return numel(_tensor(_arg(call, 0, "input")) or ()), {}


def _interpolate_call(call: TorchCall) -> tuple[Number, dict]:
    x = _tensor(_arg(call, 0, "input")) or ()
    return _interpolate_count({"size": _arg(call, 1, "size"), "scale_factor": _arg(call, 2, "scale_factor")}, x), {}


def _matmul_count(call: TorchCall) -> tuple[Number, dict]:
    """``_matmul_tensor_flops_hook``: prod(input.shape) x other.shape[-1]."""
    a, b = _tensor(_arg(call, 0, "input")) or (), _tensor(_arg(call, 1, "other")) or (1,)
    return numel(a) * b[-1], {}


def _addmm_count(call: TorchCall) -> tuple[Number, dict]:
    """``_addmm_tensor_flops_hook``: prod(mat1.shape) x mat2.shape[-1] + prod(input.shape) unless beta == 0."""
    inp = _tensor(_arg(call, 0, "input")) or ()
    m1, m2 = _tensor(_arg(call, 1, "mat1")) or (), _tensor(_arg(call, 2, "mat2")) or (1,)
    beta = dict(call.kwargs).get("beta", 1)
    added = numel(inp) if beta != 0 else 0
    return numel(m1) * m2[-1] + added, {"bias": added}


def _elementwise_count(call: TorchCall) -> tuple[Number, dict]:
    """``_elementwise_tensor_flops_hook``: the larger size per dimension, dimensions aligned from the
    left (not numpy broadcasting); 1 when neither operand is a tensor."""
    a, b = _tensor(_arg(call, 0, "input")), _tensor(_arg(call, 1, "other"))
    if a is None:
        return (numel(b) if b is not None else 1), {}
    if b is None:
        return numel(a), {}
    dims = max(len(a), len(b))
    return numel(tuple(max(a[i] if i < len(a) else 1, b[i] if i < len(b) else 1) for i in range(dims))), {}


# The Python names ptflops patches (``patch_functional`` / ``patch_tensor_ops``), by the label the
# native call record gives them -> (the name ptflops reports, its handler). Tensor.baddbmm, the
# operators (@, +, *), Tensor.softmax, einsum and F.linear are not patched.
PATCHED: dict[str, tuple[str, Callable[[TorchCall], tuple[Number, dict]]]] = {
    **{f"F.{n}": (f"F.{n}", _numel_count) for n in ("relu", "prelu", "elu", "relu6", "gelu", "silu", "softmax")},
    **{f"F.{k}_pool{d}d": (f"F.{k}_pool{d}d", _numel_count) for d in (1, 2, 3)
       for k in ("avg", "max", "adaptive_avg", "adaptive_max")},
    "F.upsample": ("F.upsample", _interpolate_call),
    "F.interpolate": ("F.interpolate", _interpolate_call),
    **{f"{ns}.{n}": (f"torch.{n}", _matmul_count) for ns in ("torch", "Tensor") for n in ("matmul", "mm", "bmm")},
    "torch.addmm": ("torch.addmm", _addmm_count),
    "Tensor.addmm": ("torch.addmm", _addmm_count),
    "torch.baddbmm": ("torch.baddbmm", _addmm_count),
    **{f"{ns}.{n}": (f"torch.{n}", _elementwise_count) for ns in ("torch", "Tensor") for n in ("mul", "add")},
}


def _recorded_calls(row: ModuleRow) -> list[Caught]:
    """A user-written forward: the patched names it called, from the native call record. A
    function the module bound at build time (``self.act = F.gelu``) is the unpatched original."""
    bound = set(row.attrs.get("binds", ()))
    by_fname: dict[str, list] = {}  # fname -> [count, components, parts]
    for call in row.torch_calls:
        rule = PATCHED.get(call.func)
        if rule is None or call.func in bound:
            continue
        fname, fn = rule
        count, parts = fn(call)
        acc = by_fname.setdefault(fname, [0, defaultdict(int), defaultdict(int)])
        acc[0] += count
        for k, v in call.components.items():
            acc[1][k] += v
        for k, v in parts.items():
            acc[2][k] += v
    out = []
    for fname, (count, comps, parts) in by_fname.items():
        comps = {k: v for k, v in comps.items() if v}
        macs = comps.get("macs", 0)
        rest = count - macs - sum(parts.values())
        terms = {**{k: v for k, v in parts.items() if v}, **({"formula": rest} if rest else {})}
        out.append(Caught(fname, whole(count), macs, flops_of(comps), (), comps, terms))
    return out


# ===== shared pieces ================================================================================


def _registered(native: NativeCount, name: str) -> list[ParamInfo]:
    """The tensors ``module.parameters()`` yields: registered in the subtree under any name."""
    prefix = name + "." if name else ""
    return [p for p in native.params if any(n.startswith(prefix) for n in (p.name, *p.aliases))]


def _owned(native: NativeCount, name: str) -> list[ParamInfo]:
    prefix = name + "." if name else ""
    return [p for p in native.params if p.name.startswith(prefix)]


def _who(rows: list[tuple[str, str, int]]) -> str:
    """'ReLU relu (2 calls)' or '9 modules: ReLU x 9 (17 calls)'."""
    calls = sum(c for _, _, c in rows)
    if len(rows) == 1:
        name, type_, _ = rows[0]
        where = f"{type_} {name}" if name else f"{type_}.forward (the model itself)"
        return f"{where} ({calls} call{'s' if calls != 1 else ''})"
    types: dict[str, int] = defaultdict(int)
    for _, t, _ in rows:
        types[t] += 1
    kinds = ", ".join(f"{t} x {n}" for t, n in types.items())
    return f"{len(rows)} modules: {kinds} ({calls} calls)"


def _scale(terms: list[Term], k: int) -> list[Term]:
    if k == 1:
        return terms
    return [Term(t.cause, whole(Fraction(t.amount) / k), t.rule,
                 Phrase("{text} (1/{k!s} on each of its {k!s} rows)", {"text": t.sentence, "k": k}),
                 flops=whole(Fraction(t.flops) / k)) for t in terms]


class _Unattributed:
    """Total-only counts by label, with the terms explaining them, grouped by cause."""

    def __init__(self) -> None:
        self.values: dict[str, Number] = defaultdict(int)
        self._parts: dict[tuple[str, str], list] = {}

    def add(self, label: str, cause: str, amount: Number, value: Number, row: ModuleRow, flops: Number = 0,
            macs: Number | None = None) -> None:
        self.values[label] += value
        key = (label, cause)
        part = self._parts.setdefault(key, [0, 0, [], None])
        part[0] += amount
        part[1] += flops
        part[2].append((row.name, row.type, row.calls))
        if macs is not None:
            part[3] = (part[3] or 0) + macs

    def terms(self, text: Callable[[str, str, Number, str], Phrase]) -> dict[str, tuple[Term, ...]]:
        out: dict[str, list[Term]] = defaultdict(list)
        for (label, cause), (amount, flops, rows, macs) in self._parts.items():
            if amount or flops:
                out[label].append(Term(cause, amount, f"ptflops.outside_rows.{cause}", text(label, cause, amount,
                                                                                            _who(rows)),
                                       flops=flops, macs=macs))
        return {k: tuple(v) for k, v in out.items()}


def _params_row_terms(tool: str, row: ModuleRow, native: NativeCount) -> tuple[int, tuple[Term, ...]]:
    """ptflops' row params: trainable tensors of ``module.parameters()``; terms against the native
    parameters owned by the subtree (each tensor once)."""
    registered = _registered(native, row.name)
    prefix = row.name + "." if row.name else ""
    counted = sum(p.numel for p in registered if p.trainable)
    frozen = sum(p.numel for p in registered if p.name.startswith(prefix) and not p.trainable)
    borrowed = [p for p in registered if not p.name.startswith(prefix) and p.trainable]
    terms = []
    if frozen:
        terms.append(Term("params_frozen", -frozen, "ptflops.params_frozen",
                          Phrase("{tool!s} leaves out the {frozen} frozen parameters "
                          "(requires_grad=False) of {type!s}", {"tool": tool, "frozen": frozen, "type": row.type})))
    if borrowed:
        n = sum(p.numel for p in borrowed)
        terms.append(Term("params_tied", n, "ptflops.params_tied",
                          Phrase("{tool!s} counts {n} parameters that {type!s} shares with "
                          "{join!s} (owned there)", {"tool": tool, "n": n, "type": row.type,
                                                     "join": ', '.join(sorted({p.name for p in borrowed}))})))
    return counted, tuple(terms)


# ===== the pytorch backend ============================================================================


class PtflopsConvention(Convention):
    tool = "ptflops"
    unit = "Mac"
    metric = "macs"
    headline_metric = "macs"
    metrics = {"macs": "macs", "params": "params"}
    per_sample = True
    hooks: Mapping[str, Hook] = HOOKS
    count_functional = True  # patched torch.nn.functional and tensor ops (0.7.1 on)
    truncates = True  # the total is int()-ed (0.7.1 on)
    rules = (
        RuleDoc("unit", "MACs; bias adds, norms, activations and pools counted as listed; module counts per sample"),
        RuleDoc("matching", "forward hooks on modules whose exact type has a rule; a hooked module is atomic (its children are not summed)"),
        *{h.doc: RuleDoc(h.doc.split(":")[0], h.doc.split(":", 1)[1].strip()) for h in HOOKS.values()}.values(),
        RuleDoc("patched functionals (count_functional)", "F.relu/elu/gelu/silu/prelu/relu6/softmax and every F.*pool*: N_in; "
                "F.interpolate: prod(size) x B x C or N_in x scale^d; torch.matmul/mm/bmm: prod(A) x B[-1]; "
                "torch.addmm/Tensor.addmm/torch.baddbmm: + numel(input) (a bias vector counts once); torch.add/mul and "
                "Tensor.add/mul: the larger size per dimension, dimensions aligned from the left; all whole batch, in no row"),
        RuleDoc("bound at build time", "a function a module holds from before ptflops patched it (transformers' "
                "GELUActivation: self.act = F.gelu) is the original: not counted"),
        RuleDoc("double counting", "nn.ReLU/ELU/GELU/PReLU, pools, Upsample and MHA with need_weights call a patched function: "
                "counted by the hook and again in the total"),
        RuleDoc("not seen", "operators (x + y, x * y, @), x.softmax(), Tensor.baddbmm, einsum, SDPA, "
                "sigmoid/tanh/hardswish, F.linear, embedding; "
                "modules without a hook (Softmax, SiLU and UpsamplingNearest2d only through their functional)"),
        RuleDoc("params", "trainable only (frozen left out): per row sum(module.parameters()); total once per tensor"),
        RuleDoc("repeated modules", "counts summed over calls; a module reached by two paths is a row (and summed) twice"),
        RuleDoc("batch", "module counts divided by len(input[0]) (1 when inputs go in as keywords); functional counts "
                "whole batch; total int()-truncated"),
    )

    def batch_counter(self, native: NativeCount) -> int:
        return _batch_counter(native)

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        names = frozenset(n for p in native.params for n in (p.name, *p.aliases))
        batch = self.batch_counter(native)
        reached, shadowed = _hook_rows(tree, self.hooks)
        row_names = set(tree.rows)
        covered: set[str] = set()
        for r in (*reached, *shadowed):
            covered.update(s.name for s in tree.subtree(r.name))

        layers: list[LayerPrediction] = []
        module_sum = 0  # sum of __flops__ over the rows in the total (each path)
        params_rows: dict[str, int] = defaultdict(int)  # tensor name -> rows counting it
        params_sum = 0
        for row in reached:
            k = _paths(native, row_names, row.name)
            pred, hook_count = self._hooked(tree, row, batch, k, names, shadowed=False)
            layers.append(pred)
            module_sum += k * hook_count
            params_sum += k * pred.predicted["params"]
            for p in _registered(native, row.name):
                if p.trainable:
                    params_rows[p.name] += k
        for row in shadowed:
            layers.append(self._hooked(tree, row, batch, 1, names, shadowed=True)[0])

        unattributed = _Unattributed()
        hook_owner = {s.name: r for r in (*reached, *shadowed) for s in tree.subtree(r.name)}
        for row in native.rows:
            caught = patched_calls(row) if self.count_functional else []
            if row.name in covered:
                for c in caught:
                    if c.count is not None:
                        unattributed.add(_label(c.fname), "double_count", c.count, c.count, hook_owner[row.name],
                                         macs=c.macs)
                continue
            for c in caught:
                if c.count is None:
                    continue
                if c.macs:
                    unattributed.add(_label(c.fname), TOTAL_ONLY, c.macs, c.count, row)
                    parts = c.parts if c.parts is not None else (
                        {"formula": c.count - c.macs} if c.count != c.macs else {})
                    for cause, amount in parts.items():
                        unattributed.add(_label(c.fname), cause, amount, 0, row)
                else:
                    unattributed.add(_label(c.fname), _family(c.fname), c.count, c.count, row)
            pseudo = self._outside(tree, row, caught)
            if pseudo is not None:
                layers.append(pseudo)

        values = {k: whole(v) for k, v in unattributed.values.items()}
        functional = sum((v for k, v in values.items() if k.startswith("functional:")), Fraction(0))
        tensor_ops = sum((v for k, v in values.items() if not k.startswith("functional:")), Fraction(0))
        macs_exact = whole(Fraction(module_sum, batch) + functional + tensor_ops)
        x = module_sum / batch  # ptflops' float arithmetic, then int()
        x += float(functional)
        x += float(tensor_ops)
        macs = int(x) if self.truncates else whole(Fraction(x))
        headline_terms: dict[str, tuple[Term, ...]] = {}
        if macs != macs_exact:
            headline_terms["macs"] = (Term("per_sample", macs - macs_exact, "ptflops.per_sample",
                                           Phrase("ptflops truncates its total "
                                           "{macs_exact} to an int: {v}", {"macs_exact": macs_exact,
                                                                           "v": macs - macs_exact})),)
        params_total = sum(p.numel for p in native.params if p.trainable)
        p_terms = _params_headline_terms(native, params_rows)
        if p_terms:
            headline_terms["params"] = p_terms
        return Prediction(
            self.tool, self.metric, self.unit, tuple(layers),
            headline={"macs": macs, "macs_exact": macs_exact, "params": params_total, "batch_counter": batch},
            unattributed=values,
            unattributed_terms=unattributed.terms(_unattributed_text),
            headline_terms=headline_terms,
            headline_reference={"macs": macs_exact, "macs_exact": macs_exact, "params": params_sum, "batch_counter": batch},
        )

    def _hooked(self, tree: common.Tree, row: ModuleRow, batch: int, k: int, names: frozenset[str],
                shadowed: bool) -> tuple[LayerPrediction, int]:
        """A hooked module's row: its hook count (whole batch) split into causes against the native
        MACs of its subtree, then divided by the batch. ``k``: paths reaching it (rows it gets)."""
        hook = self.hooks[row.attrs["class"]]
        parts = hook.fn(row, names)
        hook_count = sum(v for v, _ in parts.values())
        ref = tree.macs(row.name)
        terms: list[Term] = []
        macs_part = parts.get("macs", (0, ""))[0]
        own = ref
        if hook.own_work_only and ref != row.macs:
            inner = [r for r in tree.subtree(row.name) if r.name != row.name]
            inner_macs, inner_flops = ref - row.macs, sum(r.flops for r in inner)
            kinds = sorted({r.type for r in inner if r.macs})
            terms.append(Term("nested_skipped", -inner_macs, "ptflops.nested_skipped",
                              Phrase("ptflops' {type!s} hook counts only the attention "
                              "itself and, the module being atomic, skips the {inner_macs} MACs "
                              "({inner_flops} FLOPs) of the {join!s} inside it", {"type": row.type,
                                                                                  "inner_macs": inner_macs,
                                                                                  "inner_flops": inner_flops,
                                                                                  "join": ', '.join(kinds)}),
                              flops=-inner_flops))
            own = row.macs
        if macs_part != own:
            terms.append(Term("formula", macs_part - own, "ptflops.formula",
                              Phrase("ptflops' {type!s} formula gives {macs_part} MACs "
                              "where the MAC count is {own}", {"type": row.type, "macs_part": macs_part, "own": own})))
        for cause, (amount, how) in parts.items():
            if cause != "macs" and amount:
                terms.append(Term(cause, amount, "ptflops.hook_extra", Phrase("ptflops counts {type!s}'s {v!s} "
                                  "({how!s}): {amount}", {"type": row.type,
                                                          "v": cause if cause != 'formula' else 'extra work',
                                                          "how": how, "amount": amount})))
        per_sample = whole(Fraction(hook_count, batch)) - hook_count
        macs = whole(Fraction(hook_count, batch))
        sample_terms = [Term("per_sample", per_sample, "ptflops.per_sample.2",
                             Phrase("ptflops divides module counts by the batch ({batch!s}): "
                             "{hook_count} / {batch!s} = {macs}", {"batch": batch, "hook_count": hook_count,
                                                                   "macs": macs}))] if per_sample else []
        params, p_terms = _params_row_terms(self.tool, row, tree.native)
        ref_params = tree.params(row.name)
        reference: dict[str, Number] = {"macs": ref, "__flops__": ref, "params": ref_params}
        predicted: dict[str, Number] = {"macs": macs, "__flops__": hook_count, "params": params}
        by_metric = {"macs": terms + sample_terms, "__flops__": terms, "params": list(p_terms)}
        if k > 1:
            reference = {m: whole(Fraction(v) / k) for m, v in reference.items()}
            for m, cause in (("macs", "double_count"), ("__flops__", "double_count"), ("params", "params_tied")):
                extra = whole(Fraction(predicted[m]) * (k - 1) / k)
                by_metric[m] = _scale(by_metric[m], k)
                if extra:
                    by_metric[m].append(Term(cause, extra, "ptflops.paths",
                                             Phrase("{type!s} is reached by {k!s} paths and ptflops sums "
                                             "it once per path: {predicted} on each of {k!s} rows", {"type": row.type,
                                                                                                     "k": k, "predicted": predicted[m]})))
        if shadowed:
            reference[INCLUSIVE] = 1
            predicted["shadowed"] = 1
        terms_out = {m: tuple(ts) for m, ts in by_metric.items() if ts}
        return LayerPrediction(row.name, row.type, row.calls, reference, predicted, terms_out), hook_count

    def _outside(self, tree: common.Tree, row: ModuleRow, caught: list[Caught]) -> LayerPrediction | None:
        """A module in no row: its own work (seen only through patched functions, or not at all)
        and its own parameters, against what ptflops shows for it (nothing)."""
        seen = [c for c in caught if c.count is not None]
        seen_macs = sum(c.macs for c in seen)
        seen_flops = sum(c.flops for c in seen)
        seen_ops = {op for c in seen if c.components is None for op in c.ops}
        rest = {k: v for k, v in row.components.items()}
        for op in seen_ops:
            for k, v in row.op_components.get(op, {}).items():
                rest[k] = rest.get(k, 0) - v
        for c in seen:
            for k, v in (c.components or {}).items():
                rest[k] = rest.get(k, 0) - v
        rest = {k: v for k, v in rest.items() if v}
        if not rest and not caught:
            rest = dict(row.components)  # module-table forwards: caught covers the whole row
        missed_macs, missed_flops = row.macs - seen_macs, row.flops - seen_flops
        terms: list[Term] = []
        if seen_macs:
            fnames = ", ".join(sorted({c.fname for c in seen if c.macs}))
            terms.append(Term(TOTAL_ONLY, -seen_macs, "ptflops.unhooked_forward",
                              Phrase("ptflops has no row for {type!s}.forward: the patched "
                              "{fnames!s} count its {seen_macs} MACs in the total only", {"type": row.type,
                                                                                          "fnames": fnames,
                                                                                          "seen_macs": seen_macs})))
        if missed_macs or missed_flops:
            families = joined([Phrase("{k!s} {v}", {"k": k, "v": v}) for k, v in rest.items()], ", ", "no arithmetic")
            if common._builtin_compute(row):
                terms.append(Term("unsupported_module", -missed_macs, "ptflops.unsupported_module",
                                  Phrase("ptflops has no hook for {type!s}: "
                                  "{missed_macs} MACs ({missed_flops} FLOPs: {families!s}) in its "
                                  "forward are not counted", {"type": row.type, "missed_macs": missed_macs,
                                                              "missed_flops": missed_flops, "families": families}),
                                  flops=-missed_flops))
            else:
                terms.append(Term("functional_not_seen", -missed_macs, "ptflops.functional_not_seen",
                                  Phrase("ptflops cannot see the work in "
                                  "{type!s}.forward that no patched function does: {missed_macs} MACs, "
                                  "{missed_flops} FLOPs ({families!s})", {"type": row.type, "missed_macs": missed_macs,
                                                                          "missed_flops": missed_flops,
                                                                          "families": families}), flops=-missed_flops))
        p_terms = []
        trainable = sum(p.numel for p in _owned_directly(tree.native, row.name) if p.trainable)
        frozen = row.params - trainable
        if trainable:
            p_terms.append(Term("params_missed", -trainable, "ptflops.params_missed.2",
                                Phrase("ptflops has no row for {type!s}, so its "
                                "{trainable} parameters are in no row (its total counts them)", {"type": row.type,
                                                                                                 "trainable": trainable})))
        if frozen:
            p_terms.append(Term("params_frozen", -frozen, "ptflops.params_frozen.2",
                                Phrase("ptflops leaves out the {frozen} frozen "
                                "parameters of {type!s}", {"frozen": frozen, "type": row.type})))
        if not (row.macs or terms or row.params):
            return None
        out_terms = {"macs": tuple(terms)} if terms else {}
        if p_terms:
            out_terms["params"] = tuple(p_terms)
        return LayerPrediction(row.name, row.type, row.calls, {"macs": row.macs, "params": row.params},
                               {"macs": 0, "params": 0}, out_terms)


def _owned_directly(native: NativeCount, name: str) -> list[ParamInfo]:
    return [p for p in native.params if (p.name.rsplit(".", 1)[0] if "." in p.name else "") == name]


def _unattributed_text(label: str, cause: str, amount: Number, who: str) -> Phrase:
    fname = label.split(":", 1)[1]
    if cause == "double_count":
        return Phrase("{fname!s} counted by the hook of {who!s} and again by the patched {fname!s}: +{amount}",
                      {"fname": fname, "who": who, "amount": amount})
    if cause == TOTAL_ONLY:
        return Phrase("the patched {fname!s} counts the {amount} MACs of {who!s} in the total, outside any row",
                      {"fname": fname, "amount": amount, "who": who})
    if cause == "formula":
        return Phrase("the patched {fname!s} formula differs from the MAC count in {who!s}: {amount}", {"fname": fname,
                                                                                                        "who": who,
                                                                                                        "amount": amount})
    return Phrase("functional {fname!s} counted outside any module, in {who!s}: {amount}", {"fname": fname, "who": who,
                                                                                            "amount": amount})


def _params_headline_terms(native: NativeCount, rows: Mapping[str, int]) -> tuple[Term, ...]:
    """ptflops' total counts each trainable tensor once, whatever rows hold it."""
    missed = [p for p in native.params if p.trainable and rows.get(p.name, 0) == 0]
    multi = [(p, rows[p.name]) for p in native.params if p.trainable and rows.get(p.name, 0) > 1]
    terms = []
    if missed:
        n = sum(p.numel for p in missed)
        terms.append(Term("params_missed", n, "ptflops.params_missed",
                          Phrase("ptflops' total counts {n} trainable parameters that no row "
                          "holds ({join!s}{v!s})", {"n": n, "join": ', '.join((p.name for p in missed[:4])),
                                                    "v": ', ...' if len(missed) > 4 else ''})))
    if multi:
        n = sum(p.numel * (c - 1) for p, c in multi)
        terms.append(Term("params_tied", -n, "ptflops.params_tied.2",
                          Phrase("ptflops' total counts once the {n} parameters that several "
                          "rows each count", {"n": n})))
    return tuple(terms)


def _batch_counter(native: NativeCount) -> int:
    """``__batch_counter__``: len(input[0]) of the root's one call; several inputs go in as
    keywords, which leaves no positional input and a batch of 1."""
    if len(native.input_shapes) == 1 and native.input_shapes[0]:
        return native.input_shapes[0][0]
    return 1


def _hook_rows(tree: common.Tree, hooks: Mapping[str, Hook] = HOOKS) -> tuple[list[ModuleRow], list[ModuleRow]]:
    """ptflops' ``accumulate_flops`` walk: the hooked modules in the total, and the shadowed ones."""
    reached: list[ModuleRow] = []

    def walk(name: str) -> None:
        row = tree.rows[name]
        if _hooked(row, hooks):
            reached.append(row)
            return
        for child in tree.children.get(name, ()):
            walk(child)

    walk("")
    names = {r.name for r in reached}
    return reached, [r for r in tree.native.rows if _hooked(r, hooks) and r.name not in names]


def _paths(native: NativeCount, row_names: set[str], name: str) -> int:
    """How many ``children()`` paths reach the module: its parameters' aliases that name no module
    of their own are the same module registered under another parent."""
    if not name:
        return 1
    prefix = name + "."
    others = set()
    for p in native.params:
        if not p.name.startswith(prefix):
            continue
        local = p.name[len(prefix):]
        for alias in p.aliases:
            if alias.endswith("." + local) and alias[: -len(local) - 1] not in row_names:
                others.add(alias[: -len(local) - 1])
    return 1 + len(others)


CONVENTION = PtflopsConvention()
