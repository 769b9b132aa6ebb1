"""What a causal language model costs per phase of serving it: prefill, decode, generation.

The API (what ``reconcile count --prefill/--decode/--generate`` and the report use):

- ``phases.parse("decode:1024") -> Phase``; ``Phase.steps()`` the forward passes it runs
  (``Step(batch, tokens, past, logits)``); no torch.
- ``count_phase(model, phase, name) -> PhaseCount``: each step counted by the native counter with
  a ``DynamicCache`` filled to the step's length (``inputs.step_inputs``), on the model's device
  (meta: free). ``PhaseCount.steps[i].native`` is that step's full ``NativeCount``;
  ``.totals`` / ``.per_token`` / ``.layers(depth)``: MACs, FLOPs, bytes read and written, split
  into weights, KV cache read and appended, and the rest; ``.kv``: the cache's memory
  (``kv.KVCache``); ``.decode_cost[q]``: quantity q of one decode step as an exact a + b N.
- ``kv.kv_cache(dims, tokens, dtype, batch) -> KVCache`` from a config alone (``inputs.dims``).
"""

from __future__ import annotations

from typing import Any

from reconcile.llm.phases import KINDS, Phase, Step, parse  # noqa: F401


def count_phase(model: Any, phase: "Phase | str", name: str = "model", fit: bool = True):
    from reconcile.llm.count import count_phase as _count_phase

    return _count_phase(model, parse(phase) if isinstance(phase, str) else phase, name, fit)


__all__ = ["KINDS", "Phase", "Step", "parse", "count_phase"]
