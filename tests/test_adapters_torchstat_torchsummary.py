"""The torchstat and torchsummary adapters against hand-worked small models and the published
ResNet-18 / VGG-16 figures (reference map §13, re-checked by running the tools).

The adapters run in this process here. torchsummary only adds hooks to its own copy; torchstat
patches leaf classes' ``__call__``, which its adapter restores, and that is checked below.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torchvision
from torch import nn

from reconcile.adapters.torchstat import TorchstatAdapter
from reconcile.adapters.torchsummary import TorchsummaryAdapter

MIB = 2**20


def constant_model(name: str) -> nn.Module:
    """A torchvision model without random init: built on meta, every tensor set to 0.01 / 0."""
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.fill_(0.01) if t.is_floating_point() else t.zero_()
    return model.eval()


class Tiny(nn.Module):
    """conv -> bn -> relu -> pool -> relu (same module again) -> fc, on 1x3x32x32."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.relu(x), 1))


class Linear3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 2))  # (1, 3, 4, 4) -> (1, 3, 16): a 3-D Linear input


class Lstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


@pytest.fixture(scope="module")
def tiny_input() -> tuple[torch.Tensor]:
    return (torch.rand(1, 3, 32, 32),)


# ----- torchstat -------------------------------------------------------------------------------


def test_torchstat_tiny_by_hand(tiny_input):
    run = TorchstatAdapter().run(Tiny().eval(), tiny_input)
    assert run.status == "ok", run.error_message
    rows = {layer.module: dict(layer.raw) for layer in run.layers}
    assert [layer.module for layer in run.layers] == ["conv", "bn", "relu", "pool", "fc"]
    # conv 3->8, k3, no bias, 8x32x32 = 8192 outputs: MAdd (2*27 - 1) * 8192, Flops 27 * 8192
    assert rows["conv"]["MAdd"] == 53 * 8192 == 434_176
    assert rows["conv"]["Flops"] == 27 * 8192 == 221_184
    assert rows["conv"]["MemRead"] == (3 * 32 * 32 + 216) * 4 == 13_152  # input + 216 weights
    # bn: MAdd 4 * 8192; Flops 2 * 8192 (affine); reads input + 2 * C
    assert (rows["bn"]["MAdd"], rows["bn"]["Flops"], rows["bn"]["MemRead"]) == (32_768, 16_384, (8192 + 16) * 4)
    # relu ran twice (8192, then 2048 elements); torchstat keeps the last call only
    assert (rows["relu"]["MAdd"], rows["relu"]["Flops"], rows["relu"]["memory_bytes"]) == (2048, 2048, 2048 * 4)
    assert {layer.module: layer.calls for layer in run.layers}["relu"] == 2
    # maxpool k2 on 8x32x32: MAdd (4 - 1) * 2048 outputs, Flops = 8192 inputs
    assert (rows["pool"]["MAdd"], rows["pool"]["Flops"]) == (6144, 8192)
    # fc 2048 -> 10: MAdd 10 * (2 * 2048 - 1) (no bias); Flops 2048 * 10
    assert (rows["fc"]["MAdd"], rows["fc"]["Flops"], rows["fc"]["params"]) == (40_950, 20_480, 20_490)
    assert (rows["fc"]["MemRead"], rows["fc"]["MemWrite"]) == ((2048 + 20_490) * 4, 40)
    assert rows["conv"]["memory"] == Fraction(8192 * 4, MIB)

    h = run.headline
    assert h["Total params"] == 216 + 16 + 20_490 == 20_722
    assert h["Total MAdd"] == 434_176 + 32_768 + 2048 + 6144 + 40_950 == 516_086
    assert h["Total Flops"] == 221_184 + 16_384 + 2048 + 8192 + 20_480 == 268_288
    assert h["Total memory (bytes)"] == (8192 + 8192 + 2048 + 2048 + 10) * 4 == 81_960
    assert h["Total memory (MB)"] == "0.08"  # 81960 / 2**20 = 0.0782
    # MemR+W: conv 45920 + bn 65600 + relu 16384 + pool 40960 + fc 90192
    assert h["Total MemR+W(B)"] == 259_056
    # the reporter's total MemRead/MemWrite cells are the last row's (fc) values
    assert (h["Total MemRead(B)"], h["Total MemWrite(B)"]) == (90_152, 40)
    assert any("relu (2 calls)" in note for note in run.notes)


@pytest.mark.parametrize(
    "name, madd, flops, params, memory_mb, memrw, unsupported",
    [
        ("resnet18", 3_638_757_912, 1_821_399_040, 11_689_512, "25.65", 101_756_992, {"AdaptiveAvgPool2d"}),
        ("vgg16", 30_958_666_264, 15_503_489_024, 138_357_544, "109.39", 783_170_624, {"AdaptiveAvgPool2d", "Dropout"}),
    ],
)
def test_torchstat_published_totals(name, madd, flops, params, memory_mb, memrw, unsupported):
    model = constant_model(name)
    keys_before = list(model.state_dict())
    run = TorchstatAdapter().run(model, (torch.rand(1, 3, 224, 224),))
    assert run.status == "ok", run.error_message
    h = run.headline
    assert (h["Total MAdd"], h["Total Flops"], h["Total params"]) == (madd, flops, params)
    assert (h["Total memory (MB)"], h["Total MemR+W(B)"]) == (memory_mb, memrw)
    assert Fraction(h["Total memory (bytes)"], MIB).__round__(2) == Fraction(memory_mb)

    # rows sum to the totals (on the data); MemRead/MemWrite totals are the last row's
    for key, total in (("MAdd", madd), ("Flops", flops), ("params", params), ("MemR+W", memrw)):
        assert sum(layer.raw[key] for layer in run.layers) == total
    assert sum(layer.raw["memory_bytes"] for layer in run.layers) == h["Total memory (bytes)"]
    last = run.layers[-1].raw
    assert (h["Total MemRead(B)"], h["Total MemWrite(B)"]) == (last["MemRead"], last["MemWrite"])

    # rows are the leaves, under their named_modules() names
    leaves = [n for n, m in model.named_modules() if not list(m.children())]
    assert [layer.module for layer in run.layers] == leaves
    printed = {w.split("]: ")[1].split(" is not")[0] for w in run.warnings if "is not supported" in w}
    assert printed == unsupported
    # the caller's model and classes are as they were
    assert list(model.state_dict()) == keys_before
    assert "__call__" not in vars(nn.Conv2d) and "__call__" not in vars(nn.ReLU)


def test_torchstat_resnet18_shared_relu_keeps_last_call():
    run = TorchstatAdapter().run(constant_model("resnet18"), (torch.rand(1, 3, 224, 224),))
    relu = {layer.module: layer for layer in run.layers}["layer1.0.relu"]
    # called on bn1's and on the residual sum's output, both 64x56x56 = 200704 elements: one kept
    assert (relu.calls, relu.raw["MAdd"], relu.raw["Flops"]) == (2, 200_704, 200_704)


def test_torchstat_linear_on_3d_input_fails():
    run = TorchstatAdapter().run(Linear3d().eval(), (torch.rand(1, 3, 4, 4),))
    assert (run.status, run.error_type) == ("failed", "AssertionError")
    # compute_Linear_madd's bare assert, said in plain words
    assert run.error_message == ("torchstat needs 2-D Linear inputs: this model feeds a 3-D tensor to fc "
                                 "(AssertionError: assert len(inp.size()) == 2 and len(out.size()) == 2 "
                                 "at torchstat/compute_madd.py:117)")
    assert run.attempted == "torchstat.statistics.ModelStat(model, (3, 4, 4))._analyze_model()"
    assert "__call__" not in vars(nn.Linear)  # restored after the failure too


def test_torchstat_rejects_two_inputs():
    run = TorchstatAdapter().run(Tiny().eval(), (torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)))
    assert (run.status, run.error_type) == ("failed", "ValueError")


# ----- torchsummary ----------------------------------------------------------------------------


@pytest.mark.parametrize("frozen_conv", [False, True])
def test_torchsummary_tiny_by_hand(tiny_input, frozen_conv):
    model = Tiny().eval()
    model.conv.weight.requires_grad_(not frozen_conv)
    run = TorchsummaryAdapter().run(model, tiny_input)
    assert run.status == "ok", run.error_message
    # one row per call, post-order; relu's two calls get two rows
    assert [(layer.key, layer.module, layer.call) for layer in run.layers] == [
        ("Conv2d-1", "conv", 0),
        ("BatchNorm2d-2", "bn", 0),
        ("ReLU-3", "relu", 0),
        ("MaxPool2d-4", "pool", 0),
        ("ReLU-5", "relu", 1),
        ("Linear-6", "fc", 0),
    ]
    assert [layer.raw["nb_params"] for layer in run.layers] == [216, 16, 0, 0, 0, 20_490]
    # outputs per sample, signed as torchsummary multiplies them (batch -1)
    assert [layer.raw["output_prod"] for layer in run.layers] == [-8192, -8192, -8192, -2048, -2048, -10]
    h = run.headline
    trainable = 20_722 - 216 if frozen_conv else 20_722
    counts = (h["Total params"], h["Trainable params"], h["Non-trainable params"])
    assert counts == (20_722, trainable, 20_722 - trainable)
    assert h["Input size (bytes)"] == 3 * 32 * 32 * 4 == 12_288
    assert h["Forward/backward pass size (bytes)"] == 2 * 4 * 28_682 == 229_456  # 28682 = sum of outputs
    assert h["Params size (bytes)"] == 20_722 * 4 == 82_888
    assert h["Estimated Total Size (bytes)"] == 12_288 + 229_456 + 82_888
    printed = (h["Input size (MB)"], h["Forward/backward pass size (MB)"], h["Params size (MB)"])
    assert printed == ("0.01", "0.22", "0.08")
    assert h["Estimated Total Size (MB)"] == "0.31"  # 324632 / 2**20 = 0.3096
    assert not model.training and all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(
    "name, params, rows, input_mb, pass_mb, params_mb",
    [
        ("resnet18", 11_689_512, 68, "0.57", "62.79", "44.59"),
        ("vgg16", 138_357_544, 39, "0.57", "218.78", "527.79"),
    ],
)
def test_torchsummary_published_totals(name, params, rows, input_mb, pass_mb, params_mb):
    model = constant_model(name)
    run = TorchsummaryAdapter().run(model, (torch.rand(1, 3, 224, 224),))
    assert run.status == "ok", run.error_message
    h = run.headline
    assert h["Total params"] == params == sum(layer.raw["nb_params"] for layer in run.layers)
    assert h["Trainable params"] == sum(r.raw["nb_params"] for r in run.layers if r.raw.get("trainable") == 1)
    printed = (h["Input size (MB)"], h["Forward/backward pass size (MB)"], h["Params size (MB)"])
    assert printed == (input_mb, pass_mb, params_mb)
    assert h["Forward/backward pass size (bytes)"] == abs(8 * sum(layer.raw["output_prod"] for layer in run.layers))
    for label in ("Input size", "Forward/backward pass size", "Params size", "Estimated Total Size"):
        assert round(Fraction(h[f"{label} (bytes)"], MIB), 2) == Fraction(h[f"{label} (MB)"])
    assert len(run.layers) == rows
    names = dict(model.named_modules())
    assert all(type(names[layer.module]).__name__ == layer.key.rsplit("-", 1)[0] for layer in run.layers)
    assert all(not m._forward_hooks for m in model.modules())


def test_torchsummary_lstm_fails():
    run = TorchsummaryAdapter().run(Lstm().eval(), (torch.rand(1, 5, 8),))
    assert (run.status, run.error_type) == ("failed", "AttributeError")
    assert run.error_message == ("torchsummary needs every layer to return a tensor or a flat tuple of tensors: "
                                 "LSTM lstm returns a tuple where a tensor should be "
                                 "(AttributeError: 'tuple' object has no attribute 'size')")
    assert run.attempted == 'torchsummary.summary(model, (5, 8), batch_size=-1, device="cpu")'
    import torchsummary.torchsummary as ts
    from collections import OrderedDict

    assert ts.OrderedDict is OrderedDict  # the recording stand-in is gone after a failure
