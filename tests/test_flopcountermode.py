"""torch's FlopCounterMode (FCM) as a tool: the adapter reports what FCM computed, re-keyed to
``named_modules()`` names; the convention predicts every row and op from the native count.
Every expected number is worked out by hand below (FCM: 2 FLOPs per multiply-accumulate)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

from reconcile import conventions
from reconcile.adapters.flopcountermode import FlopCounterModeAdapter, fcm_keys
from reconcile.report.sentences import sentence
from tests.harness import assert_explained, explain, explain_in_process
from tests.models_small import SMALL_MODELS, BiasedAttention, LookupAttention, OneKvHead, ThreeDimAttention

TOOL = "flopcountermode"


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_fully_explained(name):
    model, inputs = SMALL_MODELS[name]()
    assert_explained(explain_in_process(TOOL, model, inputs))


def test_repeated_module_sums_its_calls_under_one_name():
    model, inputs = SMALL_MODELS["repeated"]()  # fc (32->32) twice, head (32->10) once, batch 2
    run = FlopCounterModeAdapter().run(model, inputs)
    rows = {layer.module: layer for layer in run.layers}
    # fc: 2 calls x 2 FLOPs x (2 x 32 x 32) MACs = 8,192; head: 2 x (2 x 32 x 10) = 1,280
    assert (rows["fc"].key, rows["fc"].calls, rows["fc"].raw) == ("Repeated.fc", 2, {"flops": 8192, "aten.addmm": 8192})
    assert rows["head"].raw == {"flops": 1280, "aten.addmm": 1280}
    assert rows[""].key == "Repeated" and rows[""].raw["flops"] == 8192 + 1280
    assert run.headline == {"flops": 9472, "aten.addmm": 9472} and not run.unattributed
    assert "act" not in rows  # a ReLU runs no op with a formula: FCM keeps no row for it


def test_depthwise_conv_forward():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)).eval()
    ex = explain_in_process(TOOL, model, (torch.randn(1, 16, 32, 32),))
    # 2 FLOPs x 32 x 32 outputs per channel x 9 taps x 16 channels x (16/16 inputs per group)
    assert ex.raw_total == 2 * 32 * 32 * 9 * 16 * 1 == 294_912
    assert dict(ex.causes) == {"mac_vs_flop": 147_456}  # the MACs again: 294,912 - 147,456
    assert_explained(ex)


def test_bias_is_not_counted():
    model = nn.Sequential(nn.Linear(8, 4)).eval()  # addmm: the bias is the added tensor
    run = FlopCounterModeAdapter().run(model, (torch.randn(3, 8),))
    assert run.headline["flops"] == 2 * 3 * 8 * 4 == 192  # no 3 x 4 bias adds


@pytest.mark.parametrize("learned, flops, missed", [
    # constant mask: CPU runs one fused kernel with no formula: 0, and the 1 x 2 heads x 4 x 4
    # scores x (8 + 8) = 512 MACs of the two products are named as missed
    (False, 0, -512),
    # a mask that requires grad sends CPU down the math path: two bmm, 2 x 512 = 1,024
    (True, 1024, 0),
])
def test_attention_fused_on_cpu_has_no_formula(learned, flops, missed):
    model = nn.Sequential(BiasedAttention(learned)).eval()
    ex = explain_in_process(TOOL, model, (torch.randn(1, 2, 4, 8),))
    assert ex.raw_total == flops
    assert ex.causes.get("unsupported_op", 0) == missed
    assert_explained(ex)


@pytest.mark.parametrize("tool", [TOOL, "ptflops-aten"])
@pytest.mark.parametrize("model, flops, missed", [
    # the mask's own bmm (128 MACs) is counted beside a fused attention call: 2 x 128 = 256 FLOPs
    # (ptflops-aten: 128 MACs), the call's 512 MACs run fused (no formula)
    (lambda: LookupAttention(learned=False), 256, -512),
    # a learned table: the math path, its two bmm counted too: 2 x (128 + 512) = 1,280 FLOPs
    (lambda: LookupAttention(learned=True), 1280, 0),
    # one k and v head broadcast to 4: fused on CPU, its 1,024 MACs under no formula
    (OneKvHead, 0, -1024),
    # 3-D q, k, v and mask: fused on CPU too, its 512 MACs under no formula
    (ThreeDimAttention, 0, -512),
], ids=["lookup-fused", "lookup-math", "one-kv-head", "three-dim"])
def test_a_bmm_beside_attention_and_one_kv_head(tool, model, flops, missed):
    x = torch.randn(1, 2 if model is not OneKvHead else 4, 4, 8)
    ex = explain_in_process(tool, nn.Sequential(model()).eval(), (x,))
    assert ex.raw_total == (flops if tool == TOOL else flops // 2)
    assert ex.causes.get("unsupported_op", 0) == missed
    assert_explained(ex)


def test_lstm_is_one_fused_cpu_op_with_no_formula():
    model, inputs = SMALL_MODELS["recurrent"]()
    ex = explain_in_process(TOOL, model, inputs)
    lstm = next(le for le in ex.layers if le.module == "lstm")
    # LSTM(8, 16) on 2 x 5 steps: 4 gates x 16 x (8 inputs + 16 hidden) x 10 = 15,360 MACs, all missed
    assert [(c.id, c.amount) for c in lstm.causes["flops"]] == [("unsupported_op", -15_360)]
    assert "mkldnn_rnn_layer" in sentence(lstm.causes["flops"][0])
    assert lstm.raw == {}  # no formula op ran in it: FCM has no row


class _Wrap(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.m = inner

    def forward(self, x):
        return self.m(x)


class _Shared(nn.Module):
    """One Linear reachable as x.m and y.m, called once by each."""

    def __init__(self) -> None:
        super().__init__()
        inner = nn.Linear(4, 4, bias=False)
        self.x, self.y = _Wrap(inner), _Wrap(nn.Sequential(inner))

    def forward(self, v):
        return self.y(self.x(v))


def test_fcm_names_reproduce_the_module_tracker_and_land_on_canonical_names():
    model = _Shared().eval()
    keys = fcm_keys(model)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, depth=None) as counter:
        model(torch.randn(1, 4))
    tracker_names = {id(m): n for m, n in counter.mod_tracker._known_modules.items()}
    assert {id(m): n for n, m in keys.items()} == tracker_names
    # the Linear is walked first as x.m, then renamed y.m.0 when y is walked (the last path wins)
    assert keys["_Shared.y.m.0"] is model.x.m and "_Shared.x.m" not in keys
    run = FlopCounterModeAdapter().run(model, (torch.randn(1, 4),))
    rows = {layer.module: layer for layer in run.layers}
    # named_modules() calls it x.m (first path): its two calls, 2 x 2 x (1 x 4 x 4) = 64 FLOPs
    assert (rows["x.m"].key, rows["x.m"].calls, rows["x.m"].raw["flops"]) == ("_Shared.y.m.0", 2, 64)
    assert rows["x"].raw["flops"] == rows["y"].raw["flops"] == 32  # each caller holds its own call


def test_a_shared_module_is_held_by_the_caller_of_each_call():
    from reconcile.conventions.common import Tree
    from reconcile.conventions.flopcountermode import callers
    from reconcile.counter import count

    model, inputs = _Shared().eval(), (torch.randn(1, 4),)
    native = count(model, inputs)
    # x.m's weight is also y.m.0.weight: its first call runs inside x, its second inside y.m, each
    # 1 x 4 x 4 = 16 MACs, so each path holds half
    assert dict(callers(native, Tree(native))) == {"x.m": (("x.m", Fraction(1, 2)), ("y.m.0", Fraction(1, 2)))}
    ex = explain_in_process(TOOL, model, inputs)
    assert {le.module: le.predicted["flops"] for le in ex.layers} == {"": 64, "x": 32, "x.m": 64, "y": 32, "y.m": 32}
    assert_explained(ex)


class _Pos(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4, bias=False)

    def forward(self, x):
        return self.proj(x)


class _CoatBlock(nn.Module):
    def __init__(self, cpe: nn.Module) -> None:
        super().__init__()
        self.cpe = cpe
        self.fc = nn.Linear(4, 4, bias=False)

    def forward(self, x):
        return self.fc(self.cpe(x))


class _CoatLike(nn.Module):
    """timm's coat in small: the position encoder ``cpe`` (a container) is registered at the root
    and in ``block`` (``block.cpe``); block calls it inside, and the root calls it itself after
    block has returned and ``act`` has run."""

    def __init__(self) -> None:
        super().__init__()
        self.cpe = _Pos()
        self.block = _CoatBlock(self.cpe)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.cpe(self.act(self.block(x)))


def test_a_shared_container_is_held_by_the_caller_still_running():
    from reconcile.conventions.common import Tree
    from reconcile.conventions.flopcountermode import callers
    from reconcile.counter import count

    model, inputs = _CoatLike().eval(), (torch.randn(1, 4),)
    native = count(model, inputs)
    # cpe.proj's weight is also block.cpe.proj.weight. Its first call runs inside block (cpe, the
    # shared container on its way, says nothing of the caller); its second after block returned
    # (act ran between): the root's. 1 x 4 x 4 = 16 MACs each, so each path holds half
    assert {name: dict(shares) for name, shares in callers(native, Tree(native)).items()} == {
        "cpe.proj": {"block.cpe.proj": Fraction(1, 2), "cpe.proj": Fraction(1, 2)}}
    # FCM, 2 x 16 = 32 FLOPs a call: cpe.proj and cpe (the tracker's name for block.cpe too) both
    # calls, 64; block its cpe call and fc, 64; block.fc 32; the root all three calls, 96
    rows = {layer.module: layer.raw["flops"] for layer in FlopCounterModeAdapter().run(model, inputs).layers}
    assert rows == {"": 96, "cpe": 64, "cpe.proj": 64, "block": 64, "block.fc": 32}
    ex = explain_in_process(TOOL, model, inputs)
    assert {le.module: le.predicted["flops"] for le in ex.layers} == rows
    assert_explained(ex)


def test_convention_is_data_and_imports_no_torch():
    conv = conventions.get(TOOL)
    assert (conv.unit, conv.macs_per_unit) == ("FLOPs", Fraction(1, 2))  # one FLOP is half a MAC
    assert any(r.family == "aten.convolution_backward" for r in conv.rules)
    import subprocess
    import sys

    code = ("import sys, reconcile.conventions.flopcountermode as m; "
            "m.CONVENTION.rules; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_model_and_process_unchanged(training):
    from torch.nn.modules import module as nn_module

    model, inputs = SMALL_MODELS["conv_variety"]()  # has a BatchNorm: train mode would update its statistics
    model.train(training)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = (len(nn_module._global_forward_hooks), len(nn_module._global_forward_pre_hooks))
    run = FlopCounterModeAdapter().run(model, inputs)
    assert run.status == "ok", run.error_message
    assert all(m.training == training for m in model.modules())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())
    assert (len(nn_module._global_forward_hooks), len(nn_module._global_forward_pre_hooks)) == hooks
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# ----- training: forward + backward (--training) -------------------------------------------------


def _train_explained(model, inputs):
    run, ex, _ = _train(model, inputs)
    return run, ex


def _train(model, inputs):
    from reconcile.adapters.flopcountermode import FlopCounterModeTrainingAdapter
    from reconcile.counter import count

    run = FlopCounterModeTrainingAdapter().run(model, tuple(inputs))
    assert run.status == "ok", run.error_message
    native = count(model, tuple(inputs), training=True)
    return run, explain(TOOL, run, native), native


def test_grouped_conv_weight_gradient_formula():
    from torch.utils.flop_counter import conv_backward_flop

    from reconcile.conventions.flopcountermode import conv_weight_grad_flops

    # Conv2d(16, 16, 3, padding=1, groups=16) on 1x16x32x32: the weight gradient is the forward's
    # 32 x 32 x 9 x 16 x (16/16) = 147,456 MACs. FCM computes it as conv(t(x), t(grad_out)) with
    # t(x) = [16, 1, 32, 32] (batch 16 = all input channels), t(grad_out) = [16, 1, 32, 32] (16
    # output channels of 1 input channel, a 32x32 "kernel") and t(grad_w) = [1, 16, 3, 3]
    # (3x3 outputs): 2 x 3 x 3 x 32 x 32 x 16 x 16 x 1 = 4,718,592 = 2 x 16 groups x 147,456
    assert conv_weight_grad_flops(147_456, 16) == 2 * 3 * 3 * 32 * 32 * 16 * 16 * 1 == 4_718_592
    fcm = conv_backward_flop([1, 16, 32, 32], [1, 16, 32, 32], [16, 1, 3, 3], None, [1, 1], [1, 1], [1, 1], False,
                             [0, 0], 16, [False, True, False], out_val=[None, [16, 1, 3, 3], None])
    assert fcm == 4_718_592  # torch's own formula agrees with the reading above
    assert conv_weight_grad_flops(147_456, 1) == 2 * 147_456  # dense: exact, 2 per MAC


@pytest.mark.parametrize("input_grad, backward", [
    # the input needs no gradient: weight gradient only, 2 x 16 x 147,456 = 4,718,592
    (False, 4_718_592),
    # the input requires grad (the case): + the exact input gradient 2 x 147,456 = 294,912
    (True, 4_718_592 + 294_912),
])
def test_depthwise_conv_training(input_grad, backward):
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)).train()
    x = torch.randn(1, 16, 32, 32, requires_grad=input_grad)
    run, ex = _train_explained(model, (x,))
    assert run.headline["forward_flops"] == 294_912  # 2 x 147,456
    assert run.headline["backward_flops"] == backward == 5_013_504 - (0 if input_grad else 294_912)
    # the exact backward is 147,456 (weight) [+ 147,456 (input)] MACs, 2 FLOPs each; FCM's
    # weight gradient is 16 x too large: 2 x 15 x 147,456 = 4,423,680 FLOPs of groups_ignored
    assert dict(ex.causes) == {"mac_vs_flop": 147_456 * (3 if input_grad else 2), "groups_ignored": 4_423_680}
    assert_explained(ex)


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_training_explained(name):
    model, inputs = SMALL_MODELS[name]()
    assert_explained(_train_explained(model.train(), inputs)[1])


def _torchvision_train(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)().train()


def test_mobilenet_v3_small_training_explained_per_layer():
    run, ex = _train_explained(_torchvision_train("mobilenet_v3_small"), (torch.randn(1, 3, 224, 224),))
    # the figures: 3,902,718,720 FLOPs for a 113,020,800 forward
    assert (run.headline["flops"], run.headline["forward_flops"]) == (3_902_718_720, 113_020_800)
    # = 2 x 164,112,192 exact training MACs + 3,574,494,336 of grouped weight gradients
    assert dict(ex.causes) == {"mac_vs_flop": 164_112_192, "groups_ignored": 3_574_494_336}
    assert_explained(ex)
    row = next(le for le in ex.layers if le.module == "features.11.block.1.0")
    # its depthwise 5x5 conv, 576 channels, 7x7 out: 49 x 576 x 25 = 705,600 MACs forward, the same
    # for each gradient; FCM: 2 x 705,600 (input) + 2 x 576 x 705,600 (weight) = 814,262,400
    assert (row.raw["forward_flops"], row.raw["backward_flops"]) == (1_411_200, 814_262_400)
    assert [c.amount for c in row.causes["flops"] if c.id == "groups_ignored"] == [2 * 575 * 705_600]


def test_resnet18_training_and_the_tracker_holding_a_downsample_open():
    run, ex, native = _train(_torchvision_train("resnet18"), (torch.randn(1, 3, 224, 224),))
    # 2 x 5,324,206,080 native training MACs (FCM is exact on dense convs and linears)
    assert run.headline["flops"] == 10_648_412_160 == 2 * 5_324_206_080
    assert dict(ex.causes) == {"mac_vs_flop": 5_324_206_080}
    # as MACs and FLOPs: the training count's, since FCM saw every MAC (forward and backward)
    assert dict(ex.normalized) == {"macs": 5_324_206_080, "flops": native.training.totals["training_flops"]}
    rows = {le.module: le for le in ex.layers}
    # conv1's input (the image) needs no gradient: its backward is the weight gradient alone,
    # 112 x 112 x 64 x 3 x 49 = 118,013,952 MACs, as its forward
    assert (rows["conv1"].raw["forward_flops"], rows["conv1"].raw["backward_flops"]) == (236_027_904,) * 2
    # fc: forward addmm 512 x 1000 = 512,000 MACs; backward mm for the input and the weight gradient
    assert (rows["fc"].raw["aten.addmm"], rows["fc"].raw["aten.mm"]) == (1_024_000, 2 * 1_024_000)
    # FCM's module tracker closes a module's backward only when its input's gradient is complete;
    # a downsample's input is its block's input, whose gradient completes after the main branch's
    # backward, so downsample (and its conv) also hold conv1 and conv2 of the block: 4 FLOPs per
    # forward MAC of (28 x 28 x 128 x 64 x 9 + 28 x 28 x 128 x 128 x 9) = 4 x 173,408,256 =
    # 693,633,024 beyond its own 2 x 2 x 28 x 28 x 128 x 64 = 25,690,112 (the same in layer3.0 and
    # layer4.0), predicted from the native record of the modules the tracker holds open
    for i in (2, 3, 4):
        for s in ("", ".0"):
            assert rows[f"layer{i}.0.downsample{s}"].raw["backward_flops"] == 693_633_024 + 25_690_112
    assert_explained(ex)


@pytest.mark.slow
def test_resnet18_training_batch_two():
    run, _ = _train_explained(_torchvision_train("resnet18"), (torch.randn(2, 3, 224, 224),))
    assert run.headline["flops"] == 21_296_824_320 == 2 * 10_648_412_160


def test_a_module_returning_its_input_stays_open_in_the_backward():
    # nn.Identity (and dropout with p=0) returns its input tensor itself, so FCM's tracker registers
    # its "leave" hook (on the input) before its "enter" hook (on the output, the same tensor): in
    # the backward it leaves first (FCM logs that it is confused), then enters and never leaves,
    # holding every later backward op. Here that is the first Linear's weight gradient,
    # 4 x 1 @ 1 x 4 = 16 MACs, 32 FLOPs (its input needs no gradient).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Identity(), nn.Linear(4, 4)).train()
    run, ex = _train_explained(model, (torch.randn(1, 4),))
    # forward 2 x (4 x 4) x 2 linears = 64; backward: linear 2 input + weight 2 x 2 x 16, linear 0
    # weight 2 x 16: 96
    assert (run.headline["forward_flops"], run.headline["backward_flops"]) == (64, 96)
    assert any("confused" in w for w in run.warnings)
    row = next(le for le in ex.layers if le.module == "1")
    assert (row.raw["forward_flops"], row.raw["backward_flops"], row.predicted["backward_flops"]) == (0, 32, 32)
    assert_explained(ex)
