"""torchsummary's convention against real torchsummary runs: zero residual on every row and headline
figure, and hand-worked amounts.

torchsummary counts no operations: rows are one per module *call* with ``nb_params`` and
``output_prod`` (np.prod of the output shape printed with batch -1), and the headline holds the
parameter totals and memory figures in bytes. References: native parameters (each tensor once,
first call), native output elements of the call, native bytes for the memory figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from reconcile import conventions, models
from reconcile.conventions.base import OUTSIDE
from reconcile.conventions.torchsummary import printed_lines
from reconcile.counter import count
from reconcile.report.sentences import sentence
from tests.harness import adapter, assert_explained, explain, explain_in_process, residual_rows
from tests.models_small import SMALL_MODELS

# small models torchsummary cannot run, with the error its adapter reports
CANNOT_RUN = {
    # TransformerEncoderLayer calls its MultiheadAttention with need_weights=False: (out, None)
    "attention": ("AttributeError", "'NoneType' object has no attribute 'size'"),
    # LSTM returns (out, (h, c)): list(o.size()) on the inner tuple
    "recurrent": ("AttributeError", "'tuple' object has no attribute 'size'"),
    # torchsummary feeds torch.rand float32 into the Embedding
    "tied": ("RuntimeError", "Expected tensor for argument #1 'indices'"),
}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.skip(reason=f"torchsummary fails: {CANNOT_RUN[n][1]}")) if n in CANNOT_RUN else n
    for n in sorted(SMALL_MODELS)
])
def test_small_models_fully_explained(name):
    model, inputs = SMALL_MODELS[name]()
    assert_explained(explain_in_process("torchsummary", model, inputs))


@pytest.mark.parametrize("name", sorted(CANNOT_RUN))
def test_small_models_torchsummary_cannot_run(name):
    model, inputs = SMALL_MODELS[name]()
    run = adapter("torchsummary").run(model, inputs)
    assert run.status == "failed"
    assert (run.error_type, CANNOT_RUN[name][1] in run.error_message) == (CANNOT_RUN[name][0], True)


# ----- torchvision ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tv():
    """resnet18 and vgg16 at 1x3x224x224, each run once for every test below."""
    out = {}
    for name in ("resnet18", "vgg16"):
        model = models.build(models.resolve(name), device="cpu")
        inputs = (torch.zeros(1, 3, 224, 224),)
        native = count(model, inputs)
        out[name] = (explain_in_process("torchsummary", model, inputs), native)
    return out


@pytest.mark.parametrize("name, rows, params, outputs", [
    # resnet18 rows: conv1, bn1, relu, maxpool (4); 8 BasicBlocks of conv1, bn1, relu, conv2, bn2,
    # relu again, the block itself (7), 3 with a downsample conv + bn (+2): 56 + 6; avgpool, fc: 68.
    # Output elements per sample: 3 x 64*112*112 = 2,408,448; maxpool 64*56*56 = 200,704;
    # layer1 14 x 200,704 = 2,809,856; layer2 16 x 128*28*28 = 1,605,632; layer3 16 x 50,176 =
    # 802,816; layer4 16 x 25,088 = 401,408; avgpool 512; fc 1,000: 8,230,376.
    ("resnet18", 68, 11_689_512, 8_230_376),
    # vgg16 rows: 13 conv + 13 relu + 5 pools, avgpool, classifier 3 linear + 2 relu + 2 dropout: 39.
    # Outputs: 4 x 3,211,264 + 802,816 + 4 x 1,605,632 + 401,408 + 6 x 802,816 + 200,704
    # + 6 x 401,408 + 100,352 + 6 x 100,352 + 25,088, avgpool 25,088, 6 x 4,096 + 1,000 = 28,676,072.
    ("vgg16", 39, 138_357_544, 28_676_072),
])
def test_torchvision_fully_explained(tv, name, rows, params, outputs):
    ex, native = tv[name]
    assert_explained(ex)
    assert len(ex.layers) == rows  # no (outside rows): every parameter is a weight or bias of a row
    h = ex.run.headline
    assert (h["Total params"], h["Trainable params"], h["Non-trainable params"]) == (params, params, 0)
    assert h["Input size (bytes)"] == 3 * 224 * 224 * 4 == 602_112
    assert h["Forward/backward pass size (bytes)"] == 2 * 4 * outputs
    assert h["Params size (bytes)"] == 4 * params
    s = ex.summaries
    # batch 1, float32: native output bytes 4 * outputs; torchsummary doubles them "for gradients"
    assert s["Forward/backward pass size (bytes)"].reference == 4 * outputs
    assert s["Forward/backward pass size (bytes)"].causes == {"memory_model": 4 * outputs}
    assert s["Estimated Total Size (bytes)"].causes == {"memory_model": 4 * outputs}
    assert s["Total params"].causes == {} and s["Params size (bytes)"].causes == {}
    # rows: each output_prod is minus the per-sample output (batch printed -1): -2 x outputs from the reference
    assert s["output_prod"].reference == outputs and s["output_prod"].causes == {"memory_model": -2 * outputs}
    # no operation metric: nothing normalizable, no main total
    assert not any(m.is_ops for m in s.values()) and ex.raw_total is None and ex.main == ""


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_torchvision_row_order_and_printed_lines(tv, name):
    ex, native = tv[name]
    pred = conventions.get("torchsummary").predict(native)
    # predicted rows in torchsummary's own (post-order) order, keyed by module and call
    assert [(p.module, p.call) for p in pred.layers] == [(le.module, le.call) for le in ex.layers]
    # the MiB lines as printed: resnet18 0.57 / 62.79 / 44.59 (reference map section 13)
    printed = {k: v for k, v in ex.run.headline.items() if k.endswith("(MB)")}
    assert printed_lines(dict(pred.headline)) == printed


def test_resnet18_block_rows(tv):
    ex, _ = tv["resnet18"]
    rows = {(le.module, le.call): le for le in ex.layers}
    # the block itself has a row (a container torchsummary hooks): 0 params, its 64x56x56 output
    block = rows[("layer1.0", 0)]
    assert block.raw == {"nb_params": 0, "output_prod": -200_704}
    # the shared relu of a block: two rows; both calls 64x56x56, no weight -> no "trainable" key
    assert rows[("layer1.0.relu", 1)].raw == {"nb_params": 0, "output_prod": -200_704}
    # conv1 7x7, 3 -> 64, no bias: 64*3*49 = 9,408
    assert rows[("conv1", 0)].raw == {"nb_params": 9_408, "output_prod": -802_816, "trainable": 1}


def test_predict_from_meta_count(tv):
    # what `reconcile predict` does: count on the meta device, predict; same headline as the real run
    model = models.build(models.resolve("resnet18"), device="meta")
    native = count(model, (torch.zeros(1, 3, 224, 224, device="meta"),))
    pred = conventions.get("torchsummary").predict(native)
    real = tv["resnet18"][0].run.headline
    assert dict(pred.headline) == {k: v for k, v in real.items() if isinstance(v, int)}


# ----- hand-worked small cases ------------------------------------------------------------------


class Wrap(nn.Module):
    """Runs ``fn(self, *xs)`` with the given children."""

    def __init__(self, fn, **children: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, child in children.items():
            setattr(self, name, child)

    def forward(self, *xs):
        return self.fn(self, *xs)


def _causes(ex, metric):
    return {(le.module, le.call): {c.id: c.amount for c in le.causes.get(metric, ())} for le in ex.layers}


def test_repeated_calls_counted_per_call():
    # Repeated on 2x32: fc Linear(32, 32) = 32*32 + 32 = 1,056 per row, twice; head 32*10 + 10 = 330.
    # Total 2,442 against native 1,386: the second fc row is all "repeated_calls".
    model, inputs = SMALL_MODELS["repeated"]()
    ex = explain_in_process("torchsummary", model, inputs)
    assert_explained(ex)
    assert _causes(ex, "nb_params")[("fc", 1)] == {"repeated_calls": 1056}
    assert ex.summaries["Total params"].causes == {"repeated_calls": 1056}
    assert ex.summaries["Trainable params"].causes == {"repeated_calls": 1056}
    assert ex.summaries["Params size (bytes)"].causes == {"repeated_calls": 4 * 1056}
    # input 2x32 float32: 256 bytes native, 128 per sample
    assert ex.run.headline["Input size (bytes)"] == 128
    assert ex.summaries["Input size (bytes)"].causes == {"per_sample": -128}
    # outputs per sample 32 + 32 + 32 + 32 + 10 = 138; native 2 x 138 x 4 = 1,104 bytes; per sample
    # 552, doubled for gradients: 1,104 again
    assert ex.run.headline["Forward/backward pass size (bytes)"] == 1104
    assert ex.summaries["Forward/backward pass size (bytes)"].causes == {"per_sample": -552, "memory_model": 552}


def test_tied_weight_counted_again():
    # b.weight is a.weight (4x4 = 16): b's row counts 16 + its own bias 4 = 20; native b owns 4
    model = Wrap(lambda self, x: self.b(self.a(x)), a=nn.Linear(4, 4), b=nn.Linear(4, 4))
    model.b.weight = model.a.weight
    ex = explain_in_process("torchsummary", model.eval(), (torch.randn(1, 4),))
    assert_explained(ex)
    assert [le.raw["nb_params"] for le in ex.layers] == [20, 20]
    assert _causes(ex, "nb_params")[("b", 0)] == {"params_tied": 16}
    assert ex.summaries["Total params"].reference == 24 and ex.summaries["Total params"].causes == {"params_tied": 16}


@pytest.mark.parametrize("frozen, trainable", [("weight", 0), ("bias", 15)])
def test_trainable_split_follows_the_weight(frozen, trainable):
    # Linear(4, 3): weight 12 + bias 3 = 15 on one row, filed by weight.requires_grad as a whole.
    # Frozen weight: native trainable 3 (the bias), torchsummary 0 -> params_frozen -3 / +3.
    # Frozen bias: native trainable 12, torchsummary 15 -> params_frozen +3 / -3.
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    getattr(model[0], frozen).requires_grad_(False)
    ex = explain_in_process("torchsummary", model, (torch.randn(1, 4),))
    assert_explained(ex)
    h = ex.run.headline
    assert (h["Total params"], h["Trainable params"], h["Non-trainable params"]) == (15, trainable, 15 - trainable)
    moved = 3 if frozen == "bias" else -3
    assert ex.summaries["Trainable params"].causes == {"params_frozen": moved}
    assert ex.summaries["Non-trainable params"].causes == {"params_frozen": -moved}
    assert ex.summaries["Total params"].causes == {}


def test_free_parameter_and_frozen_conv():
    # FreeParams on 1x3x8x8: frozen conv 3->4 3x3 = 4*27 + 4 = 112 (non-trainable row); fc 144 -> 2 =
    # 290; the root's own bias (4x1x1 = 4) has no row: missed, in the (outside rows) pseudo-row
    model, inputs = SMALL_MODELS["free_params"]()
    ex = explain_in_process("torchsummary", model, inputs)
    assert_explained(ex)
    outside = next(le for le in ex.layers if le.module == OUTSIDE)
    assert outside.reference == {"nb_params": 4} and outside.causes["nb_params"][0].id == "params_missed"
    h = ex.run.headline
    assert (h["Total params"], h["Trainable params"], h["Non-trainable params"]) == (402, 290, 112)
    assert ex.summaries["Trainable params"].reference == 294
    assert ex.summaries["Trainable params"].causes == {"params_missed": -4}
    assert ex.summaries["Non-trainable params"].causes == {}


def test_multihead_attention_tuple_output_and_missed_params():
    # MHA E=8, 2 heads, on 2x5x8 with weights returned: rows mha (its output is a tuple) and head.
    # mha reads no .weight/.bias: in_proj 3*8*8 + 24 = 216 missed on its row; out_proj (8*8 + 8 = 72)
    # never runs as a module: missed in (outside rows). head Linear(8, 3) = 27.
    # mha's output_prod: [-1, 5, 8] and [-1, 5, 5] multiplied: (-40) * (-25) = +1,000, not the 65 per
    # sample; head -15. Pass size |8 * (1,000 - 15)| = 7,880.
    model = Wrap(lambda self, x: self.head(self.mha(x, x, x)[0]),
                 mha=nn.MultiheadAttention(8, 2, batch_first=True), head=nn.Linear(8, 3)).eval()
    ex = explain_in_process("torchsummary", model, (torch.randn(2, 5, 8),))
    assert_explained(ex)
    rows = {le.module: le for le in ex.layers}
    assert rows["mha"].raw == {"nb_params": 0, "output_prod": 1000}
    # native outputs of the call 2*5*8 + 2*5*5 = 130; per sample 65; product 1,000
    assert _causes(ex, "output_prod")[("mha", 0)] == {"per_sample": -65, "memory_model": 935}
    assert _causes(ex, "nb_params")[("mha", 0)] == {"params_missed": -216}
    assert rows[OUTSIDE].reference == {"nb_params": 72}
    assert ex.summaries["Total params"].causes == {"params_missed": -288}
    assert ex.run.headline["Forward/backward pass size (bytes)"] == 7880
    # native 130 + 30 = 160 elements = 640 bytes; per sample 320; x2 +320; tuple product +7,240
    assert ex.summaries["Forward/backward pass size (bytes)"].causes == {"per_sample": -320, "memory_model": 7560}


def test_two_inputs_multiplied():
    # two 1x4 inputs: np.prod(input_size) = 4 * 4 = 16 elements, 64 bytes, not 8 elements = 32 bytes.
    # fc runs twice: 10 params again on its second row.
    model = Wrap(lambda self, x, y: self.fc(x) + self.fc(y), fc=nn.Linear(4, 2)).eval()
    ex = explain_in_process("torchsummary", model, (torch.randn(1, 4), torch.randn(1, 4)))
    assert_explained(ex)
    assert ex.run.headline["Input size (bytes)"] == 64
    assert ex.summaries["Input size (bytes)"].causes == {"memory_model": 32}
    assert ex.summaries["Total params"].causes == {"repeated_calls": 10}


def test_buffer_named_weight_counted_as_parameters():
    # weight is a buffer of 5, bias a parameter of 5: the row counts 10, non-trainable (the buffer
    # does not require grad, and the weight's flag files the bias too)
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("weight", torch.ones(5))
            self.bias = nn.Parameter(torch.zeros(5))

        def forward(self, x):
            return x * self.weight + self.bias

    ex = explain_in_process("torchsummary", nn.Sequential(Scale()).eval(), (torch.randn(1, 5),))
    assert_explained(ex)
    assert ex.layers[0].raw == {"nb_params": 10, "output_prod": -5, "trainable": 0}
    assert ex.summaries["Total params"].causes == {"formula": 5}
    assert ex.summaries["Trainable params"].causes == {"params_frozen": -5}
    assert ex.summaries["Non-trainable params"].causes == {"formula": 5, "params_frozen": 5}


def test_four_bytes_whatever_the_dtype():
    # int64 1x4 input cast to float64 in a child, then a float64 Linear(4, 2) (10 params, 80 bytes).
    # Input: 4 elements x 8 bytes = 32 native, torchsummary 16. Outputs 4 + 2 = 6 float64 = 48 bytes,
    # torchsummary 4 bytes each = 24, x2 = 48. Params 10 x 4 = 40, native 80.
    class Cast(nn.Module):
        def forward(self, x):
            return x.double()

    model = Wrap(lambda self, x: self.fc(self.cast(x)), cast=Cast(), fc=nn.Linear(4, 2).double()).eval()
    ex = explain_in_process("torchsummary", model, (torch.randint(0, 3, (1, 4)),))
    assert_explained(ex)
    s = ex.summaries
    assert (s["Input size (bytes)"].reference, ex.run.headline["Input size (bytes)"]) == (32, 16)
    assert s["Input size (bytes)"].causes == {"memory_model": -16}
    assert (s["Params size (bytes)"].reference, ex.run.headline["Params size (bytes)"]) == (80, 40)
    pass_terms = [t.amount for t in ex.headline.causes["Forward/backward pass size (bytes)"]]
    assert pass_terms == [-24, 24]  # 4 bytes per element: 24 instead of 48; x2 for gradients: +24


def test_batch_norm_in_training_mode():
    # torchsummary runs the model as it is (train: batch statistics, active Dropout) at batch 2; the
    # native count is in eval mode at batch 1. Nothing reported depends on it: conv 3->4 3x3 = 112,
    # bn 8; outputs 4x4x4 = 64 per row, 3 rows.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)).train()
    ex = explain_in_process("torchsummary", model, (torch.randn(1, 3, 6, 6),))
    assert_explained(ex)
    assert [le.raw["output_prod"] for le in ex.layers] == [-64, -64, -64]
    assert ex.run.headline["Total params"] == 120 and model.training


def _seq_first():
    # (B, T, E) -> (T, B, E) into a Linear(4, 4): the batch sits in dim 1 of fc's output
    return Wrap(lambda self, x: self.fc(x.transpose(0, 1)), fc=nn.Linear(4, 4)).eval()


def test_batch_in_a_later_dim():
    # native batch 3 on 3x5x4: fc's output 5x3x4 = 60; torchsummary's run at batch 2 gives 5x2x4, printed
    # [-1, 2, 4] -> -8. Per sample as native sees it: 3*4 = 12 (per_sample -48), at batch 2: 8 (-4).
    ex = explain_in_process("torchsummary", _seq_first(), (torch.randn(3, 5, 4),))
    assert_explained(ex)
    assert ex.layers[0].raw["output_prod"] == -8
    assert _causes(ex, "output_prod")[("fc", 0)] == {"per_sample": -48, "batch_differs": -4, "memory_model": -16}


def test_batch_in_a_later_dim_at_batch_one_is_a_known_residual():
    # at native batch 1 the output 5x1x4 cannot be told from a unit dim: predicted -4 (1*4 per sample),
    # torchsummary prints [-1, 2, 4] -> -8. The residual shows, on the row and in the pass size.
    ex = explain_in_process("torchsummary", _seq_first(), (torch.randn(1, 5, 4),))
    assert ex.layers[0].residual["output_prod"] == -4
    assert ex.headline.residual["Forward/backward pass size (bytes)"] == 8 * 4
    assert len(residual_rows(ex)) == 2 and ex.residual == 4 + 32 + 32  # row, pass size, estimated total


def test_terms_add_up_and_read_well():
    model, inputs = SMALL_MODELS["free_params"]()
    native = count(model, inputs)
    pred = conventions.get("torchsummary").predict(native)
    for p in pred.layers:
        for metric, value in p.predicted.items():
            assert value == p.reference[metric] + sum(t.amount for t in p.terms.get(metric, ())), (p.module, metric)
    conv = next(p for p in pred.layers if p.module == "conv")
    assert sentence(conv.terms["output_prod"][0]) == (
        "the batch printed as -1 makes np.prod of Conv2d's output shape negative: -144 "
        "(abs() of the total undoes the sign)")
    outside = next(p for p in pred.layers if p.module == OUTSIDE)
    assert sentence(outside.terms["nb_params"][0]) == (
        "4 parameters held by the root FreeParams, which torchsummary does not hook, are not counted")
    run = adapter("torchsummary").run(model, inputs)
    ex = explain("torchsummary", run, native)
    assert_explained(ex)


def test_rules_and_no_operation_metric():
    conv = conventions.get("torchsummary")
    assert conv.rules and conv.metrics["Total params"] == "nb_params"
    assert not set(conv.operation_metrics()) & set(conv.metrics)  # nothing is an operation count
    assert {r.family for r in conv.rules} >= {"nb_params", "trainable", "Forward/backward pass size"}


def test_convention_imports_neither_torch_nor_torchsummary():
    code = ("import sys, reconcile.conventions.torchsummary; "
            "print('torch' in sys.modules, 'torchsummary' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.split() == ["False", "False"]
