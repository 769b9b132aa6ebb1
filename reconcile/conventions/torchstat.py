"""torchstat 0.0.7: its rules, written once, predicting ``ModelStat(model, (C, H, W))._analyze_model()``
and the totals of its reporter, as the torchstat adapter reports them.

Rows: every *leaf* module (no children), in ``named_modules()`` order, whether it ran or not.
torchstat replaces the ``__call__`` of every leaf class; each call overwrites the leaf's buffers, so
a row holds the numbers of the module's **last call** only. It feeds its own ``torch.rand(1, C, H,
W)``: every number is for **one sample** (``per_sample``; the batch the native count ran with is
divided out). Type matching is ``isinstance``, so subclasses of a supported class are matched.
Work in a non-leaf module's own ``forward`` (residual adds, functional calls) and parameters held
by non-leaf modules are in no row: they get pseudo-rows named after the module, predicted 0.

Metrics of a row, each predicted as native reference + terms:

- ``MAdd`` and ``Flops`` against native MACs of the leaf. Terms in this order: ``repeated_calls``
  (the MACs of calls before the last, dropped), then the convention causes that turn the last
  call's MACs into torchstat's count of the whole batch (or ``unsupported_module`` when the class
  has no rule), then ``per_sample`` (the count for one sample). Any remainder of a formula against
  the MAC count is ``formula``.
- ``params`` against the native parameters owned by the leaf (each tensor once): torchstat sums
  ``module._parameters`` of a leaf that ran (tied aliases again, frozen included).
- ``MemRead`` / ``MemWrite`` / ``MemR+W`` against the native bytes read / written by the leaf's
  ops; ``memory_bytes`` and ``memory`` (MiB) against the native bytes written. Terms in this
  order: ``memory_model`` (torchstat's element model, summed over all calls, whole batch, minus
  the native bytes), ``repeated_calls`` (calls before the last dropped), ``per_sample``, and a
  last ``memory_model`` term for the storage: ``MemRead``/``MemWrite`` are ``np.int32`` (wrap on
  overflow), ``memory`` is a float32 number of MiB. A leaf whose class has no memory rule reads
  and writes 0 (``unsupported_module``).

Headline: every total is the sum of its rows, except "Total MemRead(B)" and "Total MemWrite(B)",
which are the last row's values (the reporter reuses its loop variables): a ``total_not_sum``
headline term. "Total memory (MB)" is a formatted string: only its rows are explained.

Known limits: shapes of torchstat's batch-1 run are the native shapes with the first dimension
divided by the native batch; a module whose first dimension is not the batch (or not a multiple
of it) is taken as is. The itemsize of MemRead/MemWrite is the native input's (torchstat always
feeds float32, so a model counted natively at another dtype would differ).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

from reconcile.conventions import common
from reconcile.conventions.base import (
    Convention, LayerPrediction, Number, Prediction, RuleDoc, Term, joined, numel,
)
from reconcile.conventions.torchstat_rules import (
    FLOPS_RULES, ITEMSIZE, MADD_RULES, MIB, NN, Call, Rule, as_float32, memory_elements, rule_for, wrap_int32,
)
from reconcile.records import ModuleRow, NativeCount, Phrase

# ----- the convention -----------------------------------------------------------------------------


def _calls(n: int) -> str:
    return f"{n} call" + ("" if n == 1 else "s")


class TorchstatConvention(Convention):
    tool = "torchstat"
    unit = "MAdd"
    metric = "MAdd"
    headline_metric = "Total MAdd"
    metrics = {
        "Total MAdd": "MAdd", "Total Flops": "Flops", "Total params": "params",
        "Total memory (bytes)": "memory_bytes", "Total memory (MB)": "memory",
        "Total MemRead(B)": "MemRead", "Total MemWrite(B)": "MemWrite", "Total MemR+W(B)": "MemR+W",
    }
    op_metrics = ("Total MAdd", "Total Flops")
    per_sample = True
    macs_per_unit = Fraction(1, 2)
    rules = (
        RuleDoc("mechanism", "replaces __call__ of every leaf class; rows are all leaf modules, last call only; "
                "isinstance matching; non-leaf forwards (residual adds, functionals) are invisible"),
        RuleDoc("batch", "its own torch.rand(1, C, H, W) input: every number is per sample; "
                "ModelStat asserts a 3-dim (C, H, W) input size"),
        RuleDoc("MAdd: Conv2d", "(2 K Cin/g - 1 + bias) per output element (multiplies and adds apart)"),
        RuleDoc("MAdd: ConvTranspose2d", "(2 K Cin/g - 1 + bias) x H_in W_in Cout"),
        RuleDoc("MAdd: Linear", "out x (2 in - 1), no bias; asserts a 2-D input"),
        RuleDoc("MAdd: Bilinear", "out x (2 (in1 in2 + in2) - 1)"),
        RuleDoc("MAdd: BatchNorm2d", "4 per element, affine or not"),
        RuleDoc("MAdd: MaxPool2d / AvgPool2d", "(k_h k_w - 1) / k_h k_w per output element"),
        RuleDoc("MAdd: ReLU, ReLU6", "1 per element"),
        RuleDoc("MAdd: Softmax", "3n - 1 over all n elements of a sample, whatever dim"),
        RuleDoc("Flops: Conv2d", "the MACs + 1 bias add per output element"),
        RuleDoc("Flops: Linear", "batch x in x out (the MACs, no bias)"),
        RuleDoc("Flops: BatchNorm2d", "1 per element, 2 if affine"),
        RuleDoc("Flops: MaxPool2d / AvgPool2d", "1 per input element"),
        RuleDoc("Flops: ReLU, ReLU6, PReLU, ELU, LeakyReLU", "1 per element"),
        RuleDoc("Flops: Upsample", "batch x H_out x W_out: the channels are left out"),
        RuleDoc("no rule (0, printed 'is not supported')", "MAdd: everything else (Conv1d/3d, BN1d, LayerNorm, GroupNorm, "
                "adaptive pools, GELU, PReLU, ...); Flops: also ConvTranspose2d, Softmax, Bilinear"),
        RuleDoc("params", "sum of module._parameters of each leaf that ran: frozen included, tied aliases again, "
                "parameters of non-leaf modules missed"),
        RuleDoc("memory / memory_bytes", "output elements x 4 B (whatever the dtype), per leaf, as float32 MiB"),
        RuleDoc("MemRead / MemWrite", "elements x itemsize of the first input, np.int32: Conv2d/Linear/PReLU read input + "
                "trainable params, BatchNorm2d input + 2C; ReLU family and pools read the input; others 0"),
        RuleDoc("totals", "sums of rows, but Total MemRead/MemWrite are the last row's values (reporter bug)"),
    )

    def cannot_run(self, native: NativeCount) -> str | None:
        return torchstat_cannot_run(native)

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        batch = native.input_shapes[0][0] if native.input_shapes and native.input_shapes[0] else 1
        leaves = [r for r in native.rows if not tree.children.get(r.name)]
        layers = [self._leaf(native, r, batch) for r in leaves]
        for r in native.rows:
            if tree.children.get(r.name):
                outside = self._outside(r)
                if outside is not None:
                    layers.append(outside)

        sums = {h: sum((p.predicted[k] for p in layers), 0) for h, k in self.metrics.items() if k != "memory"}
        headline = dict(sums)
        headline_terms: dict[str, tuple[Term, ...]] = {}
        if leaves:
            last = layers[len(leaves) - 1]
            for h, k in (("Total MemRead(B)", "MemRead"), ("Total MemWrite(B)", "MemWrite")):
                headline[h] = last.predicted[k]
                diff = headline[h] - sums[h]
                if diff:
                    headline_terms[h] = (Term("total_not_sum", diff, "torchstat.total_not_sum",
                                              Phrase("torchstat's total row shows the last row's "
                                              "{k!s} ({module!s}: {headline} B), not the sum of the rows "
                                              "({sums} B)", {"k": k, "module": last.module, "headline": headline[h],
                                                             "sums": sums[h]})),)
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline=headline,
                          headline_terms=headline_terms, headline_reference=sums)

    # ----- a leaf: a row torchstat reports -----

    def _leaf(self, native: NativeCount, row: ModuleRow, batch: int) -> LayerPrediction:
        calls = [Call(c, batch) for c in row.call_records]
        reference: dict[str, Number] = {}
        predicted: dict[str, Number] = {}
        terms: dict[str, tuple[Term, ...]] = {}
        for key, rules in (("MAdd", MADD_RULES), ("Flops", FLOPS_RULES)):
            reference[key] = row.macs
            predicted[key], terms[key] = self._ops(row, calls, rule_for(row, rules), batch, key)

        direct, trainable = _direct_params(native, row.name)
        reference["params"] = row.params
        predicted["params"] = direct if row.calls else 0
        terms["params"] = common.param_terms(self.tool, row, predicted["params"], row.params, registered=True)

        read, write, mem_bytes, mem = self._memory(row, calls, trainable, batch)
        for key, (ref, value, ts) in (("MemRead", read), ("MemWrite", write), ("memory_bytes", mem_bytes),
                                      ("memory", mem)):
            reference[key], predicted[key], terms[key] = ref, value, ts
        reference["MemR+W"] = read[0] + write[0]
        predicted["MemR+W"] = read[1] + write[1]
        terms["MemR+W"] = read[2] + write[2]
        return LayerPrediction(row.name, row.type, row.calls, reference, predicted, terms)

    def _ops(self, row: ModuleRow, calls: list[Call], rule: Rule | None, batch: int,
             key: str) -> tuple[int, tuple[Term, ...]]:
        """torchstat's MAdd or Flops of a leaf: its last call, batch 1, as terms over native MACs."""
        if not calls:
            return 0, ()
        if rule is None:
            macs = sum(c.macs for c in calls)
            flops = sum(c.flops for c in calls)
            if not (macs or flops):
                return 0, ()
            return 0, (Term("unsupported_module", -macs, "torchstat.unsupported_module",
                            Phrase("torchstat has no {key!s} rule for {type!s}: its "
                            "{macs} MACs ({flops} FLOPs) are not counted", {"key": key, "type": row.type, "macs": macs,
                                                                            "flops": flops}), flops=-flops),)
        terms: list[Term] = []
        last = calls[-1]
        if len(calls) > 1:
            earlier = calls[:-1]
            terms.append(Term("repeated_calls", -sum(c.macs for c in earlier),
                              "torchstat.repeated_calls",
                              Phrase("{type!s} ran {calls!s}; torchstat keeps the last one only, leaving out "
                              "{sum} MACs ({sum2} FLOPs)", {"type": row.type, "calls": _calls(len(calls)),
                                                            "sum": sum((c.macs for c in earlier)),
                                                            "sum2": sum((c.flops for c in earlier))}),
                              flops=-sum(c.flops for c in earlier)))
        one, parts = rule(row, last)
        named = 0
        for cause, amount, text in parts:
            terms.append(Term(cause, batch * amount, f"torchstat.{cause}.layer",
                              Phrase("{text} per sample, x {batch!s} samples", {"text": text, "batch": batch})
                              if batch > 1 else Phrase("{text}", {"text": text})))
            named += batch * amount
        rest = batch * one - last.macs - named
        if rest:
            terms.append(Term("formula", rest, "torchstat.formula",
                              Phrase("torchstat's {type!s} {key!s} formula counts {v} "
                              "multiplies where the MAC count is {macs}", {"type": row.type, "key": key,
                                                                           "v": batch * one - named,
                                                                           "macs": last.macs})))
        if batch > 1:
            terms.append(Term("per_sample", one - batch * one, "torchstat.per_sample",
                              Phrase("torchstat runs one sample: "
                              "{v} / {batch!s} = {one}", {"v": batch * one, "batch": batch, "one": one})))
        return one, tuple(terms)

    def _memory(self, row: ModuleRow, calls: list[Call], trainable: int, batch: int):
        """(reference, predicted, terms) of MemRead, MemWrite, memory_bytes and memory (MiB)."""
        ref_r, ref_w = row.bytes_read, row.bytes_written
        out: list[tuple[Number, Number, tuple[Term, ...]]] = []
        model = [(memory_elements(row, c, trainable), ITEMSIZE.get(c.dtype, 4)) for c in calls]
        for i, (what, ref) in enumerate((("MemRead", ref_r), ("MemWrite", ref_w))):
            if not calls:
                out.append((ref, 0, ()))
                continue
            if model[-1][0] is None:
                terms = (Term("unsupported_module", -ref, "torchstat.unsupported_module.2",
                              Phrase("torchstat has no memory rule for {type!s}: "
                              "{what!s} 0 where its ops {v!s} {ref} B", {"type": row.type, "what": what,
                                                                         "v": 'read' if i == 0 else 'wrote',
                                                                         "ref": ref})),) if ref else ()
                out.append((ref, 0, terms))
                continue
            per_call = [(m[i] if m else 0) * size for m, size in model]
            desc = model[-1][0][2] if i == 0 else "the output"
            elements = model[-1][0][i]
            size = model[-1][1]
            out.append(self._memory_terms(row, what, ref, per_call, batch, wrap_int32,
                                          Phrase("{elements} elements ({desc!s}) x {size!s} B", {"elements": elements,
                                                                                                 "desc": desc,
                                                                                                 "size": size}),
                                          "read" if i == 0 else "wrote", "np.int32"))
        n_out = [numel(c.y[1:]) * 4 for c in calls]
        out.append(self._memory_terms(row, "memory", ref_w, n_out, batch, None,
                                      Phrase("{v} output elements x 4 B", {"v": n_out[-1] // 4}) if calls else "",
                                      "wrote", ""))
        mib_terms = tuple(Term(t.cause, Fraction(t.amount, MIB), t.rule + ".mib", Phrase("{text} (in MiB)",
                                                                                         {"text": t.sentence})) for t in out[-1][2])
        exact_mib = Fraction(n_out[-1], MIB) if calls else Fraction(0)
        stored = as_float32(n_out[-1] / MIB) if calls else Fraction(0)
        if stored != exact_mib:
            mib_terms += (Term("memory_model", stored - exact_mib, "torchstat.memory_model.2",
                               Phrase("stored as float32: {n_out} B / 2**20 "
                               "= {exact_mib} MiB rounds to {float!r}", {"n_out": n_out[-1], "exact_mib": exact_mib,
                                                                         "float": float(stored)})),)
        out.append((Fraction(ref_w, MIB), stored, mib_terms))
        return tuple(out)

    @staticmethod
    def _memory_terms(row: ModuleRow, what: str, ref: int, per_call: list[int], batch: int,
                      store: Callable[[int], int] | None, model_text: str, verb: str,
                      store_name: str) -> tuple[int, int, tuple[Term, ...]]:
        """Native bytes -> torchstat's model over every call, whole batch -> the last call ->
        one sample -> its storage type. ``per_call``: torchstat's bytes of each call, one sample."""
        if not per_call:
            return ref, 0, ()
        whole = [batch * v for v in per_call]
        scope = (f", x {batch} samples" if batch > 1 else "") + (f", summed over {_calls(len(whole))}" if len(whole) > 1 else "")
        terms = [Term("memory_model", sum(whole) - ref, "torchstat.memory_model",
                      Phrase("torchstat's {what!s} model (last call, one sample: {model_text!s})"
                      "{scope!s}: {sum} B, where its ops {verb!s} {ref} B", {"what": what, "model_text": model_text,
                                                                             "scope": scope, "sum": sum(whole),
                                                                             "verb": verb, "ref": ref}))]
        if len(whole) > 1:
            terms.append(Term("repeated_calls", whole[-1] - sum(whole), "torchstat.repeated_calls.2",
                              Phrase("{type!s} ran {calls!s}; "
                              "torchstat keeps the last one only: {whole} B of {sum} B", {"type": row.type,
                                                                                          "calls": _calls(len(whole)),
                                                                                          "whole": whole[-1],
                                                                                          "sum": sum(whole)})))
        one = per_call[-1]
        if batch > 1:
            terms.append(Term("per_sample", one - whole[-1], "torchstat.per_sample.2",
                              Phrase("torchstat runs one sample: "
                              "{whole} B / {batch!s} = {one} B", {"whole": whole[-1], "batch": batch, "one": one})))
        value = one
        if store is not None and store(one) != one:
            value = store(one)
            terms.append(Term("memory_model", value - one, "torchstat.memory_model.3",
                              Phrase("{one} B overflows {store_name!s}: "
                              "stored as {value}", {"one": one, "store_name": store_name, "value": value})))
        return ref, value, tuple(t for t in terms if t.amount)

    # ----- a non-leaf module: its own work and parameters are in no row -----

    def _outside(self, row: ModuleRow) -> LayerPrediction | None:
        if not (row.macs or row.flops or row.params or row.bytes_read or row.bytes_written):
            return None
        own_forward = _builtin(row)
        cause = "unsupported_module" if own_forward else "functional_not_seen"
        why = (f"torchstat only sees leaf modules, and {row.type} has children"
               if own_forward else f"torchstat cannot see the work in {row.type}.forward (it only hooks leaf modules)")
        reference: dict[str, Number] = {
            "MAdd": row.macs, "Flops": row.macs, "params": row.params,
            "MemRead": row.bytes_read, "MemWrite": row.bytes_written, "MemR+W": row.bytes_read + row.bytes_written,
            "memory_bytes": row.bytes_written, "memory": Fraction(row.bytes_written, MIB),
        }
        terms: dict[str, tuple[Term, ...]] = {}
        if row.macs or row.flops:
            t = Term(cause, -row.macs, "torchstat.not_leaf", Phrase("{why!s}: {macs} MACs, {flops} FLOPs "
                     "({join!s})", {"why": why, "macs": row.macs, "flops": row.flops,
                                    "join": joined([Phrase("{k!s} {v}", {"k": k, "v": v}) for k,
                                                    v in row.components.items()], ", ")}), flops=-row.flops)
            terms["MAdd"] = terms["Flops"] = (t,)
        if row.params:
            terms["params"] = (Term("params_missed", -row.params, "torchstat.params_missed",
                                    Phrase("torchstat misses the {params} parameters "
                                    "held directly by {type!s} (it only reads leaf modules)", {"params": row.params,
                                                                                               "type": row.type})),)
        read = (Term(cause, -row.bytes_read, "torchstat.not_leaf_read", Phrase("{why!s}: its ops read {bytes_read} B",
                                                                               {"why": why,
                                                                                "bytes_read": row.bytes_read})),
                ) if row.bytes_read else ()
        write = (Term(cause, -row.bytes_written, "torchstat.not_leaf_wrote",
                      Phrase("{why!s}: its ops wrote {bytes_written} B", {"why": why,
                                                                          "bytes_written": row.bytes_written})),) \
            if row.bytes_written else ()
        terms["MemRead"], terms["MemWrite"], terms["MemR+W"] = read, write, read + write
        terms["memory_bytes"] = write
        terms["memory"] = tuple(Term(t.cause, Fraction(t.amount, MIB), t.rule + ".mib", Phrase("{text} (in MiB)",
                                                                                               {"text": t.sentence})) for t in write)
        predicted = {k: (Fraction(0) if k == "memory" else 0) for k in reference}
        return LayerPrediction(row.name, row.type, row.calls, reference, predicted, terms)


def _builtin(row: ModuleRow) -> bool:
    """A torch.nn module that computes in its own forward (MultiheadAttention, Transformer...)."""
    cls = row.attrs.get("class", "")
    return cls.startswith(NN) and not cls.startswith(f"{NN}container.")


def _direct_params(native: NativeCount, name: str) -> tuple[int, int]:
    """(sum over ``module._parameters`` of the module ``name``, every registered name counted;
    elements of ``module.parameters()`` that require grad, each tensor once)."""
    direct = trainable = 0
    for p in native.params:
        hits = sum(1 for n in (p.name, *p.aliases) if (n.rsplit(".", 1)[0] if "." in n else "") == name)
        direct += hits * p.numel
        if hits and p.trainable:
            trainable += p.numel
    return direct, trainable


CONVENTION = TorchstatConvention()


# torchstat's own asserts on the layers it computes (compute_madd.py / compute_flops.py /
# compute_memory.py): class (isinstance) -> the input dims it asserts
_ASSERTED_DIMS = {
    "torch.nn.modules.conv.Conv2d": 4,
    "torch.nn.modules.conv.ConvTranspose2d": 4,
    "torch.nn.modules.batchnorm.BatchNorm2d": 4,
    "torch.nn.modules.pooling.MaxPool2d": 4,
    "torch.nn.modules.pooling.AvgPool2d": 4,
    "torch.nn.modules.linear.Linear": 2,
}


def torchstat_cannot_run(native: NativeCount) -> str | None:
    """torchstat: one (C, H, W) input of random floats it makes itself, and the input dims its
    layer formulas assert."""
    from reconcile.conventions.base import integer_inputs, is_instance

    shapes = native.input_shapes
    if len(shapes) != 1:
        return f"torchstat takes one input of size (C, H, W); this model takes {len(shapes)} inputs"
    if len(shapes[0]) != 4:
        return f"torchstat needs one (C, H, W) input: this model's input is {'x'.join(map(str, shapes[0]))}"
    if integer_inputs(native):
        return (f"torchstat feeds one random float input it makes itself; this model takes "
                f"{native.input_dtypes[0]} values (ids)")
    for row in native.rows:
        for cls, dims in _ASSERTED_DIMS.items():
            if not is_instance(row, cls):
                continue
            for call in row.call_records:
                if call.inputs and len(call.inputs[0].shape) != dims:
                    kind = cls.rsplit(".", 1)[-1]
                    return (f"torchstat's {kind} rule asserts {dims}-D inputs: this model feeds a "
                            f"{len(call.inputs[0].shape)}-D tensor to {row.name} ({row.type})")
    return None
