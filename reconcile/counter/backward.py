"""The backward of a training count: every aten op autograd runs, charged to a module and a part.

Guarantees:
- Each backward op is charged to the module whose forward created the autograd node being
  executed (``torch._C._current_autograd_node()``): during the forward, the node an op creates is
  read from its outputs' ``grad_fn`` just after autograd attached it (at the next dispatched op),
  and filed under the module innermost when the op ran. This is exact where module backward hooks
  are not: those fire per module boundary, so a parent's own work between children, functional
  calls and branches that join later have no module of their own there. A node no forward op was
  seen creating (``CopySlices`` of an in-place write into a view) takes the module of the nearest
  earlier node, since autograd numbers nodes in creation order; ``AccumulateGrad`` of a
  parameter goes to the module owning the parameter.
- Each op's components are filed under one ``records.GRAD_PARTS`` part by data flow inside its
  node: the node's gradient outputs are labelled "weight" when the edge leads only to parameters,
  else "input", and labels flow back from results (per storage, so through views and in-place
  writes) to the ops that made them; ops with one output
  per gradient (``formulas.SPLIT_RULES``) are split per output. Ops a node runs after its own
  outputs are final (the engine adding a second gradient into a tensor's buffer) are "accumulate".
- Nothing that needs no gradient runs, so it costs nothing: autograd itself leaves out the input
  gradient of the first layer, frozen parameters and ``no_grad`` regions (they create no edges).
- Hooks registered on the autograd graph are removed when the backward ends.
- With ``held_open`` (a ``held_open.HeldOpen``), each MAC-carrying op's components are also filed
  under the modules FlopCounterMode's module tracker holds open when the op runs
  (``BackwardRow.held``); the rest of the record is the same with or without it.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from typing import Any, Sequence

import torch

from reconcile.counter import formulas
from reconcile.records import BackwardRow

INPUT, WEIGHT, SHARED, ACCUMULATE = "input", "weight", "shared", "accumulate"


def tensors_of(*objs: Any) -> list[torch.Tensor]:
    """Tensors among aten arguments or results: tensors, lists / tuples of them, and the values of
    a kwargs dict (one level, as the dispatcher passes them; pytree is ten times slower here)."""
    out: list[torch.Tensor] = []
    for obj in objs:
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else (obj,)
        for a in items:
            if isinstance(a, torch.Tensor):
                out.append(a)
            elif isinstance(a, (list, tuple)):
                out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


class _BwdAcc:
    __slots__ = ("ops", "op_components", "zero_ops", "unknown_ops", "nodes", "param_macs", "forward_param_macs",
                 "forward_no_grad_macs", "held")

    def __init__(self) -> None:
        self.ops: Counter = Counter()
        self.op_components: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        self.zero_ops: Counter = Counter()
        self.unknown_ops: Counter = Counter()
        self.nodes: Counter = Counter()
        self.param_macs: Counter = Counter()
        self.forward_param_macs = 0
        self.forward_no_grad_macs = 0
        # open modules (FCM's tracker) -> aten op -> part -> components, MAC-carrying ops only
        self.held: dict[tuple[str, ...], dict[str, dict[str, Counter]]] = {}

    def freeze(self) -> BackwardRow:
        return BackwardRow(
            ops=dict(self.ops),
            op_components={op: {p: dict(c) for p, c in parts.items() if c} for op, parts in self.op_components.items()},
            zero_cost_ops=dict(self.zero_ops),
            unknown_ops=dict(self.unknown_ops),
            nodes=dict(self.nodes),
            param_macs={k: v for k, v in self.param_macs.items() if v},
            forward_param_macs=self.forward_param_macs,
            forward_no_grad_macs=self.forward_no_grad_macs,
            held=tuple((key, {op: {p: dict(c) for p, c in parts.items() if c} for op, parts in ops.items()})
                       for key, ops in self.held.items()),
        )


class _Op:
    """One backward op inside the node being executed, kept until the node's outputs are known."""

    __slots__ = ("name", "comps", "split", "ins", "outs", "keep", "held")

    def __init__(self, name: str, comps: dict | None, split: tuple | None, ins: list[int], outs: list[int],
                 keep: list[torch.Tensor], held: tuple[str, ...] | None) -> None:
        self.name, self.comps, self.split, self.ins, self.outs, self.keep = name, comps, split, ins, outs, keep
        self.held = held


class _NodeRun:
    __slots__ = ("node", "module", "ops", "done", "reads_param")

    def __init__(self, node: Any, module: str, reads_param: bool) -> None:
        self.node = node
        self.module = module
        self.reads_param = reads_param
        self.ops: list[_Op] = []
        self.done = False


class NodeMap:
    """Forward side: which module's op created each autograd node."""

    def __init__(self) -> None:
        self.module_of: dict[Any, str] = {}
        # nodes of ops that read parameters only (``t()`` of a weight, a dtype cast of it): an
        # edge into one of them carries a weight gradient
        self.param_nodes: set[Any] = set()
        # nodes of ops with at least one operand from parameters (a weight's matmul, not attention's)
        self.reads_param: set[Any] = set()
        self._pending: tuple[Any, str, bool, bool] | None = None

    def produced(self, out: Any, module: str, from_params: bool, reads_param: bool) -> None:
        """Called after each forward op: its node is attached once autograd returns."""
        self._pending = (out, module, from_params, reads_param)

    def resolve(self) -> None:
        """Called before each forward op and at the end of the forward."""
        if self._pending is None:
            return
        out, module, from_params, reads_param = self._pending
        self._pending = None
        for t in tensors_of(out):
            if not t.requires_grad:
                continue
            fn = t.grad_fn
            if fn is not None and fn not in self.module_of:
                self.module_of[fn] = module
                if from_params:
                    self.param_nodes.add(fn)
                if reads_param:
                    self.reads_param.add(fn)
            if t._is_view():  # an in-place write into a view re-roots its base on a CopySlices node
                base_fn = t._base.grad_fn
                if base_fn is not None and base_fn not in self.module_of:
                    self.module_of[base_fn] = module


class Backward:
    """Runs the backward of ``outputs`` (seeded with ones) and collects per-module ``BackwardRow``s.
    The counting dispatch mode calls ``op`` for every op while ``active``."""

    def __init__(self, nodes: NodeMap, params: dict[int, str], held_open: Any = None) -> None:
        self.nodes = nodes
        self.held_open = held_open  # HeldOpen, or None: no record of FCM's open modules
        self.param_owner = params  # id(parameter) -> owning module name
        self.accs: dict[str, _BwdAcc] = defaultdict(_BwdAcc)
        self.active = False
        self.unmapped: Counter = Counter()
        self._run: _NodeRun | None = None
        self._runs: dict[Any, _NodeRun] = {}
        self._edges: dict[Any, tuple[str | None, ...]] = {}
        self._seq: list[tuple[int, str]] = []

    # ----- graph, before the backward -----

    def _prepare(self, roots: Sequence[Any]) -> list[Any]:
        """Walk the graph once: edge labels per node, hooks that mark each node's outputs."""
        order: list[Any] = []
        seen: set[Any] = set()
        stack = [r for r in roots if r is not None]
        while stack:
            fn = stack.pop()
            if fn in seen:
                continue
            seen.add(fn)
            order.append(fn)
            for nxt, _ in fn.next_functions:
                if nxt is not None and nxt not in seen:
                    stack.append(nxt)
        handles = []
        for fn in order:
            self._edges[fn] = tuple(
                None if nxt is None else (WEIGHT if self._weight_only(nxt) else INPUT) for nxt, _ in fn.next_functions
            )
            if fn.next_functions:
                handles.append(fn.register_hook(self._node_done))
        self._seq = sorted((fn._sequence_nr(), m) for fn, m in self.nodes.module_of.items()
                           if type(fn).__name__ != "AccumulateGrad")
        return handles

    def _weight_only(self, fn: Any) -> bool:
        """An edge into this node carries a gradient for parameters only."""
        if type(fn).__name__ == "AccumulateGrad":
            return id(fn.variable) in self.param_owner
        return fn in self.nodes.param_nodes

    def run(self, outputs: Sequence[torch.Tensor], seeds: Sequence[torch.Tensor]) -> None:
        """Backward of ``outputs`` with ``seeds`` as their gradients (made outside the counting mode)."""
        handles = self._prepare([o.grad_fn for o in outputs])
        if self.held_open is not None:
            self.held_open.roots = {o.grad_fn for o in outputs}
        self.active = True
        try:
            torch.autograd.backward(list(outputs), list(seeds))
        finally:
            self.active = False
            for h in handles:
                h.remove()
            self._finish()
            self._run = None

    # ----- during the backward -----

    def current_module(self) -> str:
        return self._run.module if self._run is not None else ""

    def _module(self, node: Any) -> str:
        m = self.nodes.module_of.get(node)
        if m is not None:
            return m
        if node is None:
            return ""
        if type(node).__name__ == "AccumulateGrad":  # by design: the parameter's owner
            return self.param_owner.get(id(node.variable), "")
        self.unmapped[type(node).__name__] += 1
        i = bisect.bisect_right(self._seq, (node._sequence_nr(), "\uffff")) - 1
        return self._seq[i][1] if i >= 0 else ""

    def op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        node = torch._C._current_autograd_node()
        run = self._run
        if run is None or run.node is not node:
            run = self._runs.get(node)
            if run is None:
                run = _NodeRun(node, self._module(node), node in self.nodes.reads_param)
                self._runs[node] = run
                self.accs[run.module].nodes[type(node).__name__ if node is not None else "<engine>"] += 1
            self._run = run
        name = func._schema.name
        kind, r = formulas.lookup(name)
        if kind == "unknown" and getattr(func, "is_view", False):
            kind = "view"
        acc = self.accs[run.module]
        if kind == "unknown":
            acc.unknown_ops[name] += 1
        elif kind != "rule":
            acc.zero_ops[name] += 1
        if kind == "alloc":
            return  # no data flows through an allocation
        # views, copies and ops without a rule carry no components but do carry data: kept below
        # so that labels flow through them (a gradient copied into a view of the result)
        comps = split = None
        held = self.held_open.current() if self.held_open is not None else None
        if kind == "rule":
            acc.ops[name] += 1
            sp = formulas.SPLIT_RULES.get(name)
            split = sp(args, kwargs, out) if sp is not None else None
            comps = None if split is not None else r.fn(args, kwargs, out)
        if run.done or node is None or not self._edges.get(node):
            # after the node's outputs are final (engine accumulation), or a node with no outputs
            part = ACCUMULATE if run.done else self._leaf_part(node)
            self._charge(acc, name, part, comps, split, run.reads_param, held)
            return
        ins = tensors_of(args, kwargs)
        # positional for split rules: an output left out by output_mask is None
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        keep = ins + [t for t in outs if isinstance(t, torch.Tensor)]
        run.ops.append(_Op(name, comps, split, [_storage(t) for t in ins],
                           [_storage(t) if isinstance(t, torch.Tensor) else None for t in outs], keep, held))

    def _leaf_part(self, node: Any) -> str:
        if node is not None and type(node).__name__ == "AccumulateGrad":
            return WEIGHT if id(node.variable) in self.param_owner else INPUT
        return SHARED

    def _node_done(self, grad_inputs: Sequence[Any], grad_outputs: Sequence[Any]) -> None:
        node = torch._C._current_autograd_node()
        run = self._runs.get(node)
        if run is None:
            return
        edges = self._edges.get(node, ())
        labels: dict[int, set[str]] = defaultdict(set)
        for g, label in zip(grad_inputs, edges):
            if isinstance(g, torch.Tensor) and label is not None:
                labels[_storage(g)].add(label)
        self._label(run, labels)
        run.done = True

    def _label(self, run: _NodeRun, labels: dict[int, set[str]]) -> None:
        acc = self.accs[run.module]
        for op in reversed(run.ops):
            outs = [labels.get(c, set()) if c is not None else set() for c in op.outs]
            union = set().union(*outs) if outs else set()
            for c in op.ins:
                if union:
                    labels[c] |= union
            if op.split is not None:
                for comps, got in zip(op.split, outs + [set()] * (len(op.split) - len(outs))):
                    if comps is not None:
                        self._charge(acc, op.name, _part(got), comps, None, run.reads_param, op.held)
            elif op.comps is not None:
                self._charge(acc, op.name, _part(union), op.comps, None, run.reads_param, op.held)
        run.ops.clear()

    def _finish(self) -> None:
        """Ops of nodes whose hook never fired (none expected) are filed as shared."""
        for r in self._runs.values():
            if r.ops:
                self._label(r, {})

    @staticmethod
    def _charge(acc: _BwdAcc, name: str, part: str, comps: dict | None, split: tuple | None,
                reads_param: bool, held: tuple[str, ...] | None = None) -> None:
        if split is not None:
            comps = {}
            for c in split:
                for k, v in (c or {}).items():
                    comps[k] = comps.get(k, 0) + v
        if not comps:
            return
        pc = acc.op_components[name][part]
        for k, v in comps.items():
            if v:
                pc[k] += v
        if reads_param and comps.get("macs"):
            acc.param_macs[part] += comps["macs"]
        if held is not None and comps.get("macs"):
            hc = acc.held.setdefault(held, {}).setdefault(name, {}).setdefault(part, Counter())
            for k, v in comps.items():
                if v:
                    hc[k] += v


def _storage(t: torch.Tensor) -> int:
    """Data flow is followed per storage, so a write into a view reaches its base (the tensors of
    a node are kept alive until it ends: a storage address is not reused meanwhile)."""
    return t.untyped_storage()._cdata


def _part(labels: set[str]) -> str:
    if labels == {WEIGHT}:
        return WEIGHT
    if labels == {INPUT}:
        return INPUT
    return SHARED
