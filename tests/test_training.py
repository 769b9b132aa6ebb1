"""Training counts (``count(..., training=True)``): forward plus backward per module, by hand.

Every expected number has its arithmetic beside it. Conventions: a conv or matmul gradient costs
one MAC per product of the forward it differentiates; norm backward costs are in
``formulas.py`` (batch norm with batch statistics: input 4, weight 4, bias 1 per element).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from reconcile import ReconcileError, count
from reconcile.records import GRAD_PARTS


def _meta(model: nn.Module) -> nn.Module:
    return model.to("meta")


def _x(*shape, grad: bool = False) -> torch.Tensor:
    return torch.empty(*shape, device="meta").requires_grad_(grad)


def _bwd(native, name: str = "") -> dict:
    return {op: {p: dict(c) for p, c in parts.items()} for op, parts in native.row(name).backward.op_components.items()}


@pytest.mark.parametrize("input_grad", [False, True])
def test_depthwise_conv(input_grad):
    m = _meta(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False))
    r = count(m, (_x(1, 16, 32, 32, grad=input_grad),), training=True)
    # forward: 16 * 32 * 32 outputs * (16 / 16 = 1 input channel) * 9 taps = 147456
    assert r.totals["macs"] == 147456
    # weight gradient: every forward product x*w is one MAC of dL/dw: 147456 (torch's
    # FlopCounterMode counts 5,013,504 FLOPs for the whole backward here: its weight-gradient
    # formula leaves out groups)
    expected = {"weight": {"macs": 147456}}
    if input_grad:  # the input gradient likewise one MAC per forward product: 147456
        expected["input"] = {"macs": 147456}
    assert _bwd(r) == {"aten::convolution_backward": expected}
    assert r.training.totals["backward_macs"] == 147456 * (2 if input_grad else 1)


def test_conv_with_bias_and_input_gradient():
    m = _meta(nn.Conv2d(3, 8, 3, padding=1))
    r = count(m, (_x(2, 3, 8, 8, grad=True),), training=True)
    # forward: 2 * 8 * 8 * 8 = 1024 outputs * 3 * 9 = 27648 MACs, 1024 bias adds
    assert r.components == {"macs": 27648, "bias": 1024}
    # input and weight gradients 27648 MACs each; bias gradient sums the 1024 gradient elements
    assert _bwd(r) == {"aten::convolution_backward": {
        "input": {"macs": 27648}, "weight": {"macs": 27648, "reduction": 1024}}}


def test_linear_gradients_split_into_input_and_weight():
    m = _meta(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3)))
    r = count(m, (_x(5, 8),), training=True)
    # first Linear: the input needs no gradient, so only dW = dY^T X: 5 * 8 * 4 = 160 MACs and
    # db = sum over the batch: 5 * 4 = 20 additions
    assert _bwd(r, "0") == {"aten::mm": {"weight": {"macs": 160}}, "aten::sum": {"weight": {"reduction": 20}}}
    # ReLU: one select per element, 5 * 4 = 20
    assert _bwd(r, "1") == {"aten::threshold_backward": {"input": {"activation": 20}}}
    # second Linear: dX = dY W: 5 * 3 * 4 = 60; dW = dY^T X: 60; db: 5 * 3 = 15
    assert _bwd(r, "2") == {"aten::mm": {"input": {"macs": 60}, "weight": {"macs": 60}},
                            "aten::sum": {"weight": {"reduction": 15}}}
    t = r.training.totals
    # forward 5 * 8 * 4 + 5 * 4 * 3 = 220; backward 160 + 60 + 60 = 280
    assert (t["forward_macs"], t["backward_macs"], t["training_macs"]) == (220, 280, 500)
    assert (t["backward_macs_input"], t["backward_macs_weight"]) == (60, 220)


@pytest.mark.parametrize("mode, input_per_element", [("train", 4), ("eval", 1)])
def test_batch_norm(mode, input_per_element):
    m = _meta(nn.BatchNorm2d(4))
    r = count(m, (_x(2, 4, 3, 3, grad=True),), training=True, mode=mode)
    n = 2 * 4 * 3 * 3  # 72 elements
    # input: 4 per element with batch statistics (the reductions are the weight and bias
    # gradients'), 1 per element with running statistics; weight sum(dy * x_hat): 4 per element;
    # bias sum(dy): 1 per element
    assert _bwd(r) == {"aten::native_batch_norm_backward": {
        "input": {"norm": input_per_element * n}, "weight": {"norm": 4 * n + n}}}


def test_frozen_parameters_and_no_grad_regions_cost_nothing():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)
            self.c = nn.Linear(8, 2)

        def forward(self, x):
            with torch.no_grad():
                x = self.a(x)
            return self.c(self.b(x))

    m = _meta(Net())
    m.b.weight.requires_grad_(False)
    m.b.bias.requires_grad_(False)
    r = count(m, (_x(2, 8),), training=True)
    assert _bwd(r, "a") == {} and _bwd(r, "b") == {}  # no_grad; frozen with nothing before it to train
    # c: dX = 2 * 2 * 8 = 32 would flow into b, whose parameters are frozen and whose input came
    # from a no_grad region: no edge, so not computed; dW = 2 * 8 * 2 = 32 MACs; db = 2 * 2 = 4
    assert _bwd(r, "c") == {"aten::mm": {"weight": {"macs": 32}}, "aten::sum": {"weight": {"reduction": 4}}}
    assert not m.b.weight.requires_grad and m.c.weight.requires_grad  # flags as found
    assert all(p.grad is None for p in m.parameters())  # no gradients left behind


def test_gradient_accumulation_of_a_tensor_used_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            h = self.lin(x)
            return h + h.relu()

    r = count(_meta(Twice()), (_x(2, 4),), training=True)
    # h feeds the add and the relu: the engine adds the two gradients of h, 2 * 4 = 8 elements
    assert r.training.parts["accumulate"] == {"elementwise": 8}


def _resnet18():
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        return tv.models.resnet18()


@pytest.mark.parametrize("batch", [1, 2])
def test_resnet18_training_macs(batch):
    r = count(_resnet18(), (_x(batch, 3, 224, 224),), training=True)
    t = r.training.totals
    # forward 1,814,073,344 MACs per image (torchvision's table: 1.81 GMACs); backward twice the
    # forward less conv1's input gradient, which nothing needs: conv1 forward is
    # 112 * 112 * 64 outputs * 3 * 49 = 118,013,952, so backward 3,628,146,688 - 118,013,952 =
    # 3,510,132,736 and the total 5,324,206,080 (= torch FlopCounterMode's 10,648,412,160 / 2)
    assert t["forward_macs"] == 1_814_073_344 * batch
    assert t["backward_macs"] == 3_510_132_736 * batch
    assert t["training_macs"] == 5_324_206_080 * batch
    # input gradients: the forward less conv1 = 1,814,073,344 - 118,013,952 = 1,696,059,392
    assert t["backward_macs_input"] == 1_696_059_392 * batch
    assert t["backward_macs_weight"] == 1_814_073_344 * batch
    assert t["backward_unknown_ops"] == 0
    # fc: dX = 512 * 1000 = 512,000 MACs, dW 512,000, db sums 1000 elements per image
    assert _bwd(r, "fc") == {"aten::mm": {"input": {"macs": 512_000 * batch}, "weight": {"macs": 512_000 * batch}},
                             "aten::sum": {"weight": {"reduction": 1000 * batch}}}


def test_forward_columns_unchanged_by_training():
    m = _resnet18()
    plain = count(m, (_x(1, 3, 224, 224),), mode="train")
    trained = count(m, (_x(1, 3, 224, 224),), training=True)
    assert plain.training is None and all(r.backward is None for r in plain.rows)
    assert trained.totals == plain.totals
    # the only forward difference: autograd detaches the output of an in-place ReLU to save it for
    # the backward (a zero-cost view, one per in-place relu_: 1 + 8 blocks * 2 = 17)
    detaches = 0
    for t, p in zip(trained.rows, plain.rows):
        zero = dict(t.zero_cost_ops)
        extra = zero.pop("aten::detach", 0) - p.zero_cost_ops.get("aten::detach", 0)
        detaches += extra
        assert dataclasses.replace(t, backward=None, zero_cost_ops=p.zero_cost_ops) == p
        assert zero == {k: v for k, v in p.zero_cost_ops.items() if k != "aten::detach"}
    assert detaches == 17
    assert set(trained.training.parts) == set(GRAD_PARTS)


def test_nothing_to_backpropagate_is_a_user_error():
    m = _meta(nn.Linear(4, 2)).requires_grad_(False)
    with pytest.raises(ReconcileError, match="nothing to backpropagate"):
        count(m, (_x(1, 4),), training=True)


def test_cli_count_training(capsys):
    import json

    from reconcile.cli import main

    assert main(["count", "resnet18", "--training", "--format", "json", "--depth", "1"]) == 0
    obj = json.loads(capsys.readouterr().out)
    # --training counts in train mode: 5,324,206,080 MACs as above
    assert obj["training"]["totals"]["training_macs"] == 5_324_206_080
    conv1 = next(m for m in obj["modules"] if m["module"] == "conv1")
    # conv1: weight gradient only, 118,013,952 MACs (112 * 112 * 64 * 3 * 49)
    assert conv1["backward"]["op_components"] == {"aten::convolution_backward": {"weight": {"macs": 118_013_952}}}
    assert main(["count", "resnet18", "--depth", "0"]) == 0
    assert "training" not in capsys.readouterr().out  # without --training: the forward table only
