"""The thop, ptflops (pytorch and aten backends) and fvcore adapters against counts worked out by
hand from each tool's own rules, and against the tools' totals on ResNet-18 and VGG-16.

Every expected number has its arithmetic beside it. Besides the numbers, each run must reconcile
exactly (rows + unattributed == the tool's total, in the way each adapter's docstring states),
print nothing, and leave the caller's model and the process's torch functions as they were.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reconcile.adapters.fvcore import FvcoreAdapter
from reconcile.adapters.ptflops import PtflopsAdapter, PtflopsAtenAdapter
from reconcile.adapters.thop import ThopAdapter

ADAPTERS = {"thop": ThopAdapter, "ptflops": PtflopsAdapter, "ptflops-aten": PtflopsAtenAdapter, "fvcore": FvcoreAdapter}
MAIN = {"thop": "ops", "ptflops": "macs", "ptflops-aten": "macs", "fvcore": "flops"}  # row metric
TOTAL = {"thop": "macs", "ptflops": "macs_exact", "ptflops-aten": "macs", "fvcore": "flops"}  # headline


# ----- small models ------------------------------------------------------------------------


class Net(nn.Module):
    """Conv with and without bias, BN, a ReLU called twice, pools, Linear, and functional /
    tensor ops in the root's own forward. Shapes: 1x3x32x32 -> conv 1x8x32x32 (8192 elements)
    -> pool 1x8x16x16 (2048) -> gap 1x8x1x1 -> 1x8 -> fc 1x4 -> matmul 1x2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)  # 8*3*9 + 8 = 224 params
        self.relu = nn.ReLU()
        self.conv_nb = nn.Conv2d(8, 8, 3, padding=1, bias=False)  # 8*8*9 = 576 params
        self.bn = nn.BatchNorm2d(8)  # 16 params
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)  # 8*4 + 4 = 36 params
        self.proj = nn.Parameter(torch.full((4, 2), 0.5))  # 8 params owned by the root

    def forward(self, x):
        x = self.relu(self.conv(x))
        x = self.relu(self.bn(self.conv_nb(x)))  # second call of the same ReLU
        x = F.relu(self.pool(x))  # functional op in the parent's forward
        x = self.gap(x).flatten(1)
        x = torch.add(x, x)
        return torch.matmul(self.fc(x), self.proj)


class Shared(nn.Module):
    """One bias-free Linear(4, 4) registered under two parents, so it runs twice."""

    def __init__(self) -> None:
        super().__init__()
        a = nn.Linear(4, 4, bias=False)  # 16 params
        self.add_module("0", nn.Sequential(a))
        self.add_module("1", nn.Sequential(a))

    def forward(self, x):
        return getattr(self, "1")(getattr(self, "0")(x))


class Two(nn.Module):
    """Two inputs, 3x4 each."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)  # 4*2 + 2 = 10 params

    def forward(self, a, b):
        return self.fc(torch.add(a, b))


CASES = {
    "net": (Net, [(1, 3, 32, 32)]),
    "linear_3d": (lambda: nn.Sequential(nn.Linear(64, 32)), [(1, 10, 64)]),  # 64*32 + 32 = 2080 params
    "linear_nobias_b4": (lambda: nn.Sequential(nn.Linear(64, 32, bias=False)), [(4, 64)]),  # 2048 params
    "relu": (nn.ReLU, [(1, 10)]),
    "shared": (Shared, [(1, 4)]),
    "two_inputs": (Two, [(3, 4), (3, 4)]),
}

# tool -> case -> (headline, rows {key: main row metric}, unattributed)
EXPECTED = {
    "thop": {
        # conv 8192*3*9 = 221184 (no bias); conv_nb 8192*8*9 = 589824; bn 4*8192 = 32768 (affine);
        # relu, maxpool 0; gap (16*16/1 + 1) * 8 = 2056; fc 8 * 4 = 32; F.relu, add, matmul unseen
        # total 221184 + 589824 + 32768 + 2056 + 32 = 845864; params 224 + 576 + 16 + 36 = 852
        # (the root's own proj is not counted: the root has no rule)
        "net": (
            {"macs": 845864, "params": 852},
            {"conv": 221184, "relu": 0, "conv_nb": 589824, "bn": 32768, "pool": 0, "gap": 2056, "fc": 32},
            {},
        ),
        # in 64 * N_out (1*10*32 = 320) = 20480, bias ignored
        "linear_3d": ({"macs": 20480, "params": 2080}, {"0": 20480}, {}),
        # 64 * (4*32 = 128) = 8192, whole batch
        "linear_nobias_b4": ({"macs": 8192, "params": 2048}, {"0": 8192}, {}),
        # the root is thop's only entry; ReLU is zero_ops; root params never counted
        "relu": ({"macs": 0, "params": 0}, {"": 0}, {}),
        # model.apply reaches the shared Linear through both parents, so thop hooks it twice:
        # each of its 2 calls adds 2 * 4*4, i.e. 2 * 2 * 16 = 64 ops; both paths report that: 128.
        # params are assigned, not added: 16 per path, 32
        "shared": ({"macs": 128, "params": 32}, {"0.0": 64, "1.0": 64}, {}),
        # 4 * (3*2 = 6) = 24
        "two_inputs": ({"macs": 24, "params": 10}, {"fc": 24}, {}),
    },
    "ptflops": {
        # modules (batch 1): conv 221184 + 8192 bias = 229376; relu 8192 + 8192 = 16384 (2 calls);
        # conv_nb 589824; bn 2 * 8192 = 16384; pool N_in 8192; gap N_in 2048; fc 8*4 + 4 = 36
        # -> 862244. functionals: F.relu 8192 + 8192 (inside nn.ReLU) + 2048 (parent) = 18432;
        # F.max_pool2d 8192; F.adaptive_avg_pool2d 2048; torch.add 8; torch.matmul 1*4 * 2 = 8
        # total 862244 + 18432 + 8192 + 2048 + 8 + 8 = 890932; params 852 + 8 (proj) = 860
        "net": (
            {"macs": 890932, "macs_exact": 890932, "params": 860, "batch_counter": 1},
            {"conv": 229376, "relu": 16384, "conv_nb": 589824, "bn": 16384, "pool": 8192, "gap": 2048, "fc": 36},
            {
                "functional:F.relu": 18432,
                "functional:F.max_pool2d": 8192,
                "functional:F.adaptive_avg_pool2d": 2048,
                "tensor_op:add": 8,
                "tensor_op:matmul": 8,
            },
        ),
        # (64*32 + 32) * (1*10) = 20800
        "linear_3d": ({"macs": 20800, "macs_exact": 20800, "params": 2080, "batch_counter": 1}, {"0": 20800}, {}),
        # 64*32 * 4 = 8192 for the batch, / 4 = 2048 per sample
        "linear_nobias_b4": ({"macs": 2048, "macs_exact": 2048, "params": 2048, "batch_counter": 4}, {"0": 2048}, {}),
        # hook N_out 10 + patched F.relu N_in 10 = 20
        "relu": ({"macs": 20, "macs_exact": 20, "params": 0, "batch_counter": 1}, {"": 10}, {"functional:F.relu": 10}),
        # __flops__ 2 calls * 16 = 32, reached through both parents: 64; params deduplicated 16
        "shared": ({"macs": 64, "macs_exact": 64, "params": 16, "batch_counter": 1}, {"0.0": 32, "1.0": 32}, {}),
        # keyword inputs: batch counted as 1; fc (4*2 + 2) * 3 = 30; torch.add 3*4 = 12; 42
        "two_inputs": (
            {"macs": 42, "macs_exact": 42, "params": 10, "batch_counter": 1},
            {"fc": 30},
            {"tensor_op:add": 12},
        ),
    },
    "ptflops-aten": {
        # only convolution/mm/addmm: conv 8*3*9 * 32*32 + 8192 bias = 229376; conv_nb 589824;
        # fc addmm 1*8*4 + 1*4 = 36; root matmul as aten.mm 1*4 * 2 = 8 ('Global' only)
        # total 229376 + 589824 + 36 + 8 = 819244; params 860
        "net": (
            {"macs": 819244, "params": 860},
            {"conv": 229376, "relu": 0, "conv_nb": 589824, "bn": 0, "pool": 0, "gap": 0, "fc": 36},
            {"Global:aten.mm": 8},
        ),
        # addmm on the flattened 10x64: 10*64*32 + 10*32 = 20800
        "linear_3d": ({"macs": 20800, "params": 2080}, {"0": 20800}, {}),
        # mm 4*64*32 = 8192, whole batch
        "linear_nobias_b4": ({"macs": 8192, "params": 2048}, {"0": 8192}, {}),
        # no mapped op, no children
        "relu": ({"macs": 0, "params": 0}, {}, {}),
        # each direct child runs the Linear once: 4*4 = 16 each
        "shared": ({"macs": 32, "params": 16}, {"0": 16, "1": 16}, {}),
        # addmm 3*4*2 + 3*2 = 30
        "two_inputs": ({"macs": 30, "params": 10}, {"fc": 30}, {}),
    },
    "fvcore": {
        # conv 221184; conv_nb 589824; bn eval 2 * 8192 = 16384; relu ignored; max_pool2d
        # unsupported; gap N_in 2048; fc linear 8*4 = 32; root matmul 1*4 * 2 = 8; add unsupported
        # total 221184 + 589824 + 16384 + 2048 + 32 + 8 = 829480
        # activations: conv outputs 8192 + 8192, fc 4, matmul 2 = 16390; params 860
        "net": (
            {
                "flops": 829480,
                "activations": 16390,
                "params": 860,
                "unsupported:aten::add": 1,
                "unsupported:aten::max_pool2d": 1,
            },
            {"": 829480, "conv": 221184, "relu": 0, "conv_nb": 589824, "bn": 16384, "pool": 0, "gap": 2048, "fc": 32},
            {},
        ),
        # prod(1x10x64) * 32 = 20480; activations 10*32 = 320
        "linear_3d": ({"flops": 20480, "activations": 320, "params": 2080}, {"": 20480, "0": 20480}, {}),
        # 4*64 * 32 = 8192; activations 4*32 = 128
        "linear_nobias_b4": ({"flops": 8192, "activations": 128, "params": 2048}, {"": 8192, "0": 8192}, {}),
        # relu is an ignored op
        "relu": ({"flops": 0, "activations": 0, "params": 0}, {"": 0}, {}),
        # 2 calls * 4*4 = 32, all charged to the canonical name 0.0 and its owners; "1" gets 0;
        # activations 2 * 4 = 8
        "shared": ({"flops": 32, "activations": 8, "params": 16}, {"": 32, "0": 32, "0.0": 32, "1": 0}, {}),
        # linear 3*4 * 2 = 24; activations 3*2 = 6; add unsupported
        "two_inputs": (
            {"flops": 24, "activations": 6, "params": 10, "unsupported:aten::add": 1},
            {"": 24, "fc": 24},
            {},
        ),
    },
}

# case -> {row key: calls}
CALLS = {
    "net": {"conv": 1, "relu": 2, "conv_nb": 1, "bn": 1, "fc": 1},
    "shared": {"0.0": 2},
}


def _build(case: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    factory, shapes = CASES[case]
    torch.manual_seed(0)
    return factory().eval(), tuple(torch.randn(s) for s in shapes)


def _rows(run) -> dict:
    metric = MAIN[run.tool]
    return {layer.key: layer.raw[metric] for layer in run.layers}


def _headline(run) -> dict:
    # fvcore's activation-analysis unsupported ops are checked on the big models only
    return {k: v for k, v in run.headline.items() if not k.startswith("unsupported_activations:")}


def _reconciled_total(run):
    """Rows plus unattributed, the way each adapter documents it."""
    if run.tool == "fvcore":
        root = next(layer for layer in run.layers if layer.key == "")
        return root.raw["flops"] + sum(run.unattributed.values())
    rows = (layer.raw[MAIN[run.tool]] for layer in run.layers if "shadowed" not in layer.raw)
    return sum(rows) + sum(run.unattributed.values())


def _fvcore_exclusive_sum(run) -> int:
    inclusive = {layer.key: layer.raw["flops"] for layer in run.layers}

    def parent(key: str) -> str | None:
        return None if key == "" else key.rpartition(".")[0]

    return sum(v - sum(w for k, w in inclusive.items() if parent(k) == key) for key, v in inclusive.items())


# ----- hand-counted small models ----------------------------------------------------------

SMALL = [(tool, case) for tool in ADAPTERS for case in CASES]


@pytest.mark.parametrize("tool,case", SMALL, ids=[f"{t}-{c}" for t, c in SMALL])
def test_small_model_counts(tool, case):
    model, inputs = _build(case)
    run = ADAPTERS[tool]().run(model, inputs)
    assert run.status == "ok", run.error_message
    headline, rows, unattributed = EXPECTED[tool][case]
    assert _headline(run) == headline
    assert _rows(run) == rows
    assert dict(run.unattributed) == unattributed
    assert _reconciled_total(run) == run.headline[TOTAL[tool]]
    for key, calls in CALLS.get(case, {}).items():
        if key in rows:
            assert [layer.calls for layer in run.layers if layer.key == key] == [calls]


def test_shared_module_rows_name_the_module_once():
    # ptflops: both paths of the shared Linear are rows of the module's first name, "0.0"
    model, inputs = _build("shared")
    run = ADAPTERS["ptflops"]().run(model, inputs)
    assert [(layer.module, layer.key, layer.calls) for layer in run.layers] == [("0.0", "0.0", 2), ("0.0", "1.0", 2)]


def test_thop_adds_a_shared_module_under_each_path():
    # thop's dfs_count adds the shared Linear under both parents: the first path is its name, the
    # other keeps its own ("1.0"), each with the module's calls and thop's whole count for it
    model, inputs = _build("shared")
    run = ADAPTERS["thop"]().run(model, inputs)
    assert [(layer.module, layer.key, layer.calls) for layer in run.layers] == [("0.0", "0.0", 2), ("1.0", "1.0", 2)]


def test_thop_row_params_sum_to_total():
    model, inputs = _build("net")
    run = ThopAdapter().run(model, inputs)
    params = {layer.key: layer.raw["params"] for layer in run.layers}
    assert params == {"conv": 224, "relu": 0, "conv_nb": 576, "bn": 16, "pool": 0, "gap": 0, "fc": 36}
    assert sum(params.values()) == run.headline["params"] == 852  # 224 + 576 + 16 + 36


def test_thop_root_with_a_rule_keeps_its_ops_but_not_its_params():
    # bare Conv2d(3, 8, 3) on 1x3x32x32: out 1x8x30x30 = 7200; 7200 * 3 * 9 = 194400;
    # thop's dfs_count starts the root's params at 0 (8*3*9 + 8 = 224 are not counted)
    run = ThopAdapter().run(nn.Conv2d(3, 8, 3).eval(), (torch.randn(1, 3, 32, 32),))
    assert run.headline == {"macs": 194400, "params": 0}
    assert [(layer.key, dict(layer.raw)) for layer in run.layers] == [("", {"ops": 194400, "params": 0})]


def test_thop_logged_warning_is_data():
    # thop's count_upsample logs through the root logger for modes it has no formula for
    run = ThopAdapter().run(nn.Upsample(scale_factor=2, mode="trilinear"), (torch.randn(1, 1, 2, 2, 2),))
    assert run.headline["macs"] == 0
    assert "mode trilinear is not implemented yet, take it a zero op" in run.warnings


def test_ptflops_per_sample_division_is_exact():
    # nn.Upsample(x2) on 5x1x2x2: the module hook counts output[0] only: 1*4*4 = 16, and
    # ptflops divides it by the batch: 16/5; the patched F.interpolate counts the whole batch:
    # 5*1*2*2 * 2**2 = 80 and is not divided. exact 16/5 + 80 = 416/5; ptflops returns int(83.2) = 83
    run = PtflopsAdapter().run(nn.Upsample(scale_factor=2).eval(), (torch.randn(5, 1, 2, 2),))
    assert run.headline == {"macs": 83, "macs_exact": Fraction(416, 5), "params": 0, "batch_counter": 5}
    assert [(layer.key, dict(layer.raw)) for layer in run.layers] == [
        ("", {"macs": Fraction(16, 5), "__flops__": 16, "params": 0})
    ]
    assert dict(run.unattributed) == {"functional:F.interpolate": 80}
    assert _reconciled_total(run) == run.headline["macs_exact"]


def test_ptflops_keyword_inputs_are_noted_and_its_batch_warning_kept():
    model, inputs = _build("two_inputs")
    run = PtflopsAdapter().run(model, inputs)
    assert any("keywords" in note for note in run.notes)
    assert any("No positional inputs found" in w for w in run.warnings)


def test_fvcore_unsupported_ops_are_data_per_module():
    model, inputs = _build("net")
    run = FvcoreAdapter().run(model, inputs)
    raw = {layer.key: dict(layer.raw) for layer in run.layers}
    assert raw["pool"]["unsupported:aten::max_pool2d"] == 1
    assert raw[""]["unsupported:aten::add"] == 1  # torch.add ran in the root's own forward
    assert "unsupported:aten::add" not in raw["fc"]
    assert "FlopCountAnalysis: Unsupported operator aten::add encountered 1 time(s)" in run.warnings
    assert _fvcore_exclusive_sum(run) == run.headline["flops"]


@pytest.mark.parametrize("tool", ["ptflops", "ptflops-aten"])
def test_ptflops_failure_is_a_failed_run(tool):
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    run = ADAPTERS[tool]().run(Broken(), (torch.randn(1, 2),))
    assert (run.status, run.error_type) == ("failed", "PtflopsReturnedNone")
    assert "ValueError" in run.error_message and "boom" in run.error_message


# ----- the caller's model and process are left alone ---------------------------------------


def _model_state(model: nn.Module) -> dict:
    return {
        name: (
            type(m).__name__,
            m.training,
            sorted(vars(m)),  # instance attributes: no __batch_counter__, accumulate_params, extra_repr, ...
            sorted(m._buffers),  # no total_ops / total_params
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
        )
        for name, m in model.named_modules()
    }


def _global_state() -> dict:
    from ptflops import pytorch_ops

    return {
        "functional": {n: getattr(F, n) for n in dir(F) if not n.startswith("__")},  # not __warningregistry__
        "torch": {n: getattr(torch, n) for n in ("matmul", "mm", "bmm", "addmm", "baddbmm", "mul", "add")},
        "tensor": {n: vars(torch.Tensor).get(n) for n in ("matmul", "mm", "bmm", "addmm", "mul", "add")},
        "ptflops_functional": dict(pytorch_ops.FUNCTIONAL_MAPPING),
        "ptflops_tensor": dict(pytorch_ops.TENSOR_OPS_MAPPING),
        "ptflops_custom": dict(pytorch_ops.CUSTOM_MODULES_MAPPING),
    }


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("tool", list(ADAPTERS))
def test_model_and_process_unchanged(tool, training):
    model, inputs = _build("net")
    model.train(training)
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    before, globals_before = _model_state(model), _global_state()
    run = ADAPTERS[tool]().run(model, inputs)
    assert run.status == "ok", run.error_message
    assert _model_state(model) == before
    assert model.state_dict().keys() == state_dict.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state_dict.items())  # BN stats untouched
    assert _global_state() == globals_before


# ----- ResNet-18 and VGG-16 ------------------------------------------------------------------


def _torchvision(name: str) -> nn.Module:
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.fill_(0.01)  # counts depend on shapes only
    return model.eval()


@contextlib.contextmanager
def _terminal_capture():
    """Everything written to the real file descriptors 1 and 2, to sys.stdout/sys.stderr, or
    logged up to the root logger (where a CLI's handler would print it)."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    sink = tempfile.TemporaryFile(mode="w+b")
    text = io.StringIO()
    root_handler = logging.StreamHandler(text)
    out: list[str] = []
    try:
        for fd in (1, 2):
            os.dup2(sink.fileno(), fd)
        logging.getLogger().addHandler(root_handler)
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            yield out
    finally:
        logging.getLogger().removeHandler(root_handler)
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        sink.seek(0)
        out.append(sink.read().decode(errors="replace") + text.getvalue())
        sink.close()


@pytest.fixture(scope="module")
def big_runs():
    """Each tool once on each model; what reached the terminal meanwhile, per run."""
    runs, leaked = {}, {}
    for name in ("resnet18", "vgg16"):
        model = _torchvision(name)
        inputs = (torch.randn(1, 3, 224, 224),)
        for tool, adapter in ADAPTERS.items():
            before = _model_state(model)
            with _terminal_capture() as out:
                runs[name, tool] = adapter().run(model, inputs)
            leaked[name, tool] = out[0]
            assert _model_state(model) == before
    return runs, leaked


BIG_TOTALS = {
    ("resnet18", "thop"): {"macs": 1824033792, "params": 11689512},
    ("resnet18", "ptflops"): {"macs": 1825313768, "macs_exact": 1825313768, "params": 11689512, "batch_counter": 1},
    ("resnet18", "ptflops-aten"): {"macs": 1814074344, "params": 11689512},
    ("resnet18", "fvcore"): {
        "flops": 1819065856,
        "activations": 2484712,
        "params": 11689512,
        "unsupported:aten::add_": 8,
        "unsupported:aten::max_pool2d": 1,
    },
    ("vgg16", "thop"): {"macs": 15470314496, "params": 138357544},
    ("vgg16", "ptflops"): {"macs": 15523225576, "macs_exact": 15523225576, "params": 138357544, "batch_counter": 1},
    ("vgg16", "ptflops-aten"): {"macs": 15483821032, "params": 138357544},
    ("vgg16", "fvcore"): {
        "flops": 15470289408,
        "activations": 13556712,
        "params": 138357544,
        "unsupported:aten::max_pool2d": 5,
    },
}


@pytest.mark.parametrize("key", list(BIG_TOTALS), ids=[f"{m}-{t}" for m, t in BIG_TOTALS])
def test_big_model_totals_and_reconciliation(big_runs, key):
    run = big_runs[0][key]
    assert run.status == "ok", run.error_message
    assert _headline(run) == BIG_TOTALS[key]
    assert _reconciled_total(run) == run.headline[TOTAL[run.tool]]
    assert big_runs[1][key] == ""  # nothing reached the terminal


@pytest.mark.parametrize("model", ["resnet18", "vgg16"])
def test_ptflops_functional_double_count(big_runs, model):
    # ReLU elements: ResNet-18 2,308,096 (17 calls of 9 modules), VGG-16 13,555,712;
    # MaxPool input 802,816 / 6,121,472 (5 pools); AdaptiveAvgPool input 512*7*7 = 25,088
    expected = {
        "resnet18": {
            "functional:F.relu": 2308096,
            "functional:F.max_pool2d": 802816,
            "functional:F.adaptive_avg_pool2d": 25088,
        },
        "vgg16": {
            "functional:F.relu": 13555712,
            "functional:F.max_pool2d": 6121472,
            "functional:F.adaptive_avg_pool2d": 25088,
        },
    }[model]
    assert dict(big_runs[0][model, "ptflops"].unattributed) == expected


def test_resnet18_block_relu_calls_and_fvcore_residual_add(big_runs):
    runs = big_runs[0]
    thop_rows = {layer.key: layer for layer in runs["resnet18", "thop"].layers}
    assert thop_rows["layer1.0.relu"].calls == 2 and thop_rows["relu"].calls == 1
    fv = {layer.key: layer.raw for layer in runs["resnet18", "fvcore"].layers}
    assert fv["layer1.0"]["unsupported:aten::add_"] == 1  # the residual add runs in BasicBlock.forward
    assert _fvcore_exclusive_sum(runs["resnet18", "fvcore"]) == 1819065856
    aten = {layer.key: layer.raw["macs"] for layer in runs["resnet18", "ptflops-aten"].layers}
    # direct children only; fc addmm 512*1000 + 1000 = 513000
    assert aten["fc"] == 513000 and set(aten) == {"conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                                  "layer4", "avgpool", "fc"}


# ----- a fresh process: import-time noise is captured too ----------------------------------


def test_fresh_process_prints_nothing():
    code = (
        "import torch\n"
        "from torch import nn\n"
        "from reconcile.adapters.thop import ThopAdapter\n"
        "from reconcile.adapters.ptflops import PtflopsAdapter, PtflopsAtenAdapter\n"
        "from reconcile.adapters.fvcore import FvcoreAdapter\n"
        "m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)).eval()\n"
        "x = torch.randn(1, 3, 8, 8)\n"
        "runs = [A().run(m, (x,)) for A in (ThopAdapter, PtflopsAdapter, PtflopsAtenAdapter, FvcoreAdapter)]\n"
        "assert all(r.status == 'ok' for r in runs), [r.error_message for r in runs]\n"
        "assert any(w.startswith('import: ') for w in runs[3].warnings)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
