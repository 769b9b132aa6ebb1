"""The roofline per phase of a language model: prefill and decode on named hardware, decode's
tokens-per-second upper bound, and the batch size where a decode step turns compute-bound.

Pure arithmetic on a counted phase (``reconcile.llm.count.PhaseCount``) and ``Platform`` records;
no torch. Guarantees and assumptions:

- each forward's bound is the per-layer roofline of its native count (``reconcile.roofline.core``:
  every layer max(FLOPs / peak, bytes / bandwidth), summed), on the peak of the model's dtype
  (count a bf16 model for the GPUs' bf16 tensor-core peaks);
- a decode step's bytes have a floor no implementation can go under: the weights it reads (an
  embedding only the rows it looks up), the
  KV cache it reads and the keys and values it appends (``weight_bytes + kv_read + kv_appended``
  of the step). The tokens-per-second upper bound is batch / max(floor / bandwidth, FLOPs / peak);
  the eager forward's own bytes (activations, ``DynamicCache``'s copy of the whole cache on every
  step) are shown beside it, as counted;
- the batch size where a decode step at KV length N turns compute-bound, from a step counted at
  batch 1 (FLOPs f, weight bytes W, cache bytes per sequence k = kv read + appended): B sequences
  do B f FLOPs and move W + B k bytes (the weights read once for the batch), compute-bound when
  B f / peak >= (W + B k) / bandwidth, i.e. B >= W / (f x bandwidth / peak - k): the smallest
  integer B, or none when f / k is below the ridge (the cache alone keeps the step memory-bound
  at any batch). Activations are left out of this (they are per sequence and small at decode).
  ``critical_batch_weights`` is the same with k = 0, the usual estimate (ridge x 2 bytes per
  parameter / 2 FLOPs per parameter): right for short caches, wrong for long ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from reconcile.roofline.core import Roofline, roofline as layer_roofline
from reconcile.roofline.hardware import Platform


@dataclass(frozen=True)
class StepBound:
    """One forward of the phase on one platform."""

    label: str
    tokens: int  # tokens it processes (batch x new tokens)
    flops: int
    bytes: int  # as counted (every op's reads and writes)
    floor_bytes: int  # weights read + KV read + KV appended
    time_s: float  # sum of the per-layer bounds, as counted
    floor_time_s: float  # max(FLOPs / peak, floor bytes / bandwidth)
    bound: str  # "memory" or "compute", of the floor

    @property
    def intensity(self) -> Fraction:
        return Fraction(self.flops, self.bytes) if self.bytes else Fraction(0)

    @property
    def tokens_per_s(self) -> float:
        """Upper bound: tokens / the floor's time."""
        return self.tokens / self.floor_time_s if self.floor_time_s else math.inf


@dataclass(frozen=True)
class PhaseOnPlatform:
    platform: Platform
    steps: tuple[StepBound, ...]
    critical_batch: int | None  # decode: the smallest batch that is compute-bound (None: never)
    critical_batch_weights: int | None = None  # the same with the cache's bytes left out (the usual estimate)

    @property
    def time_s(self) -> float:
        return sum(s.time_s for s in self.steps)

    @property
    def floor_time_s(self) -> float:
        return sum(s.floor_time_s for s in self.steps)


@dataclass(frozen=True)
class PhaseRoofline:
    phase: str
    dtype: str  # the compute dtype that picked the peaks
    layers: tuple[Roofline, ...]  # per step: the per-layer roofline of its native count
    platforms: tuple[PhaseOnPlatform, ...]


def weight_floor(step_count: Any) -> int:
    """Bytes of the parameters the step must read, each tensor once: the whole tensor when any op
    outside an embedding read it (a tied table read by the output layer included), else the rows
    an embedding looked up (batch x new tokens of its ``embedding_dim``-wide rows), else none."""
    native, step = step_count.native, step_count.step
    rows = {r.name: r for r in native.rows}
    total = 0
    for p in native.params:
        owners = [rows.get(n.rsplit(".", 1)[0] if "." in n else "") for n in (p.name, *p.aliases)]
        owners = [r for r in owners if r is not None and r.calls]
        if any(r.param_bytes_read and "Embedding" not in r.type for r in owners):
            total += p.nbytes
        elif any("Embedding" in r.type for r in owners):
            emb = next(r for r in owners if "Embedding" in r.type)
            dim = emb.attrs.get("embedding_dim") or p.numel
            total += min(p.numel, step.batch * step.tokens * dim) * (p.nbytes // max(p.numel, 1))
    return total


def floor_bytes(step_count: Any) -> int:
    t = step_count.totals
    return weight_floor(step_count) + t["kv_read"] + t["kv_appended"]


def critical_batch(flops: int, weight_bytes: int, kv_bytes: int, peak: float, bandwidth: float) -> int | None:
    """Smallest B with B f / peak >= (W + B k) / bandwidth (see the module docstring); None if no B."""
    # exact in rationals: peak and bandwidth as given (floats are exact binary fractions)
    ratio = Fraction(bandwidth) / Fraction(peak)
    per_seq = flops * ratio - kv_bytes  # B x per_seq >= W
    if per_seq <= 0:
        return None
    return max(1, math.ceil(Fraction(weight_bytes) / per_seq))


def phase_roofline(phase_count: Any, platforms: Sequence[Platform]) -> PhaseRoofline:
    """Every forward of the phase on every platform (see the module docstring)."""
    layers = tuple(layer_roofline(s.native, platforms) for s in phase_count.steps)
    out = []
    for i, pl in enumerate(platforms):
        steps = []
        for s, rf in zip(phase_count.steps, layers):
            t = s.totals
            fb = floor_bytes(s)
            tc, tm = t["flops"] / pl.peak_flops, fb / pl.bandwidth
            steps.append(StepBound(s.step.label, s.step.batch * s.step.tokens, t["flops"],
                                   t["bytes_read"] + t["bytes_written"], fb, rf.platforms[i].total_time_s,
                                   max(tc, tm), "compute" if tc >= tm else "memory"))
        crit = crit_w = None
        decodes = [s for s in phase_count.steps if s.step.past > 0 and s.step.tokens == 1]
        if decodes:
            last = decodes[-1]
            t = last.totals
            b = last.step.batch
            # per sequence: FLOPs and cache bytes scale with the batch, the weights do not
            w = weight_floor(last)
            crit = critical_batch(t["flops"] // b, w, (t["kv_read"] + t["kv_appended"]) // b, pl.peak_flops,
                                  pl.bandwidth)
            crit_w = critical_batch(t["flops"] // b, w, 0, pl.peak_flops, pl.bandwidth)
        out.append(PhaseOnPlatform(pl, tuple(steps), crit, crit_w))
    dtype = layers[0].compute_dtype if layers else ""
    return PhaseRoofline(phase_count.phase.text, dtype, layers, tuple(out))


def platforms_for(phase_count: Any, hardware: str | Sequence[str]) -> list[Platform]:
    """Named hardware at the peak of the model's dtype (its first step's parameters)."""
    from reconcile.roofline import platforms

    native = phase_count.steps[0].native
    dtypes = {p.dtype for p in native.params}
    dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    return platforms(hardware, dtype)
