"""Report file names: one per model, so two models of a run never write the same file, and
short enough for any file system (255 bytes a name) with every suffix reconcile adds."""

from __future__ import annotations

import hashlib

# bytes of a stem: the longest name made from it (``.<stem>.runs.json.gz.XXXXXXXX.tmp``, 31 more
# bytes) stays well within the 255 a file name may have
STEM_LIMIT = 120
_KEPT = 100  # bytes of the name kept in a shortened stem, before its hash


def _short(stem: str, name: str) -> str:
    """``stem`` itself when it is short enough; else its first ``_KEPT`` bytes, ``~`` (which no
    other stem holds) and 16 hex digits of the SHA-256 of the full model name: unique per name."""
    if len(stem.encode("utf-8")) <= STEM_LIMIT:
        return stem
    head = stem.encode("utf-8")[:_KEPT].decode("utf-8", errors="ignore")
    return f"{head}~{hashlib.sha256(name.encode('utf-8')).hexdigest()[:16]}"


def file_stem(name: str) -> str:
    """A file name for a model, one per model: a torchvision name is kept (``resnet18``); in a
    ``pkg.mod:fn`` spec ``:`` becomes ``_`` and ``_`` becomes ``-`` (``my_pkg:make`` ->
    ``my-pkg_make``), a one-to-one mapping since specs hold no ``-``; a spec that would then
    spell a torchvision name (``swin:t``) gets ``__`` for its colon, which no other name has. A
    stem longer than ``STEM_LIMIT`` bytes is shortened, still unique (``_short``)."""
    if ":" not in name:
        return _short("".join(c if c.isalnum() or c in "._-" else "_" for c in name), name)
    from reconcile.zoo_table import TORCHVISION  # data only

    stem = name.replace("_", "-").replace(":", "_")
    if stem in TORCHVISION:
        stem = name.replace(":", "__")
    return _short(stem, name)
