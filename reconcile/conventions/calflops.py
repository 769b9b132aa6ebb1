"""calflops 0.3.2 (``calflops.calculate_flops``): a copy of an older DeepSpeed flops profiler, so
its convention is DeepSpeed's (``conventions/deepspeed.py``) with what that copy patches and how:

- not patched: ``F.scaled_dot_product_attention`` (calflops #48), ``Tensor.__matmul__`` (``q @ k``),
  ``torch.mm``/``torch.bmm`` (commented out in ``_patch_tensor_methods``): their MACs are missed;
- ``torch.add``/``mul``: the operands' dimensions aligned from the left, the larger of each (not
  broadcasting): ``x + bias`` of shapes (B, N, C) and (C,) counts B x N x C only when C >= B...;
- parameters: only ``requires_grad`` ones (``reset_flops_calculate``);
- ``F.interpolate`` with a ``scale_factor``: the input's elements (its ``flops * scale`` is discarded);
- no warm-up forward: one profiled forward.
"""

from __future__ import annotations

from reconcile.conventions.base import RuleDoc
from reconcile.conventions.deepspeed import DeepspeedConvention


class CalflopsConvention(DeepspeedConvention):
    tool = "calflops"
    sdpa = False
    operator_matmul = False
    mm_bmm = False
    broadcast_left = True
    trainable_params_only = True
    interpolate_scaled = False
    warm_up = 0
    rules = (
        *(r for r in DeepspeedConvention.rules if r.family not in ("params", "run", "not counted",
                                                                   "F.scaled_dot_product_attention",
                                                                   "torch.matmul, Tensor.matmul, @, mm, bmm",
                                                                   "torch.add/mul, Tensor.add/mul")),
        RuleDoc("torch.matmul, Tensor.matmul", "MACs prod(A.shape) x B.shape[-1]; FLOPs 2 x MACs"),
        RuleDoc("torch.add/mul, Tensor.add/mul", "FLOPs the larger size of each dimension, dimensions aligned from "
                "the left (not broadcast)"),
        RuleDoc("not counted", "F.scaled_dot_product_attention, @ (Tensor.__matmul__), torch.mm/bmm, other operators, "
                "x.softmax(), sigmoid/tanh/hardswish/hardtanh, F.embedding, dropout; a function captured before "
                "patching (transformers' GELU keeps F.gelu: BERT's GELU counts 0)"),
        RuleDoc("params", "only requires_grad parameters of module.parameters() per module; the total is the root's"),
        RuleDoc("run", "calculate_flops(model, args=inputs, forward_mode='forward', print_results=False): one forward"),
    )


CONVENTION = CalflopsConvention()
