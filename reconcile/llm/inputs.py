"""The inputs of one forward pass of a causal language model, built the way transformers builds them.

For a ``phases.Step`` (``tokens`` new tokens per sequence after ``past`` cached ones):

- ``input_ids``: ``batch x tokens`` token ids (zeros: ids decide no shape);
- ``position_ids``: ``past, ..., past + tokens - 1`` per sequence, as ``generate`` passes them;
- ``past_key_values``: the cache the model's own forward would create (``DynamicCache(config=
  model.config)``: one ``DynamicLayer`` per full-attention layer, a ``DynamicSlidingWindowLayer``
  per sliding one, from the config's ``layer_types`` / ``sliding_window``), filled to ``past``
  tokens by calling its ``update(keys, values, layer_idx)`` once per layer with keys and values
  of ``batch x num_key_value_heads x past x head_dim`` in the model's dtype on the model's device
  (on meta this allocates nothing, so a 70B configuration's cache of any length is free). A
  sliding layer then keeps its last ``sliding_window - 1`` tokens, as after a real prefill;
- ``use_cache=True``; ``logits_to_keep`` when the forward takes it (``Step.logits``: 1 in a
  generation, as ``generate`` sets it; 0, all positions, otherwise);
- no ``attention_mask``: a batch without padding. ``generate`` passes a mask of ones, which
  transformers reduces to the same causal attention (and which meta cannot inspect).

Arguments are bound to the forward's signature and passed positionally (the native counter calls
``model(*inputs)``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from reconcile.errors import ReconcileError
from reconcile.llm.phases import Step


@dataclass(frozen=True)
class Dims:
    """What the key-value cache's shape depends on, read from a model's config."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    sliding_window: int | None  # None: every layer attends to the whole past
    layer_types: tuple[str, ...]  # "full_attention" / "sliding_attention" per layer
    max_positions: int | None


def text_config(model_or_config: Any) -> Any:
    cfg = getattr(model_or_config, "config", model_or_config)
    get = getattr(cfg, "get_text_config", None)
    return get(decoder=True) if callable(get) else cfg


def dims(model_or_config: Any) -> Dims:
    """The cache dimensions of a transformers-style config (or a model holding one in ``.config``)."""
    cfg = text_config(model_or_config)
    layers = getattr(cfg, "num_hidden_layers", None)
    heads = getattr(cfg, "num_attention_heads", None)
    hidden = getattr(cfg, "hidden_size", None)
    if not all(isinstance(v, int) and v > 0 for v in (layers, heads, hidden)):
        raise ReconcileError(
            "a language-model phase needs the model's config (model.config with num_hidden_layers, "
            "num_attention_heads and hidden_size, as transformers' configs have) to build its key-value cache")
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if not types:
        types = ["sliding_attention" if window else "full_attention"] * layers
    return Dims(layers, heads, kv_heads, head_dim, hidden, window if isinstance(window, int) else None,
                tuple(types), getattr(cfg, "max_position_embeddings", None))


def check_causal_lm(model: Any, name: str = "the model") -> None:
    """A model a phase can run: its forward takes ``past_key_values`` and it holds a config."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    if "past_key_values" not in params:
        raise ReconcileError(
            f"{name} is not a causal language model with a key-value cache (its forward takes no "
            "past_key_values): phases (--prefill/--decode/--generate) are for models such as hf:LlamaForCausalLM")
    dims(model)


def model_dtype(model: Any) -> Any:
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def model_device(model: Any) -> Any:
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def filled_cache(model: Any, batch: int, past: int) -> Any:
    """A new cache of the kind the model's own forward creates, filled to ``past`` tokens."""
    import torch

    try:
        from transformers import DynamicCache
    except ImportError as exc:
        raise ReconcileError("phases build transformers' DynamicCache: `make setup` installs transformers") from exc
    d = dims(model)
    cfg = text_config(model)
    # a transformers config dispatches sliding / full layers; a user model's plain config object
    # gets the lazily built full-attention layers of DynamicCache()
    cache = DynamicCache(config=cfg) if hasattr(cfg, "get_text_config") else DynamicCache()
    if past:
        dtype, device = model_dtype(model), model_device(model)
        for i in range(d.layers):
            k = torch.zeros(batch, d.kv_heads, past, d.head_dim, dtype=dtype, device=device)
            cache.update(k, torch.zeros_like(k), i)
    return cache


def beyond_positions(model: Any, positions: int) -> str:
    """A note when a phase runs more positions than the config's ``max_position_embeddings``: the
    forward runs all the same (rotary positions are computed, not looked up; a learned position
    table fails on CPU as the model would), but the configuration was not trained for it."""
    d = dims(model)
    if d.max_positions and positions > d.max_positions:
        return (f"{positions:,} positions is more than max_position_embeddings ({d.max_positions:,}): "
                "counted as the forward runs (raise it with hf:...:max_position_embeddings=N)")
    return ""


def step_inputs(model: Any, step: Step) -> tuple[tuple[Any, ...], Any]:
    """``(positional inputs, cache)`` for one forward of ``step``: ``model(*inputs)`` runs it."""
    import torch

    device = model_device(model)
    cache = filled_cache(model, step.batch, step.past)
    kwargs: dict[str, Any] = {
        "input_ids": torch.zeros(step.batch, step.tokens, dtype=torch.long, device=device),
        "position_ids": torch.arange(step.past, step.past + step.tokens, device=device)
        .unsqueeze(0).expand(step.batch, -1),
        "past_key_values": cache,
        "use_cache": True,
    }
    sig = inspect.signature(model.forward)
    if "logits_to_keep" in sig.parameters:
        kwargs["logits_to_keep"] = step.logits
    kwargs = {k: v for k, v in kwargs.items() if k in sig.parameters}
    try:
        bound = sig.bind(**kwargs)
    except TypeError as exc:
        raise ReconcileError(f"cannot call the model's forward with a key-value cache: {exc}") from exc
    bound.apply_defaults()
    if bound.kwargs:
        raise ReconcileError("the model's forward takes " + ", ".join(bound.kwargs) +
                             " by keyword only: phases pass inputs positionally")
    return tuple(bound.args), cache
