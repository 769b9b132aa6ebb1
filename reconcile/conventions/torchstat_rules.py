"""torchstat 0.0.7's per-call rules (``compute_madd.py``, ``compute_flops.py``, ``compute_memory.py``):
one function per layer class, in torchstat's isinstance order, giving its number for one call at
batch 1 and the parts of it that are not multiply-accumulates, with the element counts of its
memory rule. ``conventions.torchstat`` makes rows, totals and sentences from them. Imports no
torch."""

from __future__ import annotations

import struct
from fractions import Fraction
from typing import Callable, Mapping

from reconcile.conventions.base import joined, numel
from reconcile.records import CallRecord, ModuleRow, Phrase

NN = "torch.nn.modules."
MIB = 2**20


def _t(module: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{NN}{module}.{n}" for n in names)


CONV2D = _t("conv", "Conv2d")
CONV_T2D = _t("conv", "ConvTranspose2d")
BN2D = _t("batchnorm", "BatchNorm2d")
MAXPOOL2D = _t("pooling", "MaxPool2d")
AVGPOOL2D = _t("pooling", "AvgPool2d")
RELU = _t("activation", "ReLU", "ReLU6")
RELU_FAMILY = _t("activation", "ReLU", "ReLU6", "ELU", "LeakyReLU")
PRELU = _t("activation", "PReLU")
SOFTMAX = _t("activation", "Softmax")
LINEAR = _t("linear", "Linear")
BILINEAR = _t("linear", "Bilinear")
UPSAMPLE = _t("upsampling", "Upsample")

# dtype name (as TensorMeta spells it) -> numpy itemsize; torchstat multiplies MemRead/MemWrite
# element counts by the itemsize of the leaf's first input
ITEMSIZE = {
    "float64": 8, "float32": 4, "float16": 2, "complex128": 16, "complex64": 8,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}


def _mro(row: ModuleRow) -> tuple[str, ...]:
    return (row.attrs.get("class", ""), *row.attrs.get("bases", ()))


def _isa(row: ModuleRow, classes: tuple[str, ...]) -> bool:
    """``isinstance(module, classes)``, from the class names the native record keeps."""
    return any(c in classes for c in _mro(row))


def flops_of(components: Mapping[str, int]) -> int:
    """Native FLOPs of some components: 2 per MAC plus every other operation (the counter's
    ``formulas.flops_of``, restated so this module does not import the counter)."""
    return sum(v for k, v in components.items() if k != "macs") + 2 * components.get("macs", 0)


def wrap_int32(x: int) -> int:
    return (x + 2**31) % 2**32 - 2**31


def as_float32(x: float) -> Fraction:
    """The float32 nearest ``x`` (numpy's ``np.array([x], dtype=np.float32)``), exactly."""
    return Fraction(struct.unpack("f", struct.pack("f", x))[0])


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ----- one call as torchstat sees it --------------------------------------------------------------


class Call:
    """One call with the shapes torchstat's own batch-1 run gives it: the native shapes with the
    first dimension divided by the native batch (``(B, C, H, W)`` -> ``(1, C, H, W)``)."""

    def __init__(self, record: CallRecord, batch: int) -> None:
        self.record = record
        self.inputs = [_per_sample(t.shape, batch) for t in record.inputs]
        self.outputs = [_per_sample(t.shape, batch) for t in record.outputs]
        self.dtype = record.inputs[0].dtype if record.inputs else "float32"

    @property
    def x(self) -> tuple[int, ...]:
        return self.inputs[0] if self.inputs else (1,)

    @property
    def y(self) -> tuple[int, ...]:
        return self.outputs[0] if self.outputs else (1,)

    @property
    def macs(self) -> int:
        return self.record.components.get("macs", 0)

    @property
    def flops(self) -> int:
        return flops_of(self.record.components)


def _per_sample(shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    if shape and batch > 1 and shape[0] % batch == 0:
        return (shape[0] // batch, *shape[1:])
    return tuple(shape)


# A rule returns torchstat's number for one call at batch 1 and the named parts of it that are not
# multiply-accumulates: [(cause, amount, sentence)]. The rest of the number is the MACs (or, when
# that differs from the native MACs, a "formula" remainder).
Parts = list[tuple[str, int, str]]
Rule = Callable[[ModuleRow, Call], tuple[int, Parts]]


def _apart(k: int, outputs: Phrase) -> Phrase:
    """MAdd's 2k-1 per output: k multiplies and k adds counted apart (one of the adds then taken back)."""
    return Phrase("multiplies and adds counted apart: {k!s} adds per output beside {k!s} multiplies, x {outputs}",
                  {"k": k, "outputs": outputs})


def _conv_madd(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    """compute_Conv2d_madd / compute_ConvTranspose2d_madd: (2 K Cin/g - 1 + bias) per output
    (transposed: per input position and output channel), multiplies and adds apart."""
    a = row.attrs
    kh, kw = _pair(a["kernel_size"])
    g = a["groups"]
    cin = c.x[1]
    cout = c.y[1]
    mul = kh * kw * (cin // g)
    bias = 1 if a.get("has_bias") else 0
    if _isa(row, CONV_T2D):
        positions = c.x[2] * c.x[3] * (cout // g) * g
        where = Phrase("{n} input positions x output channels", {"n": positions})
    else:
        positions = c.y[2] * c.y[3] * (cout // g) * g
        where = Phrase("{n} outputs", {"n": positions})
    value = (2 * mul - 1 + bias) * positions
    parts = [("mac_vs_flop", mul * positions, _apart(mul, where)),
             ("per_output_minus_one", -positions, Phrase("k-1 = {v!s} adds per output, not k = {mul!s}: -1 x {where!s}",
                                                         {"v": mul - 1, "mul": mul, "where": where}))]
    if bias:
        parts.append(("bias", positions, Phrase("one bias add per output: {where!s}", {"where": where})))
    return value, parts


def _conv_flops(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    """compute_Conv2d_flops: K Cin (Cout/g) per output position (the MACs), + Cout per position with bias."""
    a = row.attrs
    kh, kw = _pair(a["kernel_size"])
    b, cin = c.x[0], c.x[1]
    cout, oh, ow = c.y[1], c.y[2], c.y[3]
    active = b * oh * ow
    value = kh * kw * cin * (cout // a["groups"]) * active
    parts: Parts = []
    if a.get("has_bias"):
        value += cout * active
        parts.append(("bias", cout * active, Phrase("one bias add per output: {cout!s} x {active} = {v}", {"cout": cout,
                                                                                                           "active": active, "v": cout * active})))
    return value, parts


def _bn_madd(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    n = numel(c.x[1:])
    return 4 * n, [("norm", 4 * n, Phrase("BatchNorm2d counted as 4 ops per element (affine or not): 4 x {n}",
                                          {"n": n}))]


def _bn_flops(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    n = numel(c.x)
    k = 2 if row.attrs.get("affine") else 1
    return k * n, [("norm", k * n, Phrase("BatchNorm2d counted as {k!s} op{v!s} per element: {k!s} x {n}",
                                          {"k": k, "v": 's' if k > 1 else '', "n": n}))]


def _maxpool_madd(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    kh, kw = _pair(row.attrs["kernel_size"])
    n = numel(c.y[1:])
    v = (kh * kw - 1) * n
    return v, [("pool", v, Phrase("MaxPool2d counted as k-1 = {v!s} compares per output: x {n}", {"v": kh * kw - 1,
                                                                                                  "n": n}))]


def _avgpool_madd(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    kh, kw = _pair(row.attrs["kernel_size"])
    n = numel(c.y[1:])
    v = kh * kw * n
    return v, [("pool", v, Phrase("AvgPool2d counted as k = {v!s} ops per output (k-1 adds, 1 divide): x {n}",
                                  {"v": kh * kw, "n": n}))]


def _pool_flops(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    n = numel(c.x)
    return n, [("pool", n, Phrase("{type!s} counted as 1 op per input element: {n}", {"type": row.type, "n": n}))]


def _relu_madd(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    n = numel(c.x[1:])
    return n, [("activation", n, Phrase("{type!s} counted as 1 op per element: {n}", {"type": row.type, "n": n}))]


def _relu_flops(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    n = numel(c.x)
    return n, [("activation", n, Phrase("{type!s} counted as 1 op per element: {n}", {"type": row.type, "n": n}))]


def _softmax_madd(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    n = numel(c.x[1:])
    v = 3 * n - 1
    return v, [("softmax", v, Phrase("Softmax counted as exp, add, divide over all {n} elements of a sample as one "
                "softmax, whatever its dim: 3n - 1 = {v}", {"n": n, "v": v}))]


def _linear_madd(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    i, o = c.x[1], c.y[1]
    return o * (2 * i - 1), [
        ("mac_vs_flop", o * i, _apart(i, Phrase("{n!s} outputs", {"n": o}))),
        ("per_output_minus_one", -o, Phrase("in-1 = {v!s} adds per output, not {i!s}, and no bias: -1 x {o!s} outputs",
                                            {"v": i - 1, "i": i, "o": o})),
    ]


def _linear_flops(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    return c.x[0] * c.x[1] * c.y[1], []  # batch * in * out: the MACs, bias left out


def _bilinear_madd(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    i1, i2 = c.x[1], c.inputs[1][1] if len(c.inputs) > 1 else 0
    o = c.y[1]
    mul = i1 * i2 + i2
    return o * (2 * mul - 1), [
        ("mac_vs_flop", o * mul, Phrase("multiplies and adds counted apart: {k} adds per output beside {k} multiplies, "
                                         "x {outputs}", {"k": mul, "outputs": Phrase("{n!s} outputs", {"n": o})})),
        ("per_output_minus_one", -o, Phrase("k-1 adds per output, not k: -1 x {o!s} outputs", {"o": o})),
    ]


def _upsample_flops(row: ModuleRow, c: Call) -> tuple[int, Parts]:
    n = c.x[0] * numel(c.y[2:])  # batch * prod(out[0].shape[1:]): the channels are left out
    return n, [("interpolate", n, Phrase("Upsample counted as 1 op per output position, channels left out: "
                "{v!s} = {n}", {"v": joined(list(c.y[2:]), " x ", "1", slot="!s"), "n": n}))]


# compute_madd.compute_madd and compute_flops.compute_flops, in their isinstance order
MADD_RULES: tuple[tuple[tuple[str, ...], Rule], ...] = (
    (CONV2D, _conv_madd), (CONV_T2D, _conv_madd), (BN2D, _bn_madd), (MAXPOOL2D, _maxpool_madd),
    (AVGPOOL2D, _avgpool_madd), (RELU, _relu_madd), (SOFTMAX, _softmax_madd), (LINEAR, _linear_madd),
    (BILINEAR, _bilinear_madd),
)
FLOPS_RULES: tuple[tuple[tuple[str, ...], Rule], ...] = (
    (CONV2D, _conv_flops), (BN2D, _bn_flops), (AVGPOOL2D + MAXPOOL2D, _pool_flops),
    (RELU_FAMILY + PRELU, _relu_flops), (UPSAMPLE, _upsample_flops), (LINEAR, _linear_flops),
)


def rule_for(row: ModuleRow, rules: tuple[tuple[tuple[str, ...], Rule], ...]) -> Rule | None:
    for classes, rule in rules:
        if _isa(row, classes):
            return rule
    return None


# ----- memory: compute_memory.py, element counts at batch 1 ---------------------------------------


def memory_elements(row: ModuleRow, c: Call, trainable: int) -> tuple[int, int, str] | None:
    """(elements read, elements written, what is read) of one call, or None: no memory rule."""
    b = c.x[0]
    n_in, n_out = numel(c.x[1:]), numel(c.y[1:])
    if _isa(row, RELU_FAMILY):
        return b * n_in, b * n_in, "the input"
    if _isa(row, PRELU):
        return b * (n_in + trainable), b * n_in, Phrase("the input and {trainable!s} trainable parameters",
                                                        {"trainable": trainable})
    if _isa(row, CONV2D):
        return b * (n_in + trainable), b * n_out, Phrase("the input and {trainable} trainable parameters",
                                                         {"trainable": trainable})
    if _isa(row, BN2D):
        ch = c.x[1]
        return b * (n_in + 2 * ch), numel(c.x), Phrase("the input and 2 x {ch!s} channel statistics", {"ch": ch})
    if _isa(row, LINEAR):
        return b * (n_in + trainable), numel(c.y), Phrase("the input and {trainable} trainable parameters",
                                                          {"trainable": trainable})
    if _isa(row, AVGPOOL2D + MAXPOOL2D):
        return b * n_in, b * n_out, "the input"
    return None
