"""The native counter: exact per-module counts at the aten level.

Guarantees:
- Every aten op that runs during the forward is charged to the innermost module executing it
  (functional calls and work in a parent's own ``forward`` included); ops with no rule are listed
  per module with call counts, never silently dropped.
- Counts depend on shapes only: the same model counts the same on the meta device and on CPU.
  To make that true, the counter runs the reference path of ops whose kernels differ by device
  (MHA / TransformerEncoderLayer fast paths off, scaled-dot-product attention on its math
  backend) and counts recurrent layers with module-level rules (``modules.py``).
- The model is left as it was found: training flags restored, hooks removed, buffers restored
  unless counting in eval mode; global torch flags touched here are restored on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter, defaultdict
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

from reconcile.counter import backward as bwd
from reconcile.counter import calls as pycalls
from reconcile.counter import formulas, liveness, memory, modules
from reconcile.counter.held_open import HeldOpen
from reconcile.counter.shadow import ShadowMode, value_of
from reconcile.counter.tracker import CallFrame, ModuleStack, tensor_bytes, tensor_metas
from reconcile.errors import ReconcileError
from reconcile.records import (GRAD_PARTS, CallRecord, ModuleRow, NativeCount, ParamInfo, TensorMeta, TorchCall,
                               TrainingInfo, TrainingMemory)

MODES = ("eval", "train", "as-is")


class _Acc:
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


class _CountingMode(TorchDispatchMode):
    def __init__(self, stack: ModuleStack, accs: dict[str, _Acc], bias_ids: frozenset[int],
                 live: liveness.Liveness, params: Sequence[torch.Tensor] = ()) -> None:
        super().__init__()
        # id -> tensor (kept alive so the id is not reused): parameters, and views of them made
        # during the forward (``linear`` reads ``weight.t()``)
        self.param_ids: dict[int, Any] = {id(p): p for p in params}
        self.stack = stack
        self.live = live
        self.accs = accs
        # ``linear`` on a non-contiguous N-d input runs as matmul then ``add(bias)``: an add whose
        # operand is a parameter registered as a bias is a bias add, whatever path produced it.
        self.bias_ids = bias_ids
        self._cache: dict[Any, tuple[str, Any, str, bool]] = {}

    def _classify(self, func: Any) -> tuple[str, Any, str, bool]:
        name = func._schema.name
        kind, rule = formulas.lookup(name)
        if kind == "unknown" and getattr(func, "is_view", False):
            kind = "view"
        entry = (kind, rule.fn if rule is not None else None, name, name in formulas.PRIMARY_OUTPUT_ONLY)
        self._cache[func] = entry
        return entry

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        frame = self.stack.top
        self.live.consumed((frame.module, frame.index), args)
        if frame.suppressed:
            return out
        kind, fn, name, primary_only = self._cache.get(func) or self._classify(func)
        acc = self.accs[frame.module]
        if kind == "view" or kind == "alloc":
            acc.zero_ops[name] += 1
            if kind == "view" and args and id(args[0]) in self.param_ids and isinstance(out, torch.Tensor):
                self.param_ids[id(out)] = out
            return out
        read, written, elements = _io(args, kwargs, out, primary_only)
        p_read = _param_read(args, kwargs, self.param_ids)
        acc.bytes_read += read
        acc.bytes_written += written
        acc.param_bytes_read += p_read
        acc.activations += elements
        if kind == "rule" and name == "aten::mean" and formulas.is_pool_mean(name, args):
            name = formulas.POOL_MEAN
        ob = acc.op_bytes.setdefault(name, [0, 0, 0])
        ob[0] += read
        ob[1] += written
        ob[2] += p_read
        if kind == "rule":
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
        elif kind == "unknown":
            acc.unknown_ops[name] += 1
        else:
            acc.zero_ops[name] += 1
        return out


class _TrainingMode(_CountingMode):
    """The counting mode of a training count: the forward as ``_CountingMode`` (grad enabled), plus
    which module created each autograd node; during the backward every op goes to ``Backward``."""

    def __init__(self, *args: Any, nodes: bwd.NodeMap, backward: bwd.Backward, trace: memory.MemoryTrace,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nodes = nodes
        self.backward = backward
        self.trace = trace
        # parameters and every tensor computed from parameters alone; weak, so that holding them
        # does not change the step's memory
        self.from_params = WeakTensorKeyDictionary()
        for t in self.param_ids.values():
            self.from_params[t] = True

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.backward.active:
            out = func(*args, **kwargs)
            self.backward.op(func, args, kwargs, out)
            self.trace.allocated(out, func._schema.name)
            return out
        self.nodes.resolve()
        frame = self.stack.top
        before = frame.components.get("macs", 0)
        out = super().__torch_dispatch__(func, types, args, kwargs)
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
        return out


SEED = ("backward of sum() over the floating-point outputs that require grad, seeded with "
        "ones_like(output): the sum itself never runs, so the loss costs nothing")


def _grad_outputs(result: Any) -> list[torch.Tensor]:
    """Floating-point tensors in a (nested) forward result that require grad, each once."""
    out: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [result]
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            if o.requires_grad and o.is_floating_point() and id(o) not in seen:
                seen.add(id(o))
                out.append(o)
        elif isinstance(o, (list, tuple)):
            stack.extend(reversed(o))
        elif isinstance(o, dict):
            stack.extend(reversed(list(o.values())))
    return out


@contextlib.contextmanager
def _reference_paths() -> Iterator[None]:
    """Run the device-independent reference path of ops whose kernels differ by device."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _fill_mask_grads(model: nn.Module, inputs: tuple[Any, ...], torch_calls: dict[str, list[TorchCall]],
                     order: list[tuple[str, int]], shadowed: bool = False) -> None:
    """A float attention mask computed from trainable parameters requires grad when a tool runs the
    model with grad enabled (as they all do), and CPU then leaves the fused kernel. Counting runs
    under ``no_grad``, so when a recorded attention call had a float mask, the forward runs once
    more with grad enabled (no counting) to learn which masks would require grad."""
    sdpa = [(m, i) for m, i in order if torch_calls[m][i].func == pycalls.SDPA]
    masks = [_mask_meta(torch_calls[m][i]) for m, i in sdpa]
    if not any(isinstance(t, TensorMeta) and t.dtype != "bool" for t in masks):
        return
    probe = pycalls.MaskGrads()
    # the same values as the counted forward, when it needed them (counter/shadow.py); the RNG is
    # left as it was
    values = ShadowMode(inputs) if shadowed else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), torch.enable_grad(), values, probe:
        model(*inputs)
    if len(probe.flags) != len(sdpa):
        return  # a forward whose calls differ between runs: leave the facts unknown (False)
    for (m, i), flag in zip(sdpa, probe.flags):
        call = torch_calls[m][i]
        torch_calls[m][i] = dataclasses.replace(call, facts={**call.facts, "mask_requires_grad": flag})


def _mask_meta(call: TorchCall) -> Any:
    return call.args[3] if len(call.args) > 3 else dict(call.kwargs).get("attn_mask")


def _as_inputs(inputs: Any) -> tuple[Any, ...]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, list):
        return tuple(inputs)
    if isinstance(inputs, tuple):
        return inputs
    raise ReconcileError(
        f"inputs must be a tensor or a tuple of tensors, got {type(inputs).__name__}: pass e.g. (x,)"
    )


def _device_of(model: nn.Module, inputs: tuple[Any, ...]) -> str:
    for t in list(model.parameters()) + [i for i in inputs if isinstance(i, torch.Tensor)]:
        return t.device.type
    return "cpu"


_SIMPLE = (int, float, bool, str, type(None))


def _attrs(mod: nn.Module, watched: dict[Any, str]) -> dict[str, Any]:
    """Simple public attributes the counting rules of other tools need (kernel, groups, ...)."""
    attrs: dict[str, Any] = {}
    binds = []
    for k, v in vars(mod).items():
        if k.startswith("_") or k == "training":
            continue
        if callable(v) and not isinstance(v, nn.Module):
            try:
                label = watched.get(v)
            except TypeError:
                label = None
            if label is not None:
                binds.append(label)
        if isinstance(v, _SIMPLE) or (isinstance(v, tuple) and all(isinstance(x, _SIMPLE) for x in v)):
            attrs[k] = v
    for k in ("weight", "bias"):
        if hasattr(mod, k) and k not in attrs:
            attrs[f"has_{k}"] = getattr(mod, k, None) is not None
    attrs["training"] = mod.training
    if binds:
        # torch functions the instance holds (bound when it was built, e.g. ``self.act = F.gelu``):
        # a tool that patches the name later never sees these calls
        attrs["binds"] = tuple(sorted(set(binds)))
    # exact class and its bases, so "matches this type exactly" and "is a subclass" rules are checkable
    attrs["class"] = _qualname(type(mod))
    attrs["bases"] = tuple(_qualname(c) for c in type(mod).__mro__[1:] if issubclass(c, nn.Module))
    return attrs


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _tensor_groups(named: Iterator[tuple[str, torch.Tensor]]) -> list[tuple[torch.Tensor, list[str]]]:
    groups: dict[int, tuple[torch.Tensor, list[str]]] = {}
    for name, t in named:
        groups.setdefault(id(t), (t, []))[1].append(name)
    return list(groups.values())


def _infos(groups: list[tuple[torch.Tensor, list[str]]]) -> tuple[ParamInfo, ...]:
    return tuple(
        ParamInfo(
            name=names[0],
            numel=t.numel(),
            dtype=str(t.dtype).removeprefix("torch."),
            nbytes=t.numel() * t.element_size(),
            trainable=bool(t.requires_grad),
            aliases=tuple(names[1:]),
        )
        for t, names in groups
    )


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def count(
    model: nn.Module,
    inputs: Any,
    *,
    name: str = "model",
    mode: str | None = None,
    training: bool = False,
) -> NativeCount:
    """Count one forward of ``model(*inputs)`` at the aten level.

    ``mode``: "eval" (the default without ``training``) or "train" (the default with it) counts in
    that mode and restores every module's flag afterwards; "as-is" keeps the model's current flags.
    Runs under ``torch.no_grad()`` on whatever device the model and inputs are on (meta is free
    and exact).

    ``training=True`` runs the forward with grad enabled, then the backward of the sum of the
    floating-point outputs (``SEED``) under the same dispatch mode, and fills each row's
    ``backward`` and the result's ``training`` (see ``counter/backward.py``). Parameters keep their
    ``requires_grad``; gradients left on them are removed again."""
    if mode is None:
        mode = "train" if training else "eval"
    if mode not in MODES:
        raise ReconcileError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(model, nn.Module):
        raise ReconcileError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = _as_inputs(inputs)

    flags = [(m, m.training) for m in model.modules()]
    saved_buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
    if mode != "eval":  # "train", or "as-is" on a model in train mode: BatchNorm updates its stats
        saved_buffers = [(b, b.detach().clone()) for b in model.buffers() if b.device.type != "meta"]
    # A forward that reads values (transformers checks its attention mask) fails on meta; when the
    # inputs carry their values it is counted again with those values known (counter/shadow.py).
    shadowable = any(value_of(t) is not None for t in inputs)
    for shadowed in (False, True):
        accs: dict[str, _Acc] = defaultdict(_Acc)
        call_records: dict[str, list[CallRecord]] = defaultdict(list)
        module_bytes: dict[int, int] = {}

        live = liveness.Liveness()

        def on_exit(frame: CallFrame, mod: nn.Module, output: Any) -> None:
            live.produced((frame.module, frame.index), output)
            if training:
                trace.module_output(frame.module, output)
            outs = tensor_metas(output)
            acc = accs[frame.module]
            n_out = sum(t.numel for t in outs)
            acc.output_elements += n_out
            if frame.ruled:
                # counted by a module-level rule: one fused unit reading inputs and weights once
                if id(mod) not in module_bytes:
                    module_bytes[id(mod)] = sum(p.numel() * p.element_size() for p in mod.parameters())
                acc.bytes_read += frame.input_bytes + module_bytes[id(mod)]
                acc.bytes_written += tensor_bytes(output)
                acc.param_bytes_read += module_bytes[id(mod)]
                ob = acc.op_bytes.setdefault(f"module::{type(mod).__name__}", [0, 0, 0])
                ob[0] += frame.input_bytes + module_bytes[id(mod)]
                ob[1] += tensor_bytes(output)
                ob[2] += module_bytes[id(mod)]
                acc.activations += n_out
                acc.components.update(frame.components)
                for k, v in frame.components.items():
                    acc.op_components[f"module::{type(mod).__name__}"][k] += v
                acc.ops[f"module::{type(mod).__name__}"] += 1
            elif not frame.suppressed:
                acc.components.update(frame.components)
            call_records[frame.module].append(
                CallRecord(
                    index=frame.index,
                    order=frame.order,
                    inputs=frame.inputs,
                    outputs=outs,
                    components=dict(frame.components),
                    kwargs_only=frame.kwargs_only,
                )
            )

        stack = ModuleStack(model, on_exit, modules.module_rule)
        bias_ids = frozenset(id(p) for n, p in model.named_parameters() if n.rsplit(".", 1)[-1].endswith("bias"))
        params = list(model.parameters())
        saving: Any = contextlib.nullcontext()
        held: Any = contextlib.nullcontext()
        if training:
            nodes = bwd.NodeMap()
            held = HeldOpen(model, stack.names)  # FlopCounterMode's open modules, for its convention
            backward = bwd.Backward(nodes, {id(p): _owner(n) for n, p in model.named_parameters()}, held)
            trace = memory.MemoryTrace(
                [*params, *model.buffers(), *(t for t in inputs if isinstance(t, torch.Tensor))],
                lambda: backward.current_module() if backward.active else stack.top.module)
            saving = torch.autograd.graph.saved_tensors_hooks(trace.pack, trace.unpack)
            counting: _CountingMode = _TrainingMode(stack, accs, bias_ids, live, params, nodes=nodes,
                                                    backward=backward, trace=trace)
        else:
            backward = None
            counting = _CountingMode(stack, accs, bias_ids, live, params)
        try:
            if mode == "eval":
                model.eval()
            elif mode == "train":
                model.train()
            # torch.nn layers other than containers run a known forward: no call record needed there
            skip = frozenset(n for n, m in model.named_modules() if type(m).__module__.startswith("torch.nn.modules.")
                             and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)))
            call_mode = pycalls.CallMode(lambda: stack.top, skip)
            values = ShadowMode(inputs) if shadowed else contextlib.nullcontext()
            grad = torch.enable_grad() if training else torch.no_grad()
            with (_reference_paths(), grad, values, stack, held, counting, call_mode, saving):
                try:
                    result = model(*inputs)
                    if training:
                        nodes.resolve()
                except ReconcileError:
                    raise
                except Exception as exc:
                    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    if _reads_meta_data(exc, inputs) and not shadowed and shadowable:
                        raise _NeedsValues from exc
                    if _reads_meta_data(exc, inputs):
                        raise ReconcileError(
                            f"the forward of {name} reads tensor values ({msg}), which the meta device does "
                            "not have: count it on real tensors with --device cpu"
                        ) from exc
                    raise ReconcileError(
                        f"the forward of {name} raised {type(exc).__name__}: {msg} "
                        "(check the input shape and dtype with --input-shape / --input-dtype)"
                    ) from exc
            seeded: list[torch.Tensor] = []
            mem = None
            if backward is not None:
                seeded = _grad_outputs(result)
                mem = _run_backward(name, backward, counting, seeded, params, model, inputs)
            _fill_mask_grads(model, inputs, call_mode.calls, call_mode.order, shadowed)
            used = live.used(result, {("", 0)})
            for module_name, recs in call_records.items():
                for i, rec in enumerate(recs):
                    if (module_name, rec.index) not in used:
                        recs[i] = dataclasses.replace(rec, used=False)
        except _NeedsValues:
            continue
        finally:
            if isinstance(held, HeldOpen):
                held.close()
            for m, flag in flags:
                m.training = flag
            for b, saved in saved_buffers:
                b.copy_(saved)
        break
    # work charged to the root outside any module call (none for a plain forward)
    accs[""].components.update(stack.root.components)
    native = _freeze(model, name, inputs, accs, call_records, stack.calls, call_mode.calls, call_mode.watched)
    if backward is not None:
        native = _with_backward(native, backward, seeded, mem)
    return native


def _run_backward(name: str, backward: bwd.Backward, counting: _TrainingMode, seeded: list[torch.Tensor],
                  params: list[torch.Tensor], model: nn.Module, inputs: tuple[Any, ...]) -> TrainingMemory:
    if not seeded:
        raise ReconcileError(
            f"the forward of {name} returned no floating-point tensor that requires grad: nothing to "
            "backpropagate (are all parameters frozen, or does the model run under no_grad?)"
        )
    grads = [p.grad for p in params]
    seeds = [torch.ones_like(t) for t in seeded]  # outside the counting mode: the loss is free
    trace = counting.trace
    trace.phase = "backward"
    trace.allocated(seeds, "ones_like (seed)")
    try:
        with _reference_paths(), torch.enable_grad(), counting:
            backward.run(seeded, seeds)
        del seeds
        return memory.summary(trace, model, inputs, trace.live)
    except ReconcileError:
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ReconcileError(f"the backward of {name} raised {type(exc).__name__}: {msg}") from exc
    finally:
        for p, g in zip(params, grads):  # the user's gradients as they were
            p.grad = g
        trace.close()


def _with_backward(native: NativeCount, backward: bwd.Backward, seeded: list[torch.Tensor],
                   mem: TrainingMemory | None) -> NativeCount:
    rows = []
    parts: dict[str, Counter] = {p: Counter() for p in GRAD_PARTS}
    for r in native.rows:
        acc = backward.accs.get(r.name)
        b = acc.freeze() if acc is not None else bwd._BwdAcc().freeze()
        for p in GRAD_PARTS:
            parts[p].update(b.part(p))
        rows.append(dataclasses.replace(r, backward=b))
    parts_plain = {p: {k: v for k, v in c.items() if v} for p, c in parts.items()}
    totals = {"forward_macs": native.totals["macs"], "forward_flops": native.totals["flops"]}
    for p in GRAD_PARTS:
        totals[f"backward_macs_{p}"] = parts_plain[p].get("macs", 0)
        totals[f"backward_flops_{p}"] = formulas.flops_of(parts_plain[p])
    totals["backward_macs"] = sum(totals[f"backward_macs_{p}"] for p in GRAD_PARTS)
    totals["backward_flops"] = sum(totals[f"backward_flops_{p}"] for p in GRAD_PARTS)
    totals["backward_unknown_ops"] = sum(sum(r.backward.unknown_ops.values()) for r in rows)
    totals["training_macs"] = totals["forward_macs"] + totals["backward_macs"]
    totals["training_flops"] = totals["forward_flops"] + totals["backward_flops"]
    info = TrainingInfo(seed=SEED, seeded=tensor_metas(seeded), parts=parts_plain, totals=totals,
                        unmapped_nodes=dict(backward.unmapped), memory=mem)
    return dataclasses.replace(native, rows=tuple(rows), training=info)


class _NeedsValues(Exception):
    """The forward read a meta tensor's value: count again with known values."""


def _reads_meta_data(exc: Exception, inputs: tuple[Any, ...]) -> bool:
    """A forward on meta tensors that failed because it read values (``.item()``, ``bool(t)``,
    ``.tolist()``, data-dependent shapes), not because of a shape or dtype mistake."""
    if not any(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in inputs):
        return False
    text = str(exc)
    return any(k in text for k in ("cannot be called on meta tensors", "data-dependent",
                                   "Cannot copy out of meta tensor", "meta tensors do not support"))


def _freeze(
    model: nn.Module,
    name: str,
    inputs: tuple[Any, ...],
    accs: dict[str, _Acc],
    call_records: dict[str, list[CallRecord]],
    calls: dict[str, int],
    torch_calls: dict[str, list[TorchCall]],
    watched: dict[Any, str],
) -> NativeCount:
    param_groups = _tensor_groups(model.named_parameters(remove_duplicate=False))
    buffer_groups = _tensor_groups(model.named_buffers(remove_duplicate=False))
    params = _infos(param_groups)
    buffers = _infos(buffer_groups)
    own_params: dict[str, list[ParamInfo]] = defaultdict(list)
    for p in params:
        own_params[_owner(p.name)].append(p)
    own_buffers: dict[str, int] = Counter()
    for b in buffers:
        own_buffers[_owner(b.name)] += b.numel

    # every path of every module, in named_modules(remove_duplicate=False) order: a module
    # registered under two parents keeps its later paths (tools that walk the tree without
    # de-duplicating, such as torchinfo, file it under the last one)
    paths: dict[int, list[str]] = defaultdict(list)
    for path, mod in model.named_modules(remove_duplicate=False):
        paths[id(mod)].append(path)

    rows = []
    for mod_name, mod in model.named_modules():
        acc = accs.get(mod_name) or _Acc()
        comps = {k: v for k, v in acc.components.items() if v}
        ps = own_params.get(mod_name, [])
        attrs = _attrs(mod, watched)
        if len(paths[id(mod)]) > 1:
            attrs["_aliases"] = tuple(paths[id(mod)][1:])
        rows.append(
            ModuleRow(
                name=mod_name,
                type=type(mod).__name__,
                depth=0 if mod_name == "" else mod_name.count(".") + 1,
                calls=calls.get(mod_name, 0),
                attrs=attrs,
                call_records=tuple(sorted(call_records.get(mod_name, []), key=lambda c: c.index)),
                components=comps,
                flops=formulas.flops_of(comps),
                ops=dict(acc.ops),
                op_components={k: dict(v) for k, v in acc.op_components.items()},
                op_elements={k: (v[0], v[1]) for k, v in acc.op_elements.items()},
                zero_cost_ops=dict(acc.zero_ops),
                unknown_ops=dict(acc.unknown_ops),
                params=sum(p.numel for p in ps),
                params_trainable=sum(p.numel for p in ps if p.trainable),
                params_frozen=sum(p.numel for p in ps if not p.trainable),
                buffers=own_buffers.get(mod_name, 0),
                output_elements=acc.output_elements,
                activations=acc.activations,
                bytes_read=acc.bytes_read,
                bytes_written=acc.bytes_written,
                param_bytes_read=acc.param_bytes_read,
                op_bytes={k: (v[0], v[1], v[2]) for k, v in acc.op_bytes.items()},
                torch_calls=tuple(torch_calls.get(mod_name, ())),
            )
        )
    components: Counter = Counter()
    for r in rows:
        components.update(r.components)
    components = {k: v for k, v in components.items() if v}
    totals = {
        "macs": components.get("macs", 0),
        "flops": formulas.flops_of(components),
        "params": sum(p.numel for p in params),
        "params_trainable": sum(p.numel for p in params if p.trainable),
        "params_frozen": sum(p.numel for p in params if not p.trainable),
        "buffers": sum(b.numel for b in buffers),
        "activations": sum(r.activations for r in rows),
        "bytes_read": sum(r.bytes_read for r in rows),
        "bytes_written": sum(r.bytes_written for r in rows),
        "unknown_ops": sum(sum(r.unknown_ops.values()) for r in rows),
    }
    tensors = [i for i in inputs if isinstance(i, torch.Tensor)]
    return NativeCount(
        model=name,
        input_shapes=tuple(tuple(int(d) for d in t.shape) for t in tensors),
        input_dtypes=tuple(str(t.dtype).removeprefix("torch.") for t in tensors),
        device=_device_of(model, inputs),
        rows=tuple(rows),
        params=params,
        buffers=buffers,
        tied=tuple(tuple([p.name, *p.aliases]) for p in params if p.aliases),
        totals=totals,
        components=components,
    )
