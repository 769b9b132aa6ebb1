"""Adapters for ptflops 0.7.5: ``ptflops`` (pytorch backend, as shipped: ``count_functional`` on)
and ``ptflops-aten`` (aten backend). Both call ``get_model_complexity_info`` with ``backend``
passed explicitly, ``as_strings=False`` and an ``input_constructor`` that hands ptflops our own
input tensor, so the batch and shape are ours rather than ``(1, *input_res)`` of uninitialised
memory. Several inputs go in as keyword arguments bound to ``forward``'s parameter names (the
only multi-input form ptflops supports).

``ptflops`` (pytorch backend), status ``ok``:

* ``headline``: ``macs`` is the int ptflops returned: ``int(sum(module __flops__) / batch +
  sum(functional counts) + sum(tensor-op counts))``. ``batch_counter`` is that divisor (the
  summed ``len(input[0])`` over root calls; 1 when inputs are passed by keyword). ``macs_exact``
  is the same sum in exact arithmetic (a ``Fraction`` when the batch does not divide the module
  sum; ptflops truncates it). Note that ptflops divides only the module part by the batch: the
  functional and tensor-op counts are whole-batch. ``params``: trainable parameters only.
* ``layers``: one row per module ptflops counts with a hook (exact type in ``MODULES_MAPPING``),
  read from the module's ``__flops__``/``__params__`` at the moment ptflops prints its per-layer
  table (``stop_flops_count`` deletes them right after). Rows are the module's own hook counts:
  exclusive, accumulated over all its calls. ``raw = {"macs": __flops__ / batch_counter,
  "__flops__": ..., "params": __params__}``; ``key`` is the path through ``children()`` by which
  ptflops' ``accumulate_flops`` reached it (a module reachable by two paths is summed twice by
  ptflops and gets two rows). A counted module below another counted module is never reached by
  ``accumulate_flops``: its row has ``raw["shadowed"] = 1`` and is not part of the total.
* ``unattributed``: the patched functional and tensor-op counts, which ptflops adds to the total
  without any module: ``"functional:F.relu"``, ``"functional:F.max_pool2d"``,
  ``"tensor_op:matmul"`` (``torch.matmul`` and ``Tensor.matmul`` alike), ``"tensor_op:add"``, ...
  summed over calls.
* Reconciliation: ``sum(raw["macs"] of rows without "shadowed") + sum(unattributed.values())
  == headline["macs_exact"]``, and ``int(macs_exact) == macs``.

``ptflops-aten``, status ``ok``:

* ``headline``: ``macs`` (``counter.complexity``, the sum of the ``'Global'`` bucket, whole
  batch, not divided) and ``params`` (trainable only).
* ``layers``: one row per direct child of the root (the only modules the aten backend names),
  read from the tool's ``FlopCounterMode.flop_counts``. Rows are inclusive of the child's whole
  subtree. ``raw`` holds the tool's per-op buckets (``"aten.convolution"``, ``"aten.addmm"``,
  ...) plus ``"macs"``, their sum (0 for a child that ran no counted op).
* ``unattributed``: ``"Global:<op>"`` = the ``'Global'`` bucket minus the children's buckets for
  that op: work the root did outside any direct child (negative only if one child calls another).
* Reconciliation: ``sum(raw["macs"]) + sum(unattributed.values()) == headline["macs"]``.

Both: ``calls`` is the number of forward calls of the module seen during ptflops' one forward
pass (counted by temporary hooks on the copy). ``warnings`` holds every line ptflops printed to
stdout/stderr (its per-layer table goes to an in-memory ``ost`` and is not kept) and any Python
warnings. A ``None`` result (ptflops catches the model's exception, prints it and returns
``None``) becomes a failed run carrying ptflops' printed message.
"""

from __future__ import annotations

import copy
import inspect
import io
from fractions import Fraction
from typing import Any, Callable

from reconcile.adapters.base import Adapter, capture_output, counting_calls, exact_number, module_names
from reconcile.records import Number, ToolLayer, ToolRun


class PtflopsReturnedNone(RuntimeError):
    """ptflops caught an exception from the forward pass, printed it and returned ``None``."""


def _input_constructor(model: Any, inputs: tuple[Any, ...]) -> tuple[Callable[[tuple], Any], tuple[str, ...]]:
    """ptflops calls ``model(batch)`` or ``model(**batch)``: one tensor goes in as itself, several
    as a dict bound to ``forward``'s parameter names."""
    if len(inputs) == 1:
        return (lambda _res: inputs[0]), ()
    signature = inspect.signature(model.forward)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        raise TypeError("ptflops passes several inputs only as keywords; forward(*args) takes none")
    try:
        bound = signature.bind(*inputs)
    except TypeError as exc:
        raise TypeError(f"cannot pass {len(inputs)} inputs to ptflops as keywords of forward(): {exc}") from exc
    kwargs = dict(bound.arguments)
    return (lambda _res: dict(kwargs)), (
        f"{len(inputs)} inputs passed as keywords {sorted(kwargs)} through input_constructor; ptflops then "
        "counts the batch as 1 (no positional input reaches its batch counter)",
    )


def _input_res(inputs: tuple[Any, ...]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in inputs[0].shape)
    return shape[1:] or shape  # ptflops asserts a non-empty tuple; the constructor ignores it


def _printed(cap: Any) -> list[str]:
    return [line.strip() for text in (cap.stdout, cap.stderr) for line in text.splitlines() if line.strip()]


def _failure(cap: Any) -> PtflopsReturnedNone:
    lines = _printed(cap)
    detail = next((ln for ln in lines if ln.startswith("<class")), lines[-1] if lines else "no message")
    return PtflopsReturnedNone(f"ptflops returned None after catching: {detail}")


class _SnapshotStream(io.StringIO):
    """ptflops' ``ost``. Its first write is the per-layer table, printed after the forward pass
    and before ``stop_flops_count`` deletes ``__flops__``: read every module's counters then."""

    def __init__(self, snapshot: Callable[[], None]) -> None:
        super().__init__()
        self._snapshot: Callable[[], None] | None = snapshot

    def write(self, text: str) -> int:
        if self._snapshot is not None:
            snapshot, self._snapshot = self._snapshot, None
            snapshot()
        return super().write(text)


def _labelled_handlers(mapping: dict, namespaces: tuple[tuple[str, Any], ...], prefix: str, log: list) -> dict:
    """Wrap each handler of a ptflops mapping so every count it returns is logged with the
    patched function's name; the counts themselves are unchanged. Returns the originals."""
    originals = dict(mapping)
    for fn, handler in originals.items():
        label = _function_name(fn, namespaces)
        if prefix == "tensor_op":  # torch.X and Tensor.X: one handler, one label ("tensor_op:matmul")
            label = label.rsplit(".", 1)[-1]

        def labelled(*args: Any, _h: Callable = handler, _label: str = f"{prefix}:{label}", **kwargs: Any) -> Any:
            value = _h(*args, **kwargs)
            log.append((_label, value))
            return value

        mapping[fn] = labelled
    return originals


def _function_name(fn: Any, namespaces: tuple[tuple[str, Any], ...]) -> str:
    for prefix, namespace in namespaces:
        for attr, value in vars(namespace).items():
            if value is fn:
                return f"{prefix}.{attr}"
    return getattr(fn, "__qualname__", repr(fn))


class PtflopsAdapter(Adapter):
    """ptflops, pytorch backend, with its default ``count_functional=True``."""

    name = "ptflops"
    distribution = "ptflops"
    legacy = False  # ptflops 0.7.0: no backend argument, no functional patching

    def attempted(self) -> str:
        return "ptflops.get_model_complexity_info(deepcopy(model), input_res, backend='pytorch', as_strings=False)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        # ptflops binds methods and __batch_counter__ onto the root, leaves accumulate_params on
        # every module and calls eval() without restoring it: run it on a copy.
        work = copy.deepcopy(model)
        names = module_names(work)
        constructor, input_notes = (_input_constructor if not self.legacy else _legacy_constructor)(work, inputs)
        snap: dict[str, Any] = {}
        log: list[tuple[str, Any]] = []
        with capture_output() as cap:
            import torch
            import torch.nn.functional as F
            from ptflops import get_model_complexity_info
            from ptflops import pytorch_ops

            if not self.legacy:
                from ptflops.flops_counter import FLOPS_BACKEND

            def snapshot() -> None:
                snap["batch"] = work.__batch_counter__
                snap["flops"] = {id(m): (m.__flops__, m.__params__) for m in work.modules() if hasattr(m, "__flops__")}

            # Tensor methods live on TensorBase until ptflops shadows them on Tensor.
            namespaces = (("F", F), ("torch", torch), ("Tensor", torch._C.TensorBase))
            originals_f = _labelled_handlers(_mapping(pytorch_ops, "FUNCTIONAL_MAPPING"), namespaces, "functional", log)
            originals_t = _labelled_handlers(_mapping(pytorch_ops, "TENSOR_OPS_MAPPING"), namespaces, "tensor_op", log)
            try:
                with counting_calls(work) as calls:
                    macs, params = get_model_complexity_info(
                        work,
                        _input_res(inputs),
                        print_per_layer_stat=True,
                        as_strings=False,
                        input_constructor=constructor,
                        ost=_SnapshotStream(snapshot),
                        backend=FLOPS_BACKEND.PYTORCH,
                        backend_specific_config={"count_functional": True},
                    ) if not self.legacy else get_model_complexity_info(
                        work, _input_res(inputs), print_per_layer_stat=True, as_strings=False,
                        input_constructor=constructor, ost=_SnapshotStream(snapshot))
            finally:
                _mapping(pytorch_ops, "FUNCTIONAL_MAPPING").update(originals_f)
                _mapping(pytorch_ops, "TENSOR_OPS_MAPPING").update(originals_t)
        if macs is None or "flops" not in snap:
            raise _failure(cap)

        batch = int(snap["batch"])
        layers: list[ToolLayer] = []
        reached: set[int] = set()

        def walk(module: Any, path: str) -> None:
            # ptflops' accumulate_flops: a counted module is atomic, else sum its children().
            if id(module) in snap["flops"]:
                reached.add(id(module))
                layers.append(self._layer(module, names, calls, path, snap["flops"][id(module)], batch))
                return
            for child_name, child in module.named_children():
                walk(child, f"{path}.{child_name}" if path else child_name)

        walk(work, "")
        for mod in work.modules():
            if id(mod) in snap["flops"] and id(mod) not in reached:
                layers.append(self._layer(mod, names, calls, names[id(mod)], snap["flops"][id(mod)], batch, shadowed=True))

        unattributed: dict[str, Number] = {}
        for label, value in log:
            unattributed[label] = unattributed.get(label, 0) + exact_number(value)
        module_sum = sum(layer.raw["__flops__"] for layer in layers if "shadowed" not in layer.raw)
        exact = Fraction(module_sum, batch) + sum(unattributed.values())
        notes = [
            "run on a deepcopy: ptflops leaves methods, __batch_counter__ and accumulate_params on the "
            "model and leaves it in eval mode",
            "input_constructor returns our input tensor(s), so ptflops sees our batch and shape",
            "ost is an in-memory stream; per-module __flops__/__params__ are read when ptflops writes "
            "its per-layer table to it, before stop_flops_count deletes them",
            "handlers in ptflops.pytorch_ops.FUNCTIONAL_MAPPING/TENSOR_OPS_MAPPING wrapped for the run "
            "to label each functional count with its function (values unchanged; restored after)",
            "temporary forward hooks on the copy count each module's calls",
            *input_notes,
        ]
        return self.ok(
                        headline={"macs": exact_number(macs) if self.legacy else int(macs), "macs_exact": exact_number(exact), "params": int(params), "batch_counter": batch},
            units={"macs": "Mac", "macs_exact": "Mac", "params": "params", "batch_counter": "samples"},
            layers=tuple(layers),
            unattributed=unattributed,
            warnings=tuple([*cap.warnings, *_printed(cap)]),
            notes=tuple(notes),
        )

    @staticmethod
    def _layer(
        module: Any,
        names: dict[int, str],
        calls: dict[int, int],
        key: str,
        counters: tuple[Any, Any],
        batch: int,
        shadowed: bool = False,
    ) -> ToolLayer:
        flops, params = int(counters[0]), int(counters[1])  # ptflops int()s every module count
        raw: dict[str, Number] = {"macs": exact_number(Fraction(flops, batch)), "__flops__": flops, "params": params}
        if shadowed:
            raw["shadowed"] = 1
        return ToolLayer(module=names[id(module)], type=type(module).__name__, calls=calls[id(module)], raw=raw, key=key)


def _mapping(pytorch_ops: Any, name: str) -> dict:
    """One of ptflops' functional mappings; ptflops 0.7.0 patches no functionals and has none."""
    return getattr(pytorch_ops, name, None) if hasattr(pytorch_ops, name) else {}


def _legacy_constructor(model: Any, inputs: tuple[Any, ...]) -> tuple[Callable[[tuple], Any] | None, tuple[str, ...]]:
    """ptflops 0.7.0 calls ``model(**input_constructor(res))``, keywords only: a single input of
    batch 1 goes in as its users pass it, ``input_res`` alone (ptflops builds ``(1, *res)`` of
    uninitialised memory: no count reads values); anything else as keywords of ``forward``."""
    if len(inputs) == 1 and int(inputs[0].shape[0]) == 1:
        return None, ("ptflops 0.7.0 builds its own (1, *input_res) input, as its users run it",)
    if len(inputs) == 1:
        signature = inspect.signature(model.forward)
        first = next(iter(signature.parameters))
        return (lambda _res: {first: inputs[0]}), (
            f"input passed as keyword {first!r} (ptflops 0.7.0 takes keywords only); the batch counter is then 1",)
    return _input_constructor(model, inputs)


class Ptflops07Adapter(PtflopsAdapter):
    """ptflops 0.7.0 (what ``pip install ptflops==0.7`` gives), pytorch backend, from its own
    folder: the same module hooks, no patched functionals (``unattributed`` stays empty), and the
    total returned as the float ``module sum / batch`` (not truncated)."""

    name = "ptflops@0.7"
    legacy = True

    def attempted(self) -> str:
        return "ptflops.get_model_complexity_info(deepcopy(model), input_res, as_strings=False)"


class PtflopsAtenAdapter(Adapter):
    """ptflops, aten backend (``TorchDispatchMode`` over aten mm/addmm/bmm/convolution)."""

    name = "ptflops-aten"
    distribution = "ptflops"

    def attempted(self) -> str:
        return "ptflops.get_model_complexity_info(deepcopy(model), input_res, backend='aten', as_strings=False)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        # The aten backend calls eval() and hooks every direct child of the root for good.
        work = copy.deepcopy(model)
        names = module_names(work)
        constructor, input_notes = _input_constructor(work, inputs)
        found: list[Any] = []
        with capture_output() as cap:
            from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

            from ptflops import get_model_complexity_info
            from ptflops.aten_engine import FlopCounterMode
            from ptflops.flops_counter import FLOPS_BACKEND

            def grab_counter(module: Any, args: Any) -> None:
                # The counter is local to get_flops_aten; the root's forward runs inside it.
                if not found:
                    found.extend(m for m in _get_current_dispatch_mode_stack() if isinstance(m, FlopCounterMode))

            grab = work.register_forward_pre_hook(grab_counter)
            try:
                with counting_calls(work) as calls:
                    macs, params = get_model_complexity_info(
                        work,
                        _input_res(inputs),
                        print_per_layer_stat=True,
                        as_strings=False,
                        input_constructor=constructor,
                        ost=io.StringIO(),
                        backend=FLOPS_BACKEND.ATEN,
                    )
            finally:
                grab.remove()
        if macs is None:
            raise _failure(cap)
        if len(found) != 1:
            raise RuntimeError(f"expected one ptflops FlopCounterMode active during the forward pass, found {len(found)}")
        buckets = {str(key): {str(op): exact_number(v) for op, v in ops.items()} for key, ops in found[0].flop_counts.items()}

        layers: list[ToolLayer] = []
        leftover = dict(buckets.get("Global", {}))
        for child_name, child in work.named_children():
            ops = buckets.get(child_name, {})
            for op, value in ops.items():
                leftover[op] = leftover.get(op, 0) - value
            raw: dict[str, Number] = {**ops, "macs": sum(ops.values())}
            layers.append(
                ToolLayer(module=names[id(child)], type=type(child).__name__, calls=calls[id(child)], raw=raw, key=child_name)
            )
        unknown = set(buckets) - {"Global"} - {n for n, _ in work.named_children()}
        if unknown:
            raise RuntimeError(f"ptflops-aten buckets {sorted(unknown)} are not direct children of the root")
        notes = [
            "run on a deepcopy: the aten backend leaves the model in eval mode and its hooks on every "
            "direct child of the root",
            "input_constructor returns our input tensor(s), so ptflops sees our batch and shape",
            "ost is an in-memory stream; per-child op counts are read from ptflops' FlopCounterMode "
            "(found on the dispatch-mode stack by a pre-hook on the copy's root) after the run",
            "temporary forward hooks on the copy count each module's calls",
            *input_notes,
        ]
        return self.ok(
                        headline={"macs": exact_number(macs), "params": int(params)},
            units={"macs": "Mac", "params": "params"},
            layers=tuple(layers),
            unattributed={f"Global:{op}": v for op, v in leftover.items() if v != 0},
            warnings=tuple([*cap.warnings, *_printed(cap)]),
            notes=tuple(notes),
        )
