"""torchsummary 1.5.1: its rules, written once, predicting every number ``summary()`` reports.

torchsummary counts no operations. Rows (as the torchsummary adapter reports them): one per
*call* of every module but the root, ``nn.Sequential`` and ``nn.ModuleList`` (``isinstance``, so
their subclasses too), in post-order. Each row has ``nb_params`` (numel of ``module.weight`` plus
numel of ``module.bias``, where those attributes are tensors), ``output_prod`` (``np.prod`` of the
printed output shape, whose batch is -1: minus the per-sample output elements; for a tuple output
the product of every element's ``[-1, *shape[1:]]``) and, for rows with a weight, ``trainable``
(``weight.requires_grad``). The headline holds the parameter totals over rows and each memory
figure in exact bytes (the adapter keeps the printed MiB strings beside them; ``printed_lines``
formats predicted bytes the way ``summary()`` prints them).

References (what each term is measured against):
- ``nb_params``: the native parameters the module owns (each tensor once, at its canonical owner)
  on its first call, 0 on later calls. An ``(outside rows)`` pseudo-row holds the parameters of
  modules with no row (the root, Sequential/ModuleList, modules that never ran), so rows plus
  pseudo-row partition the native parameter total.
- ``output_prod``: the native output elements of that call (whole batch).
- headline ``Total params``: the rows (row key ``nb_params``). Every other headline figure is
  headline-only (row key ""), against a native reference of the same scope: ``Trainable params``
  and ``Non-trainable params`` the native trainable and frozen totals; ``Input size (bytes)`` the
  input bytes at their dtypes; ``Forward/backward pass size (bytes)`` the bytes, at their dtypes,
  of the outputs of the calls torchsummary has rows for; ``Params size (bytes)`` the parameter
  bytes; ``Estimated Total Size (bytes)`` the sum of those three. The rows' ``output_prod`` is a
  metric of its own too (key ``"output_prod"``, no headline figure), so row residuals count in the
  tool's residual.

Batch and mode: torchsummary runs its own ``torch.rand(2, *input_size)`` float32 input with autograd
on and never calls ``eval()``; the native count runs the user's batch in eval mode. Nothing it
reports depends on either as long as the calls and every output dim but the first are the same:
per-sample products drop the first dim, and BatchNorm in training (the reason for batch 2) only
moves the running statistics of torchsummary's deep copy.

An output whose first dim is not the batch but a later one is (sequence-first ``(T, B, E)``) has
that dim at 2 in torchsummary's run: predicted (``batch_differs``) when the native batch is 3 or
more and exactly one later dim equals it.

Known limits (each shows as a residual, nothing is hidden): the same sequence-first output at a
native batch of 1 (every unit dim would look like the batch, so none is taken for it); outputs whose
shape depends on the batch in any other way; a forward whose module calls depend on the mode
(training-only heads) gives rows native's eval count has not seen; a ``weight`` / ``bias`` that is
neither a registered parameter nor a buffer (parametrizations, the old ``weight_norm``, a plain
tensor attribute) has a size the native record does not keep.

Nothing here imports torch or torchsummary.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconcile.conventions.base import (
    Convention, LayerPrediction, Number, OUTSIDE, Prediction, RuleDoc, Term, itemsize, joined, numel,
)
from reconcile.records import CallRecord, ModuleRow, NativeCount, ParamInfo, Phrase

_NOT_HOOKED = ("torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList")
BYTES = 4  # torchsummary: "assume 4 bytes/number (float on cuda)"
MIB = 2**20

# headline keys, as the adapter names them
TOTAL = "Total params"
TRAINABLE = "Trainable params"
NON_TRAINABLE = "Non-trainable params"
INPUT = "Input size (bytes)"
PASS = "Forward/backward pass size (bytes)"
PARAMS = "Params size (bytes)"
ESTIMATED = "Estimated Total Size (bytes)"

# what a parameter cause means at the headline, where rows are summed up
_PHRASE = {
    "repeated_calls": "weight and bias counted again on every further call of a module",
    "params_tied": "tied weights counted again where they are registered a second time",
    "params_missed": "parameters with no row or not named weight/bias, not counted",
    "params_frozen": "each row's split follows weight.requires_grad, not each tensor's",
    "formula": "buffers named weight/bias counted as parameters",
}


def printed_lines(headline: dict) -> dict[str, str]:
    """The four MiB lines as ``summary()`` prints them, from exact byte figures: ``%0.2f`` of float
    MiB, the total being the float sum params + pass + input, in ``summary()``'s order."""
    i, f, p = (float(headline[k]) / MIB for k in (INPUT, PASS, PARAMS))
    return {"Input size (MB)": "%0.2f" % i, "Forward/backward pass size (MB)": "%0.2f" % f,
            "Params size (MB)": "%0.2f" % p, "Estimated Total Size (MB)": "%0.2f" % (p + f + i)}


def _hooked(row: ModuleRow) -> bool:
    """``summary()`` hooks every module but the root, Sequential and ModuleList (isinstance)."""
    mro = (row.attrs.get("class", ""), *row.attrs.get("bases", ()))
    return row.name != "" and not any(c in mro for c in _NOT_HOOKED)


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _plural(n: int, word: str) -> str:
    return Phrase("{n} {word!s}" + ("" if n == 1 else "s"), {"n": n, "word": word})


@dataclass(frozen=True)
class _Attr:
    """``module.weight`` or ``module.bias`` as torchsummary reads it."""

    attr: str
    numel: int | None  # None: a tensor the native record does not hold (size unknown)
    trainable: bool | None
    kind: str  # "own" (canonical here), "tied" (registered first elsewhere), "buffer", "unknown"
    canonical: str = ""


@dataclass
class _Split:
    """One parameter cause of one row, split by how torchsummary files it (trainable or not)."""

    cause: str
    total: int  # in Total params
    trainable: int  # in Trainable params
    frozen: int  # in Non-trainable params
    where: str


class _Context:
    def __init__(self, native: NativeCount) -> None:
        self.native = native
        self.params = {n: p for p in native.params for n in (p.name, *p.aliases)}
        self.buffers = {n: b for b in native.buffers for n in (b.name, *b.aliases)}
        self.own: dict[str, list[ParamInfo]] = {}
        for p in native.params:
            self.own.setdefault(_owner(p.name), []).append(p)

    def attr(self, row: ModuleRow, attr: str) -> _Attr | None:
        # the counter records has_weight / has_bias for an attribute that is set and not a plain
        # value (a simple value such as ``bias=True`` lands in attrs itself and has no .size)
        if not row.attrs.get(f"has_{attr}"):
            return None
        full = f"{row.name}.{attr}"
        p = self.params.get(full)
        if p is not None:
            return _Attr(attr, p.numel, p.trainable, "own" if p.name == full else "tied", p.name)
        b = self.buffers.get(full)
        if b is not None:
            return _Attr(attr, b.numel, b.trainable, "buffer", b.name)
        return _Attr(attr, None, None, "unknown")


class TorchsummaryConvention(Convention):
    tool = "torchsummary"
    unit = "parameters and MiB (no operations)"
    metric = ""  # no operation count in its rows
    headline_metric = ""  # no main operation total
    metrics = {
        TOTAL: "nb_params",
        TRAINABLE: "",
        NON_TRAINABLE: "",
        INPUT: "",
        PASS: "",
        PARAMS: "",
        ESTIMATED: "",
        "output_prod": "output_prod",  # per-row output products; summed into PASS by the tool
    }
    op_metrics = ()
    per_sample = True  # every memory figure
    rules = (
        RuleDoc("unit", "no operations; parameters, and memory estimates in MiB (2**20 B), 4 bytes per element"),
        RuleDoc("rows", "one per call of every module but the root, nn.Sequential and nn.ModuleList (subclasses "
                "too), post-order, keyed <Class>-<n>; containers such as BasicBlock get rows; functional calls are "
                "invisible"),
        RuleDoc("nb_params", "numel(module.weight) + numel(module.bias) where those are tensors (buffers too); other "
                "names (in_proj_weight, weight_ih_l0, cls_token) and root- or container-owned parameters are missed; "
                "tied weights counted again"),
        RuleDoc("repeated modules", "one row per call: parameters counted again and outputs added again on every call"),
        RuleDoc("trainable", "weight.requires_grad decides the whole row, bias included; a row without weight is "
                "non-trainable"),
        RuleDoc("output shape", "batch printed as -1, so np.prod is minus the per-sample elements; a tuple output "
                "gives [-1, *shape[1:]] per element and np.prod multiplies them all; nested tuples or None fail"),
        RuleDoc("Input size", "|np.prod(input_size) * -1 * 4| bytes: per sample, 4 bytes whatever the dtype; "
                "several inputs' sizes multiplied together"),
        RuleDoc("Forward/backward pass size", "|2 * 4 * sum of output products| over every row (containers, in-place "
                "ReLU, Dropout, every call): per sample, x2 for gradients"),
        RuleDoc("Params size / Estimated Total Size", "4 bytes x Total params; the sum of the three sizes"),
        RuleDoc("batch and mode", "its own torch.rand(2, *input_size) float32 input, autograd on, the model's own mode "
                "(never eval()); every MiB figure per sample"),
    )

    def cannot_run(self, native: NativeCount) -> str | None:
        from reconcile.conventions.base import integer_inputs

        ids = integer_inputs(native)
        if ids:
            return (f"torchsummary feeds random float inputs of the sizes it is given; this model takes "
                    f"{native.input_dtypes[ids[0]]} values (ids) as input {ids[0]}")
        return None

    def predict(self, native: NativeCount) -> Prediction:
        ctx = _Context(native)
        calls = [(row, call) for row in native.rows if _hooked(row) for call in row.call_records]
        layers: list[LayerPrediction] = []
        splits: list[_Split] = []
        for row, call in _post_order(calls):
            layer, row_splits = self._row(ctx, row, call, _batch(native))
            layers.append(layer)
            splits.extend(row_splits)
        outside, outside_splits = self._outside(ctx, {row.name for row, _ in calls})
        if outside is not None:
            layers.append(outside)
            splits.extend(outside_splits)

        total = sum(p.predicted["nb_params"] for p in layers)
        trainable = sum(p.predicted["nb_params"] for p in layers if p.predicted.get("trainable") == 1)
        headline: dict[str, Number] = {TOTAL: total, TRAINABLE: trainable, NON_TRAINABLE: total - trainable}
        reference: dict[str, Number] = {TOTAL: total, TRAINABLE: native.totals["params_trainable"],
                                        NON_TRAINABLE: native.totals["params_frozen"]}
        terms: dict[str, tuple[Term, ...]] = {
            TRAINABLE: _split_terms(splits, "trainable", "Trainable params"),
            NON_TRAINABLE: _split_terms(splits, "frozen", "Non-trainable params"),
        }
        for key, (value, ref, ts) in {
            INPUT: self._input(native),
            PASS: self._pass(native, layers, calls),
            PARAMS: self._params(native, total, splits),
        }.items():
            headline[key], reference[key], terms[key] = value, ref, ts
        headline[ESTIMATED] = headline[INPUT] + headline[PASS] + headline[PARAMS]
        reference[ESTIMATED] = reference[INPUT] + reference[PASS] + reference[PARAMS]
        terms[ESTIMATED] = tuple(
            Term(t.cause, t.amount, t.rule + ".estimated", Phrase("{label!s}: {text}", {"label": label,
                                                                                        "text": t.sentence}))
            for key, label in ((INPUT, "input size"), (PASS, "forward/backward pass size"), (PARAMS, "params size"))
            for t in terms[key]
        )
        for key, value in headline.items():  # every prediction is its reference plus its terms
            assert value == reference[key] + sum(t.amount for t in terms.get(key, ())), key
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline=headline,
                          headline_terms={k: v for k, v in terms.items() if v}, headline_reference=reference)

    # ----- rows ---------------------------------------------------------------------------------

    def _row(self, ctx: _Context, row: ModuleRow, call: CallRecord,
             batch: int | None) -> tuple[LayerPrediction, list[_Split]]:
        tensors = [t for t in (ctx.attr(row, "weight"), ctx.attr(row, "bias")) if t is not None]
        counted = sum(t.numel or 0 for t in tensors)
        weight = tensors[0] if tensors and tensors[0].attr == "weight" else None
        # trainable: weight.requires_grad for the whole row; no weight (or no .size): non-trainable
        flag = bool(weight is not None and weight.trainable)
        where = row.name if row.calls == 1 else f"{row.name} call {call.index + 1}"
        reference: dict[str, Number] = {}
        predicted: dict[str, Number] = {"nb_params": counted}
        p_terms: list[Term] = []
        splits: list[_Split] = []

        def split(cause: str, total: int, trainable: int, frozen: int) -> None:
            if total or trainable or frozen:
                splits.append(_Split(cause, total, trainable, frozen, where))

        if call.index > 0:
            reference["nb_params"] = 0
            if counted:
                p_terms.append(Term("repeated_calls", counted, "torchsummary.repeated_calls",
                                    Phrase("one row per call: {type!s}'s weight and bias "
                                    "({counted}) counted again on call {v!s} of {calls!s}", {"type": row.type,
                                                                                             "counted": counted,
                                                                                             "v": call.index + 1,
                                                                                             "calls": row.calls})))
            split("repeated_calls", counted, counted if flag else 0, 0 if flag else counted)
        else:
            own = ctx.own.get(row.name, [])
            reference["nb_params"] = sum(p.numel for p in own)
            matched = [t for t in tensors if t.kind == "own"]
            for t in tensors:
                if t.kind == "tied":
                    p_terms.append(Term("params_tied", t.numel, "torchsummary.params_tied",
                                        Phrase("{type!s}.{attr!s} is tied to {canonical!s}: "
                                        "its {numel} parameters are counted again here", {"type": row.type,
                                                                                          "attr": t.attr,
                                                                                          "canonical": t.canonical,
                                                                                          "numel": t.numel})))
                    split("params_tied", t.numel, t.numel if flag else 0, 0 if flag else t.numel)
                elif t.kind == "buffer":
                    p_terms.append(Term("formula", t.numel, "torchsummary.formula",
                                        Phrase("{type!s}.{attr!s} is a buffer of {numel} "
                                        "elements, counted as parameters", {"type": row.type, "attr": t.attr,
                                                                            "numel": t.numel})))
                    split("formula", t.numel, t.numel if flag else 0, 0 if flag else t.numel)
            names = {t.canonical for t in matched}
            others = [p for p in own if p.name not in names]
            if others:
                n = sum(p.numel for p in others)
                listed = ", ".join(p.name.rsplit(".", 1)[-1] for p in others[:4]) + (", ..." if len(others) > 4 else "")
                p_terms.append(Term("params_missed", -n, "torchsummary.params_missed.2",
                                    Phrase("torchsummary reads only .weight and .bias: {type!s}'s "
                                    "{listed!s} ({plural!s}) are not counted", {"type": row.type, "listed": listed,
                                                                                "plural": _plural(n, 'parameter')})))
                split("params_missed", -n, -sum(p.numel for p in others if p.trainable),
                      -sum(p.numel for p in others if not p.trainable))
            # the split of the tensors counted here follows the weight's flag, not each tensor's
            wb = sum(t.numel for t in matched)
            wb_trainable = sum(t.numel for t in matched if t.trainable)
            moved = (wb if flag else 0) - wb_trainable
            if moved:
                split("params_frozen", 0, moved, -moved)
        if weight is not None and weight.trainable is not None:
            reference["trainable"] = predicted["trainable"] = int(flag)

        out_ref, out_pred, out_terms = _output(row, call, batch)
        reference["output_prod"], predicted["output_prod"] = out_ref, out_pred
        layer = LayerPrediction(row.name, row.type, row.calls, reference, predicted,
                                {"nb_params": tuple(p_terms), "output_prod": out_terms}, call=call.index)
        return layer, splits

    def _outside(self, ctx: _Context, with_rows: set[str]) -> tuple[LayerPrediction | None, list[_Split]]:
        """Parameters owned by modules torchsummary has no row for: all missed."""
        terms: list[Term] = []
        splits: list[_Split] = []
        for row in ctx.native.rows:
            own = ctx.own.get(row.name, [])
            if row.name in with_rows or not own:
                continue
            n = sum(p.numel for p in own)
            if row.name == "":
                why = f"the root {row.type}, which torchsummary does not hook"
            elif not _hooked(row):
                why = f"{row.name} ({row.type}), which torchsummary does not hook"
            else:
                why = f"{row.name} ({row.type}), which never ran as a module call"
            terms.append(Term("params_missed", -n, "torchsummary.params_missed",
                              Phrase("{plural!s} held by {why!s}, are not counted", {"plural": _plural(n, 'parameter'),
                                                                                     "why": why})))
            splits.append(_Split("params_missed", -n, -sum(p.numel for p in own if p.trainable),
                                 -sum(p.numel for p in own if not p.trainable), row.name or "(root)"))
        if not terms:
            return None, []
        missed = -sum(t.amount for t in terms)
        return LayerPrediction(OUTSIDE, "", 0, {"nb_params": missed}, {"nb_params": 0},
                               {"nb_params": tuple(terms)}), splits

    # ----- headline-only figures ------------------------------------------------------------------

    def _input(self, native: NativeCount) -> tuple[int, int, tuple[Term, ...]]:
        shapes, dtypes = native.input_shapes, native.input_dtypes
        whole = sum(numel(s) * itemsize(d) for s, d in zip(shapes, dtypes))
        per = [numel(s[1:]) for s in shapes]
        per_bytes = sum(e * itemsize(d) for e, d in zip(per, dtypes))
        product = 1
        for e in per:
            product *= e  # np.prod(input_size): one product over every input's dims
        value = BYTES * product
        terms = []
        if per_bytes != whole:
            batches = ", ".join(str(s[0]) for s in shapes if s)
            terms.append(Term("per_sample", per_bytes - whole, "torchsummary.per_sample.2",
                              Phrase("per sample (batch -1): the input's {whole} "
                              "bytes divided by its batch of {batches!s} give {per_bytes}", {"whole": whole,
                                                                                             "batches": batches,
                                                                                             "per_bytes": per_bytes})))
        if BYTES * sum(per) != per_bytes:
            terms.append(Term("memory_model", BYTES * sum(per) - per_bytes, "torchsummary.memory_model",
                              Phrase("4 bytes per element whatever the dtype "
                              "({join!s}): 4 x {sum} = {v} bytes "
                              "instead of {per_bytes}", {"join": ', '.join(dtypes), "sum": sum(per),
                                                         "v": BYTES * sum(per), "per_bytes": per_bytes})))
        if product != sum(per):
            terms.append(Term("memory_model", BYTES * (product - sum(per)), "torchsummary.memory_model.2",
                              Phrase("np.prod(input_size) multiplies the "
                              "{len!s} inputs' sizes ({join!s} = {product}) "
                              "instead of adding them ({sum}), 4 bytes each", {"len": len(per),
                                                                               "join": joined(list(per), " x "),
                                                                               "product": product, "sum": sum(per)})))
        return value, whole, tuple(terms)

    def _pass(self, native: NativeCount, layers: list[LayerPrediction],
              calls: list[tuple[ModuleRow, CallRecord]]) -> tuple[int, int, tuple[Term, ...]]:
        batch = _batch(native)
        outs = [(o, *_per_sample(o.shape, batch)) for _, call in calls for o in call.outputs]
        whole = sum(o.numel * itemsize(o.dtype) for o, _, _ in outs)
        per_bytes = sum(n * itemsize(o.dtype) for o, n, _ in outs)
        seen = sum(t for _, _, t in outs)
        seen_bytes = sum(t * itemsize(o.dtype) for o, _, t in outs)
        signed = sum(p.predicted["output_prod"] for p in layers if p.call is not None)
        value = abs(2 * signed * BYTES)
        n = len(calls)
        terms = []
        if per_bytes != whole:
            terms.append(Term("per_sample", per_bytes - whole, "torchsummary.per_sample.3",
                              Phrase("per sample (batch -1): the {whole} output "
                              "bytes of {plural!s} divided by the batch give {per_bytes}", {"whole": whole,
                                                                                            "plural": _plural(n, 'row'),
                                                                                            "per_bytes": per_bytes})))
        if seen_bytes != per_bytes:
            terms.append(Term("batch_differs", seen_bytes - per_bytes, "torchsummary.batch_differs.2",
                              Phrase("outputs holding the batch in a later dim "
                              "are {seen_bytes} bytes per sample at torchsummary's batch 2, not "
                              "{per_bytes}", {"seen_bytes": seen_bytes, "per_bytes": per_bytes})))
        if BYTES * seen != seen_bytes:
            terms.append(Term("memory_model", BYTES * seen - seen_bytes, "torchsummary.memory_model.3",
                              Phrase("4 bytes per output element whatever the "
                              "dtype: 4 x {seen} = {v} instead of {seen_bytes}", {"seen": seen, "v": BYTES * seen,
                                                                                  "seen_bytes": seen_bytes})))
        if seen:
            terms.append(Term("memory_model", BYTES * seen, "torchsummary.memory_model.4",
                              Phrase("x2 for gradients: the {seen} output elements per "
                              "sample of {plural!s} (every hooked call) at 4 bytes, twice: "
                              "{v} bytes", {"seen": seen, "plural": _plural(n, 'row'), "v": 2 * BYTES * seen})))
        if value != 2 * BYTES * seen:
            terms.append(Term("memory_model", value - 2 * BYTES * seen, "torchsummary.memory_model.5",
                              Phrase("tuple outputs: |2 x 4 x sum of the rows' "
                              "output products| = |8 x {signed}| = {value} instead of 8 x the "
                              "{seen} output elements", {"signed": signed, "value": value, "seen": seen})))
        return value, whole, tuple(terms)

    def _params(self, native: NativeCount, total: int, splits: list[_Split]) -> tuple[int, int, tuple[Term, ...]]:
        count = native.totals["params"]
        whole = sum(p.nbytes for p in native.params)
        terms = []
        if BYTES * count != whole:
            dtypes = ", ".join(sorted({p.dtype for p in native.params}))
            terms.append(Term("memory_model", BYTES * count - whole, "torchsummary.memory_model.6",
                              Phrase("4 bytes per parameter whatever the dtype "
                              "({dtypes!s}): 4 x {count} = {v} bytes instead of "
                              "{whole}", {"dtypes": dtypes, "count": count, "v": BYTES * count, "whole": whole})))
        for t in _split_terms(splits, "total", "Total params"):
            terms.append(Term(t.cause, BYTES * t.amount, t.rule + ".bytes", Phrase("4 bytes x ({text})",
                                                                                   {"text": t.sentence})))
        return BYTES * total, whole, tuple(terms)


def _batch(native: NativeCount) -> int | None:
    """The native batch: the first dim of the first input."""
    return native.input_shapes[0][0] if native.input_shapes and native.input_shapes[0] else None


def _per_sample(shape: tuple[int, ...], batch: int | None) -> tuple[int, int]:
    """Elements per sample of one output as native saw it (``shape[1:]``) and as torchsummary,
    running batch 2, prints it. They differ only for an output whose first dim is not the batch
    and one later dim is: there that dim is 2 at torchsummary's run. Told apart only for a native
    batch of 3 or more (with 1 every unit dim would look like a batch)."""
    native = numel(shape[1:])
    if batch is None or batch < 3 or len(shape) < 2 or shape[0] == batch:
        return native, native
    at = [i for i in range(1, len(shape)) if shape[i] == batch]
    return (native, native // batch * 2) if len(at) == 1 else (native, native)


def _output(row: ModuleRow, call: CallRecord, batch: int | None) -> tuple[int, int, tuple[Term, ...]]:
    """Reference (native output elements of the call), prediction (np.prod of the printed output
    shape) and the terms between them."""
    outs = call.outputs
    whole = sum(o.numel for o in outs)
    sizes = [_per_sample(o.shape, batch) for o in outs]
    per = sum(n for n, _ in sizes)
    seen = [t for _, t in sizes]
    if len(outs) <= 1:
        value = -seen[0] if seen else 0  # list(output.size()) with [0] = -1
    else:
        value = 1
        for e in seen:
            value *= -e  # [[-1, *o.shape[1:]] for o in output], np.prod over all of it
    terms = []
    if per != whole:
        first = outs[0].shape[0] if outs and outs[0].shape else 1
        terms.append(Term("per_sample", per - whole, "torchsummary.per_sample",
                          Phrase("per sample: the first dim ({first!s}) is printed as -1, so "
                          "{per} of the {whole} output elements are counted", {"first": first, "per": per,
                                                                               "whole": whole})))
    if sum(seen) != per:
        terms.append(Term("batch_differs", sum(seen) - per, "torchsummary.batch_differs",
                          Phrase("{type!s}'s output holds the batch in a later dim, "
                          "which is 2 in torchsummary's run, not {batch!s}: {sum} elements per sample "
                          "instead of {per}", {"type": row.type, "batch": batch, "sum": sum(seen), "per": per})))
    if value != sum(seen):
        if len(outs) <= 1:
            text = (Phrase("the batch printed as -1 makes np.prod of {type!s}'s output shape negative: "
                    "{value} (abs() of the total undoes the sign)", {"type": row.type, "value": value}))
        else:
            text = (Phrase("np.prod of {type!s}'s {len!s} output shapes [-1, ...] multiplies them: "
                    "{join!s} = {value} instead of the sum {sum}", {"type": row.type, "len": len(outs),
                                                                    "join": joined([-e for e in seen], " x "),
                                                                    "value": value, "sum": sum(seen)}))
        terms.append(Term("memory_model", value - sum(seen), "torchsummary.memory_model.np_prod", text))
    return whole, value, tuple(terms)


def _post_order(calls: list[tuple[ModuleRow, CallRecord]]) -> list[tuple[ModuleRow, CallRecord]]:
    """Calls in the order their forwards end (torchsummary's row order): a call nests the later
    calls of its descendants. Only the display order depends on this; rows match by module and call."""
    out: list[tuple[ModuleRow, CallRecord]] = []
    stack: list[tuple[ModuleRow, CallRecord]] = []
    for item in sorted(calls, key=lambda rc: rc[1].order):
        while stack and not item[0].name.startswith(stack[-1][0].name + "."):
            out.append(stack.pop())
        stack.append(item)
    out.extend(reversed(stack))
    return out


def _split_terms(splits: list[_Split], part: str, label: str) -> tuple[Term, ...]:
    """One headline term per cause: the rows' parameter causes as they land in ``part``."""
    by: dict[str, list[_Split]] = {}
    for s in splits:
        if getattr(s, part):
            by.setdefault(s.cause, []).append(s)
    terms = []
    for cause, ss in by.items():
        amount = sum(getattr(s, part) for s in ss)
        if not amount:
            continue
        where = ", ".join(s.where for s in ss[:3]) + (f" and {len(ss) - 3} more" if len(ss) > 3 else "")
        terms.append(Term(cause, amount, "torchsummary.headline", Phrase("{label!s} {v!s}{abs}: "
                          "{PHRASE!s} ({where!s})", {"label": label, "v": '+' if amount > 0 else '-',
                                                     "abs": abs(amount), "PHRASE": _PHRASE[cause], "where": where})))
    return tuple(terms)


CONVENTION = TorchsummaryConvention()
