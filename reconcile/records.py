"""Frozen result types shared by every stage: counter, adapters, reconcile, report.

Guarantees: every count is an exact ``int`` (or a ``fractions.Fraction`` where a tool divides);
nothing here is formatted for display; nothing here imports torch. Module names are
``named_modules()`` names with the root as ``""`` everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from fractions import Fraction
from typing import Any, Mapping

from reconcile import rollup  # the roll-ups the methods of NativeCount return live below records
from reconcile.components import COMPONENTS  # noqa: F401 - the vocabulary, defined below records

Number = int | Fraction


@dataclass(frozen=True)
class Phrase:
    """Words with named slots and the exact values that fill them: part of a cause's sentence (a
    list of op families, "(call 2 of 3)"), kept as data so that the report renders it (and groups
    by it with the numbers left out). ``template`` is ``str.format`` text, as ``Term.sentence``."""

    template: str
    values: Mapping[str, Any] = field(default_factory=dict)


# what fills a slot of a cause's sentence: an exact number, a name, or a nested phrase
Value = int | Fraction | float | str | Phrase


@dataclass(frozen=True)
class TensorMeta:
    """Shape and dtype of one tensor seen at a module boundary."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class CallRecord:
    """One call of one module: what went in, what came out, and the exclusive work done."""

    index: int  # 0-based call number of this module
    order: int  # global 0-based position of this call's start among all module calls
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    components: Mapping[str, int]  # exclusive work (ops run while this module was innermost)
    kwargs_only: bool = False  # True when the call passed tensors only as keyword arguments
    # False when nothing the model returns depends on this call's result (a tracer drops it)
    used: bool = True


@dataclass(frozen=True)
class TorchCall:
    """One Python-level torch call (a torch function, ``Tensor`` method or operator) made while a
    module was the innermost one running, for the calls listed in ``counter.calls.WATCHED``:
    what a tool that patches Python names (ptflops) or traces them (fvcore) would see."""

    func: str  # "torch.matmul", "Tensor.__matmul__", "F.softmax", "Tensor.softmax", ...
    args: tuple[Any, ...]  # positional arguments: a TensorMeta per tensor, simple values as-is, else None
    kwargs: tuple[tuple[str, Any], ...]  # keyword arguments, recorded the same way
    components: Mapping[str, int]  # the aten work the call did (native components)
    # facts about the call that shapes do not hold, for the calls that need them, e.g. for
    # scaled_dot_product_attention: "last_dim_contiguous", "mask_requires_grad" (with grad enabled)
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamInfo:
    """One parameter or buffer tensor, named by its first (canonical) path."""

    name: str
    numel: int
    dtype: str
    nbytes: int
    trainable: bool
    aliases: tuple[str, ...] = ()  # other names under which the same tensor is registered
    # a buffer the forward replaced or first registered (timm's convit fills rel_indices on its
    # first call): its elements when the forward began (0: none); None when unchanged
    numel_before: int | None = None


# What a piece of backward work is a gradient of. Every backward op's components land in one part.
GRAD_PARTS = (
    "input",  # gradient w.r.t. activations: what flows on to earlier layers (or to an input that requires grad)
    "weight",  # gradient w.r.t. parameters: work on the path from the gradient to parameters only
    "shared",  # work whose result feeds both an input and a weight gradient, or neither
    "accumulate",  # adding up the gradients of a tensor used more than once (residual branches, tied weights)
)


@dataclass(frozen=True)
class BackwardRow:
    """One module's backward work (``count(..., training=True)``): the aten ops autograd ran while
    executing a node that this module's forward created, i.e. the node of an op that ran while this
    module was the innermost one (exclusive, like the forward columns). ``AccumulateGrad`` of a
    parameter is charged to the module that owns the parameter.

    ``op_components`` splits each op's components by ``GRAD_PARTS``: an op whose result flows only
    to parameter gradients is "weight", only to activation gradients "input". Ops with one output
    per gradient (``convolution_backward``, norm backwards) are split per output; their
    ``output_mask`` already leaves out what needs no gradient (the first conv's input gradient,
    frozen parameters), so that work is absent, never counted as zero."""

    ops: Mapping[str, int]  # aten op -> calls, arithmetic ops with a rule
    op_components: Mapping[str, Mapping[str, Mapping[str, int]]]  # aten op -> part -> components
    zero_cost_ops: Mapping[str, int]  # aten op -> calls, known to do no arithmetic
    unknown_ops: Mapping[str, int]  # aten op -> calls, no rule: NOT counted
    nodes: Mapping[str, int]  # autograd node type -> nodes executed, e.g. {"ConvolutionBackward0": 1}
    # of the backward MACs, per part: those of nodes whose forward op read a parameter (or a tensor
    # computed from parameters alone); the rest differentiate activation x activation products
    # (attention's QK^T and AV)
    param_macs: Mapping[str, int] = field(default_factory=dict)
    # of the forward MACs of this module: ops run under no_grad, and (of the others) ops with a
    # parameter operand; the rest are activation x activation products
    forward_param_macs: int = 0
    forward_no_grad_macs: int = 0
    # the MAC-carrying ops of ``op_components`` again, filed by the modules FlopCounterMode's module
    # tracker holds open while each op runs (``counter/held_open.py``): sorted tuple of
    # ``named_modules()`` names (the root ``""`` among them once it opened), and op -> part -> components;
    # pairs, not a mapping, so that the record stays plain JSON
    held: tuple[tuple[tuple[str, ...], Mapping[str, Mapping[str, Mapping[str, int]]]], ...] = ()

    def part(self, part: str) -> dict[str, int]:
        """Components of one ``GRAD_PARTS`` part, summed over ops."""
        out: dict[str, int] = {}
        for parts in self.op_components.values():
            for k, v in parts.get(part, {}).items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def components(self) -> dict[str, int]:
        """All backward components of this module, every part summed."""
        out: dict[str, int] = {}
        for parts in self.op_components.values():
            for comps in parts.values():
                for k, v in comps.items():
                    out[k] = out.get(k, 0) + v
        return out

    @property
    def macs(self) -> int:
        return self.components.get("macs", 0)


# optimizer -> (state tensors kept per trainable parameter, at the parameter's dtype; what they are)
OPTIMIZER_STATE: dict[str, tuple[int, str]] = {
    "sgd": (0, "no state"),
    "sgd-momentum": (1, "one momentum buffer"),
    "adam": (2, "exp_avg and exp_avg_sq"),
    "adamw": (2, "exp_avg and exp_avg_sq"),
}


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of one training step (forward, backward of the seeded sum, optimizer step), exact on
    meta for what the step allocates through the dispatcher (``counter/memory.py``).

    Resident before the step: ``params``, ``buffers``, ``inputs``, and the optimizer's state
    (``optimizer_state``: a factor of ``trainable``, ``OPTIMIZER_STATE``); gradients do not exist
    yet (``zero_grad(set_to_none=True)``, torch's default). During the step, ``forward_peak`` /
    ``backward_peak`` are the most bytes live at any op on top of the resident ones: saved
    activations, the op's own outputs and the gradients made so far. ``saved`` is what autograd
    kept for the backward (each storage once, parameters and inputs left out), per module in
    ``saved_by_module``. ``after_backward``: live when the backward ends (the parameter gradients,
    ``trainable`` bytes when every parameter is reached, and the outputs)."""

    params: int
    trainable: int  # bytes of parameters that require grad: the gradients' size
    buffers: int
    inputs: int
    saved: int
    saved_by_module: Mapping[str, int]
    forward_peak: int
    backward_peak: int
    after_backward: int
    peak_at: str  # where the step peaked: "backward: layer1.0.conv1 aten::convolution_backward"
    # every tensor output of every module call, in call order: (module, storage id, storage bytes,
    # elements, bytes per element); storage ids are numbered per count, shared by views and
    # in-place results of one storage. What summary tools that add up module outputs see.
    outputs: tuple[tuple[str, int, int, int, int], ...] = ()
    saved_storages: tuple[int, ...] = ()  # storage ids autograd saved, sorted (``saved`` bytes in all)

    def optimizer_state(self, optimizer: str) -> int:
        return OPTIMIZER_STATE[optimizer][0] * self.trainable

    def resident(self, optimizer: str) -> int:
        return self.params + self.buffers + self.inputs + self.optimizer_state(optimizer)

    def peak(self, optimizer: str) -> int:
        """Peak of the simple schedule: resident bytes plus the most live during the step."""
        return self.resident(optimizer) + max(self.forward_peak, self.backward_peak, self.after_backward)


@dataclass(frozen=True)
class TrainingInfo:
    """How the backward of a training count was run, and its totals.

    The backward is that of ``sum`` over every floating-point output that requires grad, seeded
    directly with ``ones_like(output)`` (the gradient of a sum): the sum itself never runs, so the
    loss costs nothing and no module is charged for it. ``totals`` holds ``forward_macs``,
    ``backward_macs`` and per part ``backward_macs_<part>`` and ``backward_flops_<part>``, plus
    ``backward_flops``, ``training_macs`` and ``training_flops`` (forward + backward)."""

    seed: str  # how the backward was started, in words
    seeded: tuple[TensorMeta, ...]  # the outputs whose gradients were seeded
    parts: Mapping[str, Mapping[str, int]]  # GRAD_PARTS part -> components summed over modules
    totals: Mapping[str, int]
    # autograd nodes that no forward op was seen creating, by type: charged to the module of the
    # nearest earlier node (autograd numbers nodes in creation order), or to the root
    unmapped_nodes: Mapping[str, int] = field(default_factory=dict)
    memory: TrainingMemory | None = None


@dataclass(frozen=True)
class ModuleRow:
    """Per-module native counts. ``components``, ``flops``, ``ops`` are exclusive: only work done
    while this module was the innermost one executing. Inclusive views are computed on demand."""

    name: str
    type: str
    depth: int
    calls: int
    # simple module attributes the counting rules need (kernel, groups, ...); a module registered
    # under several paths also has "_aliases": its later paths, in named_modules() order
    attrs: Mapping[str, Any]
    call_records: tuple[CallRecord, ...]
    components: Mapping[str, int]
    flops: int
    ops: Mapping[str, int]  # aten op -> call count, arithmetic ops with a rule
    op_components: Mapping[str, Mapping[str, int]]  # aten op -> its components (exclusive)
    zero_cost_ops: Mapping[str, int]  # aten op -> call count, known to do no arithmetic
    unknown_ops: Mapping[str, int]  # aten op -> call count, no rule: NOT counted
    params: int  # parameters owned directly by this module (each tensor once, at its canonical owner)
    params_trainable: int
    params_frozen: int
    buffers: int
    output_elements: int  # elements of this module's tensor outputs, summed over calls
    activations: int  # elements written by the ops counted here (exclusive)
    bytes_read: int
    bytes_written: int
    # aten op -> (elements of its first tensor input, elements of its output(s)), summed over the
    # op's calls here: what rules that count per input or per output element of an op need
    op_elements: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # the watched Python-level torch calls made while this module was innermost, in call order
    torch_calls: tuple[TorchCall, ...] = ()
    # of ``bytes_read``: bytes of parameters (nn.Parameter, buffers excluded) read by the ops here
    param_bytes_read: int = 0
    # aten op -> (bytes read, bytes written, parameter bytes of the read), summed over calls here
    op_bytes: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    # backward work charged to this module when counted with ``training=True``, else None
    backward: BackwardRow | None = None

    @property
    def macs(self) -> int:
        return self.components.get("macs", 0)


@dataclass(frozen=True)
class TracedOps:
    """What ``torch.jit`` tracing records for one forward of the model (the graph fvcore counts),
    made by reconcile itself on the same model and inputs. ``ops``: module -> traced op -> nodes
    whose innermost module scope is that module (exclusive; ``prim::`` nodes left out; module
    names as ``named_modules()``, root ``""``). ``on_sizes``: of those, the nodes that compute only
    on traced sizes and constants (``x.shape[1] + 1`` in Python is an ``aten::add`` node in a
    trace, while no eager op ever runs for it)."""

    ops: Mapping[str, Mapping[str, int]]
    on_sizes: Mapping[str, Mapping[str, int]]
    device: str = "cpu"


@dataclass(frozen=True)
class NativeCount:
    """Result of ``reconcile.count``. ``rows`` are in ``named_modules()`` order."""

    model: str
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    device: str
    rows: tuple[ModuleRow, ...]
    params: tuple[ParamInfo, ...]
    buffers: tuple[ParamInfo, ...]
    tied: tuple[tuple[str, ...], ...]  # groups of parameter names sharing one tensor
    totals: Mapping[str, int]
    components: Mapping[str, int]
    # the same forward as torch.jit traces it, when a tool that traces (fvcore) is compared
    traced: TracedOps | None = None
    # set when counted with ``training=True``: how the backward ran and its totals (rows hold
    # each module's ``backward``); ``totals`` and ``components`` stay forward-only
    training: TrainingInfo | None = None
    # where the tools compared with this count run the model: "cpu" (reconcile's runs), or "meta"
    # (a language-model phase, ``reconcile.llm``): CPU's fused kernels (scaled_dot_product_attention's
    # flash kernel) exist only on "cpu"; on meta every op runs its decomposition, as native's does
    tool_device: str = "cpu"

    def row(self, name: str) -> ModuleRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    # Roll-ups live in ``reconcile.rollup`` (below this module; ``reconcile.views`` re-exports them):
    # these delegate so users can discover them on the result.
    def to_frame(self, include_inclusive: bool = True):
        """Per-module rows as a pandas DataFrame indexed by module name."""
        return rollup.to_frame(self, include_inclusive)

    def by_depth(self, depth: int) -> list[dict[str, Any]]:
        """Modules at depth <= ``depth`` with inclusive totals."""
        return rollup.by_depth(self, depth)

    def by_operator(self) -> dict[str, dict[str, int]]:
        """aten op -> calls and components summed over modules."""
        return rollup.by_operator(self)

    def inclusive(self) -> dict[str, dict[str, int]]:
        """Per module: own work plus all descendants'."""
        return rollup.inclusive(self)

    @property
    def intensity(self) -> Fraction | None:
        """Arithmetic intensity of the whole forward: FLOPs per byte read or written."""
        moved = self.totals["bytes_read"] + self.totals["bytes_written"]
        return Fraction(self.totals["flops"], moved) if moved else None


# ----- tool runs (adapters) -----------------------------------------------------------------

# "not run": the tool cannot count this run (``Tool.cannot_run``), known before it would start
STATUSES = ("ok", "failed", "timeout", "not run")


@dataclass(frozen=True)
class ToolLayer:
    """One per-layer row as the tool reported it, re-keyed to a ``named_modules()`` name.

    ``raw`` holds the tool's own numbers for that layer under the tool's own names
    (e.g. ``{"MAdd": 118013952, "Flops": 118013952}``); ``key`` is the tool's own row key.
    ``call`` is set when the tool keeps one row per call (torchsummary), else ``None``."""

    module: str
    type: str
    calls: int
    raw: Mapping[str, Number]
    key: str = ""
    call: int | None = None


@dataclass(frozen=True)
class ToolRun:
    """Everything one tool reported for one model, exactly as it reported it."""

    tool: str
    version: str
    status: str
    headline: Mapping[str, Number | str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    layers: tuple[ToolLayer, ...] = ()
    unattributed: Mapping[str, Number] = field(default_factory=dict)  # counts only in the total
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # how the tool was run when it differs from its public entry point
    error_type: str = ""
    error_message: str = ""
    attempted: str = ""
    seconds: float = 0.0
    # tool-specific structured result kept beside the raw numbers (native: its NativeCount);
    # left out of JSON, which holds the raw numbers above
    detail: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


# ----- plain-data conversion (JSON / pickling across processes) ------------------------------


def to_plain(obj: Any) -> Any:
    """Convert records to JSON-ready data. Fractions that are not integers become ``"n/d"``.
    A ``ToolRun``'s ``detail`` is left out (it is a structured record of its own)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "detail"}
    if isinstance(obj, Fraction):
        return int(obj) if obj.denominator == 1 else f"{obj.numerator}/{obj.denominator}"
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
