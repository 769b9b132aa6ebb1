"""The native count of a language-model phase: every forward pass counted, per layer and in total.

``count_phase(model, phase)`` runs each ``Step`` of the phase under the native counter
(``reconcile.counter.count``) with a fresh cache filled to the step's length (``inputs``), so
each step is counted exactly as transformers runs it, on whatever device the model is on (meta:
free). Guarantees:

- ``StepCount.native`` is the full ``NativeCount`` of that forward (per module, per op); the
  phase's totals are the exact sums of its steps' totals;
- the byte split adds up: ``bytes_read + bytes_written = weight_bytes + kv_read + kv_appended +
  other_bytes`` (``other_bytes``: activations and the copies the eager forward makes, among them
  ``DynamicCache``'s ``torch.cat`` of the whole cache every step);
- ``decode_cost`` (``Polynomial`` per quantity, in N) is fitted exactly from two counted decode
  steps and checked against every other counted one (and one more, counted for the check); it
  says ``holds=False`` rather than hide a step it does not predict (a sliding window's edge).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Mapping

from reconcile.llm import inputs as llm_inputs
from reconcile.llm.kv import KVCache, kv_cache
from reconcile.llm.phases import Phase, Step
from reconcile.records import NativeCount

# the quantities a step reports, each an exact integer
QUANTITIES = ("macs", "flops", "bytes_read", "bytes_written", "weight_bytes", "kv_read", "kv_appended",
              "other_bytes", "params_touched")


@dataclass(frozen=True)
class StepCount:
    """One counted forward pass."""

    step: Step
    native: NativeCount
    kv_read: int  # bytes of keys and values the cache held before the step (every layer reads them)
    kv_appended: int  # bytes of the keys and values the step adds to the cache
    params_touched: int  # parameters whose values the step reads (an embedding: the rows looked up)

    @property
    def totals(self) -> dict[str, int]:
        t = self.native.totals
        weight = sum(r.param_bytes_read for r in self.native.rows)
        other = t["bytes_read"] + t["bytes_written"] - weight - self.kv_read - self.kv_appended
        return {"macs": t["macs"], "flops": t["flops"], "bytes_read": t["bytes_read"],
                "bytes_written": t["bytes_written"], "weight_bytes": weight, "kv_read": self.kv_read,
                "kv_appended": self.kv_appended, "other_bytes": other, "params_touched": self.params_touched}


@dataclass(frozen=True)
class Polynomial:
    """``coefficients[i] * x**i`` summed: a quantity as an exact function of N (or P), with the
    counted points it was checked against: ``checks`` holds (x, counted, predicted)."""

    variable: str
    coefficients: tuple[Fraction, ...]
    checks: tuple[tuple[int, int, Fraction], ...] = ()

    def __call__(self, x: int) -> Fraction:
        return sum((c * x ** i for i, c in enumerate(self.coefficients)), Fraction(0))

    @property
    def holds(self) -> bool:
        return all(Fraction(c) == p for _, c, p in self.checks)


@dataclass(frozen=True)
class PhaseCount:
    """A phase of one model, counted."""

    model: str
    phase: Phase
    steps: tuple[StepCount, ...]
    kv: KVCache  # the cache after the phase (its longest length)
    decode_cost: Mapping[str, Polynomial] = field(default_factory=dict)  # per quantity, in N

    @property
    def totals(self) -> dict[str, int]:
        out: Counter = Counter()
        for s in self.steps:
            out.update(s.totals)
        return {q: out[q] for q in QUANTITIES}

    @property
    def tokens(self) -> int:
        """Tokens processed (all sequences): the divisor of ``per_token``."""
        return self.phase.batch * self.phase.tokens

    @property
    def per_token(self) -> dict[str, Fraction]:
        return {q: Fraction(v, self.tokens) for q, v in self.totals.items()}

    def layers(self, depth: int = 2) -> dict[str, dict[str, int]]:
        """Per module at ``depth`` (inclusive of its children), summed over the steps."""
        out: dict[str, Counter] = {}
        for s in self.steps:
            inc = s.native.inclusive()
            for r in s.native.rows:
                if r.depth == depth or (r.depth < depth and not any(
                        c.name.startswith(r.name + ".") for c in s.native.rows if r.name)):
                    if r.depth <= depth:
                        d = inc[r.name]
                        out.setdefault(r.name, Counter()).update(
                            {k: d[k] for k in ("macs", "flops", "bytes_read", "bytes_written", "params")})
        return {k: dict(v) for k, v in out.items()}


def count_step(model: Any, step: Step, name: str = "model") -> StepCount:
    """Count one forward of ``step`` (a fresh cache filled to ``step.past``)."""
    from reconcile.counter import count

    args, cache = llm_inputs.step_inputs(model, step)
    kv_read = _cache_bytes(cache)
    d = llm_inputs.dims(model)
    element = next((p.element_size() for p in model.parameters() if p.is_floating_point()), 4)
    appended = d.layers * step.batch * step.tokens * 2 * d.kv_heads * d.head_dim * element
    native = count(model, args, name=name, mode="eval")
    return StepCount(step, native, kv_read, appended, _params_touched(model, native, step))


def count_phase(model: Any, phase: Phase, name: str = "model", fit: bool = True) -> PhaseCount:
    """Count every forward of ``phase`` on ``model`` (in eval mode; restored afterwards)."""
    llm_inputs.check_causal_lm(model, name)
    steps = tuple(count_step(model, s, name) for s in phase.steps())
    d = llm_inputs.dims(model)
    dtype = str(llm_inputs.model_dtype(model)).removeprefix("torch.")
    kv = kv_cache(d, phase.longest, dtype, phase.batch)
    cost = _decode_cost(model, phase, steps, name) if fit and phase.kind != "prefill" else {}
    return PhaseCount(name, phase, steps, kv, cost)


def _cache_bytes(cache: Any) -> int:
    n = 0
    for layer in getattr(cache, "layers", ()):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None and hasattr(t, "numel"):
                n += t.numel() * t.element_size()
    return n


def _params_touched(model: Any, native: NativeCount, step: Step) -> int:
    """Parameters of every module that ran; an embedding reads only the rows it looks up."""
    from torch import nn

    ran = {r.name for r in native.rows if r.calls}
    n = 0
    for mod_name, mod in model.named_modules():
        if mod_name not in ran:
            continue
        own = sum(p.numel() for p in mod.parameters(recurse=False))
        if isinstance(mod, nn.Embedding):
            own = min(own, step.batch * step.tokens * mod.embedding_dim)
        n += own
    return n


def fit(points: Iterable[tuple[int, int]], degree: int) -> tuple[Fraction, ...]:
    """The polynomial of ``degree`` through the first ``degree + 1`` points, exactly (Lagrange)."""
    pts = list(points)[: degree + 1]
    coeffs = [Fraction(0)] * (degree + 1)
    for i, (xi, yi) in enumerate(pts):
        basis = [Fraction(1)]
        denom = Fraction(1)
        for j, (xj, _) in enumerate(pts):
            if j == i:
                continue
            basis = [Fraction(0)] + basis  # times x
            for k in range(len(basis) - 1):
                basis[k] -= xj * basis[k + 1]
            denom *= xi - xj
        for k, b in enumerate(basis):
            coeffs[k] += yi * b / denom
    while len(coeffs) > 1 and coeffs[-1] == 0:
        coeffs.pop()
    return tuple(coeffs)


def _decode_cost(model: Any, phase: Phase, steps: tuple[StepCount, ...], name: str) -> dict[str, Polynomial]:
    """Each quantity of a decode step as a + b N: fitted on two counted decode steps, checked on
    the others and on one more step counted for the check."""
    decodes = {s.step.past: s for s in steps if s.step.past > 0 or phase.kind == "decode"}
    ns = sorted(decodes)
    logits = 1 if phase.kind == "generate" else 0
    first = ns[0] if ns else phase.prompt
    want = [first, first + 1, first + 2] if len(ns) < 3 else ns
    for n in want:
        if n not in decodes:
            decodes[n] = count_step(model, Step(phase.batch, 1, n, logits), name)
    ns = sorted(decodes)
    out = {}
    for q in QUANTITIES:
        pts = [(n, decodes[n].totals[q]) for n in ns]
        coeffs = fit(pts, 1)
        poly = Polynomial("N", coeffs)
        out[q] = Polynomial("N", coeffs, tuple((n, v, poly(n)) for n, v in pts[2:]))
    return out
