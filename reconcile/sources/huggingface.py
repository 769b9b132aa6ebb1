"""Hugging Face transformers models, built from their config class, never downloading anything.

``hf:ClassName`` builds ``ClassName(ClassName.config_class())``: the config class's defaults
(BertConfig: bert-base; GPT2Config: gpt2; LlamaConfig: Llama-2 7B dimensions; T5Config: t5-small;
ViTConfig: vit-base). Overrides follow, colon-separated: ``hf:LlamaForCausalLM:num_hidden_layers=4:
num_key_value_heads=2`` (values are read as int, float, true/false/none, else text).
``use_cache`` defaults to false: a key-value cache is state for generation, not work of the
forward, and tools cannot trace it; ``hf:...:use_cache=true`` turns it back on.

Default inputs follow ``model.main_input_name``: image models get ``pixel_values`` of
1 x num_channels x image_size x image_size; token models get ``input_ids`` of 1 x 128 (at most
``max_position_embeddings``) drawn from the vocabulary and an ``attention_mask`` of ones, plus
``decoder_input_ids`` for encoder-decoders.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable

from reconcile.errors import ReconcileError
from reconcile.inputs import InputSpec

PREFIX = "hf:"
SEQUENCE = 128  # default number of tokens
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFAULTS = {"use_cache": False}


# the zoo's sample (``zoo --source transformers``): an encoder, a decoder with a tied head, an
# encoder-decoder, a Llama with grouped-query attention, a vision transformer, built from configs
SAMPLE: tuple[str, ...] = (
    "hf:BertModel",  # encoder with a pooler
    "hf:DistilBertModel",
    "hf:GPT2LMHeadModel",  # decoder, lm_head tied to the token embedding
    "hf:T5ForConditionalGeneration",  # encoder-decoder, position bias
    # a small Llama with grouped-query attention (8 query heads share 2 key-value heads)
    "hf:LlamaForCausalLM:hidden_size=256:intermediate_size=688:num_hidden_layers=4:num_attention_heads=8"
    ":num_key_value_heads=2:vocab_size=1000",
    "hf:ViTForImageClassification",
)


def names() -> list[str]:
    """transformers has no finite list of configurations: the zoo's sample, as examples of the spec."""
    return list(SAMPLE)


def published(name: str) -> dict[str, Any]:
    return {}


def parse(name: str) -> tuple[str, dict[str, Any]]:
    """``hf:Cls:a=1:b=x`` -> ("Cls", {"a": 1, "b": "x"}) (syntax only)."""
    body = name[len(PREFIX):] if name.startswith(PREFIX) else name
    cls, *pairs = body.split(":")
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not _KEY_RE.match(key):
            raise ReconcileError(f"bad transformers spec {name!r}: overrides are KEY=VALUE separated by ':', "
                                 "e.g. hf:LlamaForCausalLM:num_hidden_layers=4")
        overrides[key] = _value(value.strip())
    return cls.strip(), overrides


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _text(value: Any) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _model_class(cls_name: str) -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ReconcileError("transformers is not installed: `make setup` installs it (or pip install "
                             "transformers==5.23.0)") from exc
    cls = getattr(transformers, cls_name, None) if cls_name and cls_name[0].isupper() else None
    config_class = getattr(cls, "config_class", None)
    if cls is None or config_class is None or not hasattr(cls, "main_input_name"):
        names = [n for n in dir(transformers) if n.endswith(("Model", "LMHeadModel")) or "For" in n]
        close = difflib.get_close_matches(cls_name, names, n=3)
        hint = f"did you mean {', '.join(PREFIX + c for c in close)}?" if close else \
            "name a model class of transformers, e.g. hf:BertModel or hf:LlamaForCausalLM"
        raise ReconcileError(f"unknown transformers model {cls_name!r}: {hint}")
    return cls


def config(name: str) -> Any:
    cls_name, overrides = parse(name)
    cls = _model_class(cls_name)
    base = cls.config_class()
    unknown = [k for k in overrides if not hasattr(base, k)]
    if unknown:
        close = difflib.get_close_matches(unknown[0], [k for k in vars(base) if not k.startswith("_")], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ReconcileError(f"{cls.config_class.__name__} has no setting {unknown[0]!r}{hint}")
    kwargs = {**_DEFAULTS, **overrides}
    try:
        return cls.config_class(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a config rejecting a value: the user's to fix
        raise ReconcileError(f"{cls.config_class.__name__} rejected {name!r}: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}") from exc


def resolve(body: str, check: bool = True) -> str:
    """Canonical ``hf:Class[:key=value...]`` (overrides in the order given, values normalized).
    ``check`` checks the class and the config keys: that imports transformers (and torch)."""
    cls_name, overrides = parse(body)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", cls_name):
        raise ReconcileError(f"bad transformers spec {body!r}: write hf:ClassName[:key=value...], "
                             "e.g. hf:BertModel or hf:LlamaForCausalLM:num_hidden_layers=4")
    name = PREFIX + ":".join([cls_name, *(f"{k}={_text(v)}" for k, v in overrides.items())])
    if check:
        config(name)
    return name


def default_inputs(name: str) -> tuple[InputSpec, ...]:
    cls = _model_class(parse(name)[0])
    cfg = config(name)
    main = cls.main_input_name
    if main == "pixel_values":
        size = cfg.image_size if isinstance(cfg.image_size, int) else tuple(cfg.image_size)
        hw = (size, size) if isinstance(size, int) else size
        return (InputSpec((1, getattr(cfg, "num_channels", 3), *hw), name="pixel_values"),)
    if main != "input_ids":
        raise ReconcileError(f"{cls.__name__} takes {main!r}, which reconcile has no default for: "
                             f"give inputs with --input {main}=SHAPE[:DTYPE]")
    vocab = getattr(cfg, "vocab_size", None)
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    seq = min(SEQUENCE, limit) if isinstance(limit, int) and limit > 0 else SEQUENCE
    ids = InputSpec((1, seq), "long", vocab, name="input_ids")
    mask = InputSpec((1, seq), "long", name="attention_mask", fill="ones")
    out = [ids, mask]
    if getattr(cfg, "is_encoder_decoder", False):
        out.append(InputSpec((1, seq), "long", vocab, name="decoder_input_ids"))
    return tuple(out)


def factory(name: str) -> Callable[[], Any]:
    def build() -> Any:
        cls = _model_class(parse(name)[0])
        return cls(config(name))

    return build
