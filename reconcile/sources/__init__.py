"""Model sources: where a spec's model comes from, one small module per library, one ``Source``
record per source in ``SOURCES``, the only list of them.

Each source module has the same functions, and imports its library lazily inside them:

- ``resolve(body, check) -> str``: validate the text after the prefix (all of it for torchvision
  and callables) and return the canonical name, without building anything; raise
  ``ReconcileError``. ``check=False`` skips what needs an import (transformers' classes).
- ``default_inputs(name) -> tuple[InputSpec, ...]``: what the model is counted on by default.
- ``factory(name) -> Callable[[], nn.Module]``: builds the model with no arguments, never
  downloading anything.
- ``published(name) -> dict``: figures published for the model (torchvision's ``_ops`` and
  ``num_params``), empty when there are none.
- ``names() -> list[str]`` (a source with a zoo): every model a zoo run covers (``reconcile models``
  lists them; transformers, which has no finite list, its sample).

Adding a source is its module and one ``Source`` entry; nothing else names it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Source:
    kind: str  # what ModelSpec.kind holds; --source takes it for a source with a zoo
    module: str  # the source module (the functions above)
    prefix: str = ""  # a spec "PREFIX:..." names this source; "": the specs without a known prefix
    package: str = ""  # the distribution whose version a report of its models records
    preload: tuple[str, ...] = ()  # what its workers import: the fork server imports it once for a run of its models
    probed: bool = False  # default inputs need user or library code imported: found in a worker
    sample: str = ""  # "module:attribute" of its CI sample (``zoo --subset ci``); "": no zoo
    zoo_file: str = ""  # the zoo page of its models
    all_file: str = ""  # the zoo page of all its models when that is not zoo_file (timm's is its sample's)
    # the figures of ``published(name)`` a zoo page shows beside the native count: (key, column heading)
    published_columns: tuple[tuple[str, str], ...] = ()
    published_note: str = ""  # what those figures are, where they come from, where they are checked
    spec: str = ""  # how a spec names one of its models, for --help (``spec_help``)

    def __post_init__(self) -> None:
        if self.published_columns and not self.published_note:
            raise ValueError(f"source {self.kind}: published_columns need a published_note for the zoo page")

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def names(self) -> list[str]:
        """Every model of the source (its zoo's ``all``)."""
        return list(self.load().names())

    def ci_sample(self) -> list[str]:
        module, _, attr = self.sample.partition(":")
        return list(getattr(importlib.import_module(module), attr))


SOURCES: dict[str, Source] = {s.kind: s for s in (
    Source("torchvision", "reconcile.sources.torchvision", package="torchvision", preload=("torchvision",),
           sample="reconcile.zoo:ZOO_CI",
           zoo_file="zoo.md", published_columns=(("_ops", "torchvision `_ops` (G)"), ("num_params", "`num_params`")),
           published_note="`_ops` and `num_params`: torchvision's published figures for the model's first weights "
                          "(GFLOPS in the convention of native MACs); `tests/test_zoo_native.py` checks them against the native count.",
           spec="a torchvision model name (resnet18; `reconcile models` lists them)"),
    Source("timm", "reconcile.sources.timm", prefix="timm", package="timm", preload=("timm",),
           sample="reconcile.zoo:TIMM_SAMPLE", zoo_file="zoo-timm.md", all_file="zoo-timm-all.md",
           published_columns=(("infer_gmacs", "timm `infer_gmacs`"), ("param_count", "`param_count` (M)")),
           published_note="`infer_gmacs` and `param_count`: timm's own published table (`benchmark.py`, fvcore, batch 1; "
                          "`reconcile.sources.timm_published`) at the model's default input, as printed; empty when the table "
                          "has no row at that size. Row by row they are predicted from the native count the way the table was "
                          "made (fvcore's convention, re-parameterized, non-fused attention): `timm-published.md` "
                          "(`reconcile zoo --source timm --published`).",
           spec="timm:NAME, a timm model (timm:convnext_atto; `reconcile models --source timm`)"),
    Source("transformers", "reconcile.sources.huggingface", prefix="hf", package="transformers",
           preload=("transformers",), probed=True, sample="reconcile.sources.huggingface:SAMPLE",
           zoo_file="zoo-transformers.md",
           spec="hf:ClassName[:key=value...], a transformers class from its config's defaults "
                "(hf:BertModel, hf:LlamaForCausalLM:num_hidden_layers=4)"),
    # package.module:callable: a spec with a colon and no known prefix
    Source("callable", "reconcile.sources.user", probed=True,
           spec="package.module:callable, your factory or nn.Module class, called with no arguments"),
)}
# spec prefix -> kind; a spec without one is a torchvision name, or package.module:callable
PREFIXES: dict[str, str] = {s.prefix: s.kind for s in SOURCES.values() if s.prefix}
# sources whose default inputs need user or library code imported: found in a worker
PROBED = tuple(s.kind for s in SOURCES.values() if s.probed)


def spec_help() -> str:
    """What a SPEC may be, one clause per source (the --help of every command that takes one)."""
    return "comma-separated models, each " + "; or ".join(s.spec for s in SOURCES.values())


def source(kind: str) -> ModuleType:
    return SOURCES[kind].load()


def with_zoo() -> tuple[str, ...]:
    """The sources ``reconcile zoo`` and ``reconcile models`` take, the default first."""
    return tuple(s.kind for s in SOURCES.values() if s.zoo_file)


def kind_of(name: str) -> str:
    """The source of a canonical name from its prefix alone (no import); "" for none."""
    prefix, colon, _ = name.partition(":")
    return PREFIXES.get(prefix, "") if colon else ""


def preload_for(names: "list[str] | tuple[str, ...]") -> tuple[str, ...]:
    """Modules worth importing once before forking workers for models with these canonical names."""
    out: list[str] = []
    for name in names:
        kind = kind_of(name) or ("" if ":" in name else "torchvision")  # no colon: a torchvision name
        for module in SOURCES[kind].preload if kind else ():
            if module not in out:
                out.append(module)
    return tuple(out)
