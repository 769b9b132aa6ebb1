"""torchscan 0.2.0, operator view ("Operator forward FLOPs"): its rules, written once, predicting
``report["operator_flops"]`` of ``summary`` / ``crawl_module`` (total, per op, per module) from the
native count alone.

torchscan's ``measure_flops`` is ``torch.utils.flop_counter.FlopCounterMode(display=False)`` around
one forward, which ``crawl_module`` runs under ``eval()`` and ``torch.no_grad()``: FlopCounterMode's
rules (``conventions/flopcountermode.py``: 2 FLOPs per MAC of the ops with a formula, 0 for the
rest, rows inclusive by module-tracker names), forward only, with what ``no_grad`` changes on CPU:

* ``nn.MultiheadAttention`` takes its fast path, one fused op ``aten._native_multi_head_attention``
  (in-projection, attention and out-projection in one kernel) with no formula: the module's
  whole work counts 0 (``unsupported_op``, named). torch's gate (``MultiheadAttention.forward``,
  torch 2.14.1), read from the native row: self-attention (query, key and value one tensor), a
  3-D (batched) query, ``batch_first``, an even ``num_heads``, ``kdim == vdim == embed_dim``, an
  in-projection bias, no ``bias_k`` / ``bias_v``, no ``add_zero_attn``, the query's dtype the
  in-projection's, no floating-point mask (grad off, eval and a CPU device hold under torchscan).
  The native counter runs the slow path (fast path off), whose in-projection is one ``linear``
  for self-attention and two or three otherwise (``F._in_projection_packed``): with the
  out-projection's, a self-attention call runs exactly two matrix products (``addmm`` / ``mm``).
* ``scaled_dot_product_attention``: a mask computed in the forward (T5's position bias, a causal
  mask built from parameters) does not require grad under ``no_grad``, so CPU fuses the call
  whenever the rest of its gate allows (``conventions.ptflops.sdpa_fused_on_cpu`` with
  ``mask_requires_grad`` off), where FlopCounterMode run with grad counts its math path's bmm.

* ``nn.TransformerEncoderLayer`` has a fast path of its own, one fused op
  ``aten._transformer_encoder_layer_fwd`` (attention, feed-forward and both norms) with no
  formula: the layer's whole work counts 0 (``unsupported_op``, named). Its gate
  (``TransformerEncoderLayer.forward``, torch 2.14.1) refuses a layer with a forward hook or
  pre-hook on itself or any submodule, and torchscan hooks every module, *except* when the model
  is an ``nn.Transformer``: then it hooks the root alone (``crawl_module``'s ``targets``), so the
  encoder's layers take it whenever the rest of the gate holds, read from the native rows: a 3-D
  ``src``, ``batch_first``, an in-projection bias, ``kdim == vdim == embed_dim``, a ReLU or GELU
  activation (``activation_relu_or_gelu``), ``norm1.eps == norm2.eps``, an even ``num_heads``
  (eval, ``no_grad``, a CPU device and no autocast hold under torchscan). The decoder's layers
  have no such path (their self-attention's MultiheadAttention still takes its own).

Known limits (each shows as a residual): the encoder stack's nested-tensor path (an
``nn.TransformerEncoder`` given a ``src_key_padding_mask``) is not modelled; a mask that is
itself a leaf tensor requiring grad (a parameter passed as is) still requires grad under
``no_grad`` and keeps the math path, which the native record (whose probe runs with grad enabled)
cannot tell from a computed mask; a MultiheadAttention called with self- and cross-attention in
one model run is read as not fused; torchscan always runs ``eval()``, so a native count in train
mode differs wherever train mode changes a formula op.
"""

from __future__ import annotations

import dataclasses

from reconcile.conventions import common
from reconcile.conventions.base import INCLUSIVE, Prediction, RuleDoc, is_instance
from reconcile.conventions.flopcountermode import FlopCounterModeConvention, Work, forward_work
from reconcile.records import ModuleRow, NativeCount

_MHA = "torch.nn.modules.activation.MultiheadAttention"
_ENCODER_LAYER = "torch.nn.modules.transformer.TransformerEncoderLayer"
_TRANSFORMER = "torch.nn.modules.transformer.Transformer"
# the key under which a fast-path call's work is missed (FlopCounterMode's term names it)
FUSED_MHA = "aten._native_multi_head_attention (nn.MultiheadAttention's fast path under no_grad)"
FUSED_ENCODER_LAYER = ("aten._transformer_encoder_layer_fwd (nn.TransformerEncoderLayer's fast path under no_grad, "
                       "taken when torchscan hooks only the nn.Transformer root)")
_FLOAT = ("float16", "bfloat16", "float32", "float64")


def mha_fast_path(native: NativeCount, row: ModuleRow) -> bool:
    """Whether every call of this nn.MultiheadAttention row runs torch's fused fast path under
    torchscan (eval, no_grad, CPU), by the gate of ``MultiheadAttention.forward``."""
    a = row.attrs
    calls = [c for c in row.call_records if c.inputs]
    if native.tool_device != "cpu":  # the gate refuses a tensor on a device other than cpu / cuda
        return False
    if not calls or len(calls) != row.calls:
        return False
    if not a.get("batch_first") or a.get("num_heads", 1) % 2 or a.get("add_zero_attn"):
        return False
    # a bias_k / bias_v parameter is no plain attribute; None is
    if "bias_k" not in a or a.get("bias_k") is not None or a.get("bias_v") is not None:
        return False
    if not (a.get("kdim") == a.get("vdim") == a.get("embed_dim")):
        return False
    params = {p.name: p for p in native.params}
    weight, bias = params.get(f"{row.name}.in_proj_weight" if row.name else "in_proj_weight"), \
        params.get(f"{row.name}.in_proj_bias" if row.name else "in_proj_bias")
    if weight is None or bias is None:
        return False
    for c in calls:
        q = c.inputs[0]
        if len(q.shape) != 3 or q.dtype != weight.dtype or q.dtype != bias.dtype:
            return False
        if any(m.dtype in _FLOAT for m in c.inputs[3:]):  # a floating-point mask
            return False
    # self-attention: one in-projection product per call, plus the out-projection's
    return row.ops.get("aten::addmm", 0) + row.ops.get("aten::mm", 0) == 2 * row.calls


def encoder_layer_fast_path(native: NativeCount, tree: common.Tree, row: ModuleRow) -> bool:
    """Whether every call of this nn.TransformerEncoderLayer row runs torch's fused layer under
    torchscan (eval, no_grad, CPU), by the gate of ``TransformerEncoderLayer.forward``: no hook on
    the layer's subtree (torchscan hooks the root alone only when the model is an nn.Transformer),
    then the layer's own conditions, read from its native row and its children's."""
    root = tree.rows.get("")
    if native.tool_device != "cpu":  # the gate refuses a tensor on a device other than cpu / cuda
        return False
    if root is None or not is_instance(root, _TRANSFORMER) or not is_instance(row, _ENCODER_LAYER):
        return False
    calls = [c for c in row.call_records if c.inputs]
    if not calls or len(calls) != row.calls or any(len(c.inputs[0].shape) != 3 for c in calls):
        return False

    def child(name: str) -> ModuleRow | None:
        return tree.rows.get(f"{row.name}.{name}" if row.name else name)

    attn, norm1, norm2 = child("self_attn"), child("norm1"), child("norm2")
    if attn is None or norm1 is None or norm2 is None or not row.attrs.get("activation_relu_or_gelu"):
        return False
    a = attn.attrs
    if not a.get("batch_first") or a.get("num_heads", 1) % 2 or not (a.get("kdim") == a.get("vdim") == a.get("embed_dim")):
        return False
    if norm1.attrs.get("eps") != norm2.attrs.get("eps"):
        return False
    return any(p.name == f"{attn.name}.in_proj_bias" for p in native.params)


def _no_grad(row: ModuleRow) -> ModuleRow:
    """The row as ``no_grad`` runs it: no attention mask computed in the forward requires grad."""
    if not row.torch_calls:
        return row
    calls = tuple(dataclasses.replace(c, facts={**c.facts, "mask_requires_grad": False}) for c in row.torch_calls)
    return dataclasses.replace(row, torch_calls=calls)


class TorchscanOpsConvention(FlopCounterModeConvention):
    tool = "torchscan-ops"
    rules = (
        RuleDoc("mechanism", "torchscan.summary runs FlopCounterMode(display=False) around one forward under eval() "
                "and no_grad: \"Operator forward FLOPs\" is its Global; rows are by_module (inclusive, module-tracker "
                "names), forward only"),
        *(r for r in FlopCounterModeConvention.rules if r.family not in ("mechanism", "backward (training)")
          and "backward" not in r.family),
        RuleDoc("nn.MultiheadAttention under no_grad", "self-attention, batch_first, even heads, in-projection bias "
                "(torch's gate): one fused aten._native_multi_head_attention, no formula: 0 for the whole module"),
        RuleDoc("nn.TransformerEncoderLayer under no_grad", "only when the model is an nn.Transformer (torchscan "
                "then hooks the root alone; a hooked layer refuses its fast path): one fused "
                "aten._transformer_encoder_layer_fwd, no formula: 0 for the whole layer"),
        RuleDoc("scaled_dot_product_attention under no_grad", "a mask computed in the forward requires no grad: "
                "fused on CPU whenever the rest of the gate allows (0)"),
    )

    def flops_reference(self, native: NativeCount) -> int:
        return native.totals["flops"]

    def predict(self, native: NativeCount) -> Prediction:
        if native.training is not None:  # torchscan runs the forward only, under no_grad
            native = dataclasses.replace(native, training=None)
        tree = common.Tree(native)
        own: dict[str, Work] = {}
        for r in native.rows:
            if r.name in own or not r.calls:
                continue
            if encoder_layer_fast_path(native, tree, r):
                fused = FUSED_ENCODER_LAYER
            elif is_instance(r, _MHA) and mha_fast_path(native, r):
                fused = FUSED_MHA
            else:
                continue
            inside = list(tree.subtree(r.name))
            for x in inside:
                own[x.name] = Work()  # held by the fused op, charged to the module that calls it
            own[r.name].miss(fused, sum(x.components.get("macs", 0) for x in inside), sum(x.flops for x in inside))
        for r in native.rows:
            if r.name not in own:
                own[r.name] = forward_work(native, _no_grad(r))
        prediction = self._predict(native, own)
        # torchscan's by_module keeps one total per module, not FlopCounterMode's split by op
        layers = tuple(dataclasses.replace(
            p, predicted={"flops": p.predicted["flops"]},
            reference={k: v for k, v in p.reference.items() if k in ("flops", INCLUSIVE)})
            for p in prediction.layers)
        return dataclasses.replace(prediction, layers=layers)


CONVENTION = TorchscanOpsConvention()
