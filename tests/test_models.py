"""Model specs: parsing, resolving, default inputs, building without downloads or init.

Expected parameter counts are torchvision's own ``weights.meta["num_params"]`` for the first
published weights of each model. Every test runs with the network and torchvision's
downloader blocked, so any download attempt fails the test instead of being slow.
"""

from __future__ import annotations

import socket
import sys
import textwrap
import uuid

import pytest
import torch
import torch.nn.init
import torchvision
import torchvision.models._api as tv_api
from torch import nn

from reconcile import ReconcileError, models
from reconcile.models import InputSpec, ModelSpec

TV_NAMES = models.torchvision_names()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module into a fresh working directory; returns its (unique) import name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # build() adds the cwd; undo it after
    written: list[str] = []

    def write(source: str) -> str:
        name = f"usernet_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _first_weights(name: str):
    return list(torchvision.models.get_model_weights(name))[0]


def _global_patch_targets():
    """Everything build() patches while it runs, to check it is all put back."""
    return (
        tv_api.WeightsEnum.__dict__["get_state_dict"],
        nn.Module.__dict__["load_state_dict"],
        {n: getattr(torch.nn.init, n) for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")},
    )


# ---------------------------------------------------------------------------------------------
# torchvision models


def test_torchvision_names_are_the_80_classification_models_sorted():
    # torchvision 0.29.1 (pinned) ships 80 classification builders.
    assert len(TV_NAMES) == 80
    assert TV_NAMES == sorted(TV_NAMES)
    assert {"resnet18", "vgg16", "googlenet", "inception_v3", "vit_h_14", "regnet_y_128gf"} <= set(TV_NAMES)


@pytest.mark.parametrize("name", TV_NAMES)
def test_meta_build_matches_published_param_count(name, built_on_meta):
    model = models.build(models.resolve(name), device="meta")
    assert _params(model) == _first_weights(name).meta["num_params"]
    assert all(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert not model.training
    built_on_meta[name] = model  # counted by tests/test_zoo_native.py (conftest.py)


def test_googlenet_drops_aux_heads_like_torchvision():
    model = models.build(models.resolve("googlenet"))
    # IMAGENET1K_V1 meta: 6,624,904 parameters once aux1/aux2 are removed after loading.
    assert _params(model) == 6_624_904
    assert model.aux1 is None and model.aux2 is None and not model.aux_logits
    assert model.transform_input


def test_inception_v3_keeps_aux_logits_like_torchvision():
    model = models.build(models.resolve("inception_v3"))
    # IMAGENET1K_V1 meta: 27,161,264 parameters, AuxLogits included (it only runs in training).
    assert _params(model) == 27_161_264
    assert model.AuxLogits is not None and model.aux_logits
    assert model.transform_input


def test_vit_h_14_is_built_at_its_swag_resolution():
    model = models.build(models.resolve("vit_h_14"))
    assert model.image_size == 518
    # (518 / 14)^2 = 37^2 = 1369 patches + 1 class token
    assert tuple(model.encoder.pos_embedding.shape) == (1, 1370, 1280)


@pytest.mark.parametrize(
    "name, size",
    [
        ("resnet18", 224),
        ("inception_v3", 299),
        ("vit_h_14", 518),
        ("efficientnet_b7", 600),
        ("regnet_y_128gf", 384),
        ("swin_v2_t", 256),
        ("efficientnet_b1", 240),
    ],
)
def test_default_input_is_the_first_weights_eval_crop(name, size):
    assert models.default_input(models.resolve(name)) == InputSpec((1, 3, size, size), "float32", None)


def test_cpu_build_is_deterministic_finite_and_in_eval_mode():
    spec = models.resolve("resnet18")
    a = models.build(spec, device="cpu")
    b = models.build(spec, device="cpu")
    assert not a.training
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, t in sa.items():
        assert t.device.type == "cpu", key
        assert torch.equal(t, sb[key]), key
        if t.is_floating_point():
            assert torch.isfinite(t).all(), key
    # conv1.weight is 64x3x7x7: fan_in = 3 * 7 * 7 = 147, so every value is 1/147.
    assert torch.all(sa["conv1.weight"] == torch.tensor(1 / 147))
    assert torch.all(sa["bn1.weight"] == 1) and torch.all(sa["bn1.bias"] == 0)
    assert torch.all(sa["bn1.running_mean"] == 0) and torch.all(sa["bn1.running_var"] == 1)
    assert sa["bn1.num_batches_tracked"].item() == 0
    # fc.weight is 1000x512: 1/512
    assert torch.all(sa["fc.weight"] == torch.tensor(1 / 512))
    with torch.no_grad():
        out = a(*models.make_inputs(models.default_input(spec)))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_meta_forward_runs():
    spec = models.resolve("resnet18")
    model = models.build(spec)
    out = model(*models.make_inputs(models.default_input(spec), device="meta"))
    assert out.is_meta and out.shape == (1, 1000)


def test_repeated_builds_leave_no_patches_behind():
    before = _global_patch_targets()
    for name in ("densenet121", "googlenet", "regnet_x_400mf"):  # regnet falls back to CPU
        for device in ("meta", "cpu"):
            models.build(models.resolve(name), device=device)
    assert _global_patch_targets() == before


def test_unknown_device_is_a_user_error():
    with pytest.raises(ReconcileError, match="device must be one of meta, cpu"):
        models.build(models.resolve("resnet18"), device="cuda:7")


# ---------------------------------------------------------------------------------------------
# resolve


@pytest.mark.parametrize(
    "text, expected",
    [
        ("resnet18", ModelSpec("resnet18", "torchvision", "resnet18")),
        (" vgg16 ", ModelSpec(" vgg16 ", "torchvision", "vgg16")),
        ("ResNet18", ModelSpec("ResNet18", "torchvision", "resnet18")),
        ("mypkg.nets:make_net", ModelSpec("mypkg.nets:make_net", "callable", "mypkg.nets:make_net")),
        ("nets:Net.small", ModelSpec("nets:Net.small", "callable", "nets:Net.small")),
    ],
)
def test_resolve(text, expected):
    assert models.resolve(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        # difflib ratios: resnet18 0.875, resnet152 0.875, resnet101 0.824
        ("resnet81", "unknown model 'resnet81': did you mean resnet18, resnet152, resnet101? (see `reconcile models`)"),
        ("vit_h14", "unknown model 'vit_h14': did you mean vit_h_14, vit_l_16, vit_b_16? (see `reconcile models`)"),
        ("zzz", "unknown model 'zzz': not a torchvision classification model (see `reconcile models`); "
                "write timm:NAME for a timm model, hf:ClassName for a transformers model, or "
                "package.module:callable for your own"),
        ("convnext_atto", "unknown model 'convnext_atto': torchvision has no such model, timm does: "
                          "write timm:convnext_atto"),
        ("timm:vit_tiny", "unknown timm model 'vit_tiny': did you mean timm:gcvit_tiny, timm:davit_tiny, "
                          "timm:mvitv2_tiny?"),
        ("timm:", "empty model name after timm: e.g. timm:resnet50 or hf:BertModel"),
        ("hf:BertModl", "unknown transformers model 'BertModl': did you mean hf:BertModel, hf:IBertModel, "
                        "hf:BeitModel?"),
        ("hf:BertModel:hiden_size=3", "BertConfig has no setting 'hiden_size'; did you mean hidden_size, "
                                      "hidden_act?"),
        ("hf:BertModel:hidden_size", "bad transformers spec 'BertModel:hidden_size': overrides are KEY=VALUE "
                                     "separated by ':', e.g. hf:LlamaForCausalLM:num_hidden_layers=4"),
        ("mypkg.nets.make_net", "unknown model 'mypkg.nets.make_net': to load a callable separate module and "
                                "name with a colon, e.g. mypkg.nets:make_net"),
        ("fasterrcnn_resnet50_fpn", "'fasterrcnn_resnet50_fpn' is a torchvision model but not a classification "
                                    "model: wrap it in a factory and pass package.module:callable"),
        ("pkg.mod:", "bad model spec 'pkg.mod:': write package.module:callable, e.g. mypkg.nets:make_net"),
        (":fn", "bad model spec ':fn': write package.module:callable, e.g. mypkg.nets:make_net"),
        ("a:b:c", "bad model spec 'a:b:c': write package.module:callable, e.g. mypkg.nets:make_net"),
        ("  ", "empty model spec: give a torchvision name (see `reconcile models`), timm:NAME, "
               "hf:ClassName or package.module:callable"),
    ],
)
def test_resolve_errors(text, message):
    with pytest.raises(ReconcileError) as info:
        models.resolve(text)
    assert str(info.value) == message


# ---------------------------------------------------------------------------------------------
# package.module:callable


GOOD_MODULE = """
    import torch
    from torch import nn

    def make_net():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    make_net.example_input_shape = (2, 3, 16, 16)

    class Net(nn.Module):
        example_input_shape = [1, 4]
        example_input_dtype = torch.long
        example_input_high = 10

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)

        def forward(self, x):
            return self.emb(x)

    def needs_real_tensors():
        # Computes a width with tensors, as RegNet does: .item() has no data on meta, so the
        # factory must be rebuilt on CPU.
        width = int(torch.tensor([1, 3]).sum().item())
        return nn.Linear(width, 4)

    def needs_real_init():
        # Fails on meta (.item) and with init skipped (constant_ does nothing): only a plain
        # build works.
        lin = nn.Linear(2, 2)
        nn.init.constant_(lin.weight, 1.0)
        assert lin.weight.sum().item() == 4.0
        return lin

    class KeepsPlainTensor(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.scale = torch.ones(3)  # not a buffer: to_empty() would not move it

        def forward(self, x):
            return self.lin(x) * self.scale
"""


def test_callable_function_builds_on_meta_and_cpu(user_module):
    mod = user_module(GOOD_MODULE)
    spec = models.resolve(f"{mod}:make_net")
    assert models.default_input(spec) == InputSpec((2, 3, 16, 16))
    meta = models.build(spec)
    # conv 8*3*3*3 + 8 = 224, bn 8 + 8 = 16 -> 240
    assert _params(meta) == 240 and all(p.is_meta for p in meta.parameters())
    cpu = models.build(spec, device="cpu")
    assert not cpu.training
    # conv weight fan_in = 3 * 3 * 3 = 27
    assert torch.all(cpu[0].weight == torch.tensor(1 / 27))
    assert cpu(*models.make_inputs(models.default_input(spec))).shape == (2, 8, 14, 14)


def test_callable_class_is_called_without_arguments(user_module):
    mod = user_module(GOOD_MODULE)
    spec = models.resolve(f"{mod}:Net")
    assert models.default_input(spec) == InputSpec((1, 4), "long", 10)
    model = models.build(spec, device="cpu")
    assert _params(model) == 60  # 10 * 6
    (x,) = models.make_inputs(models.default_input(spec))
    assert model(x).shape == (1, 4, 6)


@pytest.mark.parametrize("factory, plain", [("needs_real_tensors", False), ("needs_real_init", True)])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_callable_that_fails_on_meta_falls_back_to_cpu(user_module, caplog, factory, plain, device):
    mod = user_module(GOOD_MODULE)
    before = _global_patch_targets()
    with caplog.at_level("INFO", logger="reconcile.models"):
        model = models.build(models.resolve(f"{mod}:{factory}"), device=device)
    assert _global_patch_targets() == before
    # a CPU build never tries meta: it is a real build, so buffers and ties are the model's own
    assert ("does not build on meta" in caplog.text) == (device == "meta")
    assert ("building plainly" in caplog.text) == plain
    assert all(p.device.type == device for p in model.parameters())
    if device == "cpu":
        n = model.in_features
        assert torch.all(model.weight == torch.tensor(1 / n)) and torch.all(model.bias == 0)


def test_plain_tensor_attributes_get_real_storage_on_cpu(user_module):
    mod = user_module(GOOD_MODULE)
    model = models.build(models.resolve(f"{mod}:KeepsPlainTensor"), device="cpu")
    assert model.scale.device.type == "cpu"
    assert model(torch.ones(1, 3)).shape == (1, 3)


@pytest.mark.parametrize(
    "source, attr, message",
    [
        ("", "make_net",
         "{mod!r} has no attribute 'make_net' (model '{mod}:make_net'); check the name after ':'"),
        ("def make_net(): pass\n", "make_nett",
         "{mod!r} has no attribute 'make_nett' (model '{mod}:make_nett'); did you mean make_net?"),
        ("CONFIG = {'depth': 3}\n", "CONFIG",
         "'{mod}:CONFIG' is a dict, not a callable: point at a function or nn.Module class that builds "
         "the model with no arguments"),
        ("def make_net():\n    raise ValueError('depth must be\\n positive')\n", "make_net",
         "model factory '{mod}:make_net' raised ValueError: depth must be positive; fix it so it builds "
         "the model when called with no arguments"),
        ("def make_net(depth):\n    pass\n", "make_net",
         "model factory '{mod}:make_net' raised TypeError: make_net() missing 1 required positional argument: "
         "'depth'; fix it so it builds the model when called with no arguments"),
        ("def make_net():\n    return (1, 2)\n", "make_net",
         "model factory '{mod}:make_net' returned a tuple, not a torch.nn.Module: make it return the model itself"),
        ("import no_such_dependency_xyz\n", "make_net",
         "cannot import module {mod!r} for model '{mod}:make_net': No module named 'no_such_dependency_xyz'; "
         "run from the directory that contains it or install it (searched from {cwd})"),
        ("def make_net(:\n", "make_net",
         "importing module {mod!r} for model '{mod}:make_net' raised SyntaxError: "),
        ("def make_net(): pass\n", "Sub.make",
         "{mod!r} has no attribute 'Sub' (model '{mod}:Sub.make'); check the name after ':'"),
    ],
)
def test_callable_errors_are_one_line_user_errors(user_module, tmp_path, source, attr, message):
    before = _global_patch_targets()
    mod = user_module(source)
    expected = message.format(mod=mod, cwd=tmp_path)
    with pytest.raises(ReconcileError) as info:
        models.build(models.resolve(f"{mod}:{attr}"))
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(expected) if expected.endswith(": ") else text == expected
    assert _global_patch_targets() == before


def test_missing_module_is_reported_at_build_not_resolve(user_module):
    user_module("")  # a clean cwd on sys.path
    spec = models.resolve("no_such_pkg_xyz.nets:make_net")
    with pytest.raises(ReconcileError, match=r"^cannot import module 'no_such_pkg_xyz.nets' .*"
                                             r"No module named 'no_such_pkg_xyz'"):
        models.build(spec)


@pytest.mark.parametrize(
    "source, message",
    [
        ("def make_net(): pass\n",
         "no input shape for '{mod}:make_net': pass --input-shape (e.g. 1,3,224,224) or give the callable "
         "an attribute example_input_shape = (1, 3, 224, 224), or example_inputs"),
        ("def make_net(): pass\nmake_net.example_input_shape = 224\n",
         "{mod}:make_net.example_input_shape = 224 is not a tuple: make it a tuple of positive integers such as "
         "(1, 3, 224, 224)"),
        ("def make_net(): pass\nmake_net.example_input_shape = (1, 0)\n",
         "input shape (1, 0) must be a non-empty tuple of positive integers, e.g. (1, 3, 224, 224)"),
        ("def make_net(): pass\nmake_net.example_input_shape = (1, 4)\nmake_net.example_input_dtype = 'complex'\n",
         "unknown input dtype 'complex': use one of float32, float16, bfloat16, float64, long, int32"),
    ],
)
def test_callable_default_input_errors(user_module, source, message):
    mod = user_module(source)
    with pytest.raises(ReconcileError) as info:
        models.default_input(models.resolve(f"{mod}:make_net"))
    assert str(info.value) == message.format(mod=mod)


# ---------------------------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("resnet18", ["resnet18"]),
        ("resnet18,vgg16, pkg.mod:fn", ["resnet18", "vgg16", "pkg.mod:fn"]),
        (" resnet18 , ,vgg16,", ["resnet18", "vgg16"]),
        ("vgg16,resnet18,vgg16", ["vgg16", "resnet18"]),
    ],
)
def test_split_specs(text, expected):
    assert models.split_specs(text) == expected


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_split_specs_empty(text):
    with pytest.raises(ReconcileError, match="^no model given: name one or more models"):
        models.split_specs(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,3,224,224", (1, 3, 224, 224)),
        ("1x3x224x224", (1, 3, 224, 224)),
        ("1X3X224X224", (1, 3, 224, 224)),
        (" 1, 3, 224, 224 ", (1, 3, 224, 224)),
        ("(1, 3, 224, 224)", (1, 3, 224, 224)),
        ("[2,128]", (2, 128)),
        ("8,", (8,)),
        ("16", (16,)),
    ],
)
def test_parse_input_shape(text, expected):
    assert models.parse_input_shape(text) == expected


@pytest.mark.parametrize(
    "text", ["", "  ", "()", "x", "1,3,,224", "1,3,224,224,,", "0,3,224,224", "1,-3,224", "1,3.5", "1;3;224",
             "a,b", "1e3", "1x3x224x", "\uff11,3"],
)
def test_parse_input_shape_errors(text):
    with pytest.raises(ReconcileError) as info:
        models.parse_input_shape(text)
    assert str(info.value) == (
        f"bad input shape {text!r}: expected positive integers separated by ',' or 'x', e.g. 1,3,224,224"
    )


@pytest.mark.parametrize(
    "text, expected",
    [("long", "long"), ("int64", "long"), ("torch.int64", "long"), ("float", "float32"), ("Float32", "float32"),
     ("fp16", "float16"), ("half", "float16"), ("bf16", "bfloat16"), ("double", "float64"), ("int32", "int32")],
)
def test_parse_dtype(text, expected):
    assert models.parse_dtype(text) == expected


@pytest.mark.parametrize("text", ["", "int8", "complex64", "floaty"])
def test_parse_dtype_errors(text):
    with pytest.raises(ReconcileError, match="^unknown input dtype .*: use one of float32, float16, bfloat16"):
        models.parse_dtype(text)


@pytest.mark.parametrize(
    "kwargs", [dict(shape=()), dict(shape=(1, 0)), dict(shape=(1, 3), dtype="int8"), dict(shape=(1,), high=0)]
)
def test_input_spec_rejects_bad_values(kwargs):
    with pytest.raises(ReconcileError):
        InputSpec(**kwargs)


# ---------------------------------------------------------------------------------------------
# inputs


@pytest.mark.parametrize(
    "inp, dtype",
    [
        (InputSpec((2, 3, 8, 8)), torch.float32),
        (InputSpec((2, 3, 8, 8), "float16"), torch.float16),
        (InputSpec((2, 3, 8, 8), "bfloat16"), torch.bfloat16),
        (InputSpec((4, 7), "long", 5), torch.long),
        (InputSpec((4, 7), "int32"), torch.int32),
    ],
)
def test_make_inputs(inp, dtype):
    (x,) = models.make_inputs(inp)
    (again,) = models.make_inputs(inp)
    assert x.shape == inp.shape and x.dtype == dtype and x.device.type == "cpu"
    assert torch.equal(x, again)
    if dtype in (torch.long, torch.int32):
        high = inp.high or 2  # default: ids 0 and 1
        assert int(x.min()) >= 0 and int(x.max()) < high
    else:
        assert torch.isfinite(x).all()
    (m,) = models.make_inputs(inp, device="meta")
    assert m.is_meta and m.shape == inp.shape and m.dtype == dtype


def test_make_inputs_long_defaults_to_ids_0_and_1():
    (x,) = models.make_inputs(InputSpec((64, 64), "long"))
    assert set(x.unique().tolist()) == {0, 1}
