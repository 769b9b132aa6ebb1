"""ptflops' conventions (pytorch backend as shipped, and the aten backend) against real ptflops
runs: zero residual on every row, the total-only record and the headline, and hand-worked amounts.
resnet18 and vgg16 are checked end to end by tests/test_reports.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.harness import assert_explained, explain_in_process
from tests.models_small import SMALL_MODELS


@pytest.mark.parametrize("tool", ["ptflops", "ptflops-aten"])
@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_fully_explained(tool, name):
    model, inputs = SMALL_MODELS[name]()
    assert_explained(explain_in_process(tool, model, inputs))


def test_repeated_module_per_sample_and_relu_counted_twice():
    # Repeated on 2x32: fc = Linear(32, 32) called twice, act = ReLU called twice, head = Linear(32, 10).
    # Native MACs: fc 2 calls * 2*32*32 = 4096, head 2*32*10 = 640 -> 4736.
    # ptflops rows (hook sums over calls, whole batch, then / batch 2):
    #   fc   (4096 + 2 calls * 2*32 bias adds = 128) / 2 = 2112
    #   act  2 calls * 64 elements = 128 / 2 = 64
    #   head (640 + 20 bias) / 2 = 330
    # ReLU.forward calls the patched F.relu: 128 more, whole batch, in the total only.
    # Total 2112 + 64 + 330 + 128 = 2634.
    model, inputs = SMALL_MODELS["repeated"]()
    ex = explain_in_process("ptflops", model, inputs)
    assert ex.raw_total == 2634
    assert {le.module: le.raw["macs"] for le in ex.layers if "macs" in le.raw} == {"fc": 2112, "act": 64, "head": 330}
    assert dict(ex.run.unattributed) == {"functional:F.relu": 128}
    # bias 128 + 20; activation 128 (the hook); per sample: -(4096 + 128 + 128 + 640 + 20) / 2 = -2506;
    # the F.relu's 128 again: double_count, of which 0 are MACs
    assert ex.causes == {"bias": 148, "activation": 128, "per_sample": -2506, "double_count": 128}
    # as MACs: 2634 - (148 + 128 - 2506) - 128 (double-counted ReLU, not a MAC) = 4736 = native
    assert ex.normalized["macs"] == 4736
    assert_explained(ex)


def test_functional_ops_counted_in_total_only():
    # Functional (1x3x4x4), all in the root's forward but conv/proj: F.relu on 1x8x4x4 = 128,
    # F.max_pool2d(y, 1) counts its input's 128 elements, torch.matmul 1x8x16 @ 1x16x8 = 1024 MACs,
    # F.interpolate to 1x8x8x8 = 512 outputs. Rows: conv 3456 + 128 bias = 3584, proj 2048 + 128 bias.
    model, inputs = SMALL_MODELS["functional"]()
    ex = explain_in_process("ptflops", model, inputs)
    assert dict(ex.run.unattributed) == {"functional:F.relu": 128, "functional:F.max_pool2d": 128,
                                         "tensor_op:matmul": 1024, "functional:F.interpolate": 512}
    assert ex.raw_total == 3584 + 2176 + 128 + 128 + 1024 + 512
    # the matmul's MACs leave the root's pseudo-row and come back in the total-only record: net 0
    assert ex.causes == {"bias": 256, "activation": 128, "pool": 128, "interpolate": 512, "functional_not_seen": 0}
    assert ex.normalized["macs"] == 3456 + 2048 + 1024
    assert_explained(ex)


class _PaddedMaxPool(nn.MaxPool2d):
    """timm's MaxPool2dSame in small: pads the input (1x1x4x4 -> 1x1x5x5) before F.max_pool2d."""

    def forward(self, x):
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=-float("inf")), self.kernel_size, self.stride)


def test_a_pool_subclass_is_counted_on_the_input_its_function_gets():
    # ptflops hooks exact types only, so the subclass is not hooked: its patched F.max_pool2d
    # counts the padded input, 5 x 5 = 25 elements (not the module's 16), in the total only
    ex = explain_in_process("ptflops", nn.Sequential(_PaddedMaxPool(3, 2)).eval(), (torch.randn(1, 1, 4, 4),))
    assert dict(ex.run.unattributed) == {"functional:F.max_pool2d": 25}
    assert ex.causes == {"pool": 25}
    assert_explained(ex)


def test_residual_add_in_parent_forward_is_not_seen():
    # y = conv(x) + x on 1x4x5x5: conv 4*25 * 4*9 = 3600 MACs + 100 bias; the add (100 FLOPs) runs
    # in the root's forward through no patched function: ptflops never sees it.
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(x) + x

    ex = explain_in_process("ptflops", Residual().eval(), (torch.randn(1, 4, 5, 5),))
    assert ex.raw_total == 3700
    # the add is a 0-MAC coverage gap: amount 0, with its 100 FLOPs missed
    assert ex.causes == {"bias": 100, "functional_not_seen": 0}
    assert ex.summaries["macs"].missed_flops == -100
    assert ex.normalized == {"macs": 3600, "flops": 2 * 3600 + 100}  # native FLOPs 7300 + 100 bias - 100 add
    assert_explained(ex)


def test_aten_backend_misses_lstm_and_counts_bias():
    # Recurrent on 2x5x8 (see models_small): LSTM(8, 16) runs as aten::_thnn_fused_lstm_cell /
    # mkldnn ops the aten backend has no rule for: its 2*5 * 4*16 * (8 + 16) = 15360 MACs are missed.
    # GRU(16, 12, 2 layers, bidirectional) runs addmm, counted with their bias: per step and
    # direction 3*12*(16+12) = 1008 MACs in layer 0, 3*12*(24+12) = 1296 in layer 1, x 2 dirs x 10
    # steps = 46080 MACs; bias adds 2 * 36 per step and direction x 2 x 10 x 2 layers = 2880;
    # fc Linear(24, 4) on 2 rows: 8 bias adds.
    model, inputs = SMALL_MODELS["recurrent"]()
    ex = explain_in_process("ptflops-aten", model, inputs)
    assert ex.causes == {"unsupported_op": -15360, "bias": 2888}
    assert ex.raw_total == ex.native_macs - 15360 + 2888
    assert_explained(ex)


def test_a_module_held_twice_by_one_parent_is_one_path():
    # One bias-free Conv2d 1->2 k3 on 1x1x4x4: 2 x 2 x 2 outputs x 9 = 72 MACs, registered as conv,
    # again (beside it: coat's ParallelBlock holds one Mlp as mlp2, mlp3 and mlp4) and block.conv.
    # accumulate_flops walks children(), which gives the root's conv once (not again as "again"),
    # and block's conv: 2 paths, 72 each: total 144. The second path's 72 is double_count.
    from tests.test_causes import _SharedConv

    ex = explain_in_process("ptflops", _SharedConv(), (torch.randn(1, 1, 4, 4),))
    assert ex.raw_total == 144
    assert ex.causes == {"double_count": 72}
    assert_explained(ex)
