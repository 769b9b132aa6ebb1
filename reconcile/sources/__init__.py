"""Model sources: where a spec's model comes from, one small module per library.

Each source module has the same four functions, and imports its library lazily inside them:

- ``resolve(body, check) -> str``: validate the text after the prefix (all of it for torchvision
  and callables) and return the canonical name, without building anything; raise
  ``ReconcileError``. ``check=False`` skips what needs an import (transformers' classes).
- ``default_inputs(name) -> tuple[InputSpec, ...]``: what the model is counted on by default.
- ``factory(name) -> Callable[[], nn.Module]``: builds the model with no arguments, never
  downloading anything.
- ``published(name) -> dict``: figures published for the model (torchvision's ``_ops`` and
  ``num_params``), empty when there are none.

``SOURCES`` maps a spec kind to its module; ``PREFIXES`` maps a spec prefix to its kind.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# sources whose default inputs need user or library code imported: found in a worker
PROBED = ("callable", "transformers")

SOURCES: dict[str, str] = {
    "torchvision": "reconcile.sources.torchvision",
    "timm": "reconcile.sources.timm",
    "transformers": "reconcile.sources.huggingface",
    "callable": "reconcile.sources.user",
}
# spec prefix -> kind; a spec without one is a torchvision name, or package.module:callable
PREFIXES: dict[str, str] = {"timm": "timm", "hf": "transformers"}


def source(kind: str) -> ModuleType:
    return importlib.import_module(SOURCES[kind])


# what a worker of each source imports; the fork server imports it once when a run has such models
_PRELOAD = {"timm": ("timm",), "transformers": ("transformers",)}


def preload_for(names: "list[str] | tuple[str, ...]") -> tuple[str, ...]:
    """Modules worth importing once before forking workers for models with these canonical names."""
    out: list[str] = []
    for name in names:
        prefix, colon, _ = name.partition(":")
        for module in _PRELOAD.get(PREFIXES.get(prefix, ""), ()) if colon else ():
            if module not in out:
                out.append(module)
    return tuple(out)
