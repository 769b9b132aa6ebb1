"""What a tool's counting convention is, as data: predictions built from the native count alone.

A ``Convention`` predicts, for every row a tool reports, each raw number the tool would print,
as a native *reference* plus named *terms*. Each term is one cause of disagreement with the
reference, with an exact amount, the rule that produced it and that rule's values (a ``Phrase``:
the sentence with named slots, and exact numbers and names to fill them); the sentence is
rendered in ``reconcile.report.sentences``, never here. The explain stage compares predictions
with a real run: residual = raw - predicted, and the goal is zero everywhere.

References (what a term is measured against):
- op counts: the native ``macs`` of the same scope (torchvision's ``_ops`` convention);
- parameter counts: the native parameter count of the same scope, each tensor once;
- memory figures: the native bytes of the same scope (see each convention).

Nothing here imports torch or any counting tool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Mapping, Sequence

from reconcile.records import CallRecord, ModuleRow, NativeCount, Phrase, TorchCall, Value

Number = int | Fraction

# The causes a term may name. kind "convention": a different counting rule for work the tool
# saw (normalization removes it); kind "coverage": work the tool did not see or saw twice
# (normalization keeps it, as a gap the user should know about).
CAUSES: dict[str, tuple[str, str]] = {
    "mac_vs_flop": ("convention", "counts a multiply and an add separately (2 per MAC) instead of one MAC"),
    "per_output_minus_one": ("convention", "counts k-1 adds per output instead of k (torchstat MAdd)"),
    "bias": ("convention", "counts bias adds, which the MAC reference leaves out"),
    "norm": ("convention", "counts normalization arithmetic, which the MAC reference leaves out"),
    "activation": ("convention", "counts activation functions, which the MAC reference leaves out"),
    "pool": ("convention", "counts pooling arithmetic, which the MAC reference leaves out"),
    "elementwise": ("convention", "counts elementwise arithmetic, which the MAC reference leaves out"),
    "softmax": ("convention", "counts softmax arithmetic, which the MAC reference leaves out"),
    "interpolate": ("convention", "counts interpolation arithmetic, which the MAC reference leaves out"),
    "rnn_gates": ("convention", "counts recurrent gate arithmetic, which the MAC reference leaves out"),
    "formula": ("convention", "uses a different formula for this layer type"),
    "per_sample": ("convention", "reports per sample (divides by the batch size)"),
    "batch_differs": ("convention", "runs its own input with a different batch size"),
    "functional_not_seen": ("coverage", "cannot see work done by functional calls or a parent's own forward"),
    "unsupported_module": ("coverage", "has no rule for this module type (or matches types exactly, so subclasses miss)"),
    "unsupported_op": ("coverage", "has no rule for this operator and counts it as zero"),
    "nested_skipped": ("coverage", "stops at a module it has a rule for and skips the layers inside it, which that rule leaves out"),
    "dead_code": ("coverage", "leaves out work whose result nothing the model returns uses (a tracer drops it)"),
    "double_count": ("coverage", "counts the same work twice (a module hook plus a patched functional)"),
    "repeated_calls": ("coverage", "handles a module called several times differently (last call only, or once per call)"),
    "params_tied": ("coverage", "counts a tied or shared parameter more than once"),
    "params_missed": ("coverage", "misses parameters (not held by a module it reads, or a module it skips)"),
    "params_frozen": ("coverage", "leaves out frozen parameters (requires_grad=False)"),
    "memory_model": ("convention", "estimates memory with its own model (bytes per element, x2 for gradients, MiB)"),
    "total_not_sum": ("convention", "prints a total that is not the sum of its rows (e.g. the last row's value)"),
    "trace_size_arithmetic": ("convention", "traces with torch.jit, which records Python arithmetic on tensor sizes "
                              "(x.shape[1] + 1, math.ceil(h / w)) as tensor ops that no eager op shows"),
    "trace_differs": ("convention", "traces with torch.jit, whose graph holds other ops than the eager forward ran: "
                      "code that checks torch.jit.is_tracing() takes another path, ops nothing returned uses are dropped"),
    "float32": ("convention", "keeps its counts in float32, which rounds counts above 2^24 (thop 0.0.22)"),
    "groups_ignored": ("convention", "counts a grouped convolution's weight gradient as if it were dense (x groups)"),
    "per_batch_row": ("convention", "counts a layer once per batch row (batch x its parameters), leaving out the "
                      "tokens or positions each sample has (torchinfo's Linear on a sequence)"),
    # last, so that the causes above keep their colours in the pictures (colours follow this order)
    "train_mode": ("convention", "counts BatchNorm on batch statistics (training mode: the model was not put in "
                   "eval()) at more per element than with running statistics"),
    # after train_mode, so that every cause above keeps its colour
    "outside_root": ("convention", "counts work in its total that its root module's row does not hold (FlopCounterMode's "
                     "module tracker opens the root's backward only once all its outputs' gradients are complete)"),
    # after outside_root, so that every cause above keeps its colour
    "pool_kernel_1d": ("convention", "reads an integer pooling kernel_size k as k elements instead of k x k (a 1-D "
                       "window) in a 2-D or 3-D pool (torchscan's MaxPool / AvgPool)"),
    "params_buffers": ("convention", "counts buffers (BatchNorm's running statistics) in a layer's parameter figure"),
    # after params_buffers, so that every cause above keeps its colour
    "shared_module": ("coverage", "counts a module registered under several parents once per parent, its whole "
                      "count each time (thop's dfs_count walks named_children() with no memo)"),
}


@dataclass(frozen=True)
class Term:
    """One cause of disagreement on one row. ``amount`` is in the tool's unit, relative to the
    reference. ``flops`` is what the cause changes in the ``flops`` convention for coverage causes:
    minus the native FLOPs of work the tool did not see (a missed residual add is 0 MACs but
    real FLOPs); 0 for convention causes and for work seen twice."""

    cause: str
    amount: Number
    # the rule that produced the term, "<convention module>.<cause>[.n]", e.g. "thop.norm"
    rule: str
    # the rule's sentence with named slots and this layer's values (exact numbers, names), e.g.
    # Phrase("{name} counted as {k!s} ops per element: {k!s} x {n}", {"name": "BatchNorm2d", "k": 4,
    # "n": 200704}); filled only when rendering (``reconcile.report.sentences``), and the report
    # groups layers by rule and values with their numbers left out, never by rendered text
    sentence: Phrase
    flops: Number = 0
    # coverage causes only: the part of ``amount`` that is multiply-accumulates (None: all of it).
    # A ReLU counted twice is a coverage gap of 0 MACs: ``macs`` normalization drops it.
    macs: Number | None = None

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"unknown cause {self.cause!r}")


@dataclass(frozen=True)
class LayerPrediction:
    """Predicted raw numbers for one row the tool reports. For every metric in ``predicted``:
    ``predicted[m] == reference[m] + sum(t.amount for t in terms.get(m, ()))``."""

    module: str
    type: str
    calls: int
    reference: Mapping[str, Number]
    predicted: Mapping[str, Number]
    terms: Mapping[str, tuple[Term, ...]] = field(default_factory=dict)
    call: int | None = None  # set for tools that keep one row per call


OUTSIDE = "(outside rows)"  # pseudo-row: native work in no row the tool reports
INCLUSIVE = "_inclusive"  # reference key marking a row that nests other rows (fvcore by_module)


@dataclass(frozen=True)
class Prediction:
    """Everything a tool would report for one model, predicted from the native count alone.

    Row invariants: the references of the non-nesting rows (plus ``OUTSIDE``) partition the
    native totals exactly, so their terms add up to the tool's whole gap. ``headline`` maps each
    headline key to its predicted value; ``headline_terms`` holds only causes that live at the
    headline and in no row (e.g. dividing the total by the batch), and ``headline_reference`` is
    what the rows and the total-only record add up to before those terms."""

    tool: str
    metric: str  # the raw key of the tool's main op count in rows, e.g. "ops", "macs", "flops", "MAdd"
    unit: str
    layers: tuple[LayerPrediction, ...]
    headline: Mapping[str, Number]  # predicted headline numbers (same keys as ToolRun.headline)
    unattributed: Mapping[str, Number] = field(default_factory=dict)
    unattributed_terms: Mapping[str, tuple[Term, ...]] = field(default_factory=dict)
    headline_terms: Mapping[str, tuple[Term, ...]] = field(default_factory=dict)
    headline_reference: Mapping[str, Number] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleDoc:
    """One line of a tool's convention table: what it counts for a layer or op family."""

    family: str
    counts: str


class Convention:
    """A tool's counting rules. Subclasses set the class attributes and implement ``predict``."""

    tool: str = ""
    unit: str = ""  # unit of the main metric as the tool names it ("MACs", "GMac", "MAdd", ...)
    metric: str = ""
    headline_metric: str = ""  # headline key of the main total
    # headline key -> row key, for every metric explained (main op count first, then params, ...);
    # row key "": a headline-only figure, explained against ``Prediction.headline_reference``
    metrics: Mapping[str, str] = {}
    # headline keys that count operations (normalizable to macs / flops); default: the main one
    op_metrics: tuple[str, ...] = ()

    def operation_metrics(self) -> tuple[str, ...]:
        return self.op_metrics or (self.headline_metric,)
    per_sample: bool = False  # the main total is divided by the batch
    macs_per_unit: Fraction = Fraction(1)  # how many MACs one unit of the metric is (MAdd: 1/2)
    rules: tuple[RuleDoc, ...] = ()

    def predict(self, native: NativeCount) -> Prediction:
        raise NotImplementedError

    def flops_reference(self, native: NativeCount) -> int:
        """Native FLOPs of the work the prediction covers: the forward (a tool that counts the
        backward too, run with ``--training``, says so)."""
        return native.totals["flops"]

    def cannot_run(self, native: NativeCount) -> str | None:
        """Why the tool cannot run on the counted model at all, from the native count alone (None:
        nothing known stops it). Only reasons checked against the tool's real failures belong
        here: ``predict`` says "cannot run" instead of printing numbers the tool never prints."""
        return None


# ----- helpers the conventions share ------------------------------------------------------------


def joined(items: Sequence[Value], sep: str, empty: str = "", slot: str = "") -> Phrase:
    """``sep.join(items)`` kept as data: each item a slot (numbers shown exact, or as ``slot``
    says, e.g. "!s" for plain digits), ``empty`` when there is none."""
    if not items:
        return Phrase(empty.replace("{", "{{").replace("}", "}}"))
    return Phrase(sep.join(f"{{i{n}{slot}}}" for n in range(len(items))), {f"i{n}": v for n, v in enumerate(items)})


def whole(x: Fraction | int) -> Number:
    """An exact number as an int when it is whole, else as its Fraction."""
    x = Fraction(x)
    return int(x) if x.denominator == 1 else x


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def itemsize(dtype: str) -> int:
    """Bytes per element of a dtype named as in the native record ("float32", "int64", "bool")."""
    if dtype == "bool":
        return 1
    bits = re.search(r"\d+", dtype)
    return max(1, int(bits.group()) // 8) if bits else 4


def call_arg(call: TorchCall, i: int, name: str) -> Any:
    """Argument ``i`` of a recorded call, passed by position or as ``name=`` (None where absent)."""
    return call.args[i] if len(call.args) > i else dict(call.kwargs).get(name)


def sdpa_qkv(call: TorchCall) -> tuple[Any, Any, Any]:
    """q, k and v of a recorded ``scaled_dot_product_attention`` call, passed by position or by
    name (None where absent)."""
    return tuple(call_arg(call, i, n) for i, n in enumerate(("query", "key", "value")))  # type: ignore[return-value]


def n_in(call: CallRecord) -> int:
    """Elements of the first input tensor of a call (0 when the call had none)."""
    return call.inputs[0].numel if call.inputs else 0


def n_out(call: CallRecord) -> int:
    return call.outputs[0].numel if call.outputs else 0


def subtree(native: NativeCount, name: str) -> list[ModuleRow]:
    """The row of ``name`` and all its descendants."""
    if name == "":
        return list(native.rows)
    prefix = name + "."
    return [r for r in native.rows if r.name == name or r.name.startswith(prefix)]


def component(rows: list[ModuleRow], key: str) -> int:
    return sum(r.components.get(key, 0) for r in rows)


def children_of(native: NativeCount, name: str) -> list[ModuleRow]:
    depth = 0 if name == "" else name.count(".") + 1
    prefix = "" if name == "" else name + "."
    return [r for r in native.rows if r.depth == depth + 1 and r.name.startswith(prefix)]


INTEGER_DTYPES = ("int64", "int32", "int16", "int8", "uint8", "long", "int")


def integer_inputs(native: NativeCount) -> list[int]:
    """Positions of the model's integer inputs (token ids), which tools that make their own random
    float inputs from sizes (torchstat, torchsummary) cannot give."""
    return [i for i, d in enumerate(native.input_dtypes) if d in INTEGER_DTYPES]


def is_instance(row: ModuleRow, qualname: str) -> bool:
    """``isinstance(module, cls)`` from the row's recorded class and bases."""
    return row.attrs.get("class") == qualname or qualname in row.attrs.get("bases", ())
