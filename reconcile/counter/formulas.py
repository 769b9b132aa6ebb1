"""The native counter's rules: one validated registry from aten op to the work it does.

Guarantees:
- Every rule returns its amount as named components (see ``records.COMPONENTS``), computed from
  shapes and arguments only, never from tensor values, so meta and CPU tensors count the same.
- ``macs`` follows torchvision's ``_ops`` convention exactly: one per multiply-accumulate of
  conv / transposed conv / mm / addmm / bmm / baddbmm / mv / dot; bias adds are ``bias``.
- Every other family has one documented cost per element (``COSTS`` below). ``flops`` of a count
  is ``2 * macs`` plus the sum of all other components.
- Ops known to do no arithmetic are listed apart (``ZERO_COST``) from ops with no rule, which the
  counter reports per module as unknown and never silently counts as zero.
- Registering the same op twice is an error, at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from reconcile.components import flops_of  # noqa: F401 - read as formulas.flops_of by the counter and conventions

Components = dict[str, int]
Formula = Callable[[tuple, dict, Any], Components]

# Per-element costs of every non-MAC family, in arithmetic operations. Written once; the docs and
# ``reconcile conventions`` print this table.
COSTS: dict[str, tuple[int, str]] = {
    "bias": (1, "one add per output element of conv / addmm / baddbmm / addmv with a bias"),
    "batch_norm_inference": (2, "one multiply and one add per element: running stats and affine fold into a per-channel scale and shift"),
    "norm_statistics": (5, "per element: mean add, subtract, square, variance add, multiply by rstd (layer/group/instance norm, batch norm in training)"),
    "norm_affine": (1, "per element and per affine tensor present: multiply by weight, add bias"),
    "rms_norm": (3, "per element: square, add, multiply by rrms (+1 per affine weight)"),
    "activation": (1, "one operation per output element (relu, gelu, silu, sigmoid, tanh, hardswish, ...)"),
    "elementwise": (1, "one operation per output element (add, sub, mul, div, pow, sqrt, exp, compare, ...); addcmul/addcdiv 2"),
    "reduction": (1, "one operation per input element (sum, mean, amax, argmax, ...); var/std 4, vector norms 2"),
    "softmax": (5, "per element: max compare, subtract, exp, sum add, divide (softmax, log_softmax)"),
    "max_pool": (-1, "per output element: window size minus one comparisons (nominal kernel)"),
    "avg_pool": (0, "per output element: window size (window - 1 adds and one divide; nominal kernel)"),
    "adaptive_pool": (0, "per output element: its exact adaptive window (avg: window; max: window - 1)"),
    "interpolate": (-1, "per output element: 2 * taps - 1 (nearest 0, linear 3, bilinear 7, bicubic 31, trilinear 15)"),
    "attention_fused": (0, "fused CPU attention counted as its math decomposition: scale q and k, QK^T, softmax, AV"),
}


@dataclass(frozen=True)
class Rule:
    op: str  # aten schema name, e.g. "aten::convolution"
    doc: str
    fn: Formula


RULES: dict[str, Rule] = {}

# Ops that do no arithmetic. "view": aliases, no bytes moved. "copy": materializes data
# (bytes counted, no arithmetic). "alloc": creates a tensor from nothing but a fill.
ZERO_COST: dict[str, str] = {}


def _register(op: str, doc: str, fn: Formula) -> None:
    name = op if "::" in op else f"aten::{op}"
    if name in RULES or name in ZERO_COST:
        raise ValueError(f"rule for {name} registered twice")
    RULES[name] = Rule(name, doc, fn)


def rule(*ops: str, doc: str) -> Callable[[Formula], Formula]:
    """Register ``fn`` for each of ``ops``; rejects an op that already has a rule."""

    def deco(fn: Formula) -> Formula:
        for op in ops:
            _register(op, doc, fn)
        return fn

    return deco


def zero_cost(kind: str, *ops: str) -> None:
    for op in ops:
        name = op if "::" in op else f"aten::{op}"
        if name in RULES or name in ZERO_COST:
            raise ValueError(f"rule for {name} registered twice")
        ZERO_COST[name] = kind


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _first_tensor(out: Any):
    return out[0] if isinstance(out, (tuple, list)) else out


# ----- multiply-accumulate families ----------------------------------------------------------


@rule("convolution", "_convolution", "conv1d", "conv2d", "conv3d",
      doc="conv: N_out * (Cin/g) * K MACs; transposed: N_in * (Cout/g) * K; + N_out bias")
def _conv(args: tuple, kwargs: dict, out: Any) -> Components:
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    transposed = bool(args[6]) if len(args) > 6 else bool(kwargs.get("transposed", False))
    k = _prod(w.shape[2:])
    o = _first_tensor(out)
    macs = (x.numel() if transposed else o.numel()) * int(w.shape[1]) * k
    c = {"macs": macs}
    if bias is not None:
        c["bias"] = o.numel()
    return c


@rule("mm", doc="mm: m * k * n MACs")
def _mm(args, kwargs, out):
    a, b = args[0], args[1]
    return {"macs": int(a.shape[0]) * int(a.shape[1]) * int(b.shape[1])}


@rule("addmm", doc="addmm: m * k * n MACs + m * n bias adds")
def _addmm(args, kwargs, out):
    a, b = args[1], args[2]
    return {"macs": int(a.shape[0]) * int(a.shape[1]) * int(b.shape[1]), "bias": out.numel()}


@rule("bmm", doc="bmm: b * m * k * n MACs")
def _bmm(args, kwargs, out):
    a, b = args[0], args[1]
    return {"macs": a.numel() * int(b.shape[-1])}


@rule("baddbmm", doc="baddbmm: b * m * k * n MACs + b * m * n adds of the added tensor")
def _baddbmm(args, kwargs, out):
    a, b = args[1], args[2]
    return {"macs": a.numel() * int(b.shape[-1]), "bias": out.numel()}


@rule("_grouped_mm", doc="_grouped_mm: a (M, K) x b (G, K, N) -> (M, N): M * K * N MACs (each row meets one "
      "group's matrix; transformers' MoE experts); 3-D x 3-D: G * M * K * N; 3-D x 2-D: M * K * N; 2-D x 2-D "
      "(K split into G groups) -> (G, M, N): M * K * N")
def _grouped_mm(args, kwargs, out):
    a, b = args[0], args[1]
    o = _first_tensor(out)
    k = int(a.shape[-1])
    if a.dim() == 2 and b.dim() == 2:
        return {"macs": int(a.shape[0]) * k * int(b.shape[1])}
    return {"macs": o.numel() * k}


@rule("mv", doc="mv: m * n MACs")
def _mv(args, kwargs, out):
    return {"macs": args[0].numel()}


@rule("addmv", doc="addmv: m * n MACs + m bias adds")
def _addmv(args, kwargs, out):
    return {"macs": args[1].numel(), "bias": out.numel()}


@rule("dot", "vdot", doc="dot: n MACs")
def _dot(args, kwargs, out):
    return {"macs": args[0].numel()}


@rule("addr", doc="addr (outer product): m * n multiplies as MACs + m * n adds")
def _addr(args, kwargs, out):
    return {"macs": out.numel(), "bias": out.numel()}


@rule("_scaled_dot_product_flash_attention_for_cpu",
      doc="fused CPU attention as its math decomposition: B*h*L*S*(d+dv) MACs, q and k scaled, softmax 5/elem")
def _sdpa_cpu(args, kwargs, out):
    q, k, v = args[0], args[1], args[2]
    attn_mask = args[5] if len(args) > 5 else kwargs.get("attn_mask")
    rows = _prod(q.shape[:-1])  # B * h * L
    s = int(k.shape[-2])
    scores = rows * s
    c = {
        "macs": scores * (int(q.shape[-1]) + int(v.shape[-1])),
        "elementwise": q.numel() + _prod(q.shape[:-2]) * s * int(k.shape[-1]),
        "softmax": 5 * scores,
    }
    if attn_mask is not None:
        c["elementwise"] += scores
    return c


# ----- normalization -------------------------------------------------------------------------


@rule("_native_batch_norm_legit_no_training",
      doc="batch norm, inference: 2 per element")
def _bn_inference(args, kwargs, out):
    return {"norm": 2 * args[0].numel()}


def _affine(*tensors) -> int:
    return sum(1 for t in tensors if t is not None)


@rule("native_batch_norm", "_native_batch_norm_legit",
      doc="batch norm: training 5 per element (+1 per affine tensor); inference 2 per element")
def _bn(args, kwargs, out):
    x = args[0]
    training = bool(args[5]) if len(args) > 5 else True
    if isinstance(args[3] if len(args) > 3 else None, bool):  # _native_batch_norm_legit.no_stats
        training = bool(args[3])
    if not training:
        return {"norm": 2 * x.numel()}
    return {"norm": (5 + _affine(args[1], args[2])) * x.numel()}


@rule("native_layer_norm", doc="layer norm: 5 per element + 1 per affine tensor")
def _layer_norm(args, kwargs, out):
    w = args[2] if len(args) > 2 else None
    b = args[3] if len(args) > 3 else None
    return {"norm": (5 + _affine(w, b)) * args[0].numel()}


@rule("native_group_norm", doc="group norm: 5 per element + 1 per affine tensor")
def _group_norm(args, kwargs, out):
    return {"norm": (5 + _affine(args[1], args[2])) * args[0].numel()}


@rule("_fused_rms_norm", doc="rms norm: 3 per element + 1 with a weight")
def _rms_norm(args, kwargs, out):
    w = args[2] if len(args) > 2 else None
    return {"norm": (3 + _affine(w)) * args[0].numel()}


# ----- per-element families --------------------------------------------------------------------


def _per_output(component: str, cost: int) -> Formula:
    def fn(args, kwargs, out):
        return {component: cost * _first_tensor(out).numel()}

    return fn


def _per_input(component: str, cost: int) -> Formula:
    def fn(args, kwargs, out):
        return {component: cost * args[0].numel()}

    return fn


_ACTIVATIONS = (
    "relu", "relu_", "threshold", "threshold_", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_",
    "elu", "elu_", "gelu", "gelu_", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "mish", "mish_", "softplus",
    "_prelu_kernel", "log_sigmoid_forward", "rrelu_with_noise", "glu",
)
for _op in _ACTIVATIONS:
    _register(_op, "activation: 1 per output element", _per_output("activation", 1))

_ELEMENTWISE = (
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "neg_",
    "reciprocal", "reciprocal_", "sqrt", "sqrt_", "rsqrt", "rsqrt_", "exp", "exp_", "exp2",
    "log", "log_", "log1p", "log2", "expm1", "pow", "pow_", "abs", "abs_", "sign", "erf", "erf_",
    "erfinv", "sin", "cos", "tan", "atan", "atan2", "maximum", "minimum", "fmax", "fmin",
    "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_",
    "floor", "ceil", "round", "trunc", "frac", "fmod", "remainder", "floor_divide",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor",
    "bitwise_and", "bitwise_or", "bitwise_not", "isnan", "isinf", "nan_to_num", "square",
    "native_dropout", "sgn", "xlogy", "hypot",
)
for _op in _ELEMENTWISE:
    _register(_op, "elementwise: 1 per output element", _per_output("elementwise", 1))

for _op in ("addcmul", "addcmul_", "addcdiv", "addcdiv_", "lerp", "lerp_"):
    _register(_op, "elementwise: 2 per output element (fused multiply and add)", _per_output("elementwise", 2))

for _op in ("sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "prod", "any", "all",
            "cumsum", "cumprod", "logsumexp", "nansum", "aminmax", "topk", "sort", "count_nonzero",
            "histc", "bincount"):
    _register(_op, "reduction: 1 per input element", _per_input("reduction", 1))

for _op in ("var", "std", "var_mean", "std_mean"):
    _register(_op, "reduction: 4 per input element (mean pass, squared-deviation pass)", _per_input("reduction", 4))

for _op in ("linalg_vector_norm", "norm", "frobenius_norm"):
    _register(_op, "reduction: 2 per input element (square, add)", _per_input("reduction", 2))

for _op in ("_softmax", "_log_softmax", "_safe_softmax"):
    _register(_op, "softmax: 5 per element", _per_output("softmax", 5))


# ----- pooling ---------------------------------------------------------------------------------


def _nominal_kernel(kernel: Any, dims: int) -> int:
    ks = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
    if len(ks) == 1:
        ks = ks * dims
    return _prod(ks)


def _max_pool(dims: int) -> Formula:
    def fn(args, kwargs, out):
        o = _first_tensor(out)
        return {"pool": o.numel() * (_nominal_kernel(args[1], dims) - 1)}

    return fn


def _avg_pool(dims: int) -> Formula:
    def fn(args, kwargs, out):
        return {"pool": _first_tensor(out).numel() * _nominal_kernel(args[1], dims)}

    return fn


for _d in (1, 2, 3):
    _register(f"max_pool{_d}d", "max pool: (K - 1) per output element", _max_pool(_d))
    _register(f"max_pool{_d}d_with_indices", "max pool: (K - 1) per output element", _max_pool(_d))
    _register(f"avg_pool{_d}d", "avg pool: K per output element", _avg_pool(_d))


def _adaptive_windows(in_sizes, out_sizes) -> int:
    """Sum over all output positions of the adaptive window size (product over dims)."""
    total = 1
    for i, o in zip(in_sizes, out_sizes):
        i, o = int(i), int(o)
        total *= sum(math.ceil((k + 1) * i / o) - (k * i) // o for k in range(o))
    return total


def _adaptive(kind: str) -> Formula:
    def fn(args, kwargs, out):
        x, o = args[0], _first_tensor(out)
        dims = len(args[1])  # output_size has one entry per pooled dim
        lead = _prod(x.shape[: x.dim() - dims])
        windows = lead * _adaptive_windows(x.shape[x.dim() - dims:], o.shape[o.dim() - dims:])
        return {"pool": windows if kind == "avg" else windows - o.numel()}

    return fn


for _d in (1, 2, 3):
    _register(f"_adaptive_avg_pool{_d}d", "adaptive avg pool: exact window per output element", _adaptive("avg"))
    _register(f"adaptive_max_pool{_d}d", "adaptive max pool: exact window - 1 per output element", _adaptive("max"))
_register("adaptive_avg_pool1d", "adaptive avg pool: exact window per output element", _adaptive("avg"))


# ----- interpolation ------------------------------------------------------------------------------


def _interp(taps: int) -> Formula:
    cost = 2 * taps - 1 if taps > 1 else 0

    def fn(args, kwargs, out):
        return {"interpolate": cost * _first_tensor(out).numel()}

    return fn


for _op, _taps in (
    ("upsample_nearest1d", 1), ("upsample_nearest2d", 1), ("upsample_nearest3d", 1),
    ("_upsample_nearest_exact1d", 1), ("_upsample_nearest_exact2d", 1), ("_upsample_nearest_exact3d", 1),
    ("upsample_linear1d", 2), ("upsample_bilinear2d", 4), ("_upsample_bilinear2d_aa", 4),
    ("upsample_trilinear3d", 8), ("upsample_bicubic2d", 16), ("_upsample_bicubic2d_aa", 16),
    ("grid_sampler_2d", 4), ("grid_sampler_3d", 8),
):
    _register(_op, "interpolate: 2 * taps - 1 per output element", _interp(_taps))


@rule("_embedding_bag", "embedding_bag", doc="embedding bag: 1 add per gathered element")
def _embedding_bag(args, kwargs, out):
    weight, indices = args[0], args[1]
    return {"other": indices.numel() * int(weight.shape[1])}


# ----- backward ---------------------------------------------------------------------------------
# Ops that autograd runs in a backward. Ops with one output per gradient (input, weight, bias) have
# a split rule: one Components per output, ``None`` where ``output_mask`` left the output out, so
# the counter can file each output's work under what it is a gradient of. Their plain rule is the
# sum of the split.

SPLIT_RULES: dict[str, Callable[[tuple, dict, Any], tuple[Components | None, ...]]] = {}


def split_rule(*ops: str, doc: str):
    """Register a per-output rule for each of ``ops``, and its sum as the op's plain rule."""

    def deco(fn):
        def total(args, kwargs, out):
            c: Components = {}
            for part in fn(args, kwargs, out):
                for k, v in (part or {}).items():
                    c[k] = c.get(k, 0) + v
            return c

        for op in ops:
            name = op if "::" in op else f"aten::{op}"
            _register(name, doc, total)
            SPLIT_RULES[name] = fn
        return fn

    return deco


def _mask(args: tuple, kwargs: dict, i: int, n: int) -> list[bool]:
    m = args[i] if len(args) > i else kwargs.get("output_mask")
    return [bool(x) for x in m] if m is not None else [True] * n


@split_rule("convolution_backward",
            doc="conv backward: input and weight gradients each the forward's MACs (every forward "
                "product x*w is one MAC of each), bias gradient 1 reduction per grad_output element")
def _conv_backward(args, kwargs, out):
    grad_out, x, w = args[0], args[1], args[2]
    transposed = bool(args[7])
    k = _prod(w.shape[2:])
    macs = (x.numel() if transposed else grad_out.numel()) * int(w.shape[1]) * k
    m = _mask(args, kwargs, 10, 3)
    return ({"macs": macs} if m[0] else None, {"macs": macs} if m[1] else None,
            {"reduction": grad_out.numel()} if m[2] else None)


# Norm backwards, per element of the input (x_hat = (x - mean) * rstd, dy the incoming gradient):
#   bias gradient sum(dy): 1; weight gradient sum(dy * x_hat): 4 (x_hat 2, multiply, add);
#   input gradient with batch statistics: rstd * w * (dy - mean(dy) - x_hat * mean(dy * x_hat)):
#   4 (subtract, multiply, subtract, scale), plus the two reductions when the weight / bias
#   gradients did not already compute them (1 + 4), plus 1 for dy * w with an affine weight
#   (layer / group norm apply w before the reductions); with running statistics (batch norm in
#   eval): 1 (dy * w * rstd, folded per channel).
def _norm_split(n: int, m: list[bool], stats: bool, weight_first: bool, has_weight: bool):
    gi = None
    if m[0]:
        if stats:
            per = 4 + (0 if m[2] else 1) + (0 if m[1] else 4) + (1 if weight_first and has_weight else 0)
        else:
            per = 1
        gi = {"norm": per * n}
    gw = {"norm": 4 * n} if len(m) > 1 and m[1] else None
    gb = {"norm": n} if len(m) > 2 and m[2] else None
    return gi, gw, gb


@split_rule("native_batch_norm_backward",
            doc="batch norm backward: input 4 per element with batch statistics (+1 +4 for the "
                "reductions not done by the bias / weight gradients), 1 with running statistics; "
                "weight 4; bias 1")
def _bn_backward(args, kwargs, out):
    x, w = args[1], args[2]
    train = bool(args[7])
    return _norm_split(x.numel(), _mask(args, kwargs, 9, 3), train, False, w is not None)


@split_rule("native_layer_norm_backward",
            doc="layer norm backward: input 4 per element (+1 +4 reductions not shared, +1 for dy*w); "
                "weight 4; bias 1")
def _ln_backward(args, kwargs, out):
    x, w = args[1], args[5]
    return _norm_split(x.numel(), _mask(args, kwargs, 7, 3), True, True, w is not None)


@split_rule("native_group_norm_backward",
            doc="group norm backward: input 4 per element (+1 +4 reductions not shared, +1 for dy*w); "
                "weight 4; bias 1")
def _gn_backward(args, kwargs, out):
    x, w = args[1], args[4]
    return _norm_split(x.numel(), _mask(args, kwargs, 9, 3), True, True, w is not None)


@split_rule("_fused_rms_norm_backward",
            doc="rms norm backward: input 4 per element (+4 for sum(dy * x_hat) when not shared, +1 "
                "for dy*w); weight 4")
def _rms_backward(args, kwargs, out):
    x, w = args[1], args[4] if len(args) > 4 else None
    m = _mask(args, kwargs, 6, 2)
    n = x.numel()
    gi = {"norm": (4 + (0 if m[1] else 4) + (1 if w is not None else 0)) * n} if m[0] else None
    return gi, ({"norm": 4 * n} if len(m) > 1 and m[1] else None)


for _op in ("threshold_backward", "hardtanh_backward", "leaky_relu_backward", "hardsigmoid_backward"):
    _register(_op, "activation backward: 1 per element (select the gradient where the slope is nonzero)",
              _per_output("activation", 1))
for _op in ("gelu_backward", "silu_backward", "sigmoid_backward", "tanh_backward", "hardswish_backward",
            "elu_backward", "softplus_backward", "mish_backward", "log_sigmoid_backward", "glu_backward",
            "_prelu_kernel_backward", "rrelu_with_noise_backward"):
    _register(_op, "activation backward: 2 per element (local derivative, multiply by the gradient)",
              _per_output("activation", 2))

_register("native_dropout_backward", "dropout backward: 2 per element (mask multiply, scale)",
          _per_output("elementwise", 2))
for _op in ("_softmax_backward_data", "_log_softmax_backward_data"):
    _register(_op, "softmax backward: 4 per element (product or exp, row sum, subtract, multiply)",
              _per_output("softmax", 4))


@rule("max_pool1d_with_indices_backward", "max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward",
      "adaptive_max_pool1d_backward", "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward",
      doc="max pool backward: 1 add per grad_output element (into the argmax position)")
def _max_pool_backward(args, kwargs, out):
    return {"pool": args[0].numel()}


def _avg_pool_backward(dims: int) -> Formula:
    def fn(args, kwargs, out):
        return {"pool": args[0].numel() * _nominal_kernel(args[2], dims)}

    return fn


for _d in (1, 2, 3):
    _register(f"avg_pool{_d}d_backward", "avg pool backward: K per grad_output element (spread over its window)",
              _avg_pool_backward(_d))


def _adaptive_backward(pooled: int) -> Formula:
    def fn(args, kwargs, out):
        g, x = args[0], args[1]
        lead = _prod(x.shape[: x.dim() - pooled])
        return {"pool": lead * _adaptive_windows(x.shape[x.dim() - pooled:], g.shape[g.dim() - pooled:])}

    return fn


for _d in (1, 2, 3):
    _register(f"_adaptive_avg_pool{_d}d_backward",
              "adaptive avg pool backward: its exact window per grad_output element", _adaptive_backward(_d))


def _interp_backward(taps: int) -> Formula:
    cost = 2 * taps - 1 if taps > 1 else 1

    def fn(args, kwargs, out):
        return {"interpolate": cost * args[0].numel()}

    return fn


for _op, _taps in (
    ("upsample_nearest1d_backward", 1), ("upsample_nearest2d_backward", 1), ("upsample_nearest3d_backward", 1),
    ("_upsample_nearest_exact1d_backward", 1), ("_upsample_nearest_exact2d_backward", 1),
    ("_upsample_nearest_exact3d_backward", 1), ("upsample_linear1d_backward", 2),
    ("upsample_bilinear2d_backward", 4), ("upsample_trilinear3d_backward", 8), ("upsample_bicubic2d_backward", 16),
):
    _register(_op, "interpolate backward: as the forward per grad_output element (nearest: 1 add)",
              _interp_backward(_taps))


@rule("embedding_dense_backward",
      doc="embedding backward: 1 add per gradient element (scatter-add of each row into the table)")
def _embedding_backward(args, kwargs, out):
    return {"other": args[0].numel()}


# ----- no arithmetic ----------------------------------------------------------------------------

zero_cost(
    "view",
    "view", "_unsafe_view", "reshape", "_reshape_alias", "expand", "permute", "transpose", "t",
    "squeeze", "unsqueeze", "select", "slice", "narrow", "split", "split_with_sizes", "unsafe_split",
    "unsafe_split_with_sizes", "unbind", "chunk", "alias", "detach", "as_strided", "unfold",
    "view_as_real", "view_as_complex", "diagonal", "movedim", "flatten", "unflatten", "expand_as", "as_strided_",
    "lift_fresh", "_conj", "resolve_conj", "resolve_neg", "numpy_T", "matrix_H", "mT",
)
zero_cost(
    "copy",
    "clone", "_to_copy", "copy_", "cat", "stack", "contiguous", "constant_pad_nd", "reflection_pad1d",
    "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
    "index", "index_select", "gather", "scatter", "scatter_", "select_scatter", "slice_scatter",
    "masked_fill", "masked_fill_", "where", "roll", "flip", "repeat", "tril", "triu", "tril_", "triu_",
    "embedding", "_unsafe_index", "index_put", "index_put_", "masked_scatter", "_index_put_impl_",
    "lift_fresh_copy", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
    "im2col", "col2im", "take", "masked_select", "nonzero", "repeat_interleave", "diag_embed",
    "_unsafe_index_put", "alias_copy", "view_copy", "permute_copy", "expand_copy", "transpose_copy",
    "clamp_tensor_copy",
    # backward counterparts of views and copies: they place a gradient, no arithmetic
    "slice_backward", "select_backward", "diagonal_backward", "unfold_backward", "as_strided_scatter",
    "index_select_backward", "expand_backward",
)
zero_cost(
    "copy",  # fills write memory: bytes counted, no arithmetic
    "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "fill_", "zero_", "new_zeros",
    "new_ones", "new_full", "arange", "linspace", "rand", "randn", "rand_like", "randn_like", "randint",
    "normal_", "uniform_", "bernoulli", "bernoulli_", "eye", "_foreach_zero_",
)
zero_cost(
    "alloc",  # uninitialized allocations and metadata: no bytes moved
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "scalar_tensor",
    "_local_scalar_dense", "tensor", "_assert_async", "_assert_tensor_metadata", "sym_size",
    "sym_numel", "sym_stride", "set_", "resize_", "record_stream", "item", "is_nonzero", "equal",
)

# Multi-output ops whose extra outputs exist only for backward (norm statistics, pool indices,
# dropout masks, attention log-sum-exp): only the first output counts as written. Without this the
# same forward would write different bytes on CPU (empty statistics in inference) and meta.
# F.adaptive_avg_pool2d(x, 1) (and nn.AdaptiveAvgPool2d(1)) dispatches to aten::mean over dims
# [-1, -2] with keepdim: the counter files those calls under this name, apart from a user's own
# mean, because the tools that see Python-level calls count the pool (1 per input element).
POOL_MEAN = "aten::mean[adaptive_avg_pool 1x1]"


def is_pool_mean(name: str, args: tuple) -> bool:
    return name == "aten::mean" and len(args) > 2 and args[2] is True and list(args[1]) == [-1, -2]


PRIMARY_OUTPUT_ONLY = frozenset(
    f"aten::{op}"
    for op in (
        "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
        "native_layer_norm", "native_group_norm", "_fused_rms_norm", "native_dropout",
        "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
        "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
        "_scaled_dot_product_flash_attention_for_cpu",
    )
)


def lookup(op: str) -> tuple[str, Rule | None]:
    """Classify an aten schema name: ("rule", rule) / ("view"|"copy"|"alloc", None) / ("unknown", None).
    Bytes are counted for "rule", "copy" and "unknown" ops, never for "view" and "alloc"."""
    r = RULES.get(op)
    if r is not None:
        return "rule", r
    kind = ZERO_COST.get(op)
    if kind is not None:
        return kind, None
    return "unknown", None
