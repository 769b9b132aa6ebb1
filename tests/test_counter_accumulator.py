"""The counter's bookkeeping is a plain object: driven by hand here, with no dispatch mode and no forward.

Each op is run by the test, then reported to ``Accumulator.op`` as the dispatch mode would; the
expected numbers are worked out from the shapes (float32: 4 bytes per element).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from reconcile.counter.accumulator import Accumulator
from reconcile.counter.core import _CountingMode

aten = torch.ops.aten


def _report(acc: Accumulator, func, *args):
    out = func(*args)
    acc.before_op()
    acc.op(func, args, {}, out)
    return out


def test_ops_outside_any_module_call_go_to_the_root():
    lin = nn.Linear(4, 3).to("meta")
    acc = Accumulator(lin, lambda *a: None)
    x = torch.empty(2, 4, device="meta")
    wt = _report(acc, aten.t.default, lin.weight)  # a view of a parameter: zero cost, still a parameter
    _report(acc, aten.mm.default, x, wt)
    _report(acc, aten.acos.default, x)  # no rule: unknown, never dropped
    root = acc.accs[""]
    assert dict(root.zero_ops) == {"aten::t": 1}
    assert dict(root.ops) == {"aten::mm": 1}
    assert dict(root.unknown_ops) == {"aten::acos": 1}
    # mm (2, 4) @ (4, 3): 2 * 4 * 3 = 24 MACs, on the running frame (the root) until a module call ends
    assert dict(root.op_components["aten::mm"]) == {"macs": 24}
    assert acc.stack.root.components == {"macs": 24}
    assert dict(root.components) == {}
    acc.outside_modules()
    assert dict(root.components) == {"macs": 24}
    # mm reads x (8 elements) and weight.t() (12): (8 + 12) * 4 = 80 bytes, of which 12 * 4 = 48 are
    # the parameter's; writes 2 * 3 = 6 elements, 24 bytes. acos reads 8 and writes 8 elements: 32 + 32.
    assert root.op_bytes == {"aten::mm": [80, 24, 48], "aten::acos": [32, 32, 0]}
    assert (root.bytes_read, root.bytes_written, root.param_bytes_read) == (80 + 32, 24 + 32, 48)
    assert root.activations == 6 + 8
    assert root.op_elements == {"aten::mm": [8, 6]}  # first operand's elements, output elements


def test_a_bias_add_is_a_bias_whatever_path_produced_it():
    lin = nn.Linear(4, 3).to("meta")
    acc = Accumulator(lin, lambda *a: None)
    y = torch.empty(5, 3, device="meta")
    _report(acc, aten.add.Tensor, y, lin.bias)
    _report(acc, aten.add.Tensor, y, y)
    # 5 * 3 = 15 elements each: one add of the registered bias, one plain elementwise add
    assert dict(acc.accs[""].op_components["aten::add"]) == {"bias": 15, "elementwise": 15}


def test_the_dispatch_mode_keeps_no_count_of_its_own():
    lin = nn.Linear(4, 3).to("meta")
    acc = Accumulator(lin, lambda *a: None)
    mode = _CountingMode(acc)
    with acc.stack, mode:
        lin(torch.empty(2, 4, device="meta"))
    # beyond what every TorchDispatchMode holds, the mode holds the accumulator and nothing else
    assert set(vars(mode)) - set(vars(TorchDispatchMode())) == {"counter"}
    # the linear ran inside the module call "": addmm (2, 4) @ (4, 3) = 24 MACs + 2 * 3 = 6 bias adds
    assert dict(acc.accs[""].components) == {"macs": 24, "bias": 6}
    assert [r.index for r in acc.call_records[""]] == [0]
