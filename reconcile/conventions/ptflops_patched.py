"""ptflops 0.7.5's patched functionals and tensor ops (``patch_functional``, ``patch_tensor_ops``,
``count_functional=True``): what each patched Python name counts of a module's own work, whole
batch and in no row, from the native record (a torch.nn layer whose forward is one patched call,
or the Python-level calls a user-written forward made). ``conventions.ptflops`` adds these to its
total. Imports no torch."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping

from reconcile.conventions.base import Number, call_arg, n_in, numel, whole
from reconcile.conventions.ptflops_shared import NN, call_shape, types
from reconcile.counter.formulas import flops_of
from reconcile.records import ModuleRow, TensorMeta, TorchCall

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


def family(fname: str) -> str:
    if "pool" in fname:
        return "pool"
    return _FAMILY.get(fname, "formula")


def label(fname: str) -> str:
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
        fname = _F_BY_MODULE[fwd]
        # a subclass whose own forward reshapes the input before the call (timm's MaxPool2dSame
        # pads it): the function counts what it was given, as the recorded calls hold it
        given = [c for c in row.torch_calls if c.func == fname]
        if fwd != row.attrs.get("class") and given and all(_tensor(call_arg(c, 0, "input")) for c in given):
            count = sum(numel(_tensor(call_arg(c, 0, "input"))) for c in given)
        else:
            count = sum(n_in(c) for c in row.call_records)
        return [Caught(fname, count, row.macs, row.flops, tuple(row.ops))]
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


def _numel_count(call: TorchCall) -> tuple[Number, dict]:
    """``_numel_functional_flops_hook``: input.numel()."""
    return numel(_tensor(call_arg(call, 0, "input")) or ()), {}


def _interpolate_call(call: TorchCall) -> tuple[Number, dict]:
    x = _tensor(call_arg(call, 0, "input")) or ()
    return _interpolate_count({"size": call_arg(call, 1, "size"), "scale_factor": call_arg(call, 2, "scale_factor")}, x), {}


def _matmul_count(call: TorchCall) -> tuple[Number, dict]:
    """``_matmul_tensor_flops_hook``: prod(input.shape) x other.shape[-1]."""
    a, b = _tensor(call_arg(call, 0, "input")) or (), _tensor(call_arg(call, 1, "other")) or (1,)
    return numel(a) * b[-1], {}


def _addmm_count(call: TorchCall) -> tuple[Number, dict]:
    """``_addmm_tensor_flops_hook``: prod(mat1.shape) x mat2.shape[-1] + prod(input.shape) unless beta == 0."""
    inp = _tensor(call_arg(call, 0, "input")) or ()
    m1, m2 = _tensor(call_arg(call, 1, "mat1")) or (), _tensor(call_arg(call, 2, "mat2")) or (1,)
    beta = dict(call.kwargs).get("beta", 1)
    added = numel(inp) if beta != 0 else 0
    return numel(m1) * m2[-1] + added, {"bias": added}


def _elementwise_count(call: TorchCall) -> tuple[Number, dict]:
    """``_elementwise_tensor_flops_hook``: the larger size per dimension, dimensions aligned from the
    left (not numpy broadcasting); 1 when neither operand is a tensor."""
    a, b = _tensor(call_arg(call, 0, "input")), _tensor(call_arg(call, 1, "other"))
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

