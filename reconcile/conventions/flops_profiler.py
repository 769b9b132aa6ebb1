"""flops-profiler 0.1.2 (``flops_profiler.profiler.get_model_profile``), the standalone copy of
DeepSpeed's profiler from before DeepSpeed counted attention. Its rules are not DeepSpeed 0.19.8's
(so it is its own tool, not ``deepspeed@VERSION``): DeepSpeed's convention with

- not patched: ``F.scaled_dot_product_attention``, ``Tensor.__matmul__``;
- patched as well: ``Tensor.baddbmm``;
- ``torch.add``/``mul``: dimensions aligned from the left (as calflops), not broadcast;
- RNN/LSTM/GRU FLOPs: |W_ih| + |W_hh| per step (DeepSpeed: twice that, less G x hidden);
- parameters: every parameter (as DeepSpeed); three warm-up forwards;
- ``get_model_profile`` calls ``model.forward(*args)`` directly (its ``func_name``), so the root's
  hooks never run: the work the model's own ``forward`` does through patched names is counted
  nowhere (its ``__macs__`` stays 0, and no frame is open to receive it).
"""

from __future__ import annotations

from reconcile.conventions.base import RuleDoc
from reconcile.conventions.deepspeed import DeepspeedConvention


class FlopsProfilerConvention(DeepspeedConvention):
    tool = "flops-profiler"
    sdpa = False
    operator_matmul = False
    mm_bmm = True
    tensor_baddbmm = True
    broadcast_left = True
    warm_up = 3
    rnn_two_per_weight = False  # its _rnn_flops adds |W_ih| + |W_hh| per step, not 2|W| - G x hidden
    root_hooked = False  # get_model_profile calls getattr(model, 'forward')(*args): the root's hooks never run
    rules = (
        *(r for r in DeepspeedConvention.rules if r.family not in ("run", "not counted",
                                                                   "F.scaled_dot_product_attention",
                                                                   "torch.matmul, Tensor.matmul, @, mm, bmm",
                                                                   "torch.add/mul, Tensor.add/mul")),
        RuleDoc("torch.matmul, Tensor.matmul, mm, bmm, Tensor.baddbmm", "MACs prod(A.shape) x B.shape[-1]; FLOPs 2 x MACs"),
        RuleDoc("torch.add/mul, Tensor.add/mul", "FLOPs the larger size of each dimension, dimensions aligned from "
                "the left (not broadcast)"),
        RuleDoc("not counted", "F.scaled_dot_product_attention, @ (Tensor.__matmul__), other operators, x.softmax(), "
                "sigmoid/tanh/hardswish/hardtanh, F.embedding, dropout; a function captured before patching"),
        RuleDoc("root", "the model's own forward is called directly (model.forward): its own work is counted nowhere"),
        RuleDoc("run", "get_model_profile(model, args=inputs, print_profile=False): three warm-up forwards, then one"),
    )


    def cannot_run(self, native):
        """A convolution padded with a string (``padding='same'``): ``_conv_flops_compute`` adds it
        to an int and raises TypeError (timm's convmixer_768_32)."""
        for row in native.rows:
            if row.attrs.get("class", "").startswith("torch.nn.modules.conv.Conv") and isinstance(row.attrs.get("padding"), str):
                return (f"flops-profiler cannot cost a convolution with padding={row.attrs['padding']!r} "
                        f"({row.type} {row.name}): its conv formula adds the padding string to the input size")
        return None


CONVENTION = FlopsProfilerConvention()
