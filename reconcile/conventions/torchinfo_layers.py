"""torchinfo 1.8.0's per-call records rebuilt from the native count: its ``LayerInfo`` list
(``summary_list``: one record per module call in call order, the containers
``add_missing_container_layers`` inserts, each record's children) and each record's parameter
count as a combination of tensors (``Counts``). ``conventions.torchinfo`` predicts and explains
every row from these. Imports no torch."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from reconcile.records import CallRecord, ModuleRow, NativeCount

@dataclass(eq=False)
class LayerInfo:
    """One ``LayerInfo`` object: a call's record, or a module's fallback record (the one
    ``add_missing_container_layers`` inserts). Compared by identity, as torchinfo does."""

    module: str  # named_modules() name
    depth: int
    leaf: bool
    parent: "LayerInfo | None"
    call: CallRecord | None = None
    recursive: bool = False
    children: list["LayerInfo"] = field(default_factory=list)


@dataclass(frozen=True)
class Tensor:
    """One parameter tensor of the native record, as torchinfo weighs it."""

    name: str  # canonical name
    numel: int
    nbytes: int
    trainable: bool
    tied: bool  # registered under more than one name


class Model:
    """The native record seen through torchinfo: module paths, parameters per module, leaves."""

    def __init__(self, native: NativeCount) -> None:
        self.native = native
        self.rows: dict[str, ModuleRow] = {r.name: r for r in native.rows}
        self.path_of: dict[str, str] = {}  # every path of every module -> its named_modules() name
        self.last: dict[str, str] = {}  # module -> its last path (torchinfo's registration)
        for r in native.rows:
            paths = (r.name, *r.attrs.get("_aliases", ()))
            for p in paths:
                self.path_of[p] = r.name
            self.last[r.name] = paths[-1]
        self.has_child = {self.path_of[parent_path(p)] for p in self.path_of if p}
        self.tensors = [Tensor(p.name, p.numel, p.nbytes, p.trainable, bool(p.aliases)) for p in native.params]
        # module -> its named_parameters(): every tensor registered anywhere below it, once; for
        # a leaf, the local name each tensor has there (the first one)
        self.params: dict[str, dict[int, str]] = defaultdict(dict)
        for i, p in enumerate(native.params):
            for full in (p.name, *p.aliases):
                path, local = parent_path(full), full.rsplit(".", 1)[-1]
                while True:
                    self.params[self.path_of[path]].setdefault(i, local)
                    if not path:
                        break
                    path, local = parent_path(path), f"{path.rsplit('.', 1)[-1]}.{local}"

    def depth(self, module: str) -> int:
        path = self.last[module]
        return 0 if path == "" else path.count(".") + 1

    def leaf(self, module: str) -> bool:
        return module not in self.has_child


def parent_path(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def summary_list(model: Model) -> list[LayerInfo]:
    """``summary_list`` as ``forward_pass`` leaves it: call records, inserted containers, children."""
    fallback: dict[str, LayerInfo] = {}

    def fallback_of(module: str) -> LayerInfo:
        if module not in fallback:
            path = model.last[module]
            parent = fallback_of(model.path_of[parent_path(path)]) if path else None
            fallback[module] = LayerInfo(module, model.depth(module), model.leaf(module), parent)
        return fallback[module]

    calls = sorted(((r.name, c) for r in model.native.rows for c in r.call_records), key=lambda mc: mc[1].order)
    out: list[LayerInfo] = []
    seen: set[str] = set()
    for module, call in calls:  # construct_pre_hook: a new record per call
        path = model.last[module]
        parent = fallback_of(model.path_of[parent_path(path)]) if path else None
        out.append(LayerInfo(module, model.depth(module), model.leaf(module), parent, call, recursive=module in seen))
        seen.add(module)
    _add_missing_container_layers(out)
    for i, info in enumerate(out):  # set_children_layers: every following record deeper than it
        end = i + 1
        while end < len(out) and out[end].depth > info.depth:
            end += 1
        info.children = out[i + 1:end]  # a record listed twice keeps its last place's children
    return out


def _add_missing_container_layers(out: list[LayerInfo]) -> None:
    """torchinfo.py ``add_missing_container_layers``, line for line: it iterates the list while
    inserting into it (so a record is looked at again after an insertion before it)."""
    layer_ids = {info.module for info in out}
    current: dict[int, LayerInfo] = {}
    i = 0
    while i < len(out):
        info = out[i]
        rel = 0
        hierarchy: dict[int, LayerInfo] = {}
        parent = info.parent
        while parent is not None and parent.depth > 0:
            hierarchy[parent.depth] = parent
            parent = parent.parent
        for d in range(1, info.depth):
            if (d not in current or current[d].module != hierarchy[d].module) and hierarchy[d] is not out[i + rel - 1]:
                if hierarchy[d].module in layer_ids:  # check_recursive
                    hierarchy[d].recursive = True
                out.insert(i + rel, hierarchy[d])
                layer_ids.add(hierarchy[d].module)
                current[d] = hierarchy[d]
                rel += 1
        current[info.depth] = info
        d = info.depth + 1
        while d in current:
            current.pop(d)
            d += 1
        i += 1


class Counts:
    """Each record's parameter count as a signed combination of tensors (a leaf: its tensors once;
    a container: its tensors minus its non-recursive children's), so that every difference from
    the reference can be named tensor by tensor."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._memo: dict[int, dict[int, int]] = {}

    def vector(self, info: LayerInfo) -> dict[int, int]:
        if info.leaf:
            return {i: 1 for i in self.model.params[info.module]}
        key = id(info)
        if key not in self._memo:
            vec = {i: 1 for i in self.model.params[info.module]}
            for child in info.children:
                if child.recursive:
                    continue
                for i, c in self.vector(child).items():
                    vec[i] = vec.get(i, 0) - c
            self._memo[key] = {i: c for i, c in vec.items() if c}
        return self._memo[key]

    def value(self, info: LayerInfo, trainable_only: bool = False) -> int:
        """What torchinfo computes: the leaf count, or the unclipped leftover."""
        ts = self.model.tensors
        return sum(c * ts[i].numel for i, c in self.vector(info).items() if not trainable_only or ts[i].trainable)
