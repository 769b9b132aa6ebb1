"""A language model's forward cost per phase: the published rules of thumb against the exact count.

``explain(native, dims, step)`` -> one ``RuleOfThumb`` per rule (the training section's record
type), each with its gap to the exact native count split into named causes that add up exactly
(``rule.predicted == rule.exact + sum(gap amounts)``, asserted). Imports no torch: the rules are
arithmetic on ``Dims`` (read once from a transformers config), the exact side is read from the
count's own records, never from a rule's output.

The rules (FLOPs; 2 per multiply-add, and the exact count's every other operation as
``formulas.flops_of``), for ``T`` = batch x new tokens of the forward:
- Kaplan et al. 2020, forward per token: 2N + 2 n_layer n_ctx d_attn, N the non-embedding matmul
  weights (attention projections and MLP, all experts; norms and biases left out, as the paper's
  N); counted here "with the output layer" (+ 2 d_model n_vocab per token); n_ctx = the keys the
  newest token attends (P in a prefill of P tokens, N + 1 in a decode step at KV length N).
- LLM-Viewer (``model_analyzer.py``, ``ModelAnalyzer.analyze`` with its Llama config), per layer:
  linear 2 ic oc per token (q, o: hidden x hidden; k, v: hidden x hidden kv_heads / heads; gate,
  up, down); QK and SV each 2 seqlen^2 head_size heads (prefill) or 2 seqlen head_size heads
  (decode step at seqlen = KV length N), head_size = hidden // heads; softmax 5 per score; two norms
  of 7 x hidden per token; two residual adds of 1 x hidden; activation 2 x hidden (not the
  intermediate size); no lm_head, no rotary, no final norm. Dense models only (its MoE analyzer
  is another file).
- "2 x parameters per token": every parameter, embedding table included, one multiply-add per
  token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from reconcile.errors import ReconcileError
from reconcile.explain.training import Gap, RuleOfThumb
from reconcile.llm.phases import Step
from reconcile.records import NativeCount, Phrase


@dataclass(frozen=True)
class Dims:
    """The dimensions the rules read, from a transformers config (decoder-only, Llama-style names)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int  # dense MLP width (per expert for Mixtral)
    vocab: int
    gated: bool = True  # gate, up and down projections (Llama, Mistral, Qwen); False: up and down
    experts: int = 0  # routed experts per layer (0: dense)
    experts_per_token: int = 0
    expert_intermediate: int = 0  # Qwen-MoE's moe_intermediate_size (Mixtral: intermediate)
    shared_intermediate: int = 0  # Qwen-MoE's shared expert (0: none)

    @classmethod
    def of(cls, config: Any) -> "Dims":
        """Read a transformers config; a one-line ReconcileError if it is not a decoder-only LM."""
        need = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        missing = [k for k in need if not isinstance(getattr(config, k, None), int)]
        if missing:
            raise ReconcileError(f"{type(config).__name__} has no {missing[0]}: the rules of thumb need a decoder-only "
                                 "language model config (hidden_size, num_hidden_layers, num_attention_heads, vocab_size)")
        hidden, heads = config.hidden_size, config.num_attention_heads
        experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None) or 0
        inter = getattr(config, "intermediate_size", None) or 4 * hidden
        if experts and (getattr(config, "decoder_sparse_step", 1) != 1 or getattr(config, "mlp_only_layers", None)):
            raise ReconcileError(f"{type(config).__name__}: MoE layers on only some layers (decoder_sparse_step, "
                                 "mlp_only_layers) are not in the rules yet: use decoder_sparse_step=1, mlp_only_layers=[]")
        return cls(hidden=hidden, layers=config.num_hidden_layers, heads=heads,
                   kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                   head_dim=getattr(config, "head_dim", None) or hidden // heads, intermediate=inter,
                   vocab=config.vocab_size, gated=getattr(config, "hidden_act", "silu") in ("silu", "swish"),
                   experts=experts, experts_per_token=getattr(config, "num_experts_per_tok", 0) if experts else 0,
                   expert_intermediate=(getattr(config, "moe_intermediate_size", None) or inter) if experts else 0,
                   shared_intermediate=(getattr(config, "shared_expert_intermediate_size", 0) or 0) if experts else 0)

    @property
    def d_attn(self) -> int:
        return self.heads * self.head_dim

    @property
    def attention_weights(self) -> int:
        """q and o (hidden x heads head_dim), k and v (hidden x kv_heads head_dim), per layer."""
        return 2 * self.hidden * self.d_attn + 2 * self.hidden * self.kv_heads * self.head_dim

    @property
    def mlp_weights(self) -> int:
        """Per layer: the MLP's matmul weights, every expert, the router and a shared expert."""
        per = 3 if self.gated else 2
        if not self.experts:
            return per * self.hidden * self.intermediate
        shared = per * self.hidden * self.shared_intermediate + (self.hidden if self.shared_intermediate else 0)
        return self.experts * per * self.hidden * self.expert_intermediate + self.hidden * self.experts + shared

    @property
    def kaplan_n(self) -> int:
        """Kaplan's N: non-embedding matmul weights (no norms, no biases, no output layer)."""
        return self.layers * (self.attention_weights + self.mlp_weights)


def context(step: Step) -> int:
    """Keys the newest token of a forward attends: the cache and the new tokens."""
    return step.past + step.tokens


def kind(step: Step) -> str:
    return "prefill" if step.past == 0 else "decode" if step.tokens == 1 else "chunk"


# ----- the exact side: the native count split into the categories the rules talk about ----------

CATEGORIES = ("weights", "output_layer", "attention_qk", "attention_av", "attention_elementwise", "norms",
              "activation", "residual_adds", "rotary", "biases", "embedding", "other", "outside_matmuls")

# module class fragments -> the family of a row's non-MAC FLOPs, checked in order
_FAMILY = (("Rotary", "rotary"), ("Norm", "norms"), ("Attention", "attention_elementwise"),
           ("Act", "activation"), ("SiLU", "activation"), ("GELU", "activation"), ("MLP", "activation"),
           ("Expert", "activation"), ("Moe", "activation"), ("MoE", "activation"), ("Linear", "biases"),
           ("Embedding", "embedding"), ("DecoderLayer", "residual_adds"), ("Block", "residual_adds"))


def _family(type_name: str) -> str:
    for frag, fam in _FAMILY:
        if frag in type_name:
            return fam
    return "other"


def exact_parts(native: NativeCount, dims: Dims) -> dict[str, int]:
    """The exact FLOPs per category; they sum to ``native.totals["flops"]`` (asserted).

    A MAC is a weight's (``weights``, or ``output_layer`` for the Linear whose out_features is the
    vocabulary) when its op reads a parameter, else attention's (activation x activation), split
    into QK^T and AV in proportion to their widths (head_dim each: half and half). Every other
    FLOP goes to the family of the module it was done in (``_FAMILY``)."""
    parts = dict.fromkeys(CATEGORIES, 0)
    for r in native.rows:
        out = r.type.endswith("Linear") and r.attrs.get("out_features") == dims.vocab
        for op, comps in r.op_components.items():
            macs = comps.get("macs", 0)
            if macs:
                reads_param = r.op_bytes.get(op, (0, 0, 0))[2] > 0 or r.type.endswith("Linear")
                key = ("output_layer" if out else "weights") if reads_param else "attention"
                if key == "attention":
                    if macs % 2:
                        raise AssertionError(f"{r.name} {op}: odd attention MACs {macs}")
                    parts["attention_qk"] += macs  # 2 FLOPs per MAC, QK^T half of them
                    parts["attention_av"] += macs
                else:
                    parts[key] += 2 * macs
            other = sum(v for k, v in comps.items() if k != "macs")
            if other:
                parts[_family(r.type)] += other
    total = sum(parts.values())
    assert total == native.totals["flops"], f"categories {total} != native FLOPs {native.totals['flops']}"
    return parts


def _params(native: NativeCount, dims: Dims) -> dict[str, int]:
    """Parameters per category: embedding tables, the output layer, matmul weights, the rest."""
    owners = {r.name: r for r in native.rows}
    out = dict.fromkeys(("embedding", "output_layer", "weights", "other"), 0)
    for p in native.params:
        names = (p.name, *p.aliases)
        rows = [owners.get(n.rsplit(".", 1)[0] if "." in n else "") for n in names]
        leaf = [n.rsplit(".", 1)[-1] for n in names]
        if any(r is not None and r.type.endswith("Linear") and r.attrs.get("out_features") == dims.vocab for r in rows):
            out["output_layer"] += p.numel
        elif any(r is not None and "Embedding" in r.type for r in rows):
            out["embedding"] += p.numel
        elif any(r is not None and r.macs and lf != "bias" for r, lf in zip(rows, leaf)):
            out["weights"] += p.numel
        else:
            out["other"] += p.numel
    return out


# ----- the rules, as arithmetic on the dimensions --------------------------------------------------


def kaplan(dims: Dims, step: Step) -> dict[str, int]:
    """2N + 2 n_layer n_ctx d_attn per token, with the output layer (2 d_model n_vocab per token)."""
    t = step.batch * step.tokens
    return {"weights": 2 * dims.kaplan_n * t, "output_layer": 2 * dims.hidden * dims.vocab * t,
            "attention_qk": 2 * dims.layers * context(step) * dims.d_attn * t}


def llm_viewer(dims: Dims, step: Step) -> dict[str, int]:
    """LLM-Viewer's per-layer OPs summed over layers (see the module docstring); prefill and decode only."""
    if dims.experts:
        raise ValueError("LLM-Viewer's Llama rules are for dense models")
    if kind(step) not in ("prefill", "decode"):
        raise ValueError("LLM-Viewer has a prefill (past 0) and a decode step (1 token), not a chunk")
    b, h, heads = step.batch, dims.hidden, dims.heads
    hs = h // heads
    # its linear layers for Llama: q, o [h, h]; k, v [h, h kv / heads]; gate, up [h, i]; down [i, h]
    kv_out = h * dims.kv_heads // heads
    ic_oc = 2 * h * h + 2 * h * kv_out + (3 if dims.gated else 2) * h * dims.intermediate
    if kind(step) == "prefill":
        s = step.tokens
        linear, qk, sv, softmax = 2 * ic_oc * b * s, s * s * hs * heads * b * 2, s * hs * s * heads * b * 2, \
            b * heads * s * s * 5
        per_token = b * s
    else:
        s = step.past  # its decode seqlen: the KV length before the step
        linear, qk, sv, softmax = 2 * ic_oc * b, s * hs * heads * b * 2, hs * s * heads * b * 2, b * heads * s * 5
        per_token = b
    L = dims.layers
    return {"weights": L * linear, "attention_qk": L * qk, "attention_av": L * sv,
            "attention_elementwise": L * softmax, "norms": L * 2 * 7 * h * per_token,
            "residual_adds": L * 2 * h * per_token, "activation": L * 2 * h * per_token}


def two_per_parameter(native: NativeCount, dims: Dims, step: Step) -> dict[str, int]:
    """2 FLOPs per parameter per token, each parameter put in its category."""
    p = _params(native, dims)
    t = step.batch * step.tokens
    return {"weights": 2 * p["weights"] * t, "output_layer": 2 * p["output_layer"] * t,
            "embedding": 2 * p["embedding"] * t, "outside_matmuls": 2 * p["other"] * t}


# ----- gaps: rule - exact, per category, with a sentence -----------------------------------------

_WHY: Mapping[str, Mapping[str, str]] = {
    "kaplan": {
        "weights": "matmul weights: 2N per token against the exact weight MACs (experts a token is not routed "
                   "to, weights not used once per token)",
        "output_layer": "the output layer: 2 d_model n_vocab per token against the exact lm_head MACs",
        "attention_qk": "QK^T: 2 n_layer n_ctx d_attn per token against the exact QK^T MACs (n_ctx = {n_ctx})",
        "attention_av": "AV (attention weights times values) left out: the rule counts QK^T only",
    },
    "llm_viewer": {
        "weights": "linear layers: 2 ic oc per token against the exact weight MACs (its k, v widths hidden x "
                   "kv_heads / heads, head_dim = hidden // heads)",
        "output_layer": "lm_head left out (LLM-Viewer counts no output layer)",
        "attention_qk": "QK^T over seqlen = {seqlen} keys; the exact count attends {n_ctx}",
        "attention_av": "AV (its SV) over seqlen = {seqlen} keys; the exact count attends {n_ctx}",
        "attention_elementwise": "softmax taken as 5 per score; the exact count: softmax, the causal mask, "
                                 "scaling and applying the rotary embedding to q and k",
        "norms": "norms taken as 7 x hidden per token, two per layer; the exact count's RMSNorm (and the final norm)",
        "residual_adds": "residual adds, 1 x hidden each, two per layer",
        "activation": "activation taken as 2 x hidden per token; the exact count's SiLU and gate product run on "
                      "the intermediate width",
    },
    "2x_params": {
        "weights": "matmul weights: one multiply-add per parameter per token against the exact weight MACs",
        "output_layer": "the output layer: one multiply-add per parameter per token",
        "embedding": "embedding tables are looked up, not multiplied: no MACs",
        "outside_matmuls": "parameters outside matmuls (norm weights, biases) do no multiply-add per token",
        "attention_qk": "attention's QK^T products of activations: no parameters, left out",
        "attention_av": "attention's AV products of activations: no parameters, left out",
    },
}
_LEFT_OUT = {
    "attention_qk": "QK^T products of activations: no parameters, left out",
    "attention_av": "AV products of activations, left out",
    "attention_elementwise": "softmax, the causal mask, scaling and rotary application inside attention, left out",
    "norms": "norms (RMSNorm: square, mean, rsqrt, two products per element), left out",
    "activation": "the MLP's activation and gate product, left out",
    "residual_adds": "residual adds, left out",
    "rotary": "the rotary embedding's cos and sin tables, left out",
    "biases": "bias adds, left out",
    "embedding": "embedding lookups: no arithmetic either way",
    "output_layer": "lm_head left out",
    "weights": "matmul weights",
    "other": "other arithmetic outside the families above (the model's own position arithmetic), left out",
}


def _rule(rule_id: str, name: str, formula: Phrase, predicted: Mapping[str, int], exact: Mapping[str, int],
          values: Mapping[str, Any]) -> RuleOfThumb:
    gaps = []
    for c in CATEGORIES:
        amount = predicted.get(c, 0) - exact.get(c, 0)
        if not amount:
            continue
        text = _WHY[rule_id].get(c) if c in predicted else None
        gaps.append(Gap(c, amount, Phrase(text or _LEFT_OUT[c], dict(values))))
    p, e = sum(predicted.values()), sum(exact.values())
    assert p == e + sum(g.amount for g in gaps), "rule gaps must add up"
    return RuleOfThumb(rule_id, name, formula, p, e, tuple(gaps))


def explain(native: NativeCount, dims: Dims, step: Step) -> tuple[RuleOfThumb, ...]:
    """Every rule that applies to this forward, its gap to ``native`` split into named causes."""
    exact = exact_parts(native, dims)
    values = {"n_ctx": context(step), "seqlen": step.tokens if kind(step) == "prefill" else step.past}
    t = step.batch * step.tokens
    rules = [_rule("kaplan", "2N + 2 n_layer n_ctx d_attn per token, with the output layer (Kaplan et al.)",
                   Phrase("(2 x {n} + 2 x {h} x {v} + 2 x {layers} x {n_ctx} x {d_attn}) x {tokens} tokens",
                          {"n": dims.kaplan_n, "h": dims.hidden, "v": dims.vocab, "layers": dims.layers,
                           "n_ctx": context(step), "d_attn": dims.d_attn, "tokens": t}),
                   kaplan(dims, step), exact, values)]
    if not dims.experts and kind(step) in ("prefill", "decode"):
        rules.append(_rule("llm_viewer", f"LLM-Viewer's per-layer formulas ({kind(step)}, no lm_head)",
                           Phrase("{layers} layers x (linear 2 ic oc + QK, SV 2 x {shape} x head_size x heads + "
                                  "softmax 5 + norms 2 x 7 hidden + adds 2 x hidden + activation 2 x hidden)",
                                  {"layers": dims.layers,
                                   "shape": "seqlen^2" if kind(step) == "prefill" else "seqlen"}),
                           llm_viewer(dims, step), exact, values))
    p = _params(native, dims)
    rules.append(_rule("2x_params", "2 x parameters per token",
                       Phrase("2 x {params} parameters x {tokens} tokens", {"params": sum(p.values()), "tokens": t}),
                       two_per_parameter(native, dims, step), exact, values))
    return tuple(rules)


def explain_phase(phase_count: Any, config: Any) -> tuple[RuleOfThumb, ...]:
    """The rules for a counted phase (``reconcile.llm.count.PhaseCount``): each step's rules summed
    over the steps of a generation (predictions, exact counts and each cause), so the sum still
    adds up. A rule that does not apply to one of the steps is left out of the phase."""
    dims = Dims.of(getattr(config, "config", config))
    per_step = [explain(s.native, dims, s.step) for s in phase_count.steps]
    common = [r.id for r in per_step[0] if all(any(x.id == r.id for x in rules) for rules in per_step)]
    out = []
    for rid in common:
        rules = [next(x for x in rs if x.id == rid) for rs in per_step]
        if len(rules) == 1:
            out.append(rules[0])
            continue
        amounts: dict[str, int] = {}
        sentences: dict[str, Phrase] = {}
        for r in rules:
            for g in r.gaps:
                amounts[g.cause] = amounts.get(g.cause, 0) + g.amount
                sentences.setdefault(g.cause, g.sentence)
        gaps = tuple(Gap(c, a, sentences[c]) for c, a in amounts.items() if a)
        p, e = sum(r.predicted for r in rules), sum(r.exact for r in rules)
        assert p == e + sum(g.amount for g in gaps), "rule gaps must add up"
        out.append(RuleOfThumb(rid, rules[0].name, Phrase("summed over the {n} forward passes", {"n": len(rules)}),
                               p, e, gaps))
    return tuple(out)
