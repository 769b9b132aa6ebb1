"""mmengine 0.10.7's ``get_model_complexity_info``: its documented figures reproduced through
reconcile, its convention against real runs (zero residual on every row), hand-worked amounts,
and the adapter leaving the caller's model and process as it found them.

mmengine's "flops" are multiply-adds, so the reference is native MACs; its rows nest like
fvcore's (every row but the root inclusive of its subtree).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from reconcile import conventions, models, pipeline
from reconcile.config import RunConfig
from reconcile.conventions.base import INCLUSIVE
from reconcile.counter import count
from reconcile.report.sentences import sentence
from tests.harness import adapter, assert_explained, explain
from tests.models_small import SMALL_MODELS, Fn

ROOT = Path(__file__).resolve().parents[1]


def _torchvision(name: str):
    model = models.build(models.resolve(name), device="cpu")
    return model, (torch.zeros(1, 3, 224, 224),)


def _explain(model, inputs, mode: str):
    """mmengine on ``model`` in ``mode`` (it never calls eval() itself), native in the same mode."""
    model.train(mode == "train")
    run = adapter("mmengine").run(model, tuple(inputs))
    assert run.status == "ok", f"{run.error_type}: {run.error_message}"
    return explain("mmengine", run, count(model, tuple(inputs), mode=mode))


# ----- the documented figures, through the pipeline as `reconcile report` runs them ---------------


@pytest.fixture(scope="module")
def documented():
    # the documentation analyses both as built, without eval(): training mode
    runs = pipeline.collect(["tests.models_docs:TestNet", "resnet50"], RunConfig(tools=("native", "mmengine"), mode="train"))
    return {mr.name: pipeline.reconcile_model(mr) for mr in runs}


def _tool(report, tool: str):
    return next(t for t in report.tools if t.tool == tool)


def test_documented_testnet(documented):
    # model_analysis.md, "Usage Example 1": input_shape (1, 10) -> torch.randn(1, 1, 10). Each
    # Linear(10, 10): 1*1*10 inputs * 10 outputs = 100 flops, 10*10 + 10 = 110 params, 10 output
    # elements; 4 Linears: 400 flops ("0.4K"), 440 params ("0.44K"), 40 activations; inner: 2 of them.
    ex = _tool(documented["tests.models_docs:TestNet"], "mmengine")
    assert ex.run.headline == {"flops": 400, "activations": 40, "params": 440}
    rows = {le.module: dict(le.raw) for le in ex.layers}
    assert rows["inner"] == {"flops": 200, "activations": 20, "params": 220}
    assert rows["fc1"] == rows["inner.fc2"] == {"flops": 100, "activations": 10, "params": 110}
    assert ex.residual == 0 and ex.causes == {}


def test_documented_resnet50_without_eval(documented):
    # model_analysis.md, "Usage Example 2": "Model Flops:4.145G", "Model Parameters:25.557M".
    # Native MACs 4,089,184,256 (torchvision's _ops 4.089). BatchNorm elements (53 BNs):
    # bn1 802,816; layer1 3 * (200,704 + 200,704 + 802,816) + downsample 802,816 = 4,415,488;
    # layer2 (401,408 + 100,352 + 401,408 + 401,408) + 3 * (100,352 + 100,352 + 401,408) = 3,110,912;
    # layer3 (200,704 + 50,176 + 200,704 + 200,704) + 5 * (50,176 + 50,176 + 200,704) = 2,157,568;
    # layer4 (100,352 + 25,088 + 100,352 + 100,352) + 2 * (25,088 + 25,088 + 100,352) = 627,200;
    # sum 11,113,984. Training mode: 5 per element = 2 (norm, as in eval) + 3 (train_mode):
    # 22,227,968 + 33,341,952. avgpool 2048*7*7 = 100,352 (pool).
    # 4,089,184,256 + 22,227,968 + 33,341,952 + 100,352 = 4,144,854,528.
    report = documented["resnet50"]
    ex = _tool(report, "mmengine")
    assert report.mode == "train"
    assert (ex.run.headline["flops"], ex.run.headline["params"]) == (4144854528, 25557032)
    assert ex.summaries["flops"].reference == 4089184256
    assert ex.causes == {"norm": 22227968, "train_mode": 33341952, "pool": 100352, "unsupported_op": 0}
    assert ex.residual == 0
    # the 53 BatchNorms' num_batches_tracked += 1 and the 16 residual add_ are traced, unsupported
    assert ex.run.headline["unsupported:aten::add_"] == 53 + 16


# ----- ResNet-18: train and eval, the train_mode cause ------------------------------------------------


@pytest.mark.parametrize("mode, total, causes, add_calls", [
    # native MACs 1,814,073,344; 20 BNs over 2,483,712 elements (see test_conventions_fvcore);
    # avgpool 512*7*7 = 25,088. eval: 2 per element = 4,967,424:
    # 1,814,073,344 + 4,967,424 + 25,088 = 1,819,065,856 (after eval(), as fvcore).
    ("eval", 1819065856, {"norm": 4967424, "pool": 25088, "unsupported_op": 0}, 8),
    # training: 3 more per element, 3 * 2,483,712 = 7,451,136: 1,826,516,992 (without eval());
    # 20 num_batches_tracked += 1 join the 8 residual add_
    ("train", 1826516992, {"norm": 4967424, "train_mode": 7451136, "pool": 25088, "unsupported_op": 0}, 28),
])
def test_resnet18_train_and_eval(mode, total, causes, add_calls):
    model, inputs = _torchvision("resnet18")
    ex = _explain(model, inputs, mode)
    assert_explained(ex)
    assert ex.raw_total == total and ex.causes == causes
    assert ex.run.headline["params"] == 11689512 and ex.run.headline["activations"] == 2484712
    assert ex.run.headline["unsupported:aten::add_"] == add_calls
    bn1 = next(le for le in ex.layers if le.module == "bn1")
    # bn1 64*112*112 = 802,816 elements: 2 each = 1,605,632, in training 3 more = 2,408,448, and its
    # num_batches_tracked += 1 (an unsupported aten::add_: 0 MACs, 1 FLOP not counted)
    terms = {c.id: (c.amount, c.flops) for c in bn1.causes["flops"]}
    assert terms == ({"norm": (1605632, 0)} if mode == "eval" else
                     {"norm": (1605632, 0), "train_mode": (2408448, 0), "unsupported_op": (0, -1)})
    assert bn1.reference[INCLUSIVE] == 1


def test_vgg16():
    # vgg16 as fvcore: native MACs 15,470,264,320 + avgpool input 512*7*7 = 25,088 -> 15,470,289,408;
    # no BatchNorm, so eval and training agree. Activations: conv outputs 13,547,520 + fc 9,192.
    model, inputs = _torchvision("vgg16")
    ex = _explain(model, inputs, "eval")
    assert_explained(ex)
    assert ex.raw_total == 15470289408 and ex.causes == {"pool": 25088, "unsupported_op": 0}
    assert ex.run.headline["activations"] == 13556712 and ex.run.headline["params"] == 138357544


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_fully_explained(name, mode):
    model, inputs = SMALL_MODELS[name]()
    assert_explained(_explain(model, inputs, mode))


@pytest.mark.parametrize("affine, low", [(True, 2), (False, 1)])
def test_batch_norm_train_mode_cause(affine, low):
    # BatchNorm2d(8) in training on 2x8x4x4 = 256 elements: 5 (affine) or 4 per element, of which
    # 2 or 1 is the eval count (norm) and 3 the batch statistics (train_mode): 3 * 256 = 768
    model = nn.Sequential(nn.BatchNorm2d(8, affine=affine))
    ex = _explain(model, (torch.randn(2, 8, 4, 4),), "train")
    assert_explained(ex)
    assert ex.raw_total == (low + 3) * 256
    assert ex.causes == {"norm": low * 256, "train_mode": 768, "unsupported_op": 0}
    text = next(sentence(c) for c in ex.layers[0].causes["flops"] if c.id == "train_mode")
    assert "mmengine counts" in text and "3 x 256 = 768" in text and "not put in eval()" in text


def test_matrix_times_vector_counted():
    # x (3x4) @ v (4,): mmengine's matmul handle makes v (4, 1): 3*4*1 = 12 MACs, native's too
    # (aten::mv). fvcore 0.1.5's handle indexes v's shape[-2] and fails on the same model.
    model = Fn(lambda self, x: x @ self.v)
    model.v = nn.Parameter(torch.ones(4))
    ex = _explain(model, (torch.randn(3, 4),), "eval")
    assert_explained(ex)
    assert ex.raw_total == 12 and ex.run.headline["activations"] == 3
    assert adapter("fvcore").run(model, (torch.randn(3, 4),)).status == "failed"


def test_none_input_traced_through_the_wrapper():
    # forward(x, mask=None): torch.jit cannot trace None; Linear(6, 5) on 2x6: 2*6*5 = 60
    model = Fn(lambda self, x, mask: self.fc(x) if mask is None else self.fc(x) * mask, fc=nn.Linear(6, 5))
    ex = _explain(model, (torch.randn(2, 6), None), "eval")
    assert_explained(ex)
    assert ex.raw_total == 60 and {le.module for le in ex.layers} == {"", "fc"}
    assert any("wrapper" in n for n in ex.run.notes)


def test_untraceable_model_is_a_failed_run():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")  # fails directly and again through the wrapper

    run = adapter("mmengine").run(Broken(), (torch.randn(2),))
    assert (run.status, run.error_type) == ("failed", "RuntimeError")
    assert run.error_message.startswith("mmengine runs the forward under torch.jit tracing")
    assert "boom" in run.error_message


# ----- what it leaves behind -------------------------------------------------------------------


def _state(model: nn.Module) -> dict:
    return {name: (m.training, sorted(vars(m)), sorted(m._buffers), len(m._forward_hooks),
                   len(m._forward_pre_hooks)) for name, m in model.named_modules()}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_model_and_process_unchanged(training):
    from mmengine.analysis import print_helper
    from mmengine.logging import MMLogger

    model, inputs = SMALL_MODELS["conv_variety"]()
    model.train(training)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    before = _state(model)
    analyzers = (print_helper.FlopAnalyzer, print_helper.ActivationAnalyzer)
    loggers = dict(MMLogger._instance_dict)
    run = adapter("mmengine").run(model, tuple(inputs))
    assert run.status == "ok", run.error_message
    assert _state(model) == before
    assert all(torch.equal(model.state_dict()[k], v) for k, v in buffers.items())  # BN statistics untouched
    assert (print_helper.FlopAnalyzer, print_helper.ActivationAnalyzer) == analyzers
    assert dict(MMLogger._instance_dict) == loggers


def test_a_users_logger_keeps_its_handlers_and_gets_nothing():
    from mmengine.logging import MMLogger

    logger = MMLogger.get_instance("reconcile-test-user")
    handlers = list(logger.handlers)
    try:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)).eval()
        run = adapter("mmengine").run(model, (torch.randn(1, 3, 8, 8),))
        assert logger.handlers == handlers
        assert "get_model_complexity_info: Unsupported operator aten::max_pool2d encountered 1 time(s)" in run.warnings
    finally:
        MMLogger._instance_dict.pop("reconcile-test-user", None)


def test_fresh_process_prints_nothing():
    code = (
        "import torch\n"
        "from torch import nn\n"
        "from reconcile.adapters.mmengine import MmengineAdapter\n"
        "m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2))\n"
        "run = MmengineAdapter().run(m, (torch.randn(1, 3, 8, 8),))\n"
        "assert run.status == 'ok', run.error_message\n"
        "assert any('aten::max_pool2d' in w for w in run.warnings), run.warnings\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_convention_imports_neither_torch_nor_mmengine():
    code = "import sys, reconcile.conventions.mmengine; print('torch' in sys.modules, 'mmengine' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["False", "False"]
    assert conventions.get("mmengine").tool == "mmengine"


def test_a_child_registered_as_none_drops_out_arch_only():
    # out_arch calls extra_repr() on every entry of module._modules, None included (torchvision's
    # googlenet without aux heads): the call is made again with show_arch=False. Linear(4, 2) on
    # 1x4: 4*2 = 8 flops, 10 params, 2 activations.
    model = Fn(lambda self, x: self.fc(x), fc=nn.Linear(4, 2))
    model.register_module("aux", None)
    ex = _explain(model, (torch.randn(1, 4),), "eval")
    assert_explained(ex)
    assert ex.run.headline == {"flops": 8, "activations": 2, "params": 10}
    assert any("show_arch=False" in n and "registered as None: aux" in n for n in ex.run.notes)


def test_batch_norm_without_running_statistics_is_no_mode_difference():
    # BatchNorm2d(8, track_running_stats=False) uses batch statistics in eval as in training:
    # 5 per element either way on 2x8x4x4 = 256 elements = 1,280, all norm, no train_mode
    for mode in ("eval", "train"):
        ex = _explain(nn.Sequential(nn.BatchNorm2d(8, track_running_stats=False)), (torch.randn(2, 8, 4, 4),), mode)
        assert_explained(ex)
        assert ex.raw_total == 1280 and ex.causes == {"norm": 1280}, mode
