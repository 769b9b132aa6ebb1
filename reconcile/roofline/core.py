"""The roofline of a native count: per layer FLOPs, bytes moved, intensity, and on each platform
the bound (memory or compute) and the time lower bound.

Guarantees:
- Rows are the native count's exclusive per-module rows (or, with ``ops``, per module and aten
  op) that did any work: they sum exactly to the count's totals (exact integers; only times and
  rates are floats).
- Bytes are the native counter's: every tensor an op reads or writes, once per op, at its dtype;
  parameters read once per op that uses them; views and allocations cost nothing; an in-place op
  reads and writes its tensor. Assumed: no reuse between ops (each op's operands come from DRAM
  and its results go back), which is what a DRAM-bandwidth roof needs.
- ``weight_dtype`` is a what-if: parameter bytes scaled to that dtype's size, activations and
  FLOPs unchanged, the peak still chosen by the compute (activation) dtype.
- A layer's time bound is max(FLOPs / peak, bytes / bandwidth); the model's is their sum (layers
  run one after another), next to the naive max(total FLOPs / peak, total bytes / bandwidth).
No torch import: this works on the records alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Mapping, Sequence

from reconcile.counter.formulas import flops_of
from reconcile.errors import ReconcileError
from reconcile.records import ModuleRow, NativeCount
from reconcile.roofline.hardware import Platform

DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1}

FAMILIES = ("conv", "linear", "attention/matmul", "norm", "elementwise/activation", "pool", "other")

# module class name fragments -> family, checked in order; then the dominant aten op decides
_TYPE_FAMILY = (("Conv", "conv"), ("Linear", "linear"), ("Attention", "attention/matmul"),
                ("Norm", "norm"), ("Pool", "pool"))
_OP_FAMILY = (("convolution", "conv"), ("addmm", "linear"), ("linear", "linear"),
              ("scaled_dot_product", "attention/matmul"), ("bmm", "attention/matmul"),
              ("matmul", "attention/matmul"), ("aten::mm", "attention/matmul"), ("softmax", "attention/matmul"),
              ("_norm", "norm"), ("pool", "pool"), ("aten::mean[", "pool"), ("embedding", "other"),
              ("module::", "other"))


@dataclass(frozen=True)
class Layer:
    """One row: a module's own work, or one aten op of it."""

    module: str  # named_modules() name, root ""
    type: str  # module class name
    op: str | None  # aten op (rows per op), else None
    family: str
    flops: int
    bytes_read: int
    bytes_written: int
    param_bytes: int  # of bytes_read: parameter bytes (after the weight-dtype what-if)

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> Fraction | None:
        """FLOPs per byte moved."""
        return Fraction(self.flops, self.bytes) if self.bytes else None

    @property
    def label(self) -> str:
        name = self.module or "(model)"
        return f"{name} {self.op}" if self.op else name


@dataclass(frozen=True)
class LayerTime:
    bound: str  # "memory" (I < ridge) or "compute"
    time_s: float  # max(FLOPs / peak, bytes / bandwidth)
    attainable: float  # FLOP/s: min(peak, bandwidth * I)


@dataclass(frozen=True)
class OnPlatform:
    platform: Platform
    times: tuple[LayerTime, ...]  # one per layer, in the same order
    total_time_s: float  # sum of the layers' bounds
    naive_time_s: float  # max(total FLOPs / peak, total bytes / bandwidth)


@dataclass(frozen=True)
class Measured:
    """Per module: best measured time of its own work (CPU, real tensors, hooks), and the best
    whole forward without hooks."""

    module_s: Mapping[str, float]
    total_s: float
    repeat: int


@dataclass(frozen=True)
class Roofline:
    model: str
    input_shapes: tuple[tuple[int, ...], ...]
    compute_dtype: str  # picks the peak
    param_dtype: str | None  # parameters' dtype as counted
    weight_dtype: str | None  # the what-if, or None
    per_op: bool
    layers: tuple[Layer, ...]
    platforms: tuple[OnPlatform, ...]
    measured: Measured | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def flops(self) -> int:
        return sum(la.flops for la in self.layers)

    @property
    def bytes_read(self) -> int:
        return sum(la.bytes_read for la in self.layers)

    @property
    def bytes_written(self) -> int:
        return sum(la.bytes_written for la in self.layers)

    @property
    def intensity(self) -> Fraction | None:
        moved = self.bytes_read + self.bytes_written
        return Fraction(self.flops, moved) if moved else None


def family(type_name: str, ops: Sequence[str]) -> str:
    """A layer family for the per-family picture: by module class, else by its dominant op."""
    for frag, fam in _TYPE_FAMILY:
        if frag in type_name:
            return fam
    for op in ops:
        for frag, fam in _OP_FAMILY:
            if frag in op:
                return fam
    return "elementwise/activation" if ops else "other"


def _dominant_ops(row: ModuleRow) -> list[str]:
    names = set(row.op_bytes) | set(row.op_components)
    return sorted(names, key=lambda op: (-flops_of(dict(row.op_components.get(op, {}))),
                                         -sum(row.op_bytes.get(op, (0, 0, 0))[:2]), op))


def _param_scale(native: NativeCount, weight_dtype: str | None) -> tuple[str | None, int, int]:
    """(parameter dtype, numerator, denominator): parameter bytes are scaled by num / den."""
    dtypes = {p.dtype for p in native.params}
    param_dtype = dtypes.pop() if len(dtypes) == 1 else (None if not dtypes else "mixed")
    if weight_dtype is None:
        return param_dtype, 1, 1
    if weight_dtype not in DTYPE_BYTES:
        raise ReconcileError(f"--weight-dtype must be one of {', '.join(DTYPE_BYTES)}, got {weight_dtype!r}")
    if param_dtype not in DTYPE_BYTES:
        raise ReconcileError(f"--weight-dtype needs parameters of one dtype, found {sorted(p.dtype for p in native.params)[:3]}")
    return param_dtype, DTYPE_BYTES[weight_dtype], DTYPE_BYTES[param_dtype]


def layers(native: NativeCount, per_op: bool = False, weight_dtype: str | None = None) -> tuple[Layer, ...]:
    """The rows that did work, in ``named_modules()`` order (ops by descending FLOPs within a module)."""
    _, num, den = _param_scale(native, weight_dtype)

    def make(row: ModuleRow, op: str | None, fam: str, flops: int, read: int, written: int, pread: int) -> Layer:
        scaled = pread * num // den
        return Layer(row.name, row.type, op, fam, flops, read - pread + scaled, written, scaled)

    out: list[Layer] = []
    for row in native.rows:
        if not (row.flops or row.bytes_read or row.bytes_written):
            continue
        ops = _dominant_ops(row)
        if not per_op:
            out.append(make(row, None, family(row.type, ops), row.flops, row.bytes_read, row.bytes_written,
                            row.param_bytes_read))
            continue
        for op in ops:
            r, w, p = row.op_bytes.get(op, (0, 0, 0))
            f = flops_of(dict(row.op_components.get(op, {})))
            if f or r or w:
                out.append(make(row, op, family("", [op]), f, r, w, p))
    return tuple(out)


def on_platform(rows: Sequence[Layer], platform: Platform) -> OnPlatform:
    pi, beta = platform.peak_flops, platform.bandwidth
    times = []
    for la in rows:
        t_compute, t_memory = la.flops / pi, la.bytes / beta
        t = max(t_compute, t_memory)
        times.append(LayerTime("compute" if t_compute >= t_memory else "memory", t, la.flops / t if t else 0.0))
    flops = sum(la.flops for la in rows)
    moved = sum(la.bytes for la in rows)
    return OnPlatform(platform, tuple(times), sum(t.time_s for t in times), max(flops / pi, moved / beta))


def roofline(native: NativeCount, platforms: Sequence[Platform], *, per_op: bool = False,
             weight_dtype: str | None = None, measured: Measured | None = None) -> Roofline:
    """The roofline of ``native`` on each platform (see the module docstring for what is assumed)."""
    param_dtype, _, _ = _param_scale(native, weight_dtype)
    rows = layers(native, per_op, weight_dtype)
    floats = [d for d in native.input_dtypes if d in ("float32", "float16", "bfloat16", "float64")]
    compute = floats[0] if floats else (param_dtype if param_dtype in DTYPE_BYTES else "float32")
    return Roofline(native.model, native.input_shapes, compute, param_dtype, weight_dtype, per_op, rows,
                    tuple(on_platform(rows, p) for p in platforms), measured)


def module_bounds(result: Roofline, index: int) -> dict[str, float]:
    """Per module: the summed time bound of its rows on platform ``index`` (rows per op summed)."""
    out: dict[str, float] = {}
    for la, t in zip(result.layers, result.platforms[index].times):
        out[la.module] = out.get(la.module, 0.0) + t.time_s
    return out


def why_faster(result: Roofline, index: int, module: str) -> str:
    """The likely reason a module ran faster than its bound on a platform of this machine."""
    plat = result.platforms[index]
    rows = [(la, t) for la, t in zip(result.layers, plat.times) if la.module == module]
    moved = sum(la.bytes for la, _t in rows)
    read = sum(la.bytes_read for la, _t in rows)
    t_flops = sum(la.flops for la, _t in rows) / plat.platform.peak_flops
    cache = plat.platform.cache_bytes
    if t_flops >= moved / plat.platform.bandwidth:
        return "compute-bound: it beat the measured peak, which is below what this kernel reaches"
    if cache is not None and read <= cache:
        return (f"memory-bound, reads {read:,} bytes, which fit in the {cache // 2**20} MiB last-level cache: "
                "its data was (partly) cache-resident, which the DRAM roof does not model")
    return "memory-bound beyond the cache: the bandwidth figure is too low, or bytes are overcounted"


def faster_than_bound(result: Roofline, index: int) -> list[tuple[str, float, float]]:
    """Modules whose measured time is below their lower bound on platform ``index``:
    (module, bound, measured). Each is a wrong count, a wrong bound, or data the cache served.
    Only on this machine's platforms (``local``, ``custom``): CPU times say nothing about a GPU's."""
    if result.measured is None or not result.platforms[index].platform.here:
        return []
    out = []
    for mod, bound in module_bounds(result, index).items():
        got = result.measured.module_s.get(mod)
        if got is not None and bound > got:
            out.append((mod, bound, got))
    return out
