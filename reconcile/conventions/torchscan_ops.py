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

Known limits (each shows as a residual): ``nn.TransformerEncoderLayer``'s own fast path
(``_transformer_encoder_layer_fwd``, also taken under ``no_grad``) is not modelled; a mask that is
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
# the key under which a fast-path call's work is missed (FlopCounterMode's term names it)
FUSED_MHA = "aten._native_multi_head_attention (nn.MultiheadAttention's fast path under no_grad)"
_FLOAT = ("float16", "bfloat16", "float32", "float64")


def mha_fast_path(native: NativeCount, row: ModuleRow) -> bool:
    """Whether every call of this nn.MultiheadAttention row runs torch's fused fast path under
    torchscan (eval, no_grad, CPU), by the gate of ``MultiheadAttention.forward``."""
    a = row.attrs
    calls = [c for c in row.call_records if c.inputs]
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
            if is_instance(r, _MHA) and r.calls and r.name not in own and mha_fast_path(native, r):
                inside = list(tree.subtree(r.name))
                for x in inside:
                    own[x.name] = Work()  # held by the fused op, charged to the MultiheadAttention
                own[r.name].miss(FUSED_MHA, sum(x.components.get("macs", 0) for x in inside),
                                 sum(x.flops for x in inside))
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
