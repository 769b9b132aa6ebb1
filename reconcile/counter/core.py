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

The shape is torch's ``FlopCounterMode``: ``_CountingMode`` only runs each op and reports it to a
plain ``accumulator.Accumulator`` (the bookkeeping, with small methods); ``count`` checks its
arguments, runs the forward (and backward) once, again with values known if a meta forward read
one, and freezes the accumulator into a ``NativeCount``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter, defaultdict
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from reconcile.counter import backward as bwd
from reconcile.counter import calls as pycalls
from reconcile.counter import formulas, memory, modules
from reconcile.counter.accumulator import Accumulator, ModuleAcc, TrainingAccumulator, owner
from reconcile.counter.shadow import ShadowMode, value_of
from reconcile.counter.tracker import tensor_metas
from reconcile.errors import ReconcileError
from reconcile.records import (GRAD_PARTS, ModuleRow, NativeCount, ParamInfo, TensorMeta, TorchCall, TrainingInfo,
                               TrainingMemory)

MODES = ("eval", "train", "as-is")


class _CountingMode(TorchDispatchMode):
    """Runs every op as called and reports it to the accumulator; it keeps no count itself (the
    shape of torch's ``_FlopCounterMode`` over ``FlopCounterMode``)."""

    def __init__(self, counter: Accumulator) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        self.counter.before_op()
        out = func(*args, **kwargs)
        if func in _CPU_LAYOUT:
            out = _as_on_cpu(args, out)
        self.counter.op(func, args, kwargs, out)
        return out


# Ops whose meta kernel gives a contiguous output where the CPU kernel keeps the input's
# channels-last layout (measured on torch 2.14.1: conv 1x1 / 3x3 / depthwise / grouped /
# transposed / 3d, group_norm; pools, batch_norm, interpolate, pad and elementwise ops keep it on
# both). What follows reads the layout: a Linear on tokens made from the result
# (``flatten(2).transpose(1, 2)``) is one addmm when they are contiguous and mm + add when not
# (timm's pvt_v2 *_li), and the tools that run on CPU see the CPU layout.
_CPU_LAYOUT = (torch.ops.aten.convolution.default, torch.ops.aten.native_group_norm.default)


def _as_on_cpu(args: tuple, out: Any) -> Any:
    """``out`` restrided as the CPU kernel lays it out, when it was computed on meta from an input
    whose suggested memory format is channels-last (``suggest_memory_format``, as CPU decides)."""
    from torch._prims_common import suggest_memory_format

    first = out[0] if isinstance(out, tuple) else out
    x = args[0] if args else None
    if (type(first) is not torch.Tensor or first.device.type != "meta" or not isinstance(x, torch.Tensor)
            or x.dim() not in (4, 5) or first.dim() != x.dim()):
        return out
    fmt = suggest_memory_format(x)
    if fmt == torch.contiguous_format or first.is_contiguous(memory_format=fmt):
        return out
    laid = torch.empty(first.shape, dtype=first.dtype, device="meta", memory_format=fmt)
    return (laid, *out[1:]) if isinstance(out, tuple) else laid


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
    lists: list[str] = []
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
        elif type(v) is list and all(isinstance(x, _SIMPLE) for x in v):
            attrs[k] = tuple(v)  # kept as a tuple, named in "lists": a tool may read a list otherwise
            lists.append(k)
    for k in ("weight", "bias"):
        if hasattr(mod, k) and k not in attrs:
            attrs[f"has_{k}"] = getattr(mod, k, None) is not None
    attrs["training"] = mod.training
    if lists:  # timm's mvitv2 gives MaxPool2d kernel_size=[3, 3]: torchscan reads only a tuple or an int
        attrs["lists"] = tuple(lists)
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


def _infos(groups: list[tuple[torch.Tensor, list[str]]], before: dict[str, int] | None = None) -> tuple[ParamInfo, ...]:
    """``before``: for buffers, each name's elements when the forward began (``numel_before``)."""
    def was(t: torch.Tensor, names: list[str]) -> int | None:
        if before is None or before.get(names[0]) == t.numel():
            return None
        return before.get(names[0], 0)

    return tuple(
        ParamInfo(
            name=names[0],
            numel=t.numel(),
            dtype=str(t.dtype).removeprefix("torch."),
            nbytes=t.numel() * t.element_size(),
            trainable=bool(t.requires_grad),
            aliases=tuple(names[1:]),
            numel_before=was(t, names),
        )
        for t, names in groups
    )


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
    # A forward that reads values (transformers checks its attention mask) fails on meta; when the
    # inputs carry their values it is counted again with those values known (counter/shadow.py).
    shadowable = any(value_of(t) is not None for t in inputs)
    before = {n: b.numel() for n, b in model.named_buffers(remove_duplicate=False)}
    try:
        return _count(model, inputs, name, mode, training, shadowed=False, may_shadow=shadowable, before=before)
    except _NeedsValues:
        return _count(model, inputs, name, mode, training, shadowed=True, may_shadow=False, before=before)


def _count(model: nn.Module, inputs: tuple[Any, ...], name: str, mode: str, training: bool, shadowed: bool,
           may_shadow: bool, before: dict[str, int]) -> NativeCount:
    """One counted forward (and backward, with ``training``), frozen into a ``NativeCount``. Raises
    ``_NeedsValues`` when the forward read a meta tensor's value and ``may_shadow``."""
    seeded: list[torch.Tensor] = []
    mem = None
    with _model_mode(model, mode):
        counter: Accumulator
        held: Any = contextlib.nullcontext()
        saving: Any = contextlib.nullcontext()
        if training:
            counter = TrainingAccumulator(model, modules.module_rule, inputs)
            held = counter.held  # FlopCounterMode's open modules, for its convention
            saving = torch.autograd.graph.saved_tensors_hooks(counter.trace.pack, counter.trace.unpack)
        else:
            counter = Accumulator(model, modules.module_rule)
        counting = _CountingMode(counter)
        try:
            # torch.nn layers other than containers run a known forward: no call record needed there
            skip = frozenset(n for n, m in model.named_modules() if type(m).__module__.startswith("torch.nn.modules.")
                             and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)))
            call_mode = pycalls.CallMode(lambda: counter.stack.top, skip)
            values = ShadowMode(inputs) if shadowed else contextlib.nullcontext()
            grad = torch.enable_grad() if training else torch.no_grad()
            with (_reference_paths(), grad, values, counter.stack, held, counting, call_mode, saving):
                result = _forward(model, inputs, name, may_shadow)
                if isinstance(counter, TrainingAccumulator):
                    counter.nodes.resolve()
            if isinstance(counter, TrainingAccumulator):
                seeded = _grad_outputs(result)
                mem = _run_backward(name, counter, counting, seeded, model, inputs)
            _fill_mask_grads(model, inputs, call_mode.calls, call_mode.order, shadowed)
            counter.mark_unused(result)
        finally:
            if isinstance(counter, TrainingAccumulator):
                counter.held.close()
    # frozen after the model's flags are restored, as always: a row's ``training`` attribute is the
    # flag the user's model has (the one the other tools run it with)
    counter.outside_modules()
    native = _freeze(model, name, inputs, counter, call_mode.calls, call_mode.watched, before)
    if isinstance(counter, TrainingAccumulator):
        native = _with_backward(native, counter.backward, seeded, mem)
    return native


@contextlib.contextmanager
def _model_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """``model`` in ``mode`` for the count; every module's training flag, and the buffers a
    train-mode forward updates (BatchNorm's running stats), as they were afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    saved_buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
    if mode != "eval":  # "train", or "as-is" on a model in train mode: BatchNorm updates its stats
        saved_buffers = [(b, b.detach().clone()) for b in model.buffers() if b.device.type != "meta"]
    try:
        if mode == "eval":
            model.eval()
        elif mode == "train":
            model.train()
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        for b, saved in saved_buffers:
            b.copy_(saved)


def _forward(model: nn.Module, inputs: tuple[Any, ...], name: str, may_shadow: bool) -> Any:
    """``model(*inputs)``, its failure turned into a one-line ``ReconcileError`` (or ``_NeedsValues``)."""
    try:
        return model(*inputs)
    except ReconcileError:
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if _reads_meta_data(exc, inputs) and may_shadow:
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


def _run_backward(name: str, counter: TrainingAccumulator, counting: _CountingMode, seeded: list[torch.Tensor],
                  model: nn.Module, inputs: tuple[Any, ...]) -> TrainingMemory:
    if not seeded:
        raise ReconcileError(
            f"the forward of {name} returned no floating-point tensor that requires grad: nothing to "
            "backpropagate (are all parameters frozen, or does the model run under no_grad?)"
        )
    params = counter.params
    grads = [p.grad for p in params]
    seeds = [torch.ones_like(t) for t in seeded]  # outside the counting mode: the loss is free
    trace = counter.trace
    trace.phase = "backward"
    trace.allocated(seeds, "ones_like (seed)")
    try:
        with _reference_paths(), torch.enable_grad(), counting:
            counter.backward.run(seeded, seeds)
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
    counter: Accumulator,
    torch_calls: dict[str, list[TorchCall]],
    watched: dict[Any, str],
    before: dict[str, int],
) -> NativeCount:
    accs, call_records, calls = counter.accs, counter.call_records, counter.stack.calls
    param_groups = _tensor_groups(model.named_parameters(remove_duplicate=False))
    buffer_groups = _tensor_groups(model.named_buffers(remove_duplicate=False))
    params = _infos(param_groups)
    buffers = _infos(buffer_groups, before)
    own_params: dict[str, list[ParamInfo]] = defaultdict(list)
    for p in params:
        own_params[owner(p.name)].append(p)
    own_buffers: dict[str, int] = Counter()
    for b in buffers:
        own_buffers[owner(b.name)] += b.numel

    # every path of every module, in named_modules(remove_duplicate=False) order: a module
    # registered under two parents keeps its later paths (tools that walk the tree without
    # de-duplicating, such as torchinfo, file it under the last one)
    paths: dict[int, list[str]] = defaultdict(list)
    for path, mod in model.named_modules(remove_duplicate=False):
        paths[id(mod)].append(path)

    rows = []
    for mod_name, mod in model.named_modules():
        acc = accs.get(mod_name) or ModuleAcc()
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
