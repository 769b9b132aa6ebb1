"""The torchinfo adapter against hand-worked small models and the published ResNet-18 / VGG-16
figures (reference map section 13, and torchinfo itself run on them): its numbers to the unit,
rows keyed by module name and call, rows summing to the totals, and the caller's model and
process left as they were.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from reconcile.adapters.torchinfo import TorchinfoAdapter
from tests.models_small import Fn

HEADER = 64  # sys.getsizeof(storage) - storage bytes, per input tensor (CPython 3.11, torch 2.14.1)


def constant_model(name: str) -> nn.Module:
    """A torchvision model without random init: built on meta, every tensor set to 0.01."""
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.fill_(0.01)
    return model.eval()


class Tiny(nn.Module):
    """conv -> bn -> relu -> pool -> relu (the same module again) -> fc, on 1x3x32x32."""

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


def test_tiny_by_hand():
    run = TorchinfoAdapter().run(Tiny().eval(), (torch.rand(1, 3, 32, 32),))
    assert run.status == "ok", run.error_message
    assert [(layer.module, layer.call) for layer in run.layers] == [
        ("", 0), ("conv", 0), ("bn", 0), ("relu", 0), ("pool", 0), ("relu", 1), ("fc", 0)]
    rows = {(layer.module, layer.call): dict(layer.raw) for layer in run.layers}
    # conv: weight 8*3*9 = 216 x prod([batch 1] + [32, 32]) = 221,184; output 8*32*32 float32 = 32,768 B, x2
    assert rows["conv", 0] == {"macs": 221_184, "params": 216, "trainable_params": 216, "param_bytes": 864,
                               "pass_bytes": 65_536}
    # bn: output_size[0] 1 x (weight 8 + bias 8) = 16
    assert rows["bn", 0] == {"macs": 16, "params": 16, "trainable_params": 16, "param_bytes": 64, "pass_bytes": 65_536}
    # relu has no parameters: no pass size; its second call is recursive, so its parameters (none) count once
    assert rows["relu", 0] == rows["relu", 1] == {"macs": 0, "params": 0, "trainable_params": 0, "param_bytes": 0}
    # fc: output_size[0] 1 x (2048*10 + 10) = 20,490; output 10 float32 = 40 B, x2
    assert rows["fc", 0] == {"macs": 20_490, "params": 20_490, "trainable_params": 20_490, "param_bytes": 81_960,
                             "pass_bytes": 80}
    # the root owns nothing itself: leftover 20,722 - (216 + 16 + 20,490) = 0
    assert rows["", 0] == {"params": 0, "trainable_params": 0}
    assert {layer.module: layer.calls for layer in run.layers}["relu"] == 2

    h = run.headline
    assert h["Total mult-adds"] == 221_184 + 16 + 20_490 == 241_690
    assert (h["Total params"], h["Trainable params"], h["Non-trainable params"]) == (20_722, 20_722, 0)
    assert h["Input size (bytes)"] == 3 * 32 * 32 * 4 + HEADER == 12_352
    assert h["Forward/backward pass size (bytes)"] == 65_536 + 65_536 + 80 == 131_152
    assert h["Params size (bytes)"] == 20_722 * 4 == 82_888
    assert h["Estimated Total Size (bytes)"] == 12_352 + 131_152 + 82_888 == 226_392
    # printed as MB = 1e6 bytes, two decimals
    assert (h["Input size (MB)"], h["Forward/backward pass size (MB)"], h["Params size (MB)"],
            h["Estimated Total Size (MB)"]) == ("0.01", "0.13", "0.08", "0.23")
    assert run.attempted == 'torchinfo.summary(model, input_data=x, mode="eval", device="cpu", verbose=0)'


@pytest.mark.parametrize("name, macs, params, pass_bytes", [
    # resnet18: conv MACs 1,813,561,344 + fc 512,000 (= native 1,814,073,344) + BatchNorm 1 x 2 x 4,800
    # channels = 9,600 + fc bias 1,000; pass size 2 x 4 B x (2,483,712 conv + 2,483,712 BN outputs + 1,000 fc)
    ("resnet18", 1_814_073_344 + 9_600 + 1_000, 11_689_512, 8 * (2 * 2_483_712 + 1_000)),
    # vgg16: native 15,470,264,320 + conv biases (one per output: 13,547,520) + fc biases 4,096 + 4,096 + 1,000;
    # pass size 2 x 4 B x (13,547,520 conv outputs + 9,192 fc outputs)
    ("vgg16", 15_470_264_320 + 13_547_520 + 9_192, 138_357_544, 8 * (13_547_520 + 9_192)),
])
def test_published_totals(name, macs, params, pass_bytes):
    run = TorchinfoAdapter().run(constant_model(name), (torch.zeros(1, 3, 224, 224),))
    assert run.status == "ok", run.error_message
    h = run.headline
    # issue 12 (measured with torchinfo 1.8.0): 1,814,083,944 and 15,483,821,032
    assert h["Total mult-adds"] == macs == {"resnet18": 1_814_083_944, "vgg16": 15_483_821_032}[name]
    assert (h["Total params"], h["Trainable params"]) == (params, params)
    assert h["Forward/backward pass size (bytes)"] == pass_bytes
    assert h["Params size (bytes)"] == 4 * params
    assert h["Input size (bytes)"] == 3 * 224 * 224 * 4 + HEADER == 602_176
    # the reference map's figures: 39.75 / 46.76 MB and 108.45 / 553.43 MB
    assert (h["Forward/backward pass size (MB)"], h["Params size (MB)"]) == {
        "resnet18": ("39.75", "46.76"), "vgg16": ("108.45", "553.43")}[name]
    # rows add up to the totals, on the data
    for key, raw in (("Total mult-adds", "macs"), ("Total params", "params"),
                     ("Forward/backward pass size (bytes)", "pass_bytes"), ("Params size (bytes)", "param_bytes")):
        assert sum(layer.raw.get(raw, 0) for layer in run.layers) == h[key]


class Interleaved(nn.Module):
    """A container that is never called, holding a parameter and two Linears called from the root
    with another module in between: torchinfo inserts the container's record twice (the same
    object, so recursive at both places) and the root's leftover picks up its parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.group = nn.Module()
        self.group.w = nn.Parameter(torch.zeros(3))
        self.group.a = nn.Linear(2, 2)
        self.group.b = nn.Linear(2, 2)
        self.other = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.b(self.other(self.group.a(x))) + self.group.w[:2]


def test_inserted_containers_and_recursive_records():
    run = TorchinfoAdapter().run(Interleaved().eval(), (torch.zeros(1, 2),))
    assert run.status == "ok", run.error_message
    assert [(layer.module, layer.call, layer.calls) for layer in run.layers] == [
        ("", 0, 1), ("group", 0, 0), ("group.a", 0, 1), ("other", 0, 1), ("group", 1, 0), ("group.b", 0, 1)]
    rows = {(layer.module, layer.call): layer.raw for layer in run.layers}
    # each Linear(2, 2): 4 + 2 = 6 parameters; both group records are recursive: 0
    assert rows["group", 0]["params"] == rows["group", 1]["params"] == 0
    # root leftover: 3 + 3 x 6 = 21 held, minus the three Linears' 18: group.w's 3 land here
    assert rows["", 0]["params"] == 3
    assert run.headline["Total params"] == 21
    # Params size adds up leaf records only: 18 x 4 B
    assert run.headline["Params size (bytes)"] == 72
    assert any("inserted by torchinfo" in note and "group" in note for note in run.notes)


class Keywords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, y: torch.Tensor | None = None):
        return self.fc(x) + y


def test_none_between_inputs_goes_by_keyword():
    run = TorchinfoAdapter().run(Keywords().eval(), (torch.zeros(2, 4), None, torch.zeros(2, 2)))
    assert run.status == "ok", run.error_message
    assert run.attempted.startswith("torchinfo.summary(model, input_data={'x': ..., 'y': ...}")
    # two input tensors: (2*4 + 2*2) * 4 B + 2 headers
    assert run.headline["Input size (bytes)"] == 48 + 2 * HEADER
    assert any("dict of keywords ['x', 'y']" in note for note in run.notes)


def test_a_failing_forward_is_a_failed_run_naming_the_module():
    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    model = nn.Sequential(nn.Linear(2, 2), Boom()).eval()
    run = TorchinfoAdapter().run(model, (torch.zeros(1, 2),))
    assert (run.status, run.error_type) == ("failed", "ValueError")
    assert run.error_message == "torchinfo failed in Boom 1 (ValueError: boom)"


def test_a_layer_returning_what_torchinfo_cannot_size_is_named():
    class Odd(nn.Module):
        def forward(self, x):
            return object()  # torchinfo's forward hook sizes every output: a TypeError there

    model = Fn(lambda self, x: (self.odd(x), self.fc(x))[1], fc=nn.Linear(2, 2), odd=Odd())
    run = TorchinfoAdapter().run(model.eval(), (torch.zeros(1, 2),))
    assert (run.status, run.error_type) == ("failed", "TypeError")
    assert run.error_message.startswith("torchinfo failed in Odd odd (TypeError: Model contains a layer with an "
                                        "unsupported input or output type")


def _state(model: nn.Module) -> dict:
    return {name: (m.training, sorted(vars(m)), len(m._forward_hooks), len(m._forward_pre_hooks))
            for name, m in model.named_modules()}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_model_and_process_unchanged(training):
    from torchinfo import torchinfo as ti

    model = Tiny().train(training)
    model.bn.eval()  # a mixed-mode model: summary() would set one mode on every submodule on the way out
    params = {k: v.clone() for k, v in model.state_dict().items()}
    before = _state(model)
    run = TorchinfoAdapter().run(model, (torch.rand(2, 3, 32, 32),))
    assert run.status == "ok", run.error_message
    assert run.attempted.endswith(f'mode="{"train" if training else "eval"}", device="cpu", verbose=0)')
    assert _state(model) == before
    assert all(torch.equal(model.state_dict()[k], v) for k, v in params.items())  # BN statistics too
    assert ti._cached_forward_pass == {}  # summary() caches the records (and the model) by class name


def test_fresh_process_prints_nothing():
    code = (
        "import torch\n"
        "from torch import nn\n"
        "from reconcile.adapters.torchinfo import TorchinfoAdapter\n"
        "m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)).eval()\n"
        "run = TorchinfoAdapter().run(m, (torch.randn(1, 3, 8, 8),))\n"
        "assert run.status == 'ok', run.error_message\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
