"""The forward as ``torch.jit`` traces it: the graph a tracing tool (fvcore) counts, made by
reconcile itself on the same model and inputs, recorded per module as ``records.TracedOps``.

Why: a trace is not the eager forward the dispatch counter sees. Python arithmetic on sizes
(``H + 1``, ``1 - x.shape[1]``, ``math.ceil(h / w)``) runs no aten op eagerly but is a tensor op
node in a trace (sizes are traced as 0-dim tensors); code that checks ``torch.jit.is_tracing()``
takes another path; and the trace keeps only the ops the outputs depend on. This module only
records what the trace holds; the tool's convention says what it makes of it.

Guarantees: every node of the traced graph but ``prim::`` bookkeeping (an
``autograd.Function`` and a call to a scripted function are kept, as fvcore keeps them) is counted once, under the innermost
module whose forward ran it (scopes pushed by forward hooks as fvcore does, named by
``named_modules()``'s first name, root ``""``); hooks are removed whether the trace succeeds or
not; the model is not otherwise changed (it is traced as it is: mode, dtype, device). It needs
real tensors: meta kernels check shapes in Python, where a trace turns them into tensors.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from typing import Any, Iterator

from reconcile.records import TracedOps

# value producers that only carry a size or a constant along (no arithmetic of their own)
_SIZE_SOURCES = frozenset(("aten::size", "aten::Int", "aten::ScalarImplicit", "prim::NumToTensor",
                           "prim::ListConstruct", "prim::TupleConstruct", "prim::ListUnpack",
                           "prim::TupleUnpack", "prim::Constant"))


def trace_ops(model: Any, inputs: tuple[Any, ...], prefix: str = "") -> TracedOps:
    """Trace ``model(*inputs)`` and count its graph's nodes per module. ``prefix``: the name of
    the user's model inside ``model`` when ``model`` is a wrapper (its scopes are renamed to the
    user's names; the wrapper's own scope counts as the root)."""
    import torch

    graph = _scoped_graph(model, inputs)
    ops: dict[str, Counter] = {}
    on_sizes: dict[str, Counter] = {}
    sized: set[int] = set()  # values that hold a size, or arithmetic on sizes only
    for node in graph.nodes():
        kind = node.kind()
        ins = list(node.inputs())
        from_sizes = bool(ins) and all(v.unique() in sized or v.node().kind() == "prim::Constant" for v in ins)
        carries = any(v.unique() in sized for v in ins)
        if kind == "aten::size" or (kind in _SIZE_SOURCES and from_sizes):
            sized.update(v.unique() for v in node.outputs())
        arithmetic = (kind not in _SIZE_SOURCES and from_sizes and carries
                      and all(_scalar(v, torch) for v in node.outputs()))
        if arithmetic:
            sized.update(v.unique() for v in node.outputs())
        if kind == "prim::PythonOp":  # a torch.autograd.Function, named as fvcore names it
            kind = f"{kind}.{node.pyname()}"
        elif kind.startswith("prim::") and not kind.startswith("prim::CallFunction"):
            continue
        scope = _own(node.scopeName().split("/")[-1], prefix)
        ops.setdefault(scope, Counter())[kind] += 1
        if arithmetic:
            on_sizes.setdefault(scope, Counter())[kind] += 1
    return TracedOps(ops={m: dict(sorted(c.items())) for m, c in sorted(ops.items())},
                     on_sizes={m: dict(sorted(c.items())) for m, c in sorted(on_sizes.items())},
                     device=_device(inputs))


def _scalar(value: Any, torch: Any) -> bool:
    """A 0-dim tensor or a plain number: what a traced size becomes."""
    t = value.type()
    if isinstance(t, torch._C.TensorType):
        return t.dim() == 0
    return isinstance(t, (torch._C.IntType, torch._C.FloatType, torch._C.BoolType, torch._C.NumberType))


def _own(scope: str, prefix: str) -> str:
    if not prefix:
        return scope
    if scope.startswith(prefix + "."):
        return scope[len(prefix) + 1:]
    return ""  # the user's model itself, or the wrapper's own forward


def _device(inputs: tuple[Any, ...]) -> str:
    for t in inputs:
        if hasattr(t, "device"):
            return str(t.device.type)
    return "cpu"


@contextlib.contextmanager
def module_scopes(model: Any) -> Iterator[None]:
    """Each module's ``named_modules()`` name (the first, for a module registered twice) pushed as
    the jit trace scope around its forward, as ``fvcore.nn.jit_analysis._get_scoped_trace_graph``
    does (torchprofile's adapter traces the same way); the hooks are removed on exit."""
    import torch

    names: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name)

    def push(name: str) -> Any:
        def hook(module: Any, args: Any) -> None:
            state = torch._C._get_tracing_state()
            if state:
                state.push_scope(name)
        return hook

    def pop(module: Any, args: Any, output: Any) -> None:
        state = torch._C._get_tracing_state()
        if state:
            state.pop_scope()

    handles = []
    try:
        for module in {id(m): m for _, m in model.named_modules(remove_duplicate=False)}.values():
            handles.append(module.register_forward_pre_hook(push(names[id(module)])))
            handles.append(module.register_forward_hook(pop))
        yield
    finally:
        for h in handles:
            h.remove()


def _scoped_graph(model: Any, inputs: tuple[Any, ...]) -> Any:
    """``torch.jit._get_trace_graph`` with every module's name pushed as a scope around its
    forward (``module_scopes``)."""
    import torch

    with module_scopes(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the trace is only read, never run again
        graph, _ = torch.jit._get_trace_graph(model, inputs)
    return graph
