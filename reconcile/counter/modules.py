"""Module-level rules: modules counted as one unit instead of by the aten ops they run.

Recurrent layers run different aten paths on different devices (CPU: one fused
``mkldnn_rnn_layer`` for LSTM, input projections hoisted out of the time loop for GRU; meta: a
cell loop), so counting their ops would make CPU and meta disagree. Each rule below is the exact
sum of the cell decomposition torch runs on meta (``aten::addmm`` per gate projection, then the
gate arithmetic of ``RNN.cpp``'s cells), computed from shapes alone.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def _steps(mod: nn.RNNBase, x: Any) -> int:
    """Number of (time step, batch element) pairs the layer processes."""
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return int(x.batch_sizes.sum())
    if x.dim() == 2:  # unbatched (T, I)
        return int(x.shape[0])
    return int(x.shape[0]) * int(x.shape[1])


# Per (step, batch element) and per hidden unit H, for one layer and one direction:
# name -> (gates, elementwise ops, activation ops). Gates multiply the MACs and bias adds.
#   LSTM: gates i,f,g,o: add ih+hh (4H), c = f*c + i*g (3H), h = o*tanh(c) (1H) -> 8H elementwise;
#         sigmoid x3 + tanh(g) + tanh(c) -> 5H activation.
#   GRU:  r,z = sigmoid(ih + hh) (2H add, 2H act); n = tanh(ih_n + r*hh_n) (1H mul, 1H add, 1H act);
#         h = (h - n) * z + n (3H) -> 7H elementwise, 3H activation.
#   RNN:  h = act(ih + hh) -> 1H elementwise, 1H activation.
_CELLS = {
    "LSTM": (4, 8, 5),
    "GRU": (3, 7, 3),
    "RNN_TANH": (1, 1, 1),
    "RNN_RELU": (1, 1, 1),
}


def recurrent(mod: nn.RNNBase, args: tuple, kwargs: dict) -> dict[str, int]:
    """Components of one call of ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``."""
    x = args[0] if args else kwargs.get("input")
    gates, ew, act = _CELLS[mod.mode]
    h = mod.hidden_size
    out_h = mod.proj_size if getattr(mod, "proj_size", 0) else h
    dirs = 2 if mod.bidirectional else 1
    steps = _steps(mod, x)
    macs = bias = 0
    for layer in range(mod.num_layers):
        in_size = mod.input_size if layer == 0 else out_h * dirs
        per = gates * h * (in_size + out_h)
        if out_h != h:
            per += h * out_h  # LSTM projection of h
        macs += per * dirs
        if mod.bias:
            bias += 2 * gates * h * dirs
    layers_dirs = mod.num_layers * dirs
    return {
        "macs": macs * steps,
        "bias": bias * steps,
        "elementwise": ew * h * layers_dirs * steps,
        "activation": act * h * layers_dirs * steps,
    }


def module_rule(mod: nn.Module, args: tuple, kwargs: dict) -> dict[str, int] | None:
    """Components for modules counted as a unit, or None to count the module's aten ops."""
    if isinstance(mod, nn.RNNBase) and mod.mode in _CELLS:
        return recurrent(mod, args, kwargs)
    return None


def module_rule_names() -> tuple[str, ...]:
    return tuple(sorted(f"nn.{n}" for n in ("RNN", "GRU", "LSTM")))
