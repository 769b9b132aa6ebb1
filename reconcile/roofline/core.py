"""The roofline of a native count: per layer FLOPs, bytes moved, intensity, and on each platform
the bound (memory or compute), the roof it used (DRAM or the last-level cache) and the time lower
bound.

Guarantees:
- Rows are the native count's exclusive per-module rows (or, with ``ops``, per module and aten
  op) that did any work: they sum exactly to the count's totals (exact integers; only times and
  rates are floats).
- Bytes are the native counter's: every tensor an op reads or writes, once per op, at its dtype;
  parameters read once per op that uses them; views and allocations cost nothing; an in-place op
  reads and writes its tensor. Assumed: no reuse between ops.
- The roofs. Without a cache figure (named hardware): every byte at DRAM bandwidth. With one
  (local; custom with ``cache=``), of capacity C: every byte still passes through the cache, at
  most at its bandwidth, and only the bytes that cannot be cache-resident must cross DRAM: per op
  call, its reads beyond C (at most C of its inputs can be in the cache when it starts) and its
  writes beyond C (at most C of its outputs can stay there, not yet written back, when it ends).
  The memory term is the larger of bytes / cache bandwidth and those DRAM bytes / DRAM bandwidth,
  and the roof named is the one that set it: a layer whose working set fits the cache is on the
  ``cache`` roof; a large one on ``dram`` with up to 2C bytes per call less than it moves. This is
  a lower bound on any schedule; "every byte from DRAM" is not (a stream over twice the cache ran
  here well above DRAM bandwidth).
- ``weight_dtype`` is a what-if: parameter bytes scaled to that dtype's size, activations and
  FLOPs unchanged, the peak still chosen by the compute (activation) dtype.
- A layer's time bound is max(FLOPs / peak, bytes / its roof's bandwidth); the model's is their
  sum (layers run one after another), next to the naive max(total FLOPs / peak, summed memory
  times).
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
    # bytes one call of its largest op touches (reads + writes; an in-place op's written tensor is
    # one it read, so counted once): what must fit a cache for the layer to run from it
    working_set: int = 0
    # per op: (bytes read, bytes written, calls), summed over calls (read after the what-if):
    # what the cache roof needs to know which bytes must cross DRAM
    traffic: tuple[tuple[int, int, int], ...] = ()

    def dram_floor(self, cache_bytes: int) -> int:
        """Bytes that must cross DRAM with a cache of ``cache_bytes``: per op call, reads beyond
        the cache (inputs it cannot have held at the start) and writes beyond it (outputs it
        cannot still hold at the end). Calls summed: sum over calls of (r - C)+ = (R - calls * C)+
        for alike calls."""
        return sum(max(0, r - n * cache_bytes) + max(0, w - n * cache_bytes) for r, w, n in self.traffic)

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
    bound: str  # "memory" (the memory term is the larger) or "compute"
    time_s: float  # max(FLOPs / peak, memory term): the memory term as ``memory_time`` gives it
    attainable: float  # FLOP/s: min(peak, bandwidth * I)
    roof: str = "dram"  # which memory roof set the memory term: "cache" or "dram" (see the module doc)


@dataclass(frozen=True)
class OnPlatform:
    platform: Platform
    times: tuple[LayerTime, ...]  # one per layer, in the same order
    total_time_s: float  # sum of the layers' bounds
    naive_time_s: float  # max(total FLOPs / peak, sum of the layers' bytes / their roof's bandwidth)


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

    def make(row: ModuleRow, op: str | None, fam: str, flops: int, read: int, written: int, pread: int,
             ws: int, ops: Sequence[str]) -> Layer:
        scaled = pread * num // den
        traffic = []
        for o in ops:
            r, w, p = row.op_bytes.get(o, (0, 0, 0))
            if r or w:
                traffic.append((r - p + p * num // den, w, _op_calls(row, o)))
        return Layer(row.name, row.type, op, fam, flops, read - pread + scaled, written, scaled, ws, tuple(traffic))

    out: list[Layer] = []
    for row in native.rows:
        if not (row.flops or row.bytes_read or row.bytes_written):
            continue
        ops = _dominant_ops(row)
        sets = {op: working_set(op, *row.op_bytes.get(op, (0, 0, 0)), calls=_op_calls(row, op), num=num, den=den)
                for op in ops}
        if not per_op:
            out.append(make(row, None, family(row.type, ops), row.flops, row.bytes_read, row.bytes_written,
                            row.param_bytes_read, max(sets.values(), default=0), ops))
            continue
        for op in ops:
            r, w, p = row.op_bytes.get(op, (0, 0, 0))
            f = flops_of(dict(row.op_components.get(op, {})))
            if f or r or w:
                out.append(make(row, op, family("", [op]), f, r, w, p, sets[op], [op]))
    return tuple(out)


def in_place(op: str) -> bool:
    """``aten::relu_``, ``aten::add_``, ``aten::__iand__``: an op that writes a tensor it reads
    (the counter counts that tensor among its reads). ``aten::_foo``, ``aten::__and__`` are not."""
    if not op.startswith("aten::"):
        return False
    name = op[len("aten::"):]
    if name.startswith("__") and name.endswith("__"):
        return name.startswith("__i")
    return name.endswith("_")


def working_set(op: str, read: int, written: int, pread: int, *, calls: int = 1, num: int = 1, den: int = 1) -> int:
    """Bytes one call of ``op`` touches: reads + writes, an in-place op's writes not again (they
    land on a tensor it read); parameter bytes scaled by the weight-dtype what-if (num / den).
    Calls are assumed alike (a module called twice on the same shapes): the total over calls."""
    read = read - pread + pread * num // den
    touched = read if in_place(op) else read + written
    return -(-touched // max(calls, 1))


def _op_calls(row: ModuleRow, op: str) -> int:
    # opaque modules (``module::X`` rows) run once per module call
    return row.ops.get(op) or row.zero_cost_ops.get(op) or row.unknown_ops.get(op) or row.calls or 1


def memory_time(layer: Layer, platform: Platform) -> tuple[float, str]:
    """(seconds, roof): bytes / DRAM bandwidth without a cache figure; with one, the larger of
    bytes / cache bandwidth and the DRAM floor / DRAM bandwidth, and which of the two set it."""
    if not platform.has_cache_roof:
        return layer.bytes / platform.bandwidth, "dram"
    t_cache = layer.bytes / (platform.cache_bandwidth or 1.0)
    t_dram = layer.dram_floor(platform.cache_bytes or 0) / platform.bandwidth
    return (t_dram, "dram") if t_dram > t_cache else (t_cache, "cache")


def on_platform(rows: Sequence[Layer], platform: Platform) -> OnPlatform:
    pi = platform.peak_flops
    times = []
    t_memory_total = 0.0
    for la in rows:
        t_memory, roof = memory_time(la, platform)
        t_compute = la.flops / pi
        t_memory_total += t_memory
        t = max(t_compute, t_memory)
        times.append(LayerTime("compute" if t_compute >= t_memory else "memory", t, la.flops / t if t else 0.0,
                               roof))
    flops = sum(la.flops for la in rows)
    return OnPlatform(platform, tuple(times), sum(t.time_s for t in times), max(flops / pi, t_memory_total))


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
    pl = plat.platform
    rows = [(la, t) for la, t in zip(result.layers, plat.times) if la.module == module]
    if all(t.bound == "compute" for _la, t in rows):
        return "compute-bound: it beat the measured peak, which is below what this kernel reaches (or FLOPs overcounted)"
    ws = max(la.working_set for la, _t in rows)
    mib = (pl.cache_bytes or 0) / 2**20
    if any(t.roof == "cache" for _la, t in rows):
        return (f"memory-bound on the cache roof (working set {ws:,} B, cache {mib:.0f} MiB): it beat the "
                "measured cache bandwidth, which is too low, or bytes are overcounted")
    if pl.has_cache_roof:
        return (f"memory-bound on the DRAM roof (working set {ws:,} B, cache {mib:.0f} MiB): it moved fewer "
                "bytes through DRAM than the floor, so the cache holds more than its size says, the DRAM "
                "figure is too low, or bytes are overcounted")
    if pl.cache_bytes and ws <= pl.cache_bytes:
        return (f"memory-bound, working set {ws:,} B fits the {mib:.0f} MiB last-level cache: its data was "
                "(partly) cache-resident, which a DRAM-only roof does not model")
    return "memory-bound on the DRAM roof: the bandwidth figure is too low, or bytes are overcounted"


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


def tightest(result: Roofline, index: int) -> tuple[str, float, float] | None:
    """The module whose bound comes closest to (or beyond) its measured time: (module, bound,
    measured) with the largest bound / measured, on this machine's platforms only."""
    if result.measured is None or not result.platforms[index].platform.here:
        return None
    pairs = [(mod, bound, result.measured.module_s[mod]) for mod, bound in module_bounds(result, index).items()
             if result.measured.module_s.get(mod)]
    return max(pairs, key=lambda x: (x[1] / x[2], x[0]), default=None)
