"""The component vocabulary of a count, and the FLOPs convention over it.

Guarantees: imports nothing (of reconcile or torch), so every layer can read it, ``records``
included; ``records.COMPONENTS`` and ``counter.formulas.flops_of`` are these same objects.
"""

from __future__ import annotations

from typing import Mapping

# Component names of the native count. ``macs`` is the torchvision ``_ops`` convention;
# every other component is a count of elementwise arithmetic operations of that family.
COMPONENTS = (
    "macs",  # multiply-accumulates of conv / linear / matmul / bmm / einsum / attention / RNN gates
    "bias",  # bias additions fused into conv / linear / addmm / baddbmm (1 per output element)
    "norm",  # batch / layer / group / instance norm arithmetic
    "activation",  # relu, gelu, silu, sigmoid, tanh, hardswish, ... (per element, see formulas)
    "pool",  # max / avg / adaptive pools (window reads compared or summed)
    "elementwise",  # add, sub, mul, div, residual adds, scaling, clamps
    "reduction",  # sum, mean, amax, var, norms of tensors
    "softmax",  # softmax / log_softmax
    "interpolate",  # upsample / interpolate
    "attention",  # non-MAC arithmetic inside fused attention (scale, softmax, mask)
    "rnn",  # non-MAC arithmetic inside recurrent cells (gate activations, state updates)
    "other",  # arithmetic of op families not listed above (embedding bag sums, cumsum, ...)
)


def flops_of(components: Mapping[str, int]) -> int:
    """FLOPs convention: 2 per MAC plus every other arithmetic operation."""
    return sum(v for k, v in components.items() if k != "macs") + 2 * components.get("macs", 0)
