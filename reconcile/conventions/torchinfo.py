"""torchinfo 1.8.0: its rules, written once, predicting every number ``summary()`` returns.

torchinfo counts from **parameters**, not from operations. A forward pre-hook creates one record
(``LayerInfo``) per module call; a forward hook sets its output size and its mult-adds
(``layer_info.py:calculate_macs``), for every parameter the module's ``named_parameters()`` yields:

- named ``weight`` or ``bias`` in a class whose name contains "Conv": ``numel x prod(output_size[:1]
  + output_size[2:])`` (the batch times the output positions): a convolution's MACs plus one bias
  add per output; a transposed convolution multiplies by its *output* positions, and any class
  called "...Conv..." (transformers' ``Conv1D``, a Linear) gets the rule too;
- named ``weight`` or ``bias`` otherwise: ``output_size[0] x numel``: a Linear on 2-D input is its
  MACs plus its bias adds, but on ``(B, T, in)`` only one of its T tokens is counted; a norm gives
  ``B x 2C``, an Embedding ``B x V x D``;
- another name containing "weight" or "bias" (RNN ``weight_ih_l0``): ``prod(output_size[:2]) x numel``.

Totals (``model_statistics.py``) add up **leaf** records only (modules without children), every call:
work in a container's own ``forward`` (attention's ``q @ k.T``, residual adds, every functional
call) and ``nn.MultiheadAttention`` (it has a child, ``out_proj``, so it is no leaf) are never
counted. That is why attention counts are tiny: the projections count once per sample instead of
once per token (``per_batch_row``), and the attention matmuls not at all (``functional_not_seen``,
``unsupported_module``).

Rows (as the torchinfo adapter reports them): every entry of ``summary_list`` in its order, keyed
by module name and ``call`` = the how-manieth entry of that module: one per module call, plus the
containers ``add_missing_container_layers`` inserts where a call's ancestors are not shown (the
same record object each time: inserted twice, it is ``is_recursive`` at both places).
``conventions.torchinfo_layers`` rebuilds ``summary_list`` from the native count exactly as torchinfo builds it: depth and ancestors
from the module's *last* path in ``named_modules(remove_duplicate=False)`` (``apply_hooks`` walks the
tree without de-duplicating and keeps the last registration's hooks), records in call order, then
the inserted containers, then each record's "children": every following record deeper than it.

Row values are what each row adds to a total (what torchinfo prints at unlimited depth):
- ``macs`` (leaf rows): the record's mult-adds, every call;
- ``params`` / ``trainable_params``: 0 on a recursive record; a leaf's ``named_parameters()``
  count; a container's ``max(leftover, 0)``, leftover = its ``named_parameters()`` count minus,
  over its non-recursive children, a leaf's count or a container's (unclipped) leftover;
- ``param_bytes`` (leaf rows, not recursive): ``element_size x numel`` of its parameters;
- ``pass_bytes`` (leaf rows whose module has parameters, every call): 2 x the bytes of its first
  output tensor ("x2 for gradients").
The headline holds the totals and each memory figure in exact bytes: ``Input size (bytes)`` is
``sys.getsizeof`` of each input tensor's storage (its bytes plus a 64-byte Python object header).

References (what each term is measured against), partitioning the native totals over the rows:
- ``macs``: the native MACs of the call (exclusive work), on every call row;
- ``params`` / ``trainable_params`` / ``param_bytes``: each parameter tensor once, at the
  non-recursive row of its owner module, or of its nearest ancestor that has one (a module that
  never ran); a leftover is then explained tensor by tensor (``params_tied`` for a tensor with two
  names) plus the clipping of a negative leftover;
- ``pass_bytes``: the bytes of every output tensor of the call.

Known limits (each shows as a residual, nothing is hidden): pruned parameters (``weight_orig`` with a
``weight_mask`` count the mask's ones, values the native count does not keep); lazy parameters; a
leaf with parameters whose output is a dict (torchinfo sizes its last value, the native record keeps
values in order) or starts with a non-tensor.

Nothing here imports torch or torchinfo.
"""

from __future__ import annotations

from collections import defaultdict

from reconcile.conventions.base import (
    Convention, LayerPrediction, Number, Prediction, RuleDoc, Term, itemsize, joined, numel,
)
from reconcile.conventions.common import _builtin_compute
from reconcile.conventions.torchinfo_layers import Counts, LayerInfo, Model, Tensor, parent_path, summary_list
from reconcile.counter.formulas import flops_of
from reconcile.records import CallRecord, ModuleRow, NativeCount, Phrase

# headline keys, as the adapter names them
MACS = "Total mult-adds"
TOTAL = "Total params"
TRAINABLE = "Trainable params"
NON_TRAINABLE = "Non-trainable params"
INPUT = "Input size (bytes)"
PASS = "Forward/backward pass size (bytes)"
PARAMS = "Params size (bytes)"
ESTIMATED = "Estimated Total Size (bytes)"

# sys.getsizeof(tensor.untyped_storage()) - its bytes on CPython 3.11 (64-bit) with torch 2.14.1:
# torch's Storage.__sizeof__ adds the object's own size, getsizeof the garbage collector's header
STORAGE_HEADER = 64


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _first_output(call: CallRecord | None) -> tuple[list[int], int]:
    """``output_size`` and its element size as ``calculate_size`` finds them: the first tensor of a
    tuple or list (the native record flattens outputs in the same order)."""
    if call is None or not call.outputs:
        return [], 0
    out = call.outputs[0]
    return list(out.shape), itemsize(out.dtype)


def _param_macs(cls: str, local: str, n: int, size: list[int]) -> tuple[int, str]:
    """``calculate_macs`` for one parameter: its mult-adds and the rule used."""
    if local in ("weight", "bias"):
        if "Conv" in cls:
            return n * _prod(size[:1] + size[2:]), "conv"
        return (size[0] * n if size else 0), "batch"
    if "weight" in local or "bias" in local:
        return n * _prod(size[:2]), "steps"
    return 0, "none"


class TorchinfoConvention(Convention):
    tool = "torchinfo"
    unit = "mult-adds"
    metric = "macs"
    headline_metric = MACS
    metrics = {
        MACS: "macs",
        TOTAL: "params",
        TRAINABLE: "trainable_params",
        NON_TRAINABLE: "",
        INPUT: "",
        PASS: "pass_bytes",
        PARAMS: "param_bytes",
        ESTIMATED: "",
    }
    op_metrics = (MACS,)
    rules = (
        RuleDoc("unit", "mult-adds (MACs) computed from parameter counts, not from operations; sizes in bytes "
                "(printed as MB = 1e6 bytes)"),
        RuleDoc("rows", "one record per module call (forward pre-hook), plus containers inserted where a call's "
                "ancestors are not listed; depth from the module's last registration path"),
        RuleDoc("total mult-adds", "leaf modules (no children) only, every call; containers' own forward code, "
                "functional calls and nn.MultiheadAttention (it has a child) are 0"),
        RuleDoc("Conv* (any class name containing Conv)", "weight and bias numel x prod(output_size[:1] + "
                "output_size[2:]): conv MACs + 1 per output for the bias; transposed convs x output positions; "
                "transformers' Conv1D gets it too"),
        RuleDoc("other weight / bias", "output_size[0] x numel: Linear = batch x (in x out + out), its tokens left "
                "out on 3-D input; BatchNorm / LayerNorm = batch x 2C; Embedding = batch x V x D"),
        RuleDoc("RNN weight_ih_l0, bias_hh_l0, ...", "prod(output_size[:2]) x numel: batch x steps x parameters"),
        RuleDoc("activations, pools, dropout, parameter-free leaves", "0"),
        RuleDoc("Total params", "leaves: named_parameters() per non-recursive record; containers: max(leftover, 0), "
                "leftover = own named_parameters() - non-recursive children's counts (unclipped): container-owned "
                "parameters (cls_token) and never-run modules' parameters land there; a tensor tied across two "
                "leaves is counted twice where the leftover clips at 0"),
        RuleDoc("Trainable params", "the same over requires_grad tensors; Non-trainable = Total - Trainable"),
        RuleDoc("repeated modules", "mult-adds and pass size every call; parameters once (later calls recursive)"),
        RuleDoc("Input size", "sys.getsizeof of each input tensor's storage: its bytes + a 64-byte object header"),
        RuleDoc("Forward/backward pass size", "2 x bytes of the first output tensor, over calls of leaves that have "
                "parameters (conv, norm, linear); activations, pools and containers left out"),
        RuleDoc("Params size", "element_size x numel over non-recursive leaf records: container-owned and "
                "never-run modules' parameters left out, tied ones counted again"),
        RuleDoc("Estimated Total Size", "Input size + Forward/backward pass size + Params size"),
        RuleDoc("batch and mode", "the input given, whole batch; the mode passed (eval by default) under no_grad"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        model = Model(native)
        infos = summary_list(model)
        counts = Counts(model)
        fair = self._fair(model, infos)
        layers: list[LayerPrediction] = []
        seen: dict[str, int] = defaultdict(int)
        for info in infos:
            layer = self._row(model, counts, fair, info, seen[info.module])
            for key, value in layer.predicted.items():  # every prediction is its reference plus its terms
                assert value == layer.reference[key] + sum(t.amount for t in layer.terms.get(key, ())), (info, key)
            layers.append(layer)
            seen[info.module] += 1

        def rows(key: str) -> tuple[Number, Number]:
            return (sum(p.predicted.get(key, 0) for p in layers), sum(p.reference.get(key, 0) for p in layers))

        headline: dict[str, Number] = {}
        reference: dict[str, Number] = {}
        terms: dict[str, tuple[Term, ...]] = {}
        for key, row_key in self.metrics.items():
            if row_key:
                headline[key], _ = rows(row_key)
                reference[key] = headline[key]  # the rows' own sum: their terms explain it
        headline[NON_TRAINABLE] = headline[TOTAL] - headline[TRAINABLE]
        reference[NON_TRAINABLE] = native.totals["params_frozen"]
        terms[NON_TRAINABLE] = _frozen_terms(layers)
        headline[INPUT], reference[INPUT], terms[INPUT] = self._input(native)
        headline[ESTIMATED] = headline[INPUT] + headline[PASS] + headline[PARAMS]
        reference[ESTIMATED] = reference[INPUT] + rows("pass_bytes")[1] + rows("param_bytes")[1]
        terms[ESTIMATED] = terms[INPUT] + _summed_terms(layers, "pass_bytes", "forward/backward pass size") \
            + _summed_terms(layers, "param_bytes", "params size")
        for key in (NON_TRAINABLE, INPUT, ESTIMATED):  # each is its reference plus its terms
            assert headline[key] == reference[key] + sum(t.amount for t in terms[key]), key
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline=headline,
                          headline_terms={k: v for k, v in terms.items() if v}, headline_reference=reference)

    # ----- references ---------------------------------------------------------------------------

    @staticmethod
    def _fair(model: Model, infos: list[LayerInfo]) -> dict[int, set[int]]:
        """``id`` of a record -> the tensors it holds in the reference: a tensor sits at the
        non-recursive record of its owner module, else of the nearest ancestor that has one (a
        module that never ran)."""
        primary = {info.module: id(info) for info in infos if not info.recursive}
        out: dict[int, set[int]] = defaultdict(set)
        for i, t in enumerate(model.tensors):
            path = parent_path(t.name)
            while model.path_of[path] not in primary:
                if not path:
                    break
                path = parent_path(path)
            module = model.path_of[path]
            if module in primary:
                out[primary[module]].add(i)
        return out

    # ----- rows ---------------------------------------------------------------------------------

    def _row(self, model: Model, counts: Counts, fair: dict[int, set[int]], info: LayerInfo, k: int) -> LayerPrediction:
        row = model.rows[info.module]
        mine = fair.get(id(info), set())
        ts = model.tensors
        reference: dict[str, Number] = {}
        predicted: dict[str, Number] = {}
        terms: dict[str, tuple[Term, ...]] = {}

        macs_ref = info.call.components.get("macs", 0) if info.call is not None else 0
        reference["macs"] = macs_ref
        if info.leaf:
            predicted["macs"], terms["macs"] = self._leaf_macs(model, row, info, macs_ref)
        else:
            predicted["macs"], terms["macs"] = 0, _container_macs(row, info)

        for key, only in (("params", False), ("trainable_params", True)):
            ref = sum(ts[i].numel for i in mine if not only or ts[i].trainable)
            reference[key] = ref
            if info.recursive:
                predicted[key] = 0
                terms[key] = ()
                continue
            value = counts.value(info, only)
            predicted[key] = value if info.leaf else max(value, 0)
            terms[key] = _param_terms(model, counts, info, mine, only, value)

        if info.leaf or mine:
            byte_ref = sum(ts[i].nbytes for i in mine)
            reference["param_bytes"] = byte_ref
            if info.leaf and not info.recursive:
                counted = model.params[info.module]
                predicted["param_bytes"] = sum(ts[i].nbytes for i in counted)
                extra = [i for i in counted if i not in mine]
                terms["param_bytes"] = (_tied_term(ts, extra, row, "nbytes", "bytes"),) if extra else ()
            else:
                predicted["param_bytes"] = 0
                terms["param_bytes"] = (Term("params_missed", -byte_ref, "torchinfo.params_missed",
                                             Phrase("Params size adds up leaf records only: the {byte_ref} bytes of parameters held by "
                    "{holders!s} are left out", {"byte_ref": byte_ref, "holders": _holders(model, mine, info)})),
                                        ) if byte_ref else ()

        if info.leaf and model.params[info.module] and info.call is not None:
            reference["pass_bytes"], predicted["pass_bytes"], terms["pass_bytes"] = _pass(row, info.call)
        return LayerPrediction(info.module, row.type, row.calls, reference, predicted,
                               {m: ts_ for m, ts_ in terms.items() if ts_}, call=k)

    def _leaf_macs(self, model: Model, row: ModuleRow, info: LayerInfo, ref: int) -> tuple[int, tuple[Term, ...]]:
        size, _ = _first_output(info.call)
        parts: dict[str, int] = defaultdict(int)  # "bias" / "weight" -> mult-adds
        rules: set[str] = set()
        for i, local in model.params[info.module].items():
            value, rule = _param_macs(row.type, local, model.tensors[i].numel, size)
            parts["bias" if "bias" in local else "weight"] += value
            if value:
                rules.add(rule)
        pred = parts["bias"] + parts["weight"]
        where = "" if row.calls == 1 else f" (call {info.call.index + 1} of {row.calls})"
        comps = info.call.components if info.call is not None else {}
        if not model.params[info.module]:
            if not ref:
                return 0, ()
            cause = "unsupported_module" if _builtin_compute(row) else "functional_not_seen"
            return 0, (Term(cause, -ref, "torchinfo.no_params",
                            Phrase("torchinfo counts parameters only: {type!s}{where!s} has none, so its "
                            "{ref} MACs ({flops_of} FLOPs) are not counted", {"type": row.type, "where": where,
                                                                              "ref": ref,
                                                                              "flops_of": flops_of(dict(comps))}),
                            flops=-flops_of(dict(comps))),)
        if not ref:
            # no multiply-accumulate natively: the whole parameter-based count is a convention
            cause = ("norm" if comps.get("norm") or "Norm" in row.type else
                     "activation" if comps.get("activation") else "formula")
            return pred, ((Term(cause, pred, "torchinfo.from_params",
                                Phrase("{type!s}{where!s} counted from its parameters: "
                                "{rule_text!s} = {pred}", {"type": row.type, "where": where,
                                                           "rule_text": _rule_text(row.type, size, model, info),
                                                           "pred": pred})),) if pred else ())
        out: list[Term] = []
        if parts["bias"]:
            out.append(Term("bias", parts["bias"], "torchinfo.bias", Phrase("{type!s}{where!s}: its bias counted as "
                            "{rule_text!s} = {parts}", {"type": row.type, "where": where,
                                                        "rule_text": _rule_text(row.type, size, model, info, 'bias'),
                                                        "parts": parts['bias']})))
        gap = parts["weight"] - ref
        if gap:
            positions = _prod(size[1:-1])
            if rules <= {"batch"} and len(size) > 2 and parts["weight"] * positions == ref:
                out.append(Term("per_batch_row", gap, "torchinfo.per_batch_row",
                                Phrase("{type!s}{where!s} counted once per batch row: output_size[0] ({size!s}) x its weight = "
                    "{parts}; its output {shape!s} has {positions} positions per row "
                    "(tokens), so {ref} MACs natively", {"type": row.type, "where": where, "size": size[0],
                                                         "parts": parts['weight'], "shape": _shape(size),
                                                         "positions": positions, "ref": ref})))
            else:
                out.append(Term("formula", gap, "torchinfo.formula", Phrase(
                    "{type!s}{where!s}: {rule_text!s} = {weight} instead of its {ref} MACs"
                    + (" (a transposed convolution's MACs run over its input positions)"
                       if "Transpose" in row.type else ""),
                    {"type": row.type, "where": where, "rule_text": _rule_text(row.type, size, model, info, 'weight'),
                     "weight": parts['weight'], "ref": ref})))
        return pred, tuple(out)

    # ----- headline-only figures ------------------------------------------------------------------

    @staticmethod
    def _input(native: NativeCount) -> tuple[int, int, tuple[Term, ...]]:
        ref = sum(numel(s) * itemsize(d) for s, d in zip(native.input_shapes, native.input_dtypes))
        n = len(native.input_shapes)
        extra = STORAGE_HEADER * n
        terms = (Term("memory_model", extra, "torchinfo.memory_model.3",
                      Phrase("sys.getsizeof of each input's storage adds a {STORAGE_HEADER!s}-byte "
                      "Python object header: {n!s} x {STORAGE_HEADER!s} = {extra} bytes",
                             {"STORAGE_HEADER": STORAGE_HEADER, "n": n, "extra": extra})),) if n else ()
        return ref + extra, ref, terms


def _shape(size: list[int]) -> Phrase:
    return joined(list(size), "x", "()", slot="!s")


def _rule_text(cls: str, size: list[int], model: Model, info: LayerInfo, part: str | None = None) -> Phrase:
    """The arithmetic of ``calculate_macs`` for the parameters of one part ("weight", "bias", None: all)."""
    bits = []
    for i, local in model.params[info.module].items():
        if part == "bias" and "bias" not in local or part == "weight" and "bias" in local:
            continue
        n = model.tensors[i].numel
        value, rule = _param_macs(cls, local, n, size)
        if rule == "conv":
            bits.append(Phrase("{local!s} {n} x prod(output_size[:1] + output_size[2:]) {prod}", {"local": local,
                                                                                                  "n": n, "prod": _prod(size[:1] + size[2:])}))
        elif rule == "batch":
            bits.append(Phrase("output_size[0] {v!s} x {local!s} {n}", {"v": size[0] if size else 0, "local": local,
                                                                        "n": n}))
        elif rule == "steps":
            bits.append(Phrase("{local!s} {n} x prod(output_size[:2]) {prod}", {"local": local, "n": n,
                                                                                "prod": _prod(size[:2])}))
    return joined(bits, " + ", "0")


def _container_macs(row: ModuleRow, info: LayerInfo) -> tuple[Term, ...]:
    """A container's own forward code: never in the total (only leaves are)."""
    if info.call is None:
        return ()
    comps = dict(info.call.components)
    macs, flops = comps.get("macs", 0), flops_of(comps)
    if not (macs or flops):
        return ()
    where = "" if row.calls == 1 else f" (call {info.call.index + 1} of {row.calls})"
    families = joined([Phrase("{k!s} {v}", {"k": k, "v": v}) for k, v in comps.items() if v], ", ")
    if _builtin_compute(row) and macs:
        return (Term("unsupported_module", -macs, "torchinfo.unsupported_module",
                     Phrase("torchinfo totals leaf modules only: {type!s}{where!s} has a child, "
                     "so the {macs} MACs ({flops} FLOPs: {families!s}) its own forward computes with its "
                     "weights are not counted", {"type": row.type, "where": where, "macs": macs, "flops": flops,
                                                 "families": families}), flops=-flops),)
    return (Term("functional_not_seen", -macs, "torchinfo.functional_not_seen",
                 Phrase("torchinfo totals leaf modules only: the functional work in "
                 "{type!s}.forward{where!s} is not counted: {macs} MACs, {flops} FLOPs ({families!s})",
                        {"type": row.type, "where": where, "macs": macs, "flops": flops, "families": families}),
                 flops=-flops),)


def _holders(model: Model, mine: set[int], info: LayerInfo) -> str:
    """Who holds a record's reference parameters: the module itself (a container), or modules below
    it that never ran."""
    row = model.rows[info.module]
    others = sorted({_owner(model.tensors[i].name) for i in mine} - {info.module})
    said = [f"{row.type} itself"] if any(_owner(model.tensors[i].name) == info.module for i in mine) else []
    if others:
        said.append("modules below it that never ran (" + ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
                    + ")")
    return " and ".join(said)


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _tied_term(ts: list[Tensor], extra: list[int], row: ModuleRow, attr: str, unit: str) -> Term:
    amount = sum(getattr(ts[i], attr) for i in extra)
    names = ", ".join(ts[i].name for i in extra[:3]) + (", ..." if len(extra) > 3 else "")
    return Term("params_tied", amount, "torchinfo.params_tied",
                Phrase("{type!s} holds {names!s} under another name too (tied or shared): its "
                "{amount} {unit!s} are counted again here", {"type": row.type, "names": names, "amount": amount,
                                                             "unit": unit}))


def _param_terms(model: Model, counts: Counts, info: LayerInfo, mine: set[int], trainable_only: bool,
                 value: int) -> tuple[Term, ...]:
    """Why a non-recursive record's count differs from its reference, tensor by tensor: each tensor
    it counts a different number of times than once-if-it-holds-it, then the clipping at 0."""
    ts = model.tensors
    row = model.rows[info.module]
    vec = counts.vector(info)
    by_cause: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for i in set(vec) | mine:
        if trainable_only and not ts[i].trainable:
            continue
        delta = vec.get(i, 0) - (1 if i in mine else 0)
        if delta:
            by_cause["params_tied" if ts[i].tied else "formula"].append((i, delta))
    out: list[Term] = []
    held = model.params[info.module]
    for cause, items in by_cause.items():
        amount = sum(d * ts[i].numel for i, d in items)
        signed = Phrase("{v!s}{abs}", {"v": '+' if amount > 0 else '-', "abs": abs(amount)})
        if info.leaf:
            names = ", ".join(ts[i].name for i, _ in items[:3]) + (", ..." if len(items) > 3 else "")
            out.append(Term(cause, amount, "torchinfo.registered_twice",
                            Phrase("{type!s} counts {names!s} again ({signed!s}): registered here under "
                            "another name too (tied or shared)", {"type": row.type, "names": names, "signed": signed})))
            continue
        said = joined([
            Phrase("{name!s} ({numel}) held {v!s}x, counted "
            "{v2!s}x below, {v3!s} here in the reference", {"name": ts[i].name, "numel": ts[i].numel,
                                                            "v": 1 if i in held else 0,
                                                            "v2": (1 if i in held else 0) - vec.get(i, 0),
                                                            "v3": 'held' if i in mine else 'not held'})
            for i, _ in items[:3]] + ([Phrase("and {n!s} more", {"n": len(items) - 3})] if len(items) > 3 else []),
                      "; ")
        why = ("tied or shared tensors are counted once per record that holds them" if cause == "params_tied" else
               "torchinfo takes a record's children from the list (the deeper records that follow it), not from "
               "the module tree, and this module's calls do not line up with it")
        out.append(Term(cause, amount, "torchinfo.leftover",
                        Phrase("{type!s}'s leftover is its named_parameters() (each tensor once) minus "
                        "what the records below it count, and {why!s}: {said!s} ({signed!s})", {"type": row.type,
                                                                                                "why": why,
                                                                                                "said": said,
                                                                                                "signed": signed})))
    if not info.leaf and value < 0:
        cause = min(by_cause, key=lambda c: sum(d * ts[i].numel for i, d in by_cause[c])) if by_cause else "formula"
        out.append(Term(cause, -value, "torchinfo.leftover_clipped",
                        Phrase("{type!s}'s leftover is negative ({value}) and torchinfo clips it "
                        "to 0 (max(leftover, 0)): the compensation for counts made again below it stops there",
                               {"type": row.type, "value": value})))
    return tuple(out)


def _pass(row: ModuleRow, call: CallRecord) -> tuple[int, int, tuple[Term, ...]]:
    """Reference (bytes of every output tensor of the call), prediction (2 x the first one's) and terms."""
    whole = sum(o.numel * itemsize(o.dtype) for o in call.outputs)
    first = call.outputs[0].numel * itemsize(call.outputs[0].dtype) if call.outputs else 0
    terms = []
    if whole != first:
        terms.append(Term("memory_model", first - whole, "torchinfo.memory_model",
                          Phrase("only the first output tensor of {type!s} is sized: "
                          "{v} bytes of its other {v2!s} outputs left out", {"type": row.type, "v": whole - first,
                                                                             "v2": len(call.outputs) - 1})))
    if first:
        terms.append(Term("memory_model", first, "torchinfo.memory_model.2",
                          Phrase("x2 for gradients: {type!s}'s output of {first} bytes "
                          "counted twice, {v}", {"type": row.type, "first": first, "v": 2 * first})))
    return whole, 2 * first, tuple(terms)


def _frozen_terms(layers: list[LayerPrediction]) -> tuple[Term, ...]:
    """Non-trainable = Total - Trainable: the parameter causes of the rows, frozen part."""
    by: dict[str, Number] = defaultdict(int)
    for p in layers:
        for t in p.terms.get("params", ()):
            by[t.cause] += t.amount
        for t in p.terms.get("trainable_params", ()):
            by[t.cause] -= t.amount
    return tuple(Term(c, v, "torchinfo.total_frozen", Phrase("Total params {v!s}{abs} on frozen tensors ({c!s})",
                                                             {"v": '+' if v > 0 else '-', "abs": abs(v), "c": c}))
                 for c, v in by.items() if v)


def _summed_terms(layers: list[LayerPrediction], key: str, label: str) -> tuple[Term, ...]:
    by: dict[str, Number] = defaultdict(int)
    for p in layers:
        for t in p.terms.get(key, ()):
            by[t.cause] += t.amount
    return tuple(Term(c, v, "torchinfo.bytes_over_rows", Phrase("{label!s}: {v!s}{abs} bytes over its rows ({c!s})",
                                                                {"label": label, "v": '+' if v > 0 else '-',
                                                                 "abs": abs(v), "c": c}))
                 for c, v in by.items() if v)


CONVENTION = TorchinfoConvention()
