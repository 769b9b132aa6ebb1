"""torchstat's convention against real torchstat runs: zero residual on every row and every
headline number (MAdd, Flops, params, memory, MemRead, MemWrite, MemR+W), and hand-worked amounts.

torchstat replaces ``__call__`` of leaf classes for the whole process, so every torchstat run here
goes through ``reconcile.runner`` (one throwaway process per model, all in one ``run_jobs`` call);
the native counts run in this process.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from torch import nn

from reconcile import models
from reconcile.counter import count
from reconcile.runner import Job, run_jobs
from tests import models_small
from tests.harness import assert_explained, explain
from tests.models_small import INPUTS, SMALL_MODELS

MIB = 2**20


# ----- models built in the runner's workers (by name, through ``build``) ---------------------------


class Twice(nn.Module):
    """A conv, a ReLU and a Linear called twice each, on a batch of 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64, 64)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        x = self.pool(self.relu(self.conv(x)))  # 2x4x8x8 -> 2x4x4x4
        x = self.relu(self.conv(x))  # again, on 2x4x4x4
        return self.head(self.fc(self.fc(x.flatten(1))))


class Zoo(nn.Module):
    """Layer types torchstat has a rule for in one metric and not another."""

    def __init__(self) -> None:
        super().__init__()
        self.convt = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2, bias=False)
        self.relu6 = nn.ReLU6()
        self.prelu = nn.PReLU(6)
        self.elu = nn.ELU()
        self.leaky = nn.LeakyReLU(0.1)
        self.avg = nn.AvgPool2d((2, 4))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.drop = nn.Dropout(0.5)
        self.bil = nn.Bilinear(8, 8, 2)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        x = self.leaky(self.elu(self.prelu(self.relu6(self.convt(x)))))  # 1x6x16x16
        x = self.drop(self.up(self.avg(x)))  # 1x6x8x4 -> 1x6x16x8
        z = x.flatten(1)[:, :8]
        return self.softmax(self.bil(z, z))


class Scale(nn.Module):
    """A leaf with a parameter whose work is functional (no torchstat rule)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, 4, 1, 1))

    def forward(self, x):
        return x * self.w


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.conv.requires_grad_(False)
        self.gamma = nn.Parameter(torch.ones(4, 1, 1))  # held by a non-leaf
        self.scale = Scale()

    def forward(self, x):
        return self.scale(self.conv(x) * self.gamma) + x[:, :1]


class Params(nn.Module):
    """Frozen, tied, non-leaf and never-run parameters; Conv1d and BatchNorm1d (no rule)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.seq = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.BatchNorm1d(4))
        self.fc = nn.Linear(256, 8)
        self.mix = nn.Linear(8, 8)
        self.out = nn.Linear(8, 8, bias=False)
        self.out.weight = self.mix.weight
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        y = self.seq(self.block(x).flatten(2))  # 1x4x64
        return self.out(self.mix(self.fc(y.flatten(1))))


class Big(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x)


EXTRA = {
    "twice": (Twice, (2, 4, 8, 8)),
    "zoo": (Zoo, (1, 4, 8, 8)),
    "params": (Params, (1, 3, 8, 8)),
    "big": (Big, (1, 1, 4097, 4097)),
}
TORCHVISION = {"resnet18": (1, 3, 224, 224), "vgg16": (1, 3, 224, 224)}


def build(name: str, device: str) -> nn.Module:
    """The runner's builder for every model of this file."""
    if name in EXTRA:
        torch.manual_seed(0)
        return EXTRA[name][0]().to(device).eval()
    if name in SMALL_MODELS:
        return models_small.build(name, device)
    return models.build(models.resolve(name), device=device)


def _shape(name: str) -> tuple[int, ...]:
    if name in EXTRA:
        return EXTRA[name][1]
    if name in INPUTS:
        return INPUTS[name][0]
    return TORCHVISION[name]


@pytest.fixture(scope="module")
def runs():
    """Every torchstat run of this file, in one ``run_jobs`` call (torch imported once)."""
    names = [*TORCHVISION, *SMALL_MODELS, *EXTRA]
    jobs = []
    for name in names:
        dtype, high = (INPUTS[name][1], INPUTS[name][2]) if name in INPUTS else ("float32", None)
        jobs.append(Job(name, "torchstat", _shape(name), dtype, high))
    results = run_jobs(jobs, build=f"{__name__}:build", timeout=300, workers=2)
    return dict(zip(names, results))


_NATIVE: dict = {}


def native(name: str):
    if name not in _NATIVE:
        if name in SMALL_MODELS:
            model, inputs = SMALL_MODELS[name]()
        else:
            model, inputs = build(name, "cpu"), (torch.zeros(_shape(name)),)
        _NATIVE[name] = count(model, inputs)
    return _NATIVE[name]


def explained(runs, name: str):
    run = runs[name]
    assert run.status == "ok", f"{run.error_type}: {run.error_message}"
    ex = explain("torchstat", run, native(name))
    assert_explained(ex)
    return ex


def rows(ex) -> dict:
    return {le.module: le for le in ex.layers}


def causes(ex, metric: str) -> dict:
    return {k: v for k, v in ex.summaries[metric].causes.items() if v}


# ----- every model -------------------------------------------------------------------------------

# torchstat's ModelStat asserts a 3-dim (C, H, W) input size, and its Linear rule a 2-D input
FAILS = {
    "repeated": "input (2, 32)", "attention": "input (2, 10, 32)", "recurrent": "input (2, 5, 8)",
    "tied": "input (2, 7)", "functional": "a Linear on a 1x8x16 input (compute_Linear_madd asserts 2-D)",
}


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_fully_explained(runs, name):
    run = runs[name]
    if name in FAILS:
        assert (run.status, run.error_type) == ("failed", "AssertionError")
        pytest.skip(f"torchstat fails on {name}: {FAILS[name]}")
    explained(runs, name)


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_extra_models_fully_explained(runs, name):
    explained(runs, name)


# resnet18 (1x3x224x224): native MACs 1,814,073,344. Conv outputs: conv1 64 * 112 * 112 = 802,816;
# layer1 4 * 200,704 = 802,816; layer2-4 five convs each (4 3x3 + 1 downsample) 5 * 100,352 = 501,760,
# 5 * 50,176 = 250,880, 5 * 25,088 = 125,440: 2,483,712, plus fc 1,000 outputs = 2,484,712 (k-1
# adds: one fewer add per output; no conv bias).
# BatchNorm 4 per element over the same 2,483,712 BN elements = 9,934,848 (Flops: 2 each, affine,
# 4,967,424). ReLU, last call per module: relu 802,816 + the 8 block relus (the 2nd call, same size
# as the 1st) 2 * (200,704 + 100,352 + 50,176 + 25,088) = 752,640 -> 1,555,456. maxpool 3x3 on
# 64x112x112 -> 64x56x56: MAdd 8 * 200,704 = 1,605,632, Flops 1 per input 802,816.
# MAdd: 2 * 1,814,073,344 - 2,484,712 + 9,934,848 + 1,555,456 + 1,605,632 = 3,638,757,912.
# Flops: 1,814,073,344 + 4,967,424 + 1,555,456 + 802,816 = 1,821,399,040.
# vgg16: native MACs 15,470,264,320; 13 convs with bias, outputs 2 * 3,211,264 + 2 * 1,605,632 +
# 3 * 802,816 + 3 * 401,408 + 3 * 100,352 = 13,547,520 (bias +1 and k-1 -1 cancel there); fc
# outputs 4,096 + 4,096 + 1,000 = 9,192 get -1 only: -13,556,712 in all. ReLU: the 13 conv outputs
# + 2 * 4,096 = 13,555,712. 5 max pools 2x2: 3 * (802,816 + 401,408 + 200,704 + 100,352 + 25,088) =
# 4,591,104 (Flops: inputs 3,211,264 + 1,605,632 + 802,816 + 401,408 + 100,352 = 6,121,472).
# MAdd: 2 * 15,470,264,320 - 13,556,712 + 13,547,520 + 13,555,712 + 4,591,104 = 30,958,666,264.
# Flops: 15,470,264,320 + 13,547,520 + 13,555,712 + 6,121,472 = 15,503,489,024.
@pytest.mark.parametrize("name, madd, madd_causes, flops, flops_causes", [
    ("resnet18", 3_638_757_912,
     {"mac_vs_flop": 1_814_073_344, "per_output_minus_one": -2_484_712, "norm": 9_934_848,
      "activation": 1_555_456, "pool": 1_605_632},
     1_821_399_040, {"norm": 4_967_424, "activation": 1_555_456, "pool": 802_816}),
    ("vgg16", 30_958_666_264,
     {"mac_vs_flop": 15_470_264_320, "per_output_minus_one": -13_556_712, "bias": 13_547_520,
      "activation": 13_555_712, "pool": 4_591_104},
     15_503_489_024, {"bias": 13_547_520, "activation": 13_555_712, "pool": 6_121_472}),
])
def test_torchvision_ops(runs, name, madd, madd_causes, flops, flops_causes):
    ex = explained(runs, name)
    assert ex.run.headline["Total MAdd"] == madd and ex.run.headline["Total Flops"] == flops
    assert causes(ex, "Total MAdd") == madd_causes
    assert causes(ex, "Total Flops") == flops_causes
    # every convention cause removed, the MACs are back; nothing torchstat misses is a MAC
    assert ex.summaries["Total MAdd"].normalized["macs"] == native(name).totals["macs"]


def test_resnet18_memory(runs):
    # The 8 block relus ran twice on equal sizes, 2 * (200,704 + 100,352 + 50,176 + 25,088) = 752,640
    # elements per call: torchstat keeps one call, 752,640 * 4 = 3,010,560 B of output dropped. The 8
    # residual add_ (in the blocks' own forward) write the same 3,010,560 B, in no row.
    ex = explained(runs, "resnet18")
    assert causes(ex, "Total memory (bytes)") == {"repeated_calls": -3_010_560, "functional_not_seen": -3_010_560}
    # Leaf outputs, last call, one sample: conv1, bn1, relu 3 * 802,816; maxpool 200,704; layer1 2 blocks
    # * 5 leaves * 200,704 = 2,007,040; layer2 (5 + 2 downsample + 5) * 100,352 = 1,204,224; layer3
    # 12 * 50,176 = 602,112; layer4 12 * 25,088 = 301,056; avgpool 512; fc 1,000: 6,725,096 elements
    # * 4 B = 26,900,384 B, printed as 26,900,384 / 2**20 = 25.65 MB
    assert ex.run.headline["Total memory (bytes)"] == 26_900_384 and round(Fraction(26_900_384, MIB), 2) == Fraction("25.65")
    # BatchNorm2d reads 2 x C statistics, not its 4 C tensors: C summed over the 20 BNs is
    # 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512 = 4,800, so 2 * 4,800 * 4 B = 38,400 B fewer.
    # avgpool (no rule) read 512 * 49 * 4 = 100,352 B and wrote 2,048; relus' first calls read and
    # wrote 3,010,560 B each; the adds read two operands (6,021,120 B) and wrote 3,010,560 B.
    assert causes(ex, "Total MemR+W(B)") == {"memory_model": -38_400, "unsupported_module": -102_400,
                                             "repeated_calls": -6_021_120, "functional_not_seen": -9_031_680}
    assert ex.run.headline["Total MemR+W(B)"] == 101_756_992
    # the total row's MemRead/MemWrite are fc's: (512 + 513,000) * 4 = 2,054,048 and 1,000 * 4 = 4,000
    assert (ex.run.headline["Total MemRead(B)"], ex.run.headline["Total MemWrite(B)"]) == (2_054_048, 4_000)
    rows_read = sum(le.raw.get("MemRead", 0) for le in ex.layers)
    assert ex.summaries["Total MemRead(B)"].causes["total_not_sum"] == 2_054_048 - rows_read


def test_vgg16_dropout_output_counted(runs):
    # Dropout in eval writes nothing, but torchstat's memory is the output size: 2 * 4,096 * 4 = 32,768 B
    ex = explained(runs, "vgg16")
    assert causes(ex, "Total memory (bytes)") == {"memory_model": 32_768}
    # Leaf outputs: 13 convs and their relus 2 * 13,547,520; 5 pools 1,530,368; avgpool 512 * 49 =
    # 25,088; classifier 6 * 4,096 + 1,000 = 25,576: 28,676,072 elements * 4 B = 114,704,288 B,
    # printed as 114,704,288 / 2**20 = 109.3906 -> "109.39"
    assert ex.run.headline["Total memory (bytes)"] == 114_704_288
    assert ex.run.headline["Total memory (MB)"] == "109.39"


# ----- hand-worked small models ------------------------------------------------------------------


def test_repeated_calls_per_sample(runs):
    # Twice on 2x4x8x8. conv (4->4, 3x3, bias) ran on 2x4x8x8 (512 outputs * 36 = 18,432 MACs), then on
    # 2x4x4x4 (128 outputs * 36 = 4,608 MACs): native 23,040. torchstat keeps the 2nd call, one sample:
    # 64 outputs * (2 * 36 - 1 + 1) = 4,608 MAdd.
    ex = explained(runs, "twice")
    conv = rows(ex)["conv"]
    assert conv.reference["MAdd"] == 23_040 and conv.raw["MAdd"] == 4_608
    assert {c.id: c.amount for c in conv.causes["MAdd"]} == {
        "repeated_calls": -18_432, "mac_vs_flop": 4_608, "per_output_minus_one": -128, "bias": 128,
        "per_sample": 4_608 - 9_216}
    (rep,) = [c for c in conv.causes["MAdd"] if c.id == "repeated_calls"]
    assert rep.flops == -(2 * 18_432 + 512)  # the dropped call's FLOPs: 2 per MAC + 512 bias adds
    # Flops: 36 * 16 positions * 4 + 4 * 16 bias = 2,368; MemRead (64 inputs + 148 params) * 4 = 848
    assert (conv.raw["Flops"], conv.raw["MemRead"], conv.raw["MemWrite"]) == (2_368, 848, 256)
    # relu: last call 1x4x4x4 = 64 elements
    assert (rows(ex)["relu"].raw["MAdd"], rows(ex)["relu"].raw["memory_bytes"]) == (64, 256)
    # fc (64 -> 64) twice: one sample, last call: 64 * (2 * 64 - 1) = 8,128 MAdd, 4,096 Flops
    assert (rows(ex)["fc"].raw["MAdd"], rows(ex)["fc"].raw["Flops"]) == (8_128, 4_096)
    # MAdd: conv 4,608 + relu 64 + pool 3 * 64 = 192 + fc 8,128 + head 3 * 127 = 381 -> 13,373
    assert ex.run.headline["Total MAdd"] == 13_373
    # memory_bytes of conv: model 4 B x (512 + 128) outputs = 2,560 B = native; keep the 2nd call,
    # 512 B, of one sample: 256 B
    assert {c.id: c.amount for c in conv.causes["memory_bytes"]} == {"repeated_calls": -2_048, "per_sample": -256}
    # the last row is head: (64 + 195) * 4 = 1,036 B read, 3 * 4 = 12 written
    assert (ex.run.headline["Total MemRead(B)"], ex.run.headline["Total MemWrite(B)"]) == (1_036, 12)


def test_rules_per_metric(runs):
    ex = explained(runs, "zoo")
    r = rows(ex)
    # ConvTranspose2d(4 -> 6, k2, s2, g2, no bias) on 1x4x8x8: MAdd (2 * 4 * 2 - 1) per input position
    # and output channel, 64 * 6 = 384 -> 15 * 384 = 5,760; MACs 256 inputs * 3 * 4 = 3,072. No Flops rule,
    # no memory rule.
    assert r["convt"].raw["MAdd"] == 5_760
    assert {c.id: c.amount for c in r["convt"].causes["MAdd"]} == {"mac_vs_flop": 3_072, "per_output_minus_one": -384}
    assert {c.id: c.amount for c in r["convt"].causes["Flops"]} == {"unsupported_module": -3_072}
    assert (r["convt"].raw["Flops"], r["convt"].raw["MemR+W"]) == (0, 0)
    # 1x6x16x16 = 1,536 elements: ReLU6 MAdd and Flops 1 each; PReLU, ELU, LeakyReLU Flops only
    assert [(r[m].raw["MAdd"], r[m].raw["Flops"]) for m in ("relu6", "prelu", "elu", "leaky")] == [
        (1_536, 1_536), (0, 1_536), (0, 1_536), (0, 1_536)]
    # PReLU reads its input and its 6 parameters: (1,536 + 6) * 4 = 6,168 B
    assert r["prelu"].raw["MemRead"] == 6_168
    # AvgPool2d((2, 4)) to 1x6x8x4 = 192 outputs: MAdd 8 per output = 1,536; Flops 1 per input = 1,536
    assert (r["avg"].raw["MAdd"], r["avg"].raw["Flops"]) == (1_536, 1_536)
    # Upsample x2 to 1x6x16x8: Flops batch * H * W = 16 * 8 = 128, the 6 channels left out; no MAdd rule
    assert (r["up"].raw["MAdd"], r["up"].raw["Flops"]) == (0, 128)
    assert {c.id: c.amount for c in r["up"].causes["Flops"]} == {"interpolate": 128}
    # Dropout: 768 outputs * 4 B = 3,072 B of "memory" where the forward wrote nothing
    assert {c.id: c.amount for c in r["drop"].causes["memory_bytes"]} == {"memory_model": 3_072}
    assert r["drop"].raw["memory"] == Fraction(3_072, MIB)
    # Bilinear(8, 8, 2): MAdd out * (2 * (8 * 8 + 8) - 1) = 2 * 143 = 286; Softmax over 2: 3 * 2 - 1 = 5.
    # (The native counter has no rule for aten::_trilinear, so Bilinear's MACs are 0 there and all of
    # torchstat's 144 multiplies are a "formula" term; not asserted, it moves when native learns it.)
    assert (r["bil"].raw["MAdd"], r["softmax"].raw["MAdd"]) == (286, 5)
    assert {c.id: c.amount for c in r["softmax"].causes["MAdd"]} == {"softmax": 5}


def test_params_and_outside_rows(runs):
    ex = explained(runs, "params")
    r = rows(ex)
    # torchstat: block.conv 108 (frozen, counted) + block.scale 4 + seq.0 52 + seq.1 8 + fc 2,056 +
    # mix 72 + out 64 (mix.weight again) = 2,364; native 2,324: + 64 tied, - 4 gamma (held by
    # block, a non-leaf), - 20 (unused never ran)
    assert ex.run.headline["Total params"] == 2_364 and native("params").totals["params"] == 2_324
    assert causes(ex, "Total params") == {"params_tied": 64, "params_missed": -24}
    assert r["out"].raw["params"] == 64 and r["unused"].raw["params"] == 0
    # frozen weights are left out of MemRead: block.conv reads its 3 * 64 input elements only: 768 B
    assert r["block.conv"].raw["MemRead"] == 768
    # Conv1d(4, 4, 3) on 1x4x64: no rule; its 4 * 64 * 12 = 3,072 MACs are not counted
    assert {c.id: c.amount for c in r["seq.0"].causes["MAdd"]} == {"unsupported_module": -3_072}
    # block's own forward: * gamma (256) and + x[:, :1] (256) elementwise, 512 FLOPs, no row
    block = r["block"]
    assert block.raw == {} and {c.id: (c.amount, c.flops) for c in block.causes["Flops"]} == {
        "functional_not_seen": (0, -512)}
    # the reporter's total MemRead/MemWrite are the last row's: unused, which never ran
    assert (ex.run.headline["Total MemRead(B)"], ex.run.headline["Total MemWrite(B)"]) == (0, 0)


def test_memory_is_a_float32_of_mib(runs):
    # ReLU on 1x1x4097x4097 = 16,785,409 = 2**24 + 8,193 elements; 4 B each is 16,785,409 / 2**18 MiB,
    # 25 significant bits: float32 keeps 24, and the tie goes to the even 16,785,408 / 2**18 = 64.03125
    ex = explained(runs, "big")
    relu = rows(ex)["relu"]
    assert relu.raw["memory"] == Fraction(16_785_408, 2**18) == Fraction("64.03125")
    assert [(c.id, c.amount) for c in relu.causes["memory"]] == [("memory_model", Fraction(-1, 2**18))]
    assert relu.raw["memory_bytes"] == 4 * 16_785_409


def test_prediction_needs_no_run():
    # the int32 storage of MemRead/MemWrite wraps: a ReLU on 1x1x20000x30000 = 6e8 elements reads
    # 2.4e9 B, stored as 2,400,000,000 - 2**32 = -1,894,967,296 (too big to run here; predicted only)
    from reconcile.conventions.torchstat import CONVENTION
    from reconcile.records import CallRecord, ModuleRow, NativeCount, TensorMeta

    n = 600_000_000
    t = TensorMeta((1, 1, 20_000, 30_000), "float32")
    relu = ModuleRow("relu", "ReLU", 1, 1, {"class": "torch.nn.modules.activation.ReLU", "bases": ()},
                     (CallRecord(0, 1, (t,), (t,), {"activation": n}),), {"activation": n}, n, {"aten::relu": 1},
                     {"aten::relu": {"activation": n}}, {}, {}, 0, 0, 0, 0, n, n, 4 * n, 4 * n)
    root = ModuleRow("", "Big", 0, 1, {"class": "tests.Big", "bases": ()},
                     (CallRecord(0, 0, (t,), (t,), {}),), {}, 0, {}, {}, {}, {}, 0, 0, 0, 0, n, 0, 0, 0)
    nat = NativeCount("big", ((1, 1, 20_000, 30_000),), ("float32",), "cpu", (root, relu), (), (), (), {}, {})
    (p,) = CONVENTION.predict(nat).layers
    assert p.predicted["MemRead"] == 2_400_000_000 - 2**32 == -1_894_967_296
    assert [t.cause for t in p.terms["MemRead"]] == ["memory_model"]


def test_rules_are_documented():
    from reconcile.conventions import get

    conv = get("torchstat")
    families = [r.family for r in conv.rules]
    assert "MAdd: Conv2d" in families and "totals" in families
    assert conv.metrics["Total MAdd"] == "MAdd" and conv.op_metrics == ("Total MAdd", "Total Flops")


def test_convention_imports_neither_torch_nor_torchstat():
    code = "import sys, reconcile.conventions.torchstat; print('torch' in sys.modules, 'torchstat' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.split() == ["False", "False"]
