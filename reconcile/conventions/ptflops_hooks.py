"""ptflops 0.7.5's module hooks (``pytorch_ops.MODULES_MAPPING``): one ``Hook`` per module class,
its count of one module over all its calls (whole batch) split into parts, with the line of doc
that states the rule. ``conventions.ptflops`` walks the modules these hooks make rows of;
``conventions.ptflops_07`` swaps in 0.7.0's conv and linear. Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from reconcile.conventions.base import n_in, numel
from reconcile.conventions.ptflops_shared import GATES, NN, call_shape, out_shape, types
from reconcile.records import ModuleRow, Phrase

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


def hooked(row: ModuleRow, hooks: Mapping[str, Hook] = HOOKS) -> bool:
    return row.attrs.get("class") in hooks
