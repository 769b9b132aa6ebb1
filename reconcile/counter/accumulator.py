"""The native counter's bookkeeping, as a plain object: what each aten op and each module call adds.

The dispatch mode in ``core.py`` only runs each op and calls back here (the shape of torch's
``FlopCounterMode``: a thin ``TorchDispatchMode`` over a public object), and the module tracker
calls ``module_exit`` when a module call returns. Nothing here changes what runs: every method
reads the op's arguments and result and adds to per-module accumulators, which ``core`` freezes
into ``ModuleRow``s at the end.

Guarantees: an op is charged to the innermost module executing it (``stack.top``); work inside a
call counted by a module-level rule is not counted again op by op; ops with no rule are counted
per module as unknown, never dropped; views and allocations are kept apart as zero-cost ops.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.weak import WeakTensorKeyDictionary

from reconcile.counter import backward as bwd
from reconcile.counter import formulas, liveness, memory
from reconcile.counter.held_open import HeldOpen
from reconcile.counter.tracker import CallFrame, ModuleStack, tensor_bytes, tensor_metas
from reconcile.records import CallRecord

# a module-level rule: the components of one call of a module counted as a unit, or None
ModuleRule = Callable[[nn.Module, tuple, dict], "dict[str, int] | None"]


class ModuleAcc:
    """Mutable per-module accumulator; frozen into a ``ModuleRow`` at the end."""

    __slots__ = ("components", "ops", "op_components", "op_elements", "zero_ops", "unknown_ops", "activations",
                 "bytes_read", "bytes_written", "param_bytes_read", "op_bytes", "output_elements", "calls")

    def __init__(self) -> None:
        self.components: Counter = Counter()
        self.ops: Counter = Counter()
        self.op_components: dict[str, Counter] = defaultdict(Counter)
        self.op_elements: dict[str, list[int]] = {}
        self.zero_ops: Counter = Counter()
        self.unknown_ops: Counter = Counter()
        self.activations = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.param_bytes_read = 0
        # aten op -> [bytes read, bytes written, of the read: parameter bytes], summed over calls
        self.op_bytes: dict[str, list[int]] = {}
        self.output_elements = 0
        self.calls: list[CallRecord] = []

    def add_bytes(self, op: str, read: int, written: int, param_read: int) -> None:
        """One op's (or one rule-counted module call's) traffic, in total and per op."""
        self.bytes_read += read
        self.bytes_written += written
        self.param_bytes_read += param_read
        ob = self.op_bytes.setdefault(op, [0, 0, 0])
        ob[0] += read
        ob[1] += written
        ob[2] += param_read


def _param_read(args: Sequence[Any], kwargs: dict, param_ids: dict[int, Any]) -> int:
    """Bytes of the tensor arguments that are parameters (or views of one): a weight is read once
    per op that uses it, like any other operand; counted apart for the weight-dtype what-if."""
    n = 0
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor) and id(a) in param_ids:
            n += a.numel() * a.element_size()
    return n


def _io(args: Sequence[Any], kwargs: dict, out: Any, primary_only: bool) -> tuple[int, int, int]:
    """Bytes read (tensor arguments), bytes written and elements written (tensor outputs)."""
    read = 0
    for a in args:
        if isinstance(a, torch.Tensor):
            read += a.numel() * a.element_size()
        elif isinstance(a, (list, tuple)):
            for t in a:
                if isinstance(t, torch.Tensor):
                    read += t.numel() * t.element_size()
    for a in kwargs.values():
        if isinstance(a, torch.Tensor):
            read += a.numel() * a.element_size()
    written = elements = 0
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if primary_only:
        outs = outs[:1]
    for t in outs:
        if isinstance(t, torch.Tensor):
            n = t.numel()
            elements += n
            written += n * t.element_size()
    return read, written, elements


_ADDS = frozenset(("aten::add", "aten::add_"))


class Accumulator:
    """Per-module counts of one forward. ``op`` is called after every aten op, ``module_exit``
    when a module call returns; ``accs`` and ``call_records`` hold the result."""

    def __init__(self, model: nn.Module, module_rule: ModuleRule) -> None:
        # which module is running; module calls counted by ``module_rule`` count as one unit
        self.stack = ModuleStack(model, self.module_exit, module_rule)
        self.live = liveness.Liveness()  # which module calls' results the model's output uses
        self.accs: dict[str, ModuleAcc] = defaultdict(ModuleAcc)
        self.call_records: dict[str, list[CallRecord]] = defaultdict(list)
        self.params = list(model.parameters())
        # id -> tensor (kept alive so the id is not reused): parameters, and views of them made
        # during the forward (``linear`` reads ``weight.t()``)
        self.param_ids: dict[int, Any] = {id(p): p for p in self.params}
        # ``linear`` on a non-contiguous N-d input runs as matmul then ``add(bias)``: an add whose
        # operand is a parameter registered as a bias is a bias add, whatever path produced it.
        self.bias_ids = frozenset(id(p) for n, p in model.named_parameters() if n.rsplit(".", 1)[-1].endswith("bias"))
        self._module_bytes: dict[int, int] = {}  # id(module) -> bytes of its parameters
        self._cache: dict[Any, tuple[str, Any, str, bool]] = {}

    # ----- per aten op ----------------------------------------------------------------------
    def before_op(self) -> None:
        """Called before each op runs (nothing to do for a forward count)."""

    def op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """``func(*args, **kwargs)`` ran and returned ``out``: charge it to the running module."""
        frame = self.stack.top
        self.live.consumed((frame.module, frame.index), args)
        if frame.suppressed:
            return
        kind, fn, name, primary_only = self._cache.get(func) or self._classify(func)
        acc = self.accs[frame.module]
        if kind == "view" or kind == "alloc":
            acc.zero_ops[name] += 1
            if kind == "view" and args and id(args[0]) in self.param_ids and isinstance(out, torch.Tensor):
                self.param_ids[id(out)] = out
            return
        read, written, elements = _io(args, kwargs, out, primary_only)
        acc.activations += elements
        if kind == "rule" and name == "aten::mean" and formulas.is_pool_mean(name, args):
            name = formulas.POOL_MEAN
        acc.add_bytes(name, read, written, _param_read(args, kwargs, self.param_ids))
        if kind == "rule":
            self._ruled(acc, frame, fn, name, args, kwargs, out, elements)
        elif kind == "unknown":
            acc.unknown_ops[name] += 1
        else:
            acc.zero_ops[name] += 1

    def _classify(self, func: Any) -> tuple[str, Any, str, bool]:
        name = func._schema.name
        kind, rule = formulas.lookup(name)
        if kind == "unknown" and getattr(func, "is_view", False):
            kind = "view"
        entry = (kind, rule.fn if rule is not None else None, name, name in formulas.PRIMARY_OUTPUT_ONLY)
        self._cache[func] = entry
        return entry

    def _ruled(self, acc: ModuleAcc, frame: CallFrame, fn: Any, name: str, args: tuple, kwargs: dict, out: Any,
               elements: int) -> None:
        """An op with a rule: its components, to the module and to the running call."""
        comps = fn(args, kwargs, out)
        if name in _ADDS and self.bias_ids and any(id(a) in self.bias_ids for a in args[:2]):
            comps = {"bias": comps["elementwise"]}
        acc.ops[name] += 1
        first = args[0] if args else None
        n_first = first.numel() if isinstance(first, torch.Tensor) else 0
        el = acc.op_elements.get(name)
        if el is None:
            acc.op_elements[name] = [n_first, elements]
        else:
            el[0] += n_first
            el[1] += elements
        opc = acc.op_components[name]
        fc = frame.components
        for k, v in comps.items():
            if v:
                opc[k] += v
                fc[k] = fc.get(k, 0) + v

    # ----- per module call --------------------------------------------------------------------
    def module_exit(self, frame: CallFrame, mod: nn.Module, output: Any) -> None:
        """A module call returned ``output``: its exclusive work goes to the module, and its record."""
        self.live.produced((frame.module, frame.index), output)
        self._record_call(frame, mod, output)

    def _record_call(self, frame: CallFrame, mod: nn.Module, output: Any) -> None:
        outs = tensor_metas(output)
        acc = self.accs[frame.module]
        n_out = sum(t.numel for t in outs)
        acc.output_elements += n_out
        if frame.ruled:
            self._rule_counted(acc, frame, mod, output, n_out)
        elif not frame.suppressed:
            acc.components.update(frame.components)
        self.call_records[frame.module].append(
            CallRecord(
                index=frame.index,
                order=frame.order,
                inputs=frame.inputs,
                outputs=outs,
                components=dict(frame.components),
                kwargs_only=frame.kwargs_only,
            )
        )

    def _rule_counted(self, acc: ModuleAcc, frame: CallFrame, mod: nn.Module, output: Any, n_out: int) -> None:
        """A call counted by a module-level rule: one fused unit reading inputs and weights once."""
        if id(mod) not in self._module_bytes:
            self._module_bytes[id(mod)] = sum(p.numel() * p.element_size() for p in mod.parameters())
        weights = self._module_bytes[id(mod)]
        op = f"module::{type(mod).__name__}"
        acc.add_bytes(op, frame.input_bytes + weights, tensor_bytes(output), weights)
        acc.activations += n_out
        acc.components.update(frame.components)
        for k, v in frame.components.items():
            acc.op_components[op][k] += v
        acc.ops[op] += 1

    def mark_unused(self, result: Any) -> None:
        """Mark the call records whose results the model's output does not depend on."""
        used = self.live.used(result, {("", 0)})
        for module_name, recs in self.call_records.items():
            for i, rec in enumerate(recs):
                if (module_name, rec.index) not in used:
                    recs[i] = dataclasses.replace(rec, used=False)

    def outside_modules(self) -> None:
        """Work charged to the root outside any module call (none for a plain forward)."""
        self.accs[""].components.update(self.stack.root.components)


class TrainingAccumulator(Accumulator):
    """The bookkeeping of a training count: the forward as ``Accumulator`` (grad enabled), plus
    which module created each autograd node and the step's memory; during the backward every op
    goes to ``backward``."""

    def __init__(self, model: nn.Module, module_rule: ModuleRule,
                 inputs: tuple[Any, ...]) -> None:
        super().__init__(model, module_rule)
        self.nodes = bwd.NodeMap()
        self.held = HeldOpen(model, self.stack.names)  # FlopCounterMode's open modules, for its convention
        self.backward = bwd.Backward(self.nodes, {id(p): owner(n) for n, p in model.named_parameters()}, self.held)
        self.trace = memory.MemoryTrace(
            [*self.params, *model.buffers(), *(t for t in inputs if isinstance(t, torch.Tensor))], self._where)
        # parameters and every tensor computed from parameters alone; weak, so that holding them
        # does not change the step's memory
        self.from_params = WeakTensorKeyDictionary()
        for t in self.param_ids.values():
            self.from_params[t] = True

    def _where(self) -> str:
        """The module the step's memory is charged to right now."""
        return self.backward.current_module() if self.backward.active else self.stack.top.module

    def before_op(self) -> None:
        if not self.backward.active:
            self.nodes.resolve()  # the previous op's autograd node exists now

    def op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        if self.backward.active:
            self.backward.op(func, args, kwargs, out)
            self.trace.allocated(out, func._schema.name)
            return
        frame = self.stack.top
        before = frame.components.get("macs", 0)
        super().op(func, args, kwargs, out)
        self.trace.allocated(out, func._schema.name)
        ins = bwd.tensors_of(args, kwargs)
        reads = [a in self.from_params for a in ins]
        from_params = bool(reads) and all(reads)
        if from_params:
            for t in bwd.tensors_of(out):
                self.from_params[t] = True
        macs = frame.components.get("macs", 0) - before
        if macs:
            acc = self.backward.accs[frame.module]
            if not torch.is_grad_enabled():
                acc.forward_no_grad_macs += macs
            elif any(reads):
                acc.forward_param_macs += macs
        self.nodes.produced(out, frame.module, from_params, any(reads))

    def module_exit(self, frame: CallFrame, mod: nn.Module, output: Any) -> None:
        self.live.produced((frame.module, frame.index), output)
        self.trace.module_output(frame.module, output)
        self._record_call(frame, mod, output)


def owner(name: str) -> str:
    """The module a parameter or buffer named ``name`` belongs to (``"layer1.0"`` for ``"layer1.0.weight"``)."""
    return name.rsplit(".", 1)[0] if "." in name else ""
