"""What ptflops' conventions share (the module-hook backend of 0.7.5 and 0.7.0, and the aten
backend): the module class prefix, the cause of work counted only in the total, recurrent gates,
and call shapes. Imports no torch."""

from __future__ import annotations

from reconcile.records import CallRecord

NN = "torch.nn.modules."

# Work ptflops counts, but only in its total and in no per-layer row (a patched functional in an
# unhooked forward, the aten backend's 'Global' bucket): a pair of terms with this cause moves it
# from the module's pseudo-row (-) to the total-only record (+), so per cause they cancel.
# There is no dedicated cause id for "total only"; the pair nets to zero under this one.
TOTAL_ONLY = "functional_not_seen"

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}  # gates of each recurrent mode
SDPA_MARK = "aten::_safe_softmax"  # scaled_dot_product_attention's math path: its bmm are SDPA's


def types(module: str, *names: str) -> list[str]:
    return [f"{NN}{module}.{n}" for n in names]


def call_shape(call: CallRecord, i: int = 0) -> tuple[int, ...]:
    return call.inputs[i].shape if len(call.inputs) > i else ()


def out_shape(call: CallRecord) -> tuple[int, ...]:
    return call.outputs[0].shape if call.outputs else ()
