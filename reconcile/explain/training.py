"""Training cost explained: the exact count beside the rules of thumb, and training memory beside
what summary tools print. Pure functions over a ``NativeCount`` counted with ``training=True``.

Guarantees: every rule's gap is split into named causes that add up to it exactly (``rule.predicted
== rule.exact + sum(gap amounts)``), computed from the count's own forward and backward records,
never from a rule's output; every summary tool's pass size is ``saved activations + terms``
exactly, with each term named. Imports no torch.

The rules (FLOPs: 2 per MAC plus every other operation, as ``formulas.flops_of``):
- "training = 3 x forward" (calflops) and "backward = 2 x forward" (DeepSpeed's flops profiler):
  every MAC of the forward has one MAC in the input gradient and one in the weight gradient. Both
  rules have the same gap (2F - B = 3F - (F + B)) and the same causes.
- "6 x parameters x tokens" (Kaplan et al. 2020), for models whose first input is token ids:
  each parameter does one multiply-add per token forward (2 FLOPs) and two backward (4 FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Mapping, Sequence

from reconcile.records import GRAD_PARTS, OPTIMIZER_STATE, NativeCount, Phrase, TrainingMemory


@dataclass(frozen=True)
class Gap:
    """One named cause: how much the rule counts more (positive) or less than the exact count."""

    cause: str
    amount: int
    sentence: Phrase  # why, with this model's numbers as values (``reconcile.report.sentences`` renders it)


@dataclass(frozen=True)
class RuleOfThumb:
    id: str  # "3x_forward", "2x_backward", "6nd"
    name: str
    formula: Phrase  # how the rule's number is made, with this model's numbers
    predicted: int
    exact: int
    gaps: tuple[Gap, ...]  # predicted == exact + sum(amounts)


@dataclass(frozen=True)
class PassSize:
    """A summary tool's "forward/backward pass size", as ``saved`` activations plus named terms."""

    tool: str
    rule: str
    bytes: int
    saved: int
    terms: tuple[Gap, ...]  # bytes == saved + sum(amounts)


@dataclass(frozen=True)
class TrainingSummary:
    forward_flops: int
    backward_flops: int
    forward_macs: int
    backward_macs: int
    parts: Mapping[str, int]  # backward MACs per GRAD_PARTS part
    tokens: int | None  # for token models: elements of the token-id input
    rules: tuple[RuleOfThumb, ...]
    memory: TrainingMemory | None = None
    peaks: Mapping[str, int] = field(default_factory=dict)  # optimizer -> peak bytes of one step
    pass_sizes: tuple[PassSize, ...] = ()
    seed: str = ""
    modules: tuple[Mapping[str, object], ...] = ()  # views.training_by_depth rows down to depth 1

    @property
    def training_flops(self) -> int:
        return self.forward_flops + self.backward_flops


def _sum(rows, fn) -> int:
    return sum(fn(r) for r in rows)


def summarize(native: NativeCount) -> TrainingSummary:
    """The training section's data for a count made with ``training=True``."""
    info = native.training
    if info is None:
        raise ValueError("summarize needs a count made with training=True")
    t = info.totals
    f_macs, b_macs = t["forward_macs"], t["backward_macs"]
    f_flops, b_flops = t["forward_flops"], t["backward_flops"]
    three = _three_x(native)
    # the same statement for the backward alone (DeepSpeed's flops profiler): 2F - B = 3F - (F + B)
    two = RuleOfThumb("2x_backward", "backward = 2 x forward (DeepSpeed's flops profiler)",
                      Phrase("2 x {flops} forward FLOPs", {"flops": f_flops}), 2 * f_flops, b_flops, three.gaps)
    rules = [three, two]
    tokens = _tokens(native)
    if tokens:
        rules.append(_six_nd(native, tokens))
    mem = info.memory
    peaks = {o: mem.peak(o) for o in OPTIMIZER_STATE} if mem is not None else {}
    passes = (_torchsummary(native, mem), _torchinfo(native, mem)) if mem is not None and mem.outputs else ()
    from reconcile.views import training_by_depth

    return TrainingSummary(f_flops, b_flops, f_macs, b_macs, {p: t[f"backward_macs_{p}"] for p in GRAD_PARTS},
                           tokens, tuple(rules), mem, peaks, passes, info.seed,
                           tuple(training_by_depth(native, 1)))


# ----- rules of thumb -------------------------------------------------------------------------


def _split(native: NativeCount) -> dict[str, int]:
    """The quantities every rule's causes are made of, summed over modules."""
    rows = [r for r in native.rows if r.backward is not None]
    q: dict[str, int] = {}
    q["NG"] = _sum(rows, lambda r: r.backward.forward_no_grad_macs)
    q["X"] = _sum(rows, lambda r: r.backward.forward_param_macs)
    q["Fm"] = native.training.totals["forward_macs"]
    q["Y"] = q["Fm"] - q["X"] - q["NG"]
    q["Bpw"] = _sum(rows, lambda r: r.backward.param_macs.get("weight", 0))
    q["Bp"] = _sum(rows, lambda r: sum(r.backward.param_macs.values()))
    q["Bm"] = native.training.totals["backward_macs"]
    q["Bact"] = q["Bm"] - q["Bp"]
    q["Fo"] = native.training.totals["forward_flops"] - 2 * q["Fm"]
    q["Bo"] = native.training.totals["backward_flops"] - 2 * q["Bm"]
    q["Acc"] = native.training.totals["backward_flops_accumulate"] - 2 * native.training.totals["backward_macs_accumulate"]
    return q


def _families(native: NativeCount) -> tuple[dict[str, int], dict[str, int]]:
    """Non-MAC components, forward and backward (accumulation left out), summed over modules."""
    fwd: dict[str, int] = {}
    bwd: dict[str, int] = {}
    for r in native.rows:
        for k, v in r.components.items():
            if k != "macs":
                fwd[k] = fwd.get(k, 0) + v
        if r.backward is None:
            continue
        for op, parts in r.backward.op_components.items():
            for part, comps in parts.items():
                if part == "accumulate":
                    continue
                for k, v in comps.items():
                    if k != "macs":
                        bwd[k] = bwd.get(k, 0) + v
    return fwd, bwd


def _three_x(native: NativeCount) -> RuleOfThumb:
    q = _split(native)
    t = native.training.totals
    F, T = t["forward_flops"], t["training_flops"]
    fwd, bwd = _families(native)
    gaps = [
        Gap("no_grad", 4 * q["NG"], Phrase("forward matmuls under no_grad have no backward at all (4 FLOPs per MAC)")),
        Gap("frozen_parameters", 2 * (q["X"] - q["Bpw"]),
            Phrase("weight gradients not computed: frozen parameters (requires_grad=False)")),
        Gap("no_input_gradient", 2 * (q["X"] - (q["Bp"] - q["Bpw"])),
            Phrase("input gradients not computed where the input needs none (the first layer's input)")),
        Gap("attention_operands", 4 * q["Y"] - 2 * q["Bact"],
            Phrase("activation x activation products (attention's QK^T, AV) whose operands need no gradient")),
    ]
    fams = sorted(set(fwd) | set(bwd))
    for k in fams:
        gaps.append(Gap(f"nonmatmul_{k}", 2 * fwd.get(k, 0) - bwd.get(k, 0), _family_text(k, fwd.get(k, 0),
                                                                                  bwd.get(k, 0))))
    gaps.append(Gap("gradient_accumulation", -q["Acc"],
                    Phrase("adding up gradients of tensors used more than once (residual branches, tied weights)")))
    gaps = [g for g in gaps if g.amount]
    assert 3 * F == T + sum(g.amount for g in gaps), "rule gaps must add up"
    return RuleOfThumb("3x_forward", "training = 3 x forward (calflops; every MAC has an input- and a "
                       "weight-gradient MAC)", Phrase("3 x {flops} forward FLOPs", {"flops": F}), 3 * F, T, tuple(gaps))


def _family_text(k: str, f: int, b: int) -> Phrase:
    if not f:
        return Phrase("{family}: backward work with no forward counterpart (an embedding's scatter-add of its gradient)",
                      {"family": k})
    return Phrase("{family}: the backward costs {ratio:.2f}x its forward, not 2x"
                  + (" (bias gradients are sums, filed as reductions)" if k == "bias" else ""),
                  {"family": k, "ratio": Fraction(b, f)})


def _tokens(native: NativeCount) -> int | None:
    if not native.input_dtypes or not native.input_dtypes[0].startswith(("int", "uint")):
        return None
    n = 1
    for d in native.input_shapes[0]:
        n *= d
    return n


def _six_nd(native: NativeCount, tokens: int) -> RuleOfThumb:
    q = _split(native)
    t = native.training.totals
    T = t["training_flops"]
    n_all = native.totals["params"]
    types = {r.name: r.type for r in native.rows}
    matmul_owners = {r.name for r in native.rows if r.backward is not None
                     and (r.backward.forward_param_macs or r.backward.forward_no_grad_macs)}
    n_emb = n_mm = 0
    for p in native.params:
        # a tied parameter (GPT-2's lm_head is its token embedding) is a matmul weight if any of its
        # names is: the rule is right for it, whatever else looks it up
        names = (p.name, *p.aliases)
        owners = [n.rsplit(".", 1)[0] if "." in n else "" for n in names]
        if any(o in matmul_owners and n.rsplit(".", 1)[-1] != "bias" for o, n in zip(owners, names)):
            n_mm += p.numel
        elif any(types.get(o, "") in ("Embedding", "EmbeddingBag") for o in owners):
            n_emb += p.numel
    n_other = n_all - n_emb - n_mm
    D = tokens
    gaps = [
        Gap("embeddings_are_lookups", 6 * D * n_emb,
            Phrase("embedding tables ({n} parameters, not tied to a matmul) are looked up, not multiplied: "
                   "no MACs", {"n": n_emb})),
        Gap("parameters_outside_matmuls", 6 * D * n_other,
            Phrase("parameters that do no multiply-add per token ({n}: norm weights, biases)", {"n": n_other})),
        Gap("matmul_weights", 6 * D * n_mm - 2 * q["X"] - 2 * q["Bp"] - 2 * q["NG"],
            Phrase("matmul weights: exact forward + backward MACs against 3 per parameter per token (frozen "
                   "weights, inputs that need no gradient, weights not used once per token)")),
        Gap("attention_quadratic", -(2 * q["Y"] + 2 * q["Bact"]),
            Phrase("attention's quadratic term: QK^T and AV products of activations, forward and backward, "
                   "which the rule leaves out")),
        Gap("norms_and_activations", -(q["Fo"] + q["Bo"]),
            Phrase("norms, activations, softmax, residual adds and other non-matmul arithmetic, forward and backward")),
    ]
    gaps = [g for g in gaps if g.amount]
    assert 6 * n_all * D == T + sum(g.amount for g in gaps), "rule gaps must add up"
    return RuleOfThumb("6nd", "6 x parameters x tokens (Kaplan et al.)",
                       Phrase("6 x {params} parameters x {tokens} tokens", {"params": n_all, "tokens": D}),
                       6 * n_all * D, T, tuple(gaps))


# ----- memory: summary tools' pass sizes -----------------------------------------------------------

_CONTAINERS = ("torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList")


def _pass(tool: str, rule: str, outputs: Sequence[tuple[str, int, int, int, int]], mem: TrainingMemory,
          per_element: int | None) -> PassSize:
    """``2 x`` the outputs' bytes (at ``per_element`` bytes each, or at their own dtype) as saved
    activations plus named terms."""
    own = sum(n * size for _, _, _, n, size in outputs)
    counted = sum(n * per_element for _, _, _, n, _ in outputs) if per_element else own
    unique: dict[int, int] = {}
    for _, sid, nbytes, _, _ in outputs:
        unique[sid] = nbytes
    u = sum(unique.values())
    saved_ids = set(mem.saved_storages)
    u_saved = sum(b for sid, b in unique.items() if sid in saved_ids)
    terms = [
        Gap("gradient_copy", counted, Phrase("x2: one gradient the size of every counted output, all held at once")),
        Gap("dtype", counted - own, Phrase("every element taken as 4 bytes (float32), whatever its dtype")),
        Gap("repeated_storages", own - u,
            Phrase("outputs that share one storage counted again (in-place ReLU on a norm's output, a container "
                   "returning its last child's output, views)")),
        Gap("outputs_not_saved", u - u_saved,
            Phrase("outputs autograd does not keep for the backward (a residual add, a pool whose backward needs "
                   "only indices, the last layer's output)")),
        Gap("saved_not_outputs", -(mem.saved - u_saved),
            Phrase("saved tensors no counted output holds: a module's own input, batch-norm statistics, "
                   "max-pool indices, functional results inside a forward")),
    ]
    terms = [g for g in terms if g.amount]
    total = 2 * counted
    assert total == mem.saved + sum(g.amount for g in terms), "pass size terms must add up"
    return PassSize(tool, rule, total, mem.saved, tuple(terms))


def _torchsummary(native: NativeCount, mem: TrainingMemory) -> PassSize:
    hooked = set()
    for r in native.rows:
        mro = (r.attrs.get("class", ""), *r.attrs.get("bases", ()))
        if r.name != "" and not any(c in mro for c in _CONTAINERS):
            hooked.add(r.name)
    outs = [o for o in mem.outputs if o[0] in hooked]
    return _pass("torchsummary", "2 x 4 bytes x the output elements of every module call but the root and "
                 "Sequential / ModuleList (printed per sample; here times the batch)", outs, mem, 4)


def _torchinfo(native: NativeCount, mem: TrainingMemory) -> PassSize:
    names = [r.name for r in native.rows]
    parents = {n.rsplit(".", 1)[0] if "." in n else "" for n in names if n}
    leaf_with_params = {r.name for r in native.rows if r.name not in parents and r.params > 0}
    outs = [o for o in mem.outputs if o[0] in leaf_with_params]
    return _pass("torchinfo", "2 x the output bytes (at their dtype) of every call of a leaf module that has "
                 "parameters", outs, mem, None)
