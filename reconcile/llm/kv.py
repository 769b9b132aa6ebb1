"""Key-value cache memory from a config: exact integers, no torch.

A cache entry is one token's key and value in one layer: ``2 x num_key_value_heads x head_dim``
elements (grouped-query attention shares ``num_key_value_heads`` < ``num_attention_heads``). A
full-attention layer holds every past token; a sliding-window layer (``sliding_window`` = W,
transformers' ``DynamicSlidingWindowLayer``) holds the last ``W - 1`` tokens between steps (during
a step it attends to those plus the new ones: at most W keys).
"""

from __future__ import annotations

from dataclasses import dataclass

from reconcile.llm.inputs import Dims

DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8,
               "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1, "uint8": 1}


@dataclass(frozen=True)
class KVCache:
    """The cache of ``batch`` sequences holding ``tokens`` tokens each, in ``dtype``."""

    tokens: int
    batch: int
    dtype: str
    element_bytes: int
    layers: int
    kv_heads: int
    head_dim: int
    sliding_window: int | None
    sliding_layers: int  # layers with a sliding window (the others hold every token)
    bytes_per_token: int  # one more token in every full layer (and a sliding one not yet full), one sequence
    held: tuple[int, ...]  # tokens each layer holds
    total_bytes: int  # the whole cache: batch x sum over layers of held x entry bytes

    @property
    def entry_bytes(self) -> int:
        """One token's key and value in one layer."""
        return 2 * self.kv_heads * self.head_dim * self.element_bytes


def held_tokens(d: Dims, tokens: int) -> tuple[int, ...]:
    """Tokens each layer's cache holds after ``tokens`` tokens went through."""
    out = []
    for t in d.layer_types:
        if t == "sliding_attention" and d.sliding_window:
            out.append(min(tokens, d.sliding_window - 1))
        else:
            out.append(tokens)
    return tuple(out)


def kv_cache(d: Dims, tokens: int, dtype: str = "float32", batch: int = 1) -> KVCache:
    if dtype not in DTYPE_BYTES:
        from reconcile.errors import ReconcileError

        raise ReconcileError(f"unknown cache dtype {dtype!r}: use one of {', '.join(DTYPE_BYTES)}")
    eb = DTYPE_BYTES[dtype]
    entry = 2 * d.kv_heads * d.head_dim * eb
    held = held_tokens(d, tokens)
    sliding = sum(1 for t in d.layer_types if t == "sliding_attention" and d.sliding_window)
    growing = sum(1 for t, h in zip(d.layer_types, held)
                  if not (t == "sliding_attention" and d.sliding_window and h >= d.sliding_window - 1))
    return KVCache(tokens=tokens, batch=batch, dtype=dtype, element_bytes=eb, layers=d.layers, kv_heads=d.kv_heads,
                   head_dim=d.head_dim, sliding_window=d.sliding_window if sliding else None,
                   sliding_layers=sliding, bytes_per_token=growing * entry, held=held,
                   total_bytes=batch * sum(held) * entry)
