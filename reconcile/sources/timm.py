"""timm models: ``timm:NAME`` for every name of ``timm.list_models()``, optionally with a
pretrained tag (``timm:vit_base_patch16_224.augreg_in21k``), built with ``pretrained=False``
(random structure only, nothing downloaded). The default input is the (C, H, W) of the name's
default pretrained config, read from the generated ``timm_table`` (no ``import torch``)."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from reconcile.errors import ReconcileError
from reconcile.inputs import InputSpec

PREFIX = "timm:"


def table() -> dict[str, tuple[int, int, int]]:
    from reconcile.sources.timm_table import TIMM

    return TIMM


def names() -> list[str]:
    """Every name of ``timm.list_models()`` (from the table)."""
    return ["timm:" + n for n in table()]


def resolve(body: str, check: bool = True) -> str:
    arch, dot, tag = body.partition(".")
    known = table()
    if arch not in known:
        lowered = {n.lower(): n for n in known}
        if arch.lower() in lowered:
            arch = lowered[arch.lower()]
        else:
            close = difflib.get_close_matches(arch.lower(), list(known), n=3)
            hint = f"did you mean {', '.join(PREFIX + c for c in close)}?" if close else "see timm.list_models()"
            raise ReconcileError(f"unknown timm model {body!r}: {hint}")
    if dot and not tag:
        raise ReconcileError(f"bad timm model {body!r}: write timm:NAME or timm:NAME.TAG")
    return PREFIX + arch + (f".{tag}" if tag else "")


def published(name: str) -> dict[str, Any]:
    """timm's published figures for the model at its default input (an untagged name only): the row
    of timm's own benchmark table (``timm_published``) at that square size, as printed,
    ``infer_gmacs`` in GMACs and ``param_count`` in millions; {} when the table has no such row."""
    from reconcile.sources import timm_published

    arch, _, tag = name[len(PREFIX):].partition(".")
    if tag or arch not in table():
        return {}
    _, h, w = table()[arch]
    row = timm_published.row_at(arch, h) if h == w else None
    if row is None:
        return {}
    return {"infer_img_size": row.img_size, "infer_gmacs": row.gmacs, "param_count": row.param_count}


def default_inputs(name: str) -> tuple[InputSpec, ...]:
    body = name[len(PREFIX):]
    arch, _, tag = body.partition(".")
    if tag:  # a tag may have its own input size: ask timm (imports torch; rare)
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(body)
        except RuntimeError:  # timm's answer for an unknown tag of a known model
            cfg = None
        if cfg is None:
            tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
            raise ReconcileError(f"timm has no pretrained config {body!r}: check the tag; {arch} has "
                                 + (", ".join(tags) if tags else "no tags") + f" (write timm:{arch} for its default)")
        size = tuple(cfg.input_size)
    else:
        size = table()[arch]
    return (InputSpec((1, *size)),)


def factory(name: str) -> Callable[[], Any]:
    body = name[len(PREFIX):]

    def build() -> Any:
        import timm

        return timm.create_model(body, pretrained=False)

    return build
