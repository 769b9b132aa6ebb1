"""ptflops 0.7.5 with its default backend: its rules, written once, predicting
``get_model_complexity_info``. The aten backend is ``ptflops_aten``, 0.7.0 is ``ptflops_07``
(module hooks with its own formulas), what they share ``ptflops_shared``. The module hooks are
``ptflops_hooks``, the patched functionals and tensor ops ``ptflops_patched``; this file walks the
modules, adds up rows and total, and explains each difference.

``CONVENTION`` (tool "ptflops": ``backend='pytorch'``, ``count_functional`` on, as shipped).
Rows are the modules whose *exact* type has a hook, found the way ptflops' ``accumulate_flops``
walks ``children()`` from the root: a hooked module is atomic, a module reached by two paths is
two rows, a hooked module below another hooked one is "shadowed" (a row outside the total).
A row's ``__flops__`` is its hook count summed over its calls, whole batch; its ``macs`` is that
divided by the batch (the ``per_sample`` term sits on each row). The patched
``torch.nn.functional`` and tensor ops add whole-batch counts that belong to no row: they are
predicted per label in ``unattributed``. Only the ``int()`` truncation of the total is a
headline term.

References: native MACs of the same scope for op counts, native parameters (each tensor once)
for params. It predicts from the ``NativeCount`` alone. In a user-written ``forward`` the
native record of Python-level calls (``ModuleRow.torch_calls``) says which patched name ran
(``torch.matmul`` and not ``@``, ``F.softmax`` and not ``x.softmax``): ``ptflops_patched.PATCHED``.
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from typing import Callable, Mapping

from reconcile.conventions import common
from reconcile.conventions.base import (
    Convention, INCLUSIVE, LayerPrediction, Number, Prediction, RuleDoc, Term, joined, whole,
)
from reconcile.conventions.ptflops_hooks import HOOKS, Hook, hooked
from reconcile.conventions.ptflops_patched import Caught, family, label, patched_calls
from reconcile.conventions.ptflops_shared import TOTAL_ONLY
from reconcile.records import ModuleRow, NativeCount, ParamInfo, Phrase

# ===== shared pieces ================================================================================


def _owned(native: NativeCount, name: str) -> list[ParamInfo]:
    prefix = name + "." if name else ""
    return [p for p in native.params if p.name.startswith(prefix)]


def _who(rows: list[tuple[str, str, int]]) -> str:
    """'ReLU relu (2 calls)' or '9 modules: ReLU x 9 (17 calls)'."""
    calls = sum(c for _, _, c in rows)
    if len(rows) == 1:
        name, type_, _ = rows[0]
        where = f"{type_} {name}" if name else f"{type_}.forward (the model itself)"
        return f"{where} ({calls} call{'s' if calls != 1 else ''})"
    types: dict[str, int] = defaultdict(int)
    for _, t, _ in rows:
        types[t] += 1
    kinds = ", ".join(f"{t} x {n}" for t, n in types.items())
    return f"{len(rows)} modules: {kinds} ({calls} calls)"


def _scale(terms: list[Term], k: int) -> list[Term]:
    if k == 1:
        return terms
    return [Term(t.cause, whole(Fraction(t.amount) / k), t.rule,
                 Phrase("{text} (1/{k!s} on each of its {k!s} rows)", {"text": t.sentence, "k": k}),
                 flops=whole(Fraction(t.flops) / k)) for t in terms]


class _Unattributed:
    """Total-only counts by label, with the terms explaining them, grouped by cause."""

    def __init__(self) -> None:
        self.values: dict[str, Number] = defaultdict(int)
        self._parts: dict[tuple[str, str], list] = {}

    def add(self, label: str, cause: str, amount: Number, value: Number, row: ModuleRow, flops: Number = 0,
            macs: Number | None = None) -> None:
        self.values[label] += value
        key = (label, cause)
        part = self._parts.setdefault(key, [0, 0, [], None])
        part[0] += amount
        part[1] += flops
        part[2].append((row.name, row.type, row.calls))
        if macs is not None:
            part[3] = (part[3] or 0) + macs

    def terms(self, text: Callable[[str, str, Number, str], Phrase]) -> dict[str, tuple[Term, ...]]:
        out: dict[str, list[Term]] = defaultdict(list)
        for (label, cause), (amount, flops, rows, macs) in self._parts.items():
            if amount or flops:
                out[label].append(Term(cause, amount, f"ptflops.outside_rows.{cause}", text(label, cause, amount,
                                                                                            _who(rows)),
                                       flops=flops, macs=macs))
        return {k: tuple(v) for k, v in out.items()}


def _params_row_terms(tool: str, row: ModuleRow, native: NativeCount) -> tuple[int, tuple[Term, ...]]:
    """ptflops' row params: trainable tensors of ``module.parameters()``; terms against the native
    parameters owned by the subtree (each tensor once)."""
    registered = common.registered(native, row.name)
    prefix = row.name + "." if row.name else ""
    counted = sum(p.numel for p in registered if p.trainable)
    frozen = sum(p.numel for p in registered if p.name.startswith(prefix) and not p.trainable)
    borrowed = [p for p in registered if not p.name.startswith(prefix) and p.trainable]
    terms = []
    if frozen:
        terms.append(Term("params_frozen", -frozen, "ptflops.params_frozen",
                          Phrase("{tool!s} leaves out the {frozen} frozen parameters "
                          "(requires_grad=False) of {type!s}", {"tool": tool, "frozen": frozen, "type": row.type})))
    if borrowed:
        n = sum(p.numel for p in borrowed)
        terms.append(Term("params_tied", n, "ptflops.params_tied",
                          Phrase("{tool!s} counts {n} parameters that {type!s} shares with "
                          "{join!s} (owned there)", {"tool": tool, "n": n, "type": row.type,
                                                     "join": ', '.join(sorted({p.name for p in borrowed}))})))
    return counted, tuple(terms)


# ===== the pytorch backend ============================================================================


class PtflopsConvention(Convention):
    tool = "ptflops"
    unit = "Mac"
    metric = "macs"
    headline_metric = "macs"
    metrics = {"macs": "macs", "params": "params"}
    per_sample = True
    hooks: Mapping[str, Hook] = HOOKS
    count_functional = True  # patched torch.nn.functional and tensor ops (0.7.1 on)
    truncates = True  # the total is int()-ed (0.7.1 on)
    rules = (
        RuleDoc("unit", "MACs; bias adds, norms, activations and pools counted as listed; module counts per sample"),
        RuleDoc("matching", "forward hooks on modules whose exact type has a rule; a hooked module is atomic (its children are not summed)"),
        *{h.doc: RuleDoc(h.doc.split(":")[0], h.doc.split(":", 1)[1].strip()) for h in HOOKS.values()}.values(),
        RuleDoc("patched functionals (count_functional)", "F.relu/elu/gelu/silu/prelu/relu6/softmax and every F.*pool*: N_in; "
                "F.interpolate: prod(size) x B x C or N_in x scale^d; torch.matmul/mm/bmm: prod(A) x B[-1]; "
                "torch.addmm/Tensor.addmm/torch.baddbmm: + numel(input) (a bias vector counts once); torch.add/mul and "
                "Tensor.add/mul: the larger size per dimension, dimensions aligned from the left; all whole batch, in no row"),
        RuleDoc("bound at build time", "a function a module holds from before ptflops patched it (transformers' "
                "GELUActivation: self.act = F.gelu) is the original: not counted"),
        RuleDoc("double counting", "nn.ReLU/ELU/GELU/PReLU, pools, Upsample and MHA with need_weights call a patched function: "
                "counted by the hook and again in the total"),
        RuleDoc("not seen", "operators (x + y, x * y, @), x.softmax(), Tensor.baddbmm, einsum, SDPA, "
                "sigmoid/tanh/hardswish, F.linear, embedding; "
                "modules without a hook (Softmax, SiLU and UpsamplingNearest2d only through their functional)"),
        RuleDoc("params", "trainable only (frozen left out): per row sum(module.parameters()); total once per tensor"),
        RuleDoc("repeated modules", "counts summed over calls; a module reached by two paths is a row (and summed) twice"),
        RuleDoc("batch", "module counts divided by len(input[0]) (1 when inputs go in as keywords); functional counts "
                "whole batch; total int()-truncated"),
    )

    def batch_counter(self, native: NativeCount) -> int:
        return _batch_counter(native)

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        names = frozenset(n for p in native.params for n in (p.name, *p.aliases))
        batch = self.batch_counter(native)
        reached, shadowed = _hook_rows(tree, self.hooks)
        walked = common.walked_paths(native)
        covered: set[str] = set()
        for r in (*reached, *shadowed):
            covered.update(s.name for s in tree.subtree(r.name))

        layers: list[LayerPrediction] = []
        module_sum = 0  # sum of __flops__ over the rows in the total (each path)
        params_rows: dict[str, int] = defaultdict(int)  # tensor name -> rows counting it
        params_sum = 0
        for row in reached:
            k = _paths(walked, row)
            pred, hook_count = self._hooked(tree, row, batch, k, names, shadowed=False)
            layers.append(pred)
            module_sum += k * hook_count
            params_sum += k * pred.predicted["params"]
            for p in common.registered(native, row.name):
                if p.trainable:
                    params_rows[p.name] += k
        for row in shadowed:
            layers.append(self._hooked(tree, row, batch, 1, names, shadowed=True)[0])

        unattributed = _Unattributed()
        hook_owner = {s.name: r for r in (*reached, *shadowed) for s in tree.subtree(r.name)}
        for row in native.rows:
            caught = patched_calls(row) if self.count_functional else []
            if row.name in covered:
                for c in caught:
                    if c.count is not None:
                        unattributed.add(label(c.fname), "double_count", c.count, c.count, hook_owner[row.name],
                                         macs=c.macs)
                continue
            for c in caught:
                if c.count is None:
                    continue
                if c.macs:
                    unattributed.add(label(c.fname), TOTAL_ONLY, c.macs, c.count, row)
                    parts = c.parts if c.parts is not None else (
                        {"formula": c.count - c.macs} if c.count != c.macs else {})
                    for cause, amount in parts.items():
                        unattributed.add(label(c.fname), cause, amount, 0, row)
                else:
                    unattributed.add(label(c.fname), family(c.fname), c.count, c.count, row)
            pseudo = self._outside(tree, row, caught)
            if pseudo is not None:
                layers.append(pseudo)

        values = {k: whole(v) for k, v in unattributed.values.items()}
        functional = sum((v for k, v in values.items() if k.startswith("functional:")), Fraction(0))
        tensor_ops = sum((v for k, v in values.items() if not k.startswith("functional:")), Fraction(0))
        macs_exact = whole(Fraction(module_sum, batch) + functional + tensor_ops)
        x = module_sum / batch  # ptflops' float arithmetic, then int()
        x += float(functional)
        x += float(tensor_ops)
        macs = int(x) if self.truncates else whole(Fraction(x))
        headline_terms: dict[str, tuple[Term, ...]] = {}
        if macs != macs_exact:
            headline_terms["macs"] = (Term("per_sample", macs - macs_exact, "ptflops.per_sample",
                                           Phrase("ptflops truncates its total "
                                           "{macs_exact} to an int: {v}", {"macs_exact": macs_exact,
                                                                           "v": macs - macs_exact})),)
        params_total = sum(p.numel for p in native.params if p.trainable)
        p_terms = _params_headline_terms(native, params_rows)
        if p_terms:
            headline_terms["params"] = p_terms
        return Prediction(
            self.tool, self.metric, self.unit, tuple(layers),
            headline={"macs": macs, "macs_exact": macs_exact, "params": params_total, "batch_counter": batch},
            unattributed=values,
            unattributed_terms=unattributed.terms(_unattributed_text),
            headline_terms=headline_terms,
            headline_reference={"macs": macs_exact, "macs_exact": macs_exact, "params": params_sum, "batch_counter": batch},
        )

    def _hooked(self, tree: common.Tree, row: ModuleRow, batch: int, k: int, names: frozenset[str],
                shadowed: bool) -> tuple[LayerPrediction, int]:
        """A hooked module's row: its hook count (whole batch) split into causes against the native
        MACs of its subtree, then divided by the batch. ``k``: paths reaching it (rows it gets)."""
        hook = self.hooks[row.attrs["class"]]
        parts = hook.fn(row, names)
        hook_count = sum(v for v, _ in parts.values())
        ref = tree.macs(row.name)
        terms: list[Term] = []
        macs_part = parts.get("macs", (0, ""))[0]
        own = ref
        if hook.own_work_only and ref != row.macs:
            inner = [r for r in tree.subtree(row.name) if r.name != row.name]
            inner_macs, inner_flops = ref - row.macs, sum(r.flops for r in inner)
            kinds = sorted({r.type for r in inner if r.macs})
            terms.append(Term("nested_skipped", -inner_macs, "ptflops.nested_skipped",
                              Phrase("ptflops' {type!s} hook counts only the attention "
                              "itself and, the module being atomic, skips the {inner_macs} MACs "
                              "({inner_flops} FLOPs) of the {join!s} inside it", {"type": row.type,
                                                                                  "inner_macs": inner_macs,
                                                                                  "inner_flops": inner_flops,
                                                                                  "join": ', '.join(kinds)}),
                              flops=-inner_flops))
            own = row.macs
        if macs_part != own:
            terms.append(Term("formula", macs_part - own, "ptflops.formula",
                              Phrase("ptflops' {type!s} formula gives {macs_part} MACs "
                              "where the MAC count is {own}", {"type": row.type, "macs_part": macs_part, "own": own})))
        for cause, (amount, how) in parts.items():
            if cause != "macs" and amount:
                terms.append(Term(cause, amount, "ptflops.hook_extra", Phrase("ptflops counts {type!s}'s {v!s} "
                                  "({how!s}): {amount}", {"type": row.type,
                                                          "v": cause if cause != 'formula' else 'extra work',
                                                          "how": how, "amount": amount})))
        per_sample = whole(Fraction(hook_count, batch)) - hook_count
        macs = whole(Fraction(hook_count, batch))
        sample_terms = [Term("per_sample", per_sample, "ptflops.per_sample.2",
                             Phrase("ptflops divides module counts by the batch ({batch!s}): "
                             "{hook_count} / {batch!s} = {macs}", {"batch": batch, "hook_count": hook_count,
                                                                   "macs": macs}))] if per_sample else []
        params, p_terms = _params_row_terms(self.tool, row, tree.native)
        ref_params = tree.params(row.name)
        reference: dict[str, Number] = {"macs": ref, "__flops__": ref, "params": ref_params}
        predicted: dict[str, Number] = {"macs": macs, "__flops__": hook_count, "params": params}
        by_metric = {"macs": terms + sample_terms, "__flops__": terms, "params": list(p_terms)}
        if k > 1:
            reference = {m: whole(Fraction(v) / k) for m, v in reference.items()}
            for m, cause in (("macs", "double_count"), ("__flops__", "double_count"), ("params", "params_tied")):
                extra = whole(Fraction(predicted[m]) * (k - 1) / k)
                by_metric[m] = _scale(by_metric[m], k)
                if extra:
                    by_metric[m].append(Term(cause, extra, "ptflops.paths",
                                             Phrase("{type!s} is reached by {k!s} paths and ptflops sums "
                                             "it once per path: {predicted} on each of {k!s} rows", {"type": row.type,
                                                                                                     "k": k, "predicted": predicted[m]})))
        if shadowed:
            reference[INCLUSIVE] = 1
            predicted["shadowed"] = 1
        terms_out = {m: tuple(ts) for m, ts in by_metric.items() if ts}
        return LayerPrediction(row.name, row.type, row.calls, reference, predicted, terms_out), hook_count

    def _outside(self, tree: common.Tree, row: ModuleRow, caught: list[Caught]) -> LayerPrediction | None:
        """A module in no row: its own work (seen only through patched functions, or not at all)
        and its own parameters, against what ptflops shows for it (nothing)."""
        seen = [c for c in caught if c.count is not None]
        seen_macs = sum(c.macs for c in seen)
        seen_flops = sum(c.flops for c in seen)
        seen_ops = {op for c in seen if c.components is None for op in c.ops}
        rest = {k: v for k, v in row.components.items()}
        for op in seen_ops:
            for k, v in row.op_components.get(op, {}).items():
                rest[k] = rest.get(k, 0) - v
        for c in seen:
            for k, v in (c.components or {}).items():
                rest[k] = rest.get(k, 0) - v
        rest = {k: v for k, v in rest.items() if v}
        if not rest and not caught:
            rest = dict(row.components)  # module-table forwards: caught covers the whole row
        missed_macs, missed_flops = row.macs - seen_macs, row.flops - seen_flops
        terms: list[Term] = []
        if seen_macs:
            fnames = ", ".join(sorted({c.fname for c in seen if c.macs}))
            terms.append(Term(TOTAL_ONLY, -seen_macs, "ptflops.unhooked_forward",
                              Phrase("ptflops has no row for {type!s}.forward: the patched "
                              "{fnames!s} count its {seen_macs} MACs in the total only", {"type": row.type,
                                                                                          "fnames": fnames,
                                                                                          "seen_macs": seen_macs})))
        if missed_macs or missed_flops:
            families = joined([Phrase("{k!s} {v}", {"k": k, "v": v}) for k, v in rest.items()], ", ", "no arithmetic")
            if common._builtin_compute(row):
                terms.append(Term("unsupported_module", -missed_macs, "ptflops.unsupported_module",
                                  Phrase("ptflops has no hook for {type!s}: "
                                  "{missed_macs} MACs ({missed_flops} FLOPs: {families!s}) in its "
                                  "forward are not counted", {"type": row.type, "missed_macs": missed_macs,
                                                              "missed_flops": missed_flops, "families": families}),
                                  flops=-missed_flops))
            else:
                terms.append(Term("functional_not_seen", -missed_macs, "ptflops.functional_not_seen",
                                  Phrase("ptflops cannot see the work in "
                                  "{type!s}.forward that no patched function does: {missed_macs} MACs, "
                                  "{missed_flops} FLOPs ({families!s})", {"type": row.type, "missed_macs": missed_macs,
                                                                          "missed_flops": missed_flops,
                                                                          "families": families}), flops=-missed_flops))
        p_terms = []
        trainable = sum(p.numel for p in _owned_directly(tree.native, row.name) if p.trainable)
        frozen = row.params - trainable
        if trainable:
            p_terms.append(Term("params_missed", -trainable, "ptflops.params_missed.2",
                                Phrase("ptflops has no row for {type!s}, so its "
                                "{trainable} parameters are in no row (its total counts them)", {"type": row.type,
                                                                                                 "trainable": trainable})))
        if frozen:
            p_terms.append(Term("params_frozen", -frozen, "ptflops.params_frozen.2",
                                Phrase("ptflops leaves out the {frozen} frozen "
                                "parameters of {type!s}", {"frozen": frozen, "type": row.type})))
        if not (row.macs or terms or row.params):
            return None
        out_terms = {"macs": tuple(terms)} if terms else {}
        if p_terms:
            out_terms["params"] = tuple(p_terms)
        return LayerPrediction(row.name, row.type, row.calls, {"macs": row.macs, "params": row.params},
                               {"macs": 0, "params": 0}, out_terms)


def _owned_directly(native: NativeCount, name: str) -> list[ParamInfo]:
    return [p for p in native.params if (p.name.rsplit(".", 1)[0] if "." in p.name else "") == name]


def _unattributed_text(label: str, cause: str, amount: Number, who: str) -> Phrase:
    fname = label.split(":", 1)[1]
    if cause == "double_count":
        return Phrase("{fname!s} counted by the hook of {who!s} and again by the patched {fname!s}: +{amount}",
                      {"fname": fname, "who": who, "amount": amount})
    if cause == TOTAL_ONLY:
        return Phrase("the patched {fname!s} counts the {amount} MACs of {who!s} in the total, outside any row",
                      {"fname": fname, "amount": amount, "who": who})
    if cause == "formula":
        return Phrase("the patched {fname!s} formula differs from the MAC count in {who!s}: {amount}", {"fname": fname,
                                                                                                        "who": who,
                                                                                                        "amount": amount})
    return Phrase("functional {fname!s} counted outside any module, in {who!s}: {amount}", {"fname": fname, "who": who,
                                                                                            "amount": amount})


def _params_headline_terms(native: NativeCount, rows: Mapping[str, int]) -> tuple[Term, ...]:
    """ptflops' total counts each trainable tensor once, whatever rows hold it."""
    missed = [p for p in native.params if p.trainable and rows.get(p.name, 0) == 0]
    multi = [(p, rows[p.name]) for p in native.params if p.trainable and rows.get(p.name, 0) > 1]
    terms = []
    if missed:
        n = sum(p.numel for p in missed)
        terms.append(Term("params_missed", n, "ptflops.params_missed",
                          Phrase("ptflops' total counts {n} trainable parameters that no row "
                          "holds ({join!s}{v!s})", {"n": n, "join": ', '.join((p.name for p in missed[:4])),
                                                    "v": ', ...' if len(missed) > 4 else ''})))
    if multi:
        n = sum(p.numel * (c - 1) for p, c in multi)
        terms.append(Term("params_tied", -n, "ptflops.params_tied.2",
                          Phrase("ptflops' total counts once the {n} parameters that several "
                          "rows each count", {"n": n})))
    return tuple(terms)


def _batch_counter(native: NativeCount) -> int:
    """``__batch_counter__``: len(input[0]) of the root's one call; several inputs go in as
    keywords, which leaves no positional input and a batch of 1."""
    if len(native.input_shapes) == 1 and native.input_shapes[0]:
        return native.input_shapes[0][0]
    return 1


def _hook_rows(tree: common.Tree, hooks: Mapping[str, Hook] = HOOKS) -> tuple[list[ModuleRow], list[ModuleRow]]:
    """ptflops' ``accumulate_flops`` walk: the hooked modules in the total, and the shadowed ones."""
    reached: list[ModuleRow] = []

    def walk(name: str) -> None:
        row = tree.rows[name]
        if hooked(row, hooks):
            reached.append(row)
            return
        for child in tree.children.get(name, ()):
            walk(child)

    walk("")
    names = {r.name for r in reached}
    return reached, [r for r in tree.native.rows if hooked(r, hooks) and r.name not in names]


def _paths(walked: set[str], row: ModuleRow) -> int:
    """How many ``children()`` paths ``accumulate_flops`` takes to the module: its name and its
    other registrations (``_aliases``) that ``named_children()`` does not fold into an earlier
    name of the same parent (``common.walked_paths``)."""
    if not row.name:
        return 1
    return max(1, sum(1 for p in (row.name, *row.attrs.get("_aliases", ())) if p in walked))


CONVENTION = PtflopsConvention()
