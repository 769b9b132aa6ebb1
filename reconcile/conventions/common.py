"""Pieces every convention needs: the module tree over native rows, scoped sums, the
"(outside rows)" pseudo-row and parameter terms. Pure functions over records."""

from __future__ import annotations

from typing import Callable, Iterator

from reconcile import rollup
from reconcile.conventions.base import LayerPrediction, Term, call_arg, is_instance, joined, n_in, numel
from reconcile.records import ModuleRow, NativeCount, ParamInfo, Phrase, TensorMeta


def registered(native: NativeCount, name: str) -> list[ParamInfo]:
    """The tensors ``module.parameters()`` of module ``name`` yields: each tensor registered in its
    subtree under any name (canonical or alias), once, in ``native.params`` order. Shared: read only."""
    return rollup.memo(native, "registered", _registered_by_module).get(name, [])


def _registered_by_module(native: NativeCount) -> dict[str, list[ParamInfo]]:
    out: dict[str, list[ParamInfo]] = {}
    for p in native.params:
        modules = set()
        for full in (p.name, *p.aliases):
            parts = full.split(".")
            modules.update(".".join(parts[:i]) for i in range(len(parts)))  # "", "a", "a.b" for "a.b.weight"
        for module in modules:
            out.setdefault(module, []).append(p)
    return out


def walked_paths(native: NativeCount) -> set[str]:
    """The paths to modules that ``children()`` walks (thop's ``model.apply`` and ``dfs_count``,
    ptflops' ``accumulate_flops``): every path of every module (its name and its ``_aliases``,
    ``named_modules(remove_duplicate=False)``) except where a parent holds the same module under
    two names: ``named_children()`` gives it once, under the first, so a path through a later name
    is not walked (coat's ParallelBlock holds one Mlp as mlp2, mlp3 and mlp4)."""
    paths_of = {r.name: (r.name, *r.attrs.get("_aliases", ())) for r in native.rows}
    owner = {p: name for name, ps in paths_of.items() for p in ps}

    def parent(path: str) -> str:
        return path.rsplit(".", 1)[0] if "." in path else ""

    def first_in_parent(path: str) -> bool:
        return next(p for p in paths_of[owner[path]] if parent(p) == parent(path)) == path

    walked = set()
    for path in owner:
        parts = path.split(".") if path else []
        if all(first_in_parent(".".join(parts[:i])) for i in range(1, len(parts) + 1)):
            walked.add(path)
    return walked


def rms_norm_parts(row: ModuleRow) -> tuple[int, int, int]:
    """(mean output elements, multiply output elements, multiply calls) that native ran inside
    the row's ``F.rms_norm`` calls, which a tracer (jit, fx) keeps as one ``rms_norm`` node, where
    eager CPU runs its decomposition: pow, mean, an in-place add of eps (as many elements as the
    mean's output), rsqrt, a multiply by the reciprocal, and one by the weight when there is one.
    (0, 0, 0) when native ran a fused kernel (``aten::_fused_rms_norm``: nothing to take out) or a
    call's shapes were not recorded. torch's ``nn.RMSNorm`` (no call record inside torch.nn
    layers): one call per call of the module, read from its calls and attributes."""
    if "aten::_fused_rms_norm" in row.ops:
        return 0, 0, 0
    if is_instance(row, "torch.nn.modules.normalization.RMSNorm"):
        shape = row.attrs.get("normalized_shape")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
            return 0, 0, 0
        muls = 1 + bool(row.attrs.get("has_weight"))
        n = sum(n_in(c) for c in row.call_records)
        return n // max(1, numel(shape)), muls * n, muls * len(row.call_records)
    recorded = [c for c in row.torch_calls if c.func == "F.rms_norm"]
    mean = mul = mul_calls = 0
    for c in recorded:
        x, shape = call_arg(c, 0, "input"), call_arg(c, 1, "normalized_shape")
        shape = (shape,) if isinstance(shape, int) else shape
        if not isinstance(x, TensorMeta) or not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
            return 0, 0, 0
        muls = 1 + (call_arg(c, 2, "weight") is not None)
        mean += numel(x.shape) // max(1, numel(shape))
        mul += muls * numel(x.shape)
        mul_calls += muls
    return mean, mul, mul_calls


class Tree:
    """Native rows as a tree, with inclusive sums by subtree (cached)."""

    def __init__(self, native: NativeCount) -> None:
        self.native = native
        self.rows: dict[str, ModuleRow] = {r.name: r for r in native.rows}
        self.children: dict[str, list[str]] = {r.name: [] for r in native.rows}
        for r in native.rows:
            if r.name:
                parent = r.name.rsplit(".", 1)[0] if "." in r.name else ""
                self.children.setdefault(parent, []).append(r.name)
        self._incl = rollup.shared_inclusive(native)

    def subtree(self, name: str) -> Iterator[ModuleRow]:
        yield self.rows[name]
        for c in self.children.get(name, ()):
            yield from self.subtree(c)

    def macs(self, name: str) -> int:
        return self._incl[name]["macs"]

    def flops(self, name: str) -> int:
        return self._incl[name]["flops"]

    def component(self, name: str, key: str) -> int:
        return self._incl[name].get(key, 0)

    def params(self, name: str) -> int:
        """Parameters owned (canonically, each tensor once) by the subtree."""
        return self._incl[name]["params"]

    def params_with_aliases(self, name: str) -> int:
        """What ``module.parameters()`` of the subtree holds: every tensor registered anywhere in it
        (under its canonical name or an alias), each once."""
        return sum(p.numel for p in registered(self.native, name))

    def terminal(self, stops: Callable[[ModuleRow], bool], start: str = "") -> list[ModuleRow]:
        """Pre-order walk below ``start`` that stops at modules for which ``stops`` is true or
        that have no children; returns those modules (a hook tool's atomic rows)."""
        out: list[ModuleRow] = []
        for c in self.children.get(start, ()):
            row = self.rows[c]
            if stops(row) or not self.children.get(c):
                out.append(row)
            else:
                out.extend(self.terminal(stops, c))
        return out


def _builtin_compute(row: ModuleRow) -> bool:
    """A torch.nn module that computes in its own forward (MultiheadAttention, Transformer...)
    rather than a user container whose forward calls functionals."""
    cls = row.attrs.get("class", "")
    return cls.startswith("torch.nn.modules.") and not cls.startswith("torch.nn.modules.container.")


def uncovered_rows(tree: Tree, layers: list[LayerPrediction], ops_key: str, params_key: str | None,
                   tool: str) -> list[LayerPrediction]:
    """One pseudo-row per module whose own work or own parameters fall in no reported row:
    the tool cannot see them. With the reported rows they partition the native totals."""
    covered: set[str] = set()
    for p in layers:
        if p.module in tree.rows:
            covered.update(r.name for r in tree.subtree(p.module))
    out = []
    for r in tree.native.rows:
        if r.name in covered or not (r.macs or r.flops or (params_key and r.params)):
            continue
        terms: dict[str, tuple[Term, ...]] = {}
        if r.macs or r.flops:
            if _builtin_compute(r):
                terms[ops_key] = (Term("unsupported_module", -r.macs,
                                       "common.unsupported_module",
                                       Phrase("{tool!s} has no rule for {type!s}: {macs} MACs "
                                       "({flops} FLOPs) in its forward are not counted", {"tool": tool, "type": r.type,
                                                                                          "macs": r.macs,
                                                                                          "flops": r.flops}),
                                       flops=-r.flops),)
            else:
                terms[ops_key] = (Term("functional_not_seen", -r.macs,
                                       "common.functional_not_seen",
                                       Phrase("{tool!s} cannot see the functional work in {type!s}.forward: "
                                       "{macs} MACs, {flops} FLOPs ({families!s})", {"tool": tool, "type": r.type,
                                                                                     "macs": r.macs, "flops": r.flops,
                                                                                     "families": _families(r)}),
                                       flops=-r.flops),)
        reference = {ops_key: r.macs}
        predicted = {ops_key: 0}
        if params_key:
            reference[params_key] = r.params
            predicted[params_key] = 0
            if r.params:
                terms[params_key] = (Term("params_missed", -r.params,
                                          "common.params_missed.4",
                                          Phrase("{tool!s} misses the {params} parameters held directly by {type!s} "
                                          "(it only reads modules it hooks)", {"tool": tool, "params": r.params,
                                                                               "type": r.type})),)
        out.append(LayerPrediction(r.name, r.type, r.calls, reference, predicted, terms))
    return out


def _families(r: ModuleRow) -> str:
    return joined([Phrase("{k!s} {v}", {"k": k, "v": v}) for k, v in r.components.items()], ", ", "no arithmetic")


def param_terms(tool: str, row: ModuleRow, counted: int, reference: int, *, registered: bool) -> tuple[Term, ...]:
    """Why a tool's parameter count for a row differs from the native one (each tensor once)."""
    if counted == reference:
        return ()
    if not registered:
        return (Term("params_missed", counted - reference, "common.params_missed.2",
                     Phrase("{tool!s} has no rule for {type!s}, so its "
                     "{reference} parameters are not counted", {"tool": tool, "type": row.type,
                                                                "reference": reference})),)
    if row.calls == 0:
        return (Term("params_missed", counted - reference, "common.params_missed.3",
                     Phrase("{type!s} never ran, so {tool!s} did not count its "
                     "{reference} parameters", {"type": row.type, "tool": tool, "reference": reference})),)
    if counted > reference:
        return (Term("params_tied", counted - reference, "common.params_tied", Phrase("{tool!s} counts {v} parameters "
                     "that are tied to (registered first under) another module", {"tool": tool,
                                                                                  "v": counted - reference})),)
    return (Term("params_missed", counted - reference, "common.params_missed",
                 Phrase("{tool!s} misses {v} parameters of {type!s}", {"tool": tool, "v": reference - counted,
                                                                       "type": row.type})),)
