"""torchscan 0.2.0, module view: its rules, written once, predicting the "Multiply-Accumulations"
of ``summary`` / ``crawl_module`` and each layer's printed "Param #".

Rows (as the torchscan adapter reports them): every module that ran (calls summed), exclusive.
A *metric leaf* (no children, an ``nn.MultiheadAttention``, or the model itself when it is an
``nn.Transformer``) has ``macs``, its
``modules/macs.py`` formula over its calls (read from the source, torchscan runs ``eval()`` and
``no_grad`` itself); every row has ``params``, the module's own parameters plus its buffers
(MultiheadAttention: its subtree's). References: ``macs`` against the module's native MACs
(MultiheadAttention: its subtree's), ``params`` against its native parameters.

An ``nn.Transformer`` model is crawled as one module (``crawl_module`` hooks the root alone):
one row, the root, a metric leaf holding the whole model's parameters and buffers, with no MAC
formula ("Module type not supported": 0, ``unsupported_module`` for all of the model's MACs).

MAC formulas (isinstance, so subclasses match):

* Linear ``in_features * out.numel()`` and Conv ``out.numel() * Cin / groups * prod(kernel)``:
  native's MACs (bias "included in the accumulation"); ConvTranspose the same on its output
  plus ``4 * len(kernel_size)`` per call;
* BatchNorm ``in.numel() * (1 + affine)`` (eval: no running-statistics update);
* MaxPool ``out.numel() * (k - 1)``, AvgPool ``out.numel() * (k - 1 + in.ndim - 2)``, where ``k``
  is ``prod(kernel_size)`` for a tuple but the integer itself for an int: ``MaxPool2d(3)`` is a
  3-element window, not 9 (``pool_kernel_1d``);
* AdaptiveMaxPool ``out.numel() * (prod(ks) - 1)``, AdaptiveAvgPool ``out.numel() *
  (prod(ks) - 1 + len(ks))``, ``ks`` per spatial dim ``i // o`` if ``o`` divides ``i`` else
  ``i % o + 1``;
* Identity, Flatten, ReLU, ELU, LeakyReLU, ReLU6, Tanh, Sigmoid, Dropout: 0;
* any other leaf type (LayerNorm, GELU, MultiheadAttention, ...): 0, with "Module type not
  supported" (the total is printed "known", partial): ``unsupported_module``.

A container's own forward (a residual add, a functional call) is not seen: ``functional_not_seen``.
"""

from __future__ import annotations

import math

from reconcile.conventions import common
from reconcile.conventions.base import (
    Convention, LayerPrediction, Prediction, RuleDoc, Term, is_instance, numel,
)
from reconcile.records import ModuleRow, NativeCount, Phrase

TOOL = "torchscan"
_NN = "torch.nn.modules."
_MHA = f"{_NN}activation.MultiheadAttention"
_TRANSFORMER = f"{_NN}transformer.Transformer"
_LINEAR = f"{_NN}linear.Linear"
_CONV_T = f"{_NN}conv._ConvTransposeNd"
_CONV = f"{_NN}conv._ConvNd"
_BN = f"{_NN}batchnorm._BatchNorm"
_MAXPOOL = f"{_NN}pooling._MaxPoolNd"
_AVGPOOL = f"{_NN}pooling._AvgPoolNd"
_ADAPTIVE_MAX = f"{_NN}pooling._AdaptiveMaxPoolNd"
_ADAPTIVE_AVG = f"{_NN}pooling._AdaptiveAvgPoolNd"
_ZERO = tuple(f"{_NN}{c}" for c in ("linear.Identity", "activation.ReLU", "activation.ELU", "activation.LeakyReLU",
                                     "activation.ReLU6", "activation.Tanh", "activation.Sigmoid", "flatten.Flatten",
                                     "dropout.Dropout"))


def _adaptive_kernel(inp: tuple[int, ...], out: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(i // o if i % o == 0 else i % o + 1 for i, o in zip(inp[2:], out[2:]))


def _leaf_macs(row: ModuleRow, ref: int, flops: int, terms: list[Term]) -> int:
    """torchscan's MACs for the metric leaf ``row`` over its calls, adding a term for every part
    that differs from the native reference ``ref`` (``flops``: the native FLOPs it stands for)."""
    a = row.attrs
    calls = [c for c in row.call_records if c.inputs and c.outputs]
    if is_instance(row, _LINEAR) or (is_instance(row, _CONV) and not is_instance(row, _CONV_T)):
        return ref
    if any(is_instance(row, z) for z in _ZERO):
        return ref  # native counts no MACs for these either
    if is_instance(row, _CONV_T):
        total = 0
        for c in calls:
            total += 4 * len(a["kernel_size"]) + numel(c.outputs[0].shape) * (c.inputs[0].shape[1] // a["groups"]) \
                * math.prod(a["kernel_size"])
        terms.append(Term("formula", total - ref, "torchscan.formula",
                          Phrase("torchscan counts a transposed conv as out.numel() x Cin/groups x K + 4 x {dims!s} "
                                 "per call: {v} where the MAC count is {ref}",
                                 {"dims": len(a["kernel_size"]), "v": total, "ref": ref})))
        return total
    if is_instance(row, _BN):
        n = sum(numel(c.inputs[0].shape) for c in calls)
        per = 2 if a.get("affine") else 1
        terms.append(Term("norm", per * n, "torchscan.norm",
                          Phrase("torchscan counts BatchNorm at {per!s} MAC(s) per element: {per!s} x {n}",
                                 {"per": per, "n": n})))
        return ref + per * n
    pool = is_instance(row, _MAXPOOL) or is_instance(row, _AVGPOOL)
    if pool and ("kernel_size" in a.get("lists", ()) or "kernel_size" not in a):
        # torchscan: math.prod(kernel_size) if isinstance(kernel_size, tuple) else kernel_size, then
        # "k_size - 1": a list raises TypeError there, and torchscan leaves the module's MACs
        # unavailable (0). A pool holds no MACs of native's either (ref 0): nothing to name. A
        # kernel_size native could not record (not a number, tuple or list): no rule, so whatever
        # torchscan counted stays a residual
        return ref
    if pool:
        kernel = a["kernel_size"]
        avg = is_instance(row, _AVGPOOL)
        total = 0
        for c in calls:
            out, dims = numel(c.outputs[0].shape), len(c.inputs[0].shape) - 2
            read = math.prod(kernel) if isinstance(kernel, (tuple, list)) else kernel
            window = math.prod(kernel) if isinstance(kernel, (tuple, list)) else kernel ** dims
            extra = dims if avg else 0
            total += out * (read - 1 + extra)
            true = out * (window - 1 + extra)
            terms.append(Term("pool", true, "torchscan.pool",
                              Phrase("torchscan counts {type!s} at (window - 1{dims!s}) per output element: "
                                     "{per!s} x {n}", {"type": row.type, "dims": " + dims" if avg else "",
                                                       "per": window - 1 + extra, "n": out})))
            if read != window:
                terms.append(Term("pool_kernel_1d", out * (read - window), "torchscan.pool_kernel_1d",
                                  Phrase("torchscan reads kernel_size={kernel!s} as {read!s} elements, not {window!s}: "
                                         "{d!s} x {n}", {"kernel": kernel, "read": read, "window": window,
                                                         "d": read - window, "n": out})))
        return ref + total
    if is_instance(row, _ADAPTIVE_MAX) or is_instance(row, _ADAPTIVE_AVG):
        avg = is_instance(row, _ADAPTIVE_AVG)
        total = 0
        for c in calls:
            ks = _adaptive_kernel(c.inputs[0].shape, c.outputs[0].shape)
            per = math.prod(ks) - 1 + (len(ks) if avg else 0)
            total += per * numel(c.outputs[0].shape)
        terms.append(Term("pool", total, "torchscan.pool.2",
                          Phrase("torchscan counts {type!s} at (prod(kernel) - 1{dims!s}) per output element, "
                                 "kernel from the shapes: {v}",
                                 {"type": row.type, "dims": " + dims" if avg else "", "v": total})))
        return ref + total
    if ref or flops:
        terms.append(Term("unsupported_module", -ref, "torchscan.unsupported_module",
                          Phrase("torchscan has no MAC formula for {type!s} (\"Module type not supported\"): "
                                 "{macs} MACs ({flops} FLOPs) not counted",
                                 {"type": row.type, "macs": ref, "flops": flops}), flops=-flops))
    return 0


class TorchscanConvention(Convention):
    tool = TOOL
    unit = "MACs"
    metric = "macs"
    headline_metric = "macs"
    # "Total params" is a headline-only figure (model.parameters()); the rows' Param # (with buffers)
    # is explained row by row under a key of its own, which the tool prints no total of
    metrics = {"macs": "macs", "params": "", "layer_params": "params"}
    op_metrics = ("macs",)
    rules = (
        RuleDoc("mechanism", "forward hooks on every module, under eval() and no_grad; formulas on metric leaves "
                "(no children, or MultiheadAttention); per call, summed"),
        RuleDoc("nn.Transformer model", "hooked at the root alone: one metric leaf, the whole model's parameters and "
                "buffers, no MAC formula (0)"),
        RuleDoc("Linear / Conv", "the MACs (in_features x out.numel(); out.numel() x Cin/g x K)"),
        RuleDoc("ConvTranspose", "out.numel() x Cin/g x K + 4 x len(kernel_size)"),
        RuleDoc("BatchNorm", "in.numel() x (1 + affine)"),
        RuleDoc("MaxPool / AvgPool", "out.numel() x (k - 1) (AvgPool + dims); an integer kernel_size k is k, not k^dims"),
        RuleDoc("AdaptiveMaxPool / AdaptiveAvgPool", "out.numel() x (prod(ks) - 1) (AdaptiveAvgPool + len(ks))"),
        RuleDoc("activations, Identity, Flatten, Dropout", "0"),
        RuleDoc("other leaves (LayerNorm, GELU, MultiheadAttention, ...)", "0, \"Module type not supported\": "
                "the total is partial (printed \"known\")"),
        RuleDoc("container's own forward", "not seen (residual adds, functional calls)"),
        RuleDoc("Param # (per layer)", "own parameters + own buffers, each tensor once in call order; "
                "Total params: model.parameters() only"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        buffers: dict[str, int] = {}
        for b in native.buffers:
            owner = b.name.rsplit(".", 1)[0] if "." in b.name else ""
            # read in the module's pre-forward hook: a buffer its forward replaces (convit's
            # rel_indices) is counted as it was before
            buffers[owner] = buffers.get(owner, 0) + (b.numel if b.numel_before is None else b.numel_before)
        held = _first_called_holders(native)
        layers = []
        inside: set[str] = set()  # rows a whole-subtree metric leaf holds (never hooked, or no row of their own)
        for r in native.rows:
            if r.name in inside or not r.calls:
                continue
            # a metric leaf over its subtree: a MultiheadAttention, or an nn.Transformer model (the root alone)
            whole = is_instance(r, _MHA) or (r.name == "" and is_instance(r, _TRANSFORMER))
            if whole:
                inside.update(x.name for x in tree.subtree(r.name) if x.name != r.name)
            layers.append(self._row(tree, r, whole, buffers, held))
        macs = sum(p.predicted["macs"] for p in layers)
        params = native.totals["params"]
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline={"macs": macs, "params": params},
                          headline_reference={"macs": macs, "params": params})

    def _row(self, tree: common.Tree, row: ModuleRow, whole: bool, buffers: dict[str, int],
             held: dict[str, int]) -> LayerPrediction:
        leaf = whole or not tree.children.get(row.name)
        ref = tree.macs(row.name) if whole else row.macs
        terms: list[Term] = []
        if leaf:
            macs = _leaf_macs(row, ref, tree.flops(row.name) if whole else row.flops, terms)
        else:
            macs = 0
            if ref or row.flops:
                terms.append(Term("functional_not_seen", -ref, "torchscan.functional_not_seen",
                                  Phrase("torchscan hooks modules only: the {macs} MACs ({flops} FLOPs) in "
                                         "{type!s}.forward's own code are not counted",
                                         {"macs": ref, "flops": row.flops, "type": row.type}), flops=-row.flops))
        names = [x.name for x in tree.subtree(row.name)] if whole else [row.name]
        params = tree.params(row.name) if whole else row.params
        n_buf = sum(buffers.get(n, 0) for n in names)
        counted = params if whole else held.get(row.name, 0)  # a whole-subtree leaf: recurse=True
        param_terms: list[Term] = []
        if n_buf:
            param_terms.append(Term("params_buffers", n_buf, "torchscan.params_buffers",
                                    Phrase("torchscan's Param # adds the {n} elements of {type!s}'s buffers",
                                           {"n": n_buf, "type": row.type})))
        if counted != params:
            param_terms.append(Term("params_tied", counted - params, "torchscan.params_tied",
                                    Phrase("torchscan counts a tied parameter at the first module called that holds "
                                           "it, not at its first name: {counted} here where {params} are registered "
                                           "first under this module", {"counted": counted, "params": params})))
        return LayerPrediction(row.name, row.type, row.calls, {"macs": ref, "params": params},
                               {"macs": macs, "params": counted + n_buf},
                               {"macs": tuple(terms), "params": tuple(param_terms)})


def _first_called_holders(native: NativeCount) -> dict[str, int]:
    """Parameter elements per module as torchscan's pre-hooks count them: each tensor once, at the
    first module *called* that holds it directly (under its first name or an alias)."""
    first: dict[str, int] = {}
    for r in native.rows:
        if r.calls and r.call_records:
            first[r.name] = min(c.order for c in r.call_records)
    out: dict[str, int] = {}
    for p in native.params:
        holders = [n.rsplit(".", 1)[0] if "." in n else "" for n in (p.name, *p.aliases)]
        called = [h for h in holders if h in first]
        if called:
            owner = min(called, key=lambda h: first[h])
            out[owner] = out.get(owner, 0) + p.numel
    return out


CONVENTION = TorchscanConvention()
