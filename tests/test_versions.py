"""Tools pinned at another version (``reconcile/tool_versions.toml``): each in its own folder, run
in its own workers, and explained with zero residual from the native count alone.

The pinned tools run through ``reconcile.runner`` only: their folder goes on ``sys.path`` in
their worker, never in this process (which imports the environment's thop 0.1.1 and ptflops 0.7.5).
Counts in comments are worked out by hand; the published figures come from issue 12 (measured
with each tool itself, eval mode, 1x3x224x224).
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from reconcile import conventions, pipeline, runner, versions
from reconcile import tools as registry
from reconcile.conventions.thop_0022 import f32, f32_sum
from reconcile.errors import ReconcileError
from reconcile.explain.core import explain_run
from reconcile.explain.pair import explain_pair
from reconcile.runner import Job
from tests.harness import residual_rows
from tests.models_small import INPUTS

PINNED = ("ultralytics-thop", "thop@0.0.22", "ptflops@0.7")


# ----- the table and the folders ---------------------------------------------------------------


def test_table_lines():
    assert versions.names() == PINNED
    pin = versions.get("ultralytics-thop")
    assert (pin.tool, pin.dist, pin.version, pin.module) == ("thop", "ultralytics-thop", "2.2.3", "thop")
    assert pin.folder() == versions.tools_root() / "ultralytics-thop"
    assert versions.get("thop@0.0.22").requirement == "thop==0.0.22"
    assert versions.get("ptflops@0.7").requirement == "ptflops==0.7"
    assert versions.get("thop") is None  # the environment's own tools are not pins


def test_pins_installed_apart_from_the_environment():
    # make setup installed them; the environment keeps thop 0.1.1 (ultralytics-thop's module is also thop)
    from importlib import metadata

    for name in PINNED:
        assert versions.check(name).version == versions.installed_version(versions.get(name))
    assert metadata.version("thop") == "0.1.1-2209072238"
    assert metadata.version("ptflops") == "0.7.5"
    assert versions.install() == []  # idempotent: nothing to do, pip not run


def test_missing_folder_is_one_line_saying_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("RECONCILE_TOOLS_ROOT", str(tmp_path))
    # asked for by name: a ReconcileError before anything runs
    with pytest.raises(ReconcileError) as err:
        pipeline.parse_tools("thop,thop@0.0.22")
    text = str(err.value)
    assert "\n" not in text and "make setup" in text
    assert f"--target {tmp_path / 'thop@0.0.22'} thop==0.0.22" in text
    # in the default set (no --tools) it is checked in its worker: that tool's run fails with the
    # same line, every other tool still runs (a fresh worker server, started with this environment)
    assert pipeline.parse_tools(None) == registry.defaults()
    runner.shutdown()
    try:
        runs = runner.run_jobs([Job("tests.models_small:Repeated", t, input_shape=(2, 32))
                                for t in ("thop", "ultralytics-thop")])
    finally:
        runner.shutdown()  # the next test's server sees the real folders again
    assert runs[0].status == "ok"
    assert (runs[1].status, runs[1].error_type) == ("failed", "ReconcileError")
    assert "make setup" in runs[1].error_message and "ultralytics-thop==2.2.3" in runs[1].error_message


def test_unknown_pin_names_the_known_ones():
    with pytest.raises(ReconcileError, match="thop@0.0.22"):
        pipeline.parse_tools("thop@9.9")
    assert pipeline.parse_tools("thop,ultralytics-thop") == ("native", "thop", "ultralytics-thop")


def test_activate_only_in_the_worker():
    # this process still finds the environment's thop; a pin's folder is never on its path
    import importlib.util

    assert "/tools/" not in importlib.util.find_spec("thop").origin
    assert not any("tools" in p and "@" in p for p in sys.path)


def test_conventions_table_has_the_pins():
    table = conventions()
    for name in PINNED:
        assert table[name].tool == name
    assert conventions.get("ptflops@0.7").count_functional is False


# ----- float32 counters of thop 0.0.22 ---------------------------------------------------------


def test_float32_rounding():
    # 2^24 + 1 = 16,777,217 is the first integer float32 cannot hold: ties to even, 16,777,216
    assert f32(16_777_217) == 16_777_216
    assert f32(16_777_219) == 16_777_220  # halfway between ...218 and ...220: even mantissa wins
    # 115,605,504 (a densenet conv) = 2^26 * 1.72...: float32 spacing 8 there, and it is a multiple of 8
    assert f32(115_605_504) == 115_605_504
    # running sum: 2^24 + 1 + 1 stays 2^24 (each +1 rounds away), exact sum would be 2^24 + 2
    assert f32_sum([16_777_216, 1, 1]) == 16_777_216


# ----- every small model, every pinned tool, through the runner ---------------------------------


def _explain_all(names, tools, build="tests.models_small:build", inputs=INPUTS):
    jobs = []
    for n in names:
        shape, dtype, high = inputs[n]
        for t in ("native", *tools):
            jobs.append(Job(n, t, input_shape=shape, input_dtype=dtype, input_high=high,
                            device="cpu" if t == "native" else None))
    runs = iter(runner.run_jobs(jobs, build=build, timeout=600))
    out = {}
    for n in names:
        native = next(runs).detail
        for t in tools:
            run = next(runs)
            conv = conventions.get(t)
            out[n, t] = (run, explain_run(run, conv.predict(native) if run.status == "ok" else None, conv, native),
                         native)
    return out


@pytest.fixture(scope="module")
def small():
    return _explain_all(sorted(INPUTS), PINNED)


@pytest.mark.parametrize("name", sorted(INPUTS))
@pytest.mark.parametrize("tool", PINNED)
def test_small_models_fully_explained(small, name, tool):
    run, ex, native = small[name, tool]
    if tool == "thop@0.0.22" and name == "tied":  # token ids: 0.0.22 feeds its own float zeros
        assert run.status == "failed" and "indices" in run.error_message
        assert "float32" in conventions.get(tool).cannot_run(native)
        return
    assert run.status == "ok", run.error_message
    assert run.tool == tool and run.version == versions.get(tool).version
    assert not residual_rows(ex) and ex.residual == 0


def test_ultralytics_small_amounts(small):
    # norms (2x8x6x6 = 576 elements): BatchNorm2d, GroupNorm, InstanceNorm2d(affine) counted 2 x 576 x 2
    # = 2,304 each; thop 0.1.1 has no GroupNorm rule, ultralytics-thop matches it: 3 x 2,304 + LayerNorm
    # over [6, 6] affine (2 x 576 x 2 = 2,304) = 9,216 "norm"
    _, ex, _ = small["norms", "ultralytics-thop"]
    assert ex.causes["norm"] == 9_216
    # recurrent (2x5x8): parameters are model.parameters(), 6,660, each tensor once
    run, ex, _ = small["recurrent", "ultralytics-thop"]
    assert run.headline["params"] == 6_660


def test_thop_0022_small_amounts(small):
    # repeated: fc = Linear(32, 32) runs twice on 2x32 (see models_small), thop 0.0.22 keeps the
    # last call: (2 x 32 - 1) x 64 outputs = 4,032, where 2 calls of 32 x 64 = 2,048 MACs ran
    run, ex, _ = small["repeated", "thop@0.0.22"]
    fc = next(le for le in ex.layers if le.module == "fc")
    assert fc.raw["ops"] == 63 * 64 == 4_032
    causes = {c.id: c.amount for c in fc.causes["ops"]}
    # both calls as thop counts one: 4,096 MACs + 4,096 "mac_vs_flop" - 128 "per_output_minus_one"
    # = 8,064; the last call alone is 4,032: "repeated_calls" -4,032
    assert causes == {"mac_vs_flop": 4_096, "per_output_minus_one": -128, "repeated_calls": -4_032}


# ----- hand-worked single layers ----------------------------------------------------------------


def _layer(name: str, device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return {
        # Conv2d(3, 8, 3, bias) on 1x3x8x8 -> 1x8x6x6 = 288 outputs, then MaxPool2d(3) (int kernel)
        "conv_pool": lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.MaxPool2d(3)),
        # ConvTranspose2d(4, 2, 3, stride 2) on 1x4x5x5 -> 1x2x11x11
        "convt": lambda: nn.Sequential(nn.ConvTranspose2d(4, 2, 3, stride=2)),
        # the issue's 2-layer LSTM(16, 32), on 5 steps x batch 1 x 16
        "lstm": lambda: nn.LSTM(16, 32, num_layers=2),
        # two Linear(4, 4) sharing one weight, on 2x4
        "tied_linear": _tied_linear,
    }[name]().eval().to(device)


def _tied_linear() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    return model


LAYERS = {"conv_pool": ((1, 3, 8, 8), "float32", None), "convt": ((1, 4, 5, 5), "float32", None),
          "lstm": ((5, 1, 16), "float32", None), "tied_linear": ((2, 4), "float32", None)}


@pytest.fixture(scope="module")
def layers():
    return _explain_all(sorted(LAYERS), ("thop", *PINNED), build=f"{__name__}:_layer", inputs=LAYERS)


def test_thop_0022_counts_a_tied_weight_per_leaf(layers):
    # each Linear(4, 4) holds weight 16 + bias 4 = 20: thop 0.0.22 sums per leaf, 40; the model has
    # 16 + 4 + 4 = 24 tensors' elements, each once: +16 "params_tied". Ops: (2 x 4 - 1) x 8 outputs = 56
    # per Linear, 112 (MACs 4 x 8 = 32 each: +32 "mac_vs_flop" - 8 "per_output_minus_one" per layer)
    run, ex, _ = layers["tied_linear", "thop@0.0.22"]
    assert (run.headline["macs"], run.headline["params"]) == (112, 40)
    assert ex.summaries["params"].causes == {"params_tied": 16} and ex.residual == 0
    assert ex.causes == {"mac_vs_flop": 64, "per_output_minus_one": -16}
    assert layers["tied_linear", "ultralytics-thop"][0].headline["params"] == 24
    assert all(layers["tied_linear", t][1].residual == 0 for t in ("ultralytics-thop", "ptflops@0.7"))


def test_lstm_parameters(layers):
    # LSTM(16, 32, 2 layers): layer 0 4 x 32 x (16 + 32) + 2 x 4 x 32 biases = 6,144 + 256 = 6,400;
    # layer 1 4 x 32 x (32 + 32) + 256 = 8,448: 14,848. thop 0.1.1 never counts the root's own
    # parameters (its dfs_count starts the root at 0), and here the LSTM is the root: 0
    assert layers["lstm", "ultralytics-thop"][0].headline["params"] == 14_848
    assert layers["lstm", "thop"][0].headline["params"] == 0
    # ops, ultralytics-thop per step (batch 1, 5 steps): layer 0 4 x 32 x 48 MACs + 8 x 32 bias
    # + 8 x 32 gate ops = 6,144 + 256 + 256 = 6,656; layer 1 8,192 + 512 = 8,704; x 5 = 76,800
    assert layers["lstm", "ultralytics-thop"][0].headline["macs"] == 76_800
    assert all(layers["lstm", t][1].residual == 0 for t in ("thop", "ultralytics-thop", "thop@0.0.22"))
    # ptflops 0.7.0 takes several or non-batch-1 inputs only as keywords (model(**input_constructor(res))),
    # and its LSTM hook reads input[0]: the tool's own failure
    run = layers["lstm", "ptflops@0.7"][0]
    assert run.status == "failed" and run.error_message == "tuple index out of range"


def test_thop_0022_conv_bias_and_int_kernel(layers):
    run, ex, _ = layers["conv_pool", "thop@0.0.22"]
    # conv: in_channels x N_out x (K + 1) // groups = 3 x 288 x 10 = 8,640; MACs 3 x 9 x 288 = 7,776,
    # bias counted as Cin more per output: 3 x 288 = 864
    # pool: kernel_size=3 is one factor (torch.prod(Tensor([3])) = 3), outputs 8x2x2 = 32: 96, not 9 x 32
    assert {le.module: le.raw["ops"] for le in ex.layers if le.raw} == {"0": 8_640, "1": 96}
    assert ex.causes == {"bias": 864, "pool": 96}
    assert run.headline["macs"] == 8_736 and ex.residual == 0


def test_transposed_conv_by_version(layers):
    # MACs of ConvTranspose2d(4, 2, 3, s2) on 1x4x5x5: N_in x Cout x K = 100 x 2 x 9 = 1,800
    # ultralytics-thop: the same (per input element); thop 0.0.22: N_out x (K x Cin + 1) = 242 x 37
    # = 8,954; ptflops 0.7.0: K x Cin x Cout per OUTPUT position = 9 x 4 x 2 x 121 = 8,712, + bias 242
    totals = {t: layers["convt", t][0].headline["macs"] for t in PINNED}
    assert totals == {"ultralytics-thop": 1_800, "thop@0.0.22": 8_954, "ptflops@0.7": 8_954}
    assert layers["convt", "ptflops@0.7"][1].causes == {"formula": 6_912, "bias": 242}
    assert layers["convt", "thop@0.0.22"][1].causes == {"formula": 7_154}
    assert all(layers["convt", t][1].residual == 0 for t in PINNED)


# ----- the published figures (issue 12), through reconcile ---------------------------------------


PUBLISHED = (("resnet18", "ultralytics-thop"), ("vit_b_16", "ultralytics-thop"), ("vit_b_16", "thop"),
             ("swin_t", "ultralytics-thop"), ("swin_t", "thop"), ("densenet121", "thop@0.0.22"),
             ("densenet121", "thop"), ("vgg16", "ptflops@0.7"), ("vgg16", "ptflops"),
             ("efficientnet_b0", "ultralytics-thop"), ("efficientnet_b0", "thop"), ("resnet18", "thop"))


@pytest.fixture(scope="module")
def published():
    """Only the runs the figures need (plus one native count per model), 1x3x224x224, eval mode."""
    jobs, keys = [], []
    for model in dict.fromkeys(m for m, _ in PUBLISHED):
        for tool in ("native", *(t for m, t in PUBLISHED if m == model)):
            jobs.append(Job(model, tool, input_shape=(1, 3, 224, 224), device="meta" if tool == "native" else None))
            keys.append((model, tool))
    runs = dict(zip(keys, runner.run_jobs(jobs, timeout=600)))
    out = {}
    for model, tool in PUBLISHED:
        native = runs[model, "native"].detail
        conv = conventions.get(tool)
        out[model, tool] = explain_run(runs[model, tool], conv.predict(native), conv, native)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model, tool, macs, params", [
    ("resnet18", "ultralytics-thop", 1_824_033_792, 11_689_512),  # identical to thop 0.1.1
    ("vit_b_16", "ultralytics-thop", 17_595_694_944, 86_567_656),
    ("vit_b_16", "thop", 11_286_254_592, 58_067_176),
    ("swin_t", "ultralytics-thop", 4_505_507_328, 28_288_354),
    ("swin_t", "thop", 2_978_099_712, 19_621_192),
    ("densenet121", "thop@0.0.22", 2_914_598_912, 7_978_856),  # the article's "2914598912.0"
    ("vgg16", "ptflops@0.7", 15_503_523_304, 138_357_544),  # the article's "15.504 GMac, 138.358 M"
])
def test_published_figures_explained(published, model, tool, macs, params):
    t = published[model, tool]
    assert (t.run.headline["macs"], t.run.headline["params"]) == (macs, params)
    assert t.residual == 0 and not residual_rows(t)


@pytest.mark.slow
def test_thop_versus_ultralytics_on_vit(published):
    pair = explain_pair(published["vit_b_16", "ultralytics-thop"], published["vit_b_16", "thop"])
    # 12 MultiheadAttention layers, L = S = 197, E = 768, 12 heads. thop 0.1.1 has no rule for them:
    # 12 x (4 x 197 x 768^2 projections + 2 x 197^2 x 768 attention) = 12 x (464,781,312 + 59,609,856)
    # = 6,292,703,232 MACs unseen; ultralytics-thop's rule counts them and the softmax,
    # 12 x 12 heads x 197 rows x (3 x 197 - 1) = 16,737,120
    assert pair.causes == {"unsupported_module": 6_292_703_232, "softmax": 16_737_120}
    assert pair.gap == 6_309_440_352 and pair.residual == 0
    assert {layer.type for layer in pair.layers} >= {"MultiheadAttention"}
    # params: thop 0.1.1 misses 12 x (in_proj 768 x 2304 + 2304) = 21,261,312, 12 out_proj (an
    # nn.Linear subclass it does not match: 12 x 590,592 = 7,087,104), class_token 768 and
    # pos_embedding 197 x 768 = 151,296: 28,500,480
    assert published["vit_b_16", "thop"].summaries["params"].causes == {"params_missed": -28_500_480}


@pytest.mark.slow
def test_thop_versus_ultralytics_on_swin(published):
    pair = explain_pair(published["swin_t", "ultralytics-thop"], published["swin_t", "thop"])
    # torchvision's ShiftedWindowAttention runs its qkv / proj weights through F.linear and the
    # attention through matmul: ultralytics-thop's TorchFunctionMode counts them (in its total only),
    # thop 0.1.1 sees nothing of it
    ut = published["swin_t", "ultralytics-thop"]
    assert dict(ut.run.unattributed) == {"functional:F.linear": 1_387_266_048, "functional:Tensor.matmul": 140_141_568}
    assert pair.causes == {"functional_not_seen": 1_387_266_048 + 140_141_568}
    assert pair.gap == 1_527_407_616 and pair.residual == 0


@pytest.mark.slow
def test_why_the_article_says_2_91_g(published):
    # densenet121, thop 0.0.22 minus thop 0.1.1 = 2,914,598,912 - 2,897,007,104 = 17,591,808:
    # 120 ReLUs at 1 per element (15,617,280); MaxPool2d(3) on 64x112x112 -> 64x56x56 = 200,704
    # outputs at 3 each (kernel as given) = 602,112; 3 AvgPool2d(2) at 3 per output vs 0.1.1's 1:
    # 2 x (128x28x28 + 256x14x14 + 512x7x7 = 175,616) = 351,232; Linear(1024, 1000) as 2 x 1024 - 1
    # per output: +1,024,000 - 1,000; float32 sums: -1,816
    pair = explain_pair(published["densenet121", "thop@0.0.22"], published["densenet121", "thop"])
    assert pair.gap == 17_591_808 and pair.residual == 0
    assert pair.causes == {"activation": 15_617_280, "pool": 602_112 + 351_232, "mac_vs_flop": 1_024_000,
                           "per_output_minus_one": -1_000, "float32": -1_816}


@pytest.mark.slow
def test_why_the_article_says_15_504_gmac(published):
    # vgg16, ptflops 0.7.5 minus 0.7.0 = 15,523,225,576 - 15,503,523,304 = 19,702,272: 0.7.5 also
    # counts the F.relu and F.max_pool2d that nn.ReLU and nn.MaxPool2d call, and F.adaptive_avg_pool2d,
    # each once more. ReLU inputs: 2 x 64x224x224 + 2 x 128x112x112 + 3 x 256x56x56 + 3 x 512x28x28
    # + 3 x 512x14x14 + 2 x 4096 = 6,422,528 + 3,211,264 + 2,408,448 + 1,204,224 + 301,056 + 8,192
    # = 13,555,712; max-pool inputs: 64x224x224 + 128x112x112 + 256x56x56 + 512x28x28 + 512x14x14
    # = 6,121,472; adaptive pool input 512 x 7 x 7 = 25,088
    pair = explain_pair(published["vgg16", "ptflops"], published["vgg16", "ptflops@0.7"])
    assert pair.causes == {"double_count": 13_555_712 + 6_121_472 + 25_088} and pair.residual == 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "efficientnet_b0"])
def test_ultralytics_identical_to_thop_where_the_issue_says(published, model):
    # issue 12: identical to thop 0.1.1 on resnet18 (1,824,033,792) and efficientnet_b0, eval mode;
    # both explained with zero residual, and their gap is no cause at all
    ut, th = published[model, "ultralytics-thop"], published[model, "thop"]
    assert ut.run.headline == th.run.headline
    pair = explain_pair(ut, th)
    assert pair.gap == 0 and pair.causes == {} and pair.residual == 0
