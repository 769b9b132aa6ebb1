"""pthflops 0.4.2, fx mode: its rules (``ops_fx.count_operations``, read from the source),
written once, predicting ``count_ops`` per module.

Rows (as the pthflops adapter reports them): every module, exclusive, ``flops`` (pthflops'
"FLOPs"; conv and linear are counted as MACs plus bias, so the reference is native MACs).

``torch.fx.symbolic_trace`` keeps torch.nn modules (``__module__`` under ``torch.nn``, not
``Sequential``) as leaves and traces through every other module's ``forward``:

* a leaf by type (isinstance): Conv (and ConvTranspose) ``prod(K) * Cin * Cout/g * B *
  prod(out spatial)`` plus ``Cout * B * prod(out spatial)`` with a bias; Linear ``in.numel() *
  out.shape[-1]`` plus ``out_features`` once per call with a bias (not per token); ReLU (exactly
  ``nn.ReLU`` and subclasses) ``2 * out``; BatchNorm ``2 * out``; MaxPool ``(prod(k) - 1) * out``;
  AvgPool ``prod(k) * out``; AdaptiveAvgPool ``H_in * W_in * out``; any other leaf 0 (GELU,
  LayerNorm, MultiheadAttention, ...), and the modules inside a leaf are not nodes: 0;
* in a traced-through forward, a function named ``add`` / ``mul`` (``+``, ``*``, ``+=`` on a
  proxy, ``torch.add``, ``torch.mul``) ``out.numel() * len(args)`` (2); one named ``matmul``
  (``@``, ``torch.matmul``) ``args[0].numel() * out.shape[-1]`` (the MACs); methods
  (``x.add(y)``, ``x.mean()``) and every other function (``F.linear``, ``torch.flatten``) 0.

Native records the Python-level calls (``ModuleRow.torch_calls``: ``Tensor.__add__``,
``torch.mul``, ``Tensor.__matmul__`` ...), which tell an operator from a method; an in-place
``+=`` of two tensors is not among them and is read from native's ``aten::add_`` elements.
"""

from __future__ import annotations

import math

from reconcile.conventions import common
from reconcile.conventions.base import Convention, LayerPrediction, Prediction, RuleDoc, Term, is_instance, numel
from reconcile.records import ModuleRow, NativeCount, Phrase, TensorMeta

TOOL = "pthflops"
_NN = "torch.nn.modules."
_CONV = f"{_NN}conv._ConvNd"
_CONV_T = f"{_NN}conv._ConvTransposeNd"
_LINEAR = f"{_NN}linear.Linear"
_RELU = f"{_NN}activation.ReLU"
_BN = f"{_NN}batchnorm._BatchNorm"
_MAXPOOL = f"{_NN}pooling._MaxPoolNd"
_AVGPOOL = f"{_NN}pooling._AvgPoolNd"
_ADAPTIVE_AVG = f"{_NN}pooling._AdaptiveAvgPoolNd"
_ADD_MUL = ("Tensor.__add__", "Tensor.__radd__", "Tensor.__mul__", "Tensor.__rmul__", "torch.add", "torch.mul")
_MATMUL = ("Tensor.__matmul__", "torch.matmul")


def fx_leaf(row: ModuleRow) -> bool:
    """torch.fx's default ``is_leaf_module``: a torch.nn module other than ``Sequential``."""
    cls = row.attrs.get("class", "")
    return (cls.startswith("torch.nn.") or cls.startswith("torch.ao.nn.")) and not cls.endswith(".Sequential")


def _broadcast(args: tuple) -> int:
    shapes = [a.shape for a in args if isinstance(a, TensorMeta)]
    dims = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(1, dims + 1):
        out.append(max((s[-i] for s in shapes if len(s) >= i), default=1))
    return numel(tuple(out))


def _leaf(row: ModuleRow, ref: int, terms: list[Term]) -> int:
    a = row.attrs
    calls = [c for c in row.call_records if c.inputs and c.outputs]
    outs = sum(numel(c.outputs[0].shape) for c in calls)
    if is_instance(row, _CONV):
        total = 0
        for c in calls:
            o = c.outputs[0].shape
            per_position = math.prod(a["kernel_size"]) * a["in_channels"] * (a["out_channels"] // a["groups"])
            total += per_position * o[0] * numel(o[2:])
        if total != ref:
            terms.append(Term("formula", total - ref, "pthflops.formula",
                              Phrase("pthflops counts {type!s} as prod(K) x Cin x Cout/g x output positions: {v} "
                                     "where the MAC count is {ref}", {"type": row.type, "v": total, "ref": ref})))
        if a.get("has_bias"):
            terms.append(Term("bias", outs, "pthflops.bias",
                              Phrase("pthflops counts the bias add, 1 per output element: {n}", {"n": outs})))
            total += outs
        return total
    if is_instance(row, _LINEAR):
        if a.get("has_bias"):
            n = a["out_features"] * len(calls)
            terms.append(Term("bias", n, "pthflops.bias.2",
                              Phrase("pthflops counts Linear's bias once per call, {out}, not once per token "
                                     "({calls!s} calls)", {"out": a["out_features"], "calls": len(calls)})))
            return ref + n
        return ref
    if is_instance(row, _RELU):
        terms.append(Term("activation", 2 * outs, "pthflops.activation",
                          Phrase("pthflops counts ReLU at 2 per element: 2 x {n}", {"n": outs})))
        return ref + 2 * outs
    if is_instance(row, _BN):
        terms.append(Term("norm", 2 * outs, "pthflops.norm",
                          Phrase("pthflops counts BatchNorm at 2 per element: 2 x {n}", {"n": outs})))
        return ref + 2 * outs
    if is_instance(row, _MAXPOOL) or is_instance(row, _AVGPOOL):
        k = a["kernel_size"]
        total = 0
        for c in calls:
            kernel = [k] * (len(c.outputs[0].shape) - 2) if isinstance(k, int) else list(k)
            per = math.prod(kernel) - (0 if is_instance(row, _AVGPOOL) else 1)
            total += per * numel(c.outputs[0].shape)
        terms.append(Term("pool", total, "pthflops.pool",
                          Phrase("pthflops counts {type!s} at {per!s} per output element: {v}",
                                 {"type": row.type, "per": "prod(k)" if is_instance(row, _AVGPOOL) else "prod(k) - 1",
                                  "v": total})))
        return ref + total
    if is_instance(row, _ADAPTIVE_AVG):
        total = sum(c.inputs[0].shape[-2] * c.inputs[0].shape[-1] * numel(c.outputs[0].shape) for c in calls)
        terms.append(Term("pool", total, "pthflops.pool.2",
                          Phrase("pthflops counts {type!s} at H_in x W_in per output element: {v}",
                                 {"type": row.type, "v": total})))
        return ref + total
    if ref or row.flops:
        terms.append(Term("unsupported_module", -ref, "pthflops.unsupported_module",
                          Phrase("pthflops has no rule for {type!s}: {macs} MACs ({flops} FLOPs) not counted",
                                 {"type": row.type, "macs": ref, "flops": row.flops}), flops=-row.flops))
    return 0


# modules whose forward hands all its work to a function registered with ``torch.fx.wrap``: one
# call_function node under the function's own name, which pthflops counts as 0
_FX_WRAPPED = {
    "torchvision.models.swin_transformer.ShiftedWindowAttention": "shifted_window_attention",
    "torchvision.models.swin_transformer.ShiftedWindowAttentionV2": "shifted_window_attention",
}


def _traced(row: ModuleRow, terms: list[Term]) -> int:
    """A traced-through module's own forward: its add / mul / matmul calls."""
    wrapped = _FX_WRAPPED.get(row.attrs.get("class", ""))
    if wrapped:
        if row.macs or row.flops:
            terms.append(Term("functional_not_seen", -row.macs, "pthflops.functional_not_seen",
                              Phrase("{type!s}.forward calls {fn!s}, which torchvision registers with torch.fx.wrap: "
                                     "one fx node that pthflops counts as 0 ({macs} MACs, {flops} FLOPs not counted)",
                                     {"type": row.type, "fn": wrapped, "macs": row.macs, "flops": row.flops}),
                              flops=-row.flops))
        # what forward does before calling it is traced as usual: SwinV2's get_relative_position_bias
        # (``16 * torch.sigmoid(bias)``, one mul node) runs before shifted_window_attention, whose first
        # recorded call is its qkv F.linear (torchvision 0.29.1)
        before = []
        for c in row.torch_calls:
            if c.func == "F.linear":
                break
            before.append(c)
        outside = sum(2 * _broadcast(c.args) for c in before if c.func in _ADD_MUL)
        if outside:
            terms.append(Term("elementwise", outside, "pthflops.elementwise",
                              Phrase("pthflops counts add / mul at len(args) = 2 per output element: {n}",
                                     {"n": outside})))
        return outside
    total = 0
    elementwise = matmul = 0
    for c in row.torch_calls:
        if c.func in _ADD_MUL:
            elementwise += 2 * _broadcast(c.args)
        elif c.func in _MATMUL and all(isinstance(x, TensorMeta) for x in c.args[:2]):
            x, y = c.args[0].shape, c.args[1].shape
            matmul += numel(x) * (y[-1] if len(y) > 1 else 1)
    # ``+=``: an add node in fx; not the add of eps inside F.rms_norm, one rms_norm node in fx (0)
    inplace = 2 * (row.op_elements.get("aten::add_", (0, 0))[1] - common.rms_norm_parts(row)[0])
    ref = row.macs
    if matmul != ref:
        terms.append(Term("functional_not_seen", matmul - ref, "pthflops.functional_not_seen.2",
                          Phrase("pthflops counts only functions named add, mul and matmul in {type!s}.forward: "
                                 "{macs} MACs of other calls are not counted", {"type": row.type, "macs": ref - matmul}),
                          flops=-2 * (ref - matmul)))
    if elementwise + inplace:
        terms.append(Term("elementwise", elementwise + inplace, "pthflops.elementwise",
                          Phrase("pthflops counts add / mul at len(args) = 2 per output element: {n}",
                                 {"n": elementwise + inplace})))
    total = matmul + elementwise + inplace
    return total


class PthflopsConvention(Convention):
    tool = TOOL
    unit = "FLOPs"
    metric = "flops"
    headline_metric = "flops"
    metrics = {"flops": "flops"}
    op_metrics = ("flops",)
    rules = (
        RuleDoc("mechanism", "torch.fx.symbolic_trace + Interpreter; torch.nn modules are leaves, other modules traced "
                "through; rows: each module's own nodes"),
        RuleDoc("Conv", "prod(K) x Cin x Cout/g x output positions + bias 1 per output element"),
        RuleDoc("Linear", "in.numel() x out_features + out_features once per call (bias not per token)"),
        RuleDoc("ReLU / BatchNorm", "2 per output element"),
        RuleDoc("MaxPool / AvgPool / AdaptiveAvgPool", "(prod(k) - 1) / prod(k) / H_in x W_in per output element"),
        RuleDoc("add / mul functions (+, *, +=, torch.add, torch.mul)", "out.numel() x len(args)"),
        RuleDoc("matmul (@, torch.matmul)", "args[0].numel() x out.shape[-1]"),
        RuleDoc("other leaves, methods, other functions", "0 (GELU, LayerNorm, MultiheadAttention, F.linear, x.mean())"),
        RuleDoc("unit", "all labelled FLOPs; one input tensor; no parameter count; jit mode broken on torch 2.14"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        inside: set[str] = set()
        layers = []
        for r in native.rows:
            terms: list[Term] = []
            if r.name in inside:
                if r.macs or r.flops:
                    terms.append(Term("nested_skipped", -r.macs, "pthflops.nested_skipped",
                                      Phrase("pthflops stops at the torch.nn module around {type!s} (an fx leaf): "
                                             "its {macs} MACs are not counted", {"type": r.type, "macs": r.macs}),
                                      flops=-r.flops))
                layers.append(LayerPrediction(r.name, r.type, r.calls, {"flops": r.macs}, {"flops": 0},
                                              {"flops": tuple(terms)}))
                continue
            if r.name and fx_leaf(r) and r.calls:  # a ModuleList is never called: its children are nodes
                inside.update(x.name for x in tree.subtree(r.name) if x.name != r.name)
                value = _leaf(r, r.macs, terms) if r.calls else 0
            else:
                value = _traced(r, terms)
            layers.append(LayerPrediction(r.name, r.type, r.calls, {"flops": r.macs}, {"flops": value},
                                          {"flops": tuple(terms)}))
        total = sum(p.predicted["flops"] for p in layers)
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline={"flops": total},
                          headline_reference={"flops": total})

    def cannot_run(self, native: NativeCount) -> str | None:
        if len(native.input_shapes) != 1:
            return f"pthflops takes one input tensor; this model takes {len(native.input_shapes)}"
        return None


CONVENTION = PthflopsConvention()
