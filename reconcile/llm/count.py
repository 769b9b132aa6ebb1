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

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Iterator, Mapping

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


ROUTING_RULE = (
    "experts run as transformers' batched_mm implementation for the count: each token goes through "
    "exactly its top-k experts (num_experts_per_tok), so the experts' total per token is k experts "
    "whatever the router chose; which expert gets which rows depends on the router's values (on meta "
    "there are none), so per-expert rows are not counted apart. The default grouped_mm (aten::_grouped_mm) "
    "fails on meta in float32 (on CPU its rule also counts k experts per token) and the eager loop reads values (nonzero); a counter that runs every "
    "expert on every token reports num_experts / k times the experts' work (all_experts_macs)")


@dataclass(frozen=True)
class Routing:
    """A mixture of experts in a phase count: ``expert_macs`` counted with top-k routing, and what
    running all ``num_experts`` on every token would count (``expert_macs * num_experts / top_k``)."""

    num_experts: int
    top_k: int
    expert_modules: tuple[str, ...]
    expert_macs: int
    rule: str = ROUTING_RULE

    @property
    def all_experts_macs(self) -> Fraction:
        return Fraction(self.expert_macs * self.num_experts, self.top_k)


@dataclass(frozen=True)
class PhaseCount:
    """A phase of one model, counted."""

    model: str
    phase: Phase
    steps: tuple[StepCount, ...]
    kv: KVCache  # the cache after the phase (its longest length)
    decode_cost: Mapping[str, Polynomial] = field(default_factory=dict)  # per quantity, in N
    notes: tuple[str, ...] = ()  # what the reader should know (positions beyond the config's, ...)
    routing: "Routing | None" = None  # a mixture of experts: how tokens were routed in the count
    prefill_cost: Mapping[str, Polynomial] = field(default_factory=dict)  # per quantity, in P
    # the rules of thumb against this count (``llm.rules.explain_phase``), computed where the model is
    rules: tuple = ()
    # the counting tools on this phase's forwards (``llm.phase_tools.PhaseToolRun``), run where the model is
    tools: tuple = ()

    def generation_parts(self, quantity: str = "macs") -> dict[str, Fraction] | None:
        """A generation's total as prefill + (T - 1) a + b (N_1 + ... + N_{T-1}) with one decode
        step = a + b N: the constant part ``(T - 1) a`` and the part that grows with N,
        ``b x sum N`` = ``b x ((T - 1) P + (T - 1)(T - 2) / 2)``, whose last term is quadratic in T.
        None unless a generation with a decode fit that holds."""
        poly = self.decode_cost.get(quantity)
        if self.phase.kind != "generate" or poly is None or not poly.holds:
            return None
        a = poly.coefficients[0]
        b = poly.coefficients[1] if len(poly.coefficients) > 1 else Fraction(0)
        t, p = self.phase.new, self.phase.prompt
        prefill = Fraction(self.steps[0].totals[quantity])
        linear = b * (t - 1) * p
        quadratic = b * Fraction((t - 1) * (t - 2), 2)
        return {"prefill": prefill, "constant": (t - 1) * a, "linear_in_P": linear, "quadratic_in_T": quadratic,
                "total": prefill + (t - 1) * a + linear + quadratic}


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

    def layers(self, depth: int = 3) -> dict[str, dict[str, int]]:
        """Per module at ``depth`` (3: each decoder layer of a transformers causal LM, as
        ``model.layers.0``), inclusive of its children, plus modules with no children above that
        depth and each enclosing module's own work (key: its name): summed over the steps, the
        rows add up to ``totals`` (macs, flops, bytes_read, bytes_written)."""
        keys = ("macs", "flops", "bytes_read", "bytes_written")
        out: dict[str, Counter] = {}
        for s in self.steps:
            inc = s.native.inclusive()
            names = [r.name for r in s.native.rows]
            for r in s.native.rows:
                if r.depth > depth:
                    continue
                parent = r.depth < depth and any(n.startswith(r.name + ".") or (r.name == "" and n) for n in names)
                if parent:  # its own work only (its children are rows of their own)
                    own = {"macs": r.macs, "flops": r.flops, "bytes_read": r.bytes_read,
                           "bytes_written": r.bytes_written}
                else:
                    own = {k: inc[r.name][k] for k in keys}
                if any(own.values()):
                    out.setdefault(r.name, Counter()).update(own)
        return {k: {q: v[q] for q in keys} for k, v in out.items()}


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
    with routed_experts(model) as experts:
        steps = tuple(count_step(model, s, name) for s in phase.steps())
        cost = _decode_cost(model, phase, steps, name) if fit and phase.kind != "prefill" else {}
        pcost = _prefill_cost(model, phase, steps, name) if fit and phase.kind == "prefill" else {}
    d = llm_inputs.dims(model)
    dtype = str(llm_inputs.model_dtype(model)).removeprefix("torch.")
    kv = kv_cache(d, phase.longest, dtype, phase.batch)
    routing = None
    if experts:
        cfg = llm_inputs.text_config(model)
        e = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None) or 0
        k = getattr(cfg, "num_experts_per_tok", None) or 0
        macs = sum(r.macs for st in steps for r in st.native.rows if r.name in experts)
        routing = Routing(int(e), int(k), tuple(experts), macs)
    notes = tuple(n for n in (llm_inputs.beyond_positions(model, phase.longest),) if n)
    return PhaseCount(name, phase, steps, kv, cost, notes, routing, pcost)


@contextlib.contextmanager
def routed_experts(model: Any) -> Iterator[list[str]]:
    """Stacked experts (transformers' ``@use_experts_implementation`` classes) run as
    ``batched_mm`` during the count (``ROUTING_RULE``); the model's own choice restored after.
    Yields the experts modules' names (none: a dense model)."""
    names = [n for n, m in model.named_modules() if hasattr(m, "num_experts") and hasattr(m, "has_gate")
             and hasattr(m, "is_concatenated")]
    setter = getattr(model, "set_experts_implementation", None)
    if not names or not callable(setter):
        yield names
        return
    before = model.get_experts_implementation() if hasattr(model, "get_experts_implementation") else None
    setter("batched_mm")
    try:
        yield names
    finally:
        if before is not None:
            setter(before)


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


def _prefill_cost(model: Any, phase: Phase, steps: tuple[StepCount, ...], name: str) -> dict[str, Polynomial]:
    """Each quantity of the prefill as c0 + c1 P + c2 P^2 (attention's QK and AV are the P^2
    part): fitted on P, P + 1, P + 2 tokens, checked on P + 3 (three more forwards counted)."""
    counted = {phase.prompt: steps[0]}
    for p in (phase.prompt + 1, phase.prompt + 2, phase.prompt + 3):
        counted[p] = count_step(model, Step(phase.batch, p, 0, 0), name)
    ps = sorted(counted)
    out = {}
    for q in QUANTITIES:
        pts = [(p, counted[p].totals[q]) for p in ps]
        poly = Polynomial("P", fit(pts, 2))
        out[q] = Polynomial("P", poly.coefficients, tuple((p, v, poly(p)) for p, v in pts[3:]))
    return out
