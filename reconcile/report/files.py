"""Report file names: one per model, so two models of a run never write the same file."""

from __future__ import annotations


def file_stem(name: str) -> str:
    """A file name for a model, one per model: a torchvision name is kept (``resnet18``); in a
    ``pkg.mod:fn`` spec ``:`` becomes ``_`` and ``_`` becomes ``-`` (``my_pkg:make`` ->
    ``my-pkg_make``), a one-to-one mapping since specs hold no ``-``; a spec that would then
    spell a torchvision name (``swin:t``) gets ``__`` for its colon, which no other name has."""
    if ":" not in name:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    from reconcile.zoo_table import TORCHVISION  # data only

    stem = name.replace("_", "-").replace(":", "_")
    if stem in TORCHVISION:
        stem = name.replace(":", "__")
    return stem
