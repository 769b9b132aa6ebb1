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
    # the same forward, op for op (autograd's own detach of a saved in-place result does not run:
    # the counter's saved-tensor hooks take saved tensors as they are)
    assert [dataclasses.replace(r, backward=None) for r in trained.rows] == list(plain.rows)
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


# ----- rules of thumb and memory (explain/training.py) ---------------------------------------------


def _summary(model, *inputs, **kw):
    from reconcile.explain.training import summarize

    return summarize(count(model, inputs, training=True, **kw))


def _gaps(rule) -> dict:
    return {g.cause: g.amount for g in rule.gaps}


def _rule(summary, rule_id: str):
    return next(r for r in summary.rules if r.id == rule_id)


def test_three_x_rule_resnet18_gap_is_the_first_conv_and_nonmatmul_work():
    s = _summary(_resnet18(), _x(1, 3, 224, 224))
    rule = _rule(s, "3x_forward")
    # 3 x 3,650,225,148 forward FLOPs = 10,950,675,444; exact 10,696,307,172
    assert (rule.predicted, rule.exact) == (10_950_675_444, 10_696_307_172)
    gaps = _gaps(rule)
    # conv1's input gradient is not computed: 2 FLOPs x 118,013,952 MACs = 236,027,904
    assert gaps["no_input_gradient"] == 236_027_904
    assert "frozen_parameters" not in gaps and "no_grad" not in gaps
    assert sum(gaps.values()) == rule.predicted - rule.exact
    two = _rule(s, "2x_backward")
    # backward 7,046,082,024 FLOPs against 2 x 3,650,225,148 = 7,300,450,296: the same gap
    assert (two.predicted, two.exact) == (7_300_450_296, 7_046_082_024) and two.gaps == rule.gaps
    assert [r.id for r in s.rules] == ["3x_forward", "2x_backward"]  # an image model: no 6ND rule


def test_three_x_rule_frozen_layer():
    m = _meta(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))
    m[0].requires_grad_(False)
    rule = _rule(_summary(m, _x(3, 4)), "3x_forward")
    # forward MACs 3 * 4 * 4 + 3 * 4 * 2 = 48 + 24 = 72; bias adds 12 + 6 = 18; F = 2 * 72 + 18 = 162
    # backward: only the second weight (dW 3 * 4 * 2 = 24 MACs) and its bias (6 additions): 54 FLOPs
    assert (rule.predicted, rule.exact) == (3 * 162, 162 + 54)
    assert _gaps(rule) == {
        "frozen_parameters": 2 * (72 - 24),  # the first weight's gradient, 48 MACs, is never made
        "no_input_gradient": 2 * 72,  # no layer's input needs a gradient
        "nonmatmul_bias": 2 * 18,  # bias gradients are filed as reductions ...
        "nonmatmul_reduction": -6,  # ... 3 * 2 = 6 additions
    }


def test_six_n_d_rule_on_a_tiny_token_model():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.up = nn.Linear(4, 4)
            self.act = nn.ReLU()
            self.head = nn.Linear(4, 10)

        def forward(self, ids):
            return self.head(self.act(self.up(self.emb(ids))))

    ids = torch.zeros(1, 3, dtype=torch.long, device="meta")
    s = _summary(_meta(Tiny()), ids)
    assert s.tokens == 3
    rule = _rule(s, "6nd")
    # N = 40 (embedding) + 16 + 4 + 40 + 10 = 110; 6 * 110 * 3 = 1980
    # forward: MACs 3*4*4 + 3*4*10 = 168 (336 FLOPs), bias 12 + 30, relu 12: 390
    # backward: MACs dX and dW of both Linears (the embedding's output needs a gradient): 2 * 168 = 336
    # (672 FLOPs), bias sums 12 + 30, relu 12, embedding scatter-add 3 * 4 = 12: 738; exact 390 + 738 = 1128
    assert (rule.predicted, rule.exact) == (1980, 1128)
    assert _gaps(rule) == {
        "embeddings_are_lookups": 6 * 3 * 40,  # 720
        "parameters_outside_matmuls": 6 * 3 * (4 + 10),  # the biases: 252
        "norms_and_activations": -(54 + 66),  # forward 42 + 12, backward 42 + 12 + 12
    }  # 720 + 252 - 120 = 852 = 1980 - 1128; matmul weights exactly 6 per parameter per token: no gap


def test_attention_products_have_two_input_gradients():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(8, 8, bias=False)
            self.k = nn.Linear(8, 8, bias=False)

        def forward(self, x):
            return self.q(x) @ self.k(x).transpose(-1, -2)

    r = count(_meta(Attn()), (_x(2, 4, 8),), training=True)
    root = r.row("").backward
    # scores: 2 batches * 4 * 4 * 8 = 256 MACs; backward dQ and dK, 256 each, both input gradients,
    # none from a node that read a parameter
    assert root.op_components["aten::bmm"] == {"input": {"macs": 512}}
    assert root.forward_param_macs == 0 and root.param_macs == {}
    rule = _rule(_summary(_meta(Attn()), _x(2, 4, 8)), "3x_forward")
    assert "attention_operands" not in _gaps(rule)  # 4 * 256 - 2 * 512 = 0


def test_memory_and_pass_sizes_by_hand():
    m = _meta(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True)))
    s = _summary(m, _x(1, 3, 4, 4))
    mem = s.memory
    # parameters: conv 4*3*9 = 108, bn 4 + 4: 116 floats = 464 bytes; buffers: running mean and var
    # 4 + 4 floats + num_batches_tracked (int64) = 40 bytes; input 48 floats = 192 bytes
    assert (mem.params, mem.trainable, mem.buffers, mem.inputs) == (464, 464, 40, 192)
    # saved: batch norm's input (the conv output, 64 floats = 256 B) and its two per-channel
    # statistics (4 floats each, 32 B); ReLU's result (the batch norm output, 256 B). The conv's
    # input and weight are resident, not counted.
    assert mem.saved == 256 + 32 + 256
    assert mem.saved_by_module == {"1": 288, "2": 256}
    # optimizer state: Adam 2 x 464, SGD with momentum 1 x 464, SGD none
    assert s.peaks["adam"] - s.peaks["sgd"] == 2 * 464 and s.peaks["sgd-momentum"] - s.peaks["sgd"] == 464
    ts, ti = s.pass_sizes
    # torchsummary: 2 * 4 B * (64 + 64 + 64) output elements of conv, bn, relu = 1536 B = saved 544
    # + gradient copy 768 + the relu output counted again over bn's storage 256 - bn statistics 32
    assert ts.bytes == 1536
    assert {g.cause: g.amount for g in ts.terms} == {"gradient_copy": 768, "repeated_storages": 256,
                                                     "saved_not_outputs": -32}
    # torchinfo: leaf modules with parameters (conv, bn): 2 * (256 + 256) = 1024 = 544 + 512 - 32
    assert ti.bytes == 1024
    assert {g.cause: g.amount for g in ti.terms} == {"gradient_copy": 512, "saved_not_outputs": -32}


def test_report_has_a_training_section_only_with_training():
    from reconcile.report.markdown import training_section
    from reconcile.report.model import ModelReport

    plain = ModelReport("m", (1,), "float32", {}, {}, {}, ())
    assert training_section(plain) == []
    s = _summary(_meta(nn.Linear(4, 2)), _x(1, 4))
    text = "\n".join(training_section(dataclasses.replace(plain, training=s)))
    assert "## Training: forward + backward, exact" in text and "3 x forward" in text


def test_cpu_and_meta_give_the_same_training_count():
    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))

    cpu_model = net()
    before = {k: v.clone() for k, v in cpu_model.state_dict().items()}
    on_cpu = count(cpu_model, (torch.randn(2, 3, 8, 8),), training=True)
    on_meta = count(_meta(net()), (_x(2, 3, 8, 8),), training=True)
    assert on_cpu.training.totals == on_meta.training.totals
    assert [r.backward for r in on_cpu.rows] == [r.backward for r in on_meta.rows]
    assert on_cpu.training.memory == on_meta.training.memory
    # the model as it was: weights and running statistics unchanged, no gradients left
    assert all(torch.equal(before[k], v) for k, v in cpu_model.state_dict().items())
    assert all(p.grad is None for p in cpu_model.parameters())


def test_six_n_d_rule_with_a_tied_output_embedding():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids))

    with torch.device("meta"):  # built there: Module.to("meta") would untie the weights
        tied = Tied()
    s = _summary(tied, torch.zeros(1, 3, dtype=torch.long, device="meta"))
    rule = _rule(s, "6nd")
    # N = 40 (one tensor, two names); 6 * 40 * 3 = 720. Forward: head 3 * 4 * 10 = 120 MACs (240
    # FLOPs); backward: dX and dW 120 MACs each (480), the embedding's scatter-add 3 * 4 = 12, and
    # the two gradients of the shared table added, 40: exact 240 + 480 + 12 + 40 = 772
    assert (rule.predicted, rule.exact) == (720, 772)
    # the table is the head's matmul weight, used once per token: the rule is right for it, and
    # the whole gap is non-matmul work (12 + 40)
    assert _gaps(rule) == {"norms_and_activations": -52}
    assert s.memory.params == 40 * 4


def test_torchinfo_pass_size_is_torchinfos_own_figure():
    torchinfo = pytest.importorskip("torchinfo")
    tv = pytest.importorskip("torchvision")
    ours = {p.tool: p for p in _summary(_resnet18(), _x(1, 3, 224, 224)).pass_sizes}
    # torchinfo's own total, from a real CPU run of its summary()
    stats = torchinfo.summary(tv.models.resnet18(), input_size=(1, 3, 224, 224), verbose=0)
    assert ours["torchinfo"].bytes == stats.total_output_bytes == 39_747_392
    # torchsummary prints "Forward/backward pass size (MB): 62.79" for resnet18 (per sample)
    assert f"{ours['torchsummary'].bytes / 2**20:.2f}" == "62.79"


def test_work_on_a_weight_before_its_matmul_is_weight_gradient_work():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(4, 4))

        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight * 2)

    r = count(_meta(Scaled()), (_x(3, 4),), training=True)
    b = r.row("").backward
    # dW' = dY^T X: 3 * 4 * 4 = 48 MACs; then dW = 2 * dW': 16 multiplies. Both lead only to the
    # parameter, so both are weight-gradient work
    assert {op: dict(p) for op, p in b.op_components.items()} == {
        "aten::mm": {"weight": {"macs": 48}}, "aten::mul": {"weight": {"elementwise": 16}}}
    assert b.forward_param_macs == 48  # the matmul's operand was computed from the parameter


def test_cli_report_training_section(tmp_path, capsys):
    import json

    from reconcile.cli import main

    assert main(["report", "resnet18", "--tools", "native", "--training", "--hardware", "", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "resnet18.md").read_text()
    assert "## Training: forward + backward, exact" in md and "train mode" in md
    assert "`reconcile report resnet18 --mode train --tools native --training`" in md
    data = json.loads((tmp_path / "resnet18.json").read_text())
    t = data["training"]
    # as test_resnet18_training_macs: 1,814,073,344 + 3,510,132,736
    assert t["forward_macs"] + t["backward_macs"] == 5_324_206_080
    assert "outputs" not in t["memory"] and t["memory"]["saved"] > 0


def test_in_place_write_into_a_view_is_followed():
    class Half(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            y = self.lin(x)
            y[:, :2] *= 2  # CopySlices: the gradient of the slice is doubled, written into the result
            return y

    r = count(_meta(Half()), (_x(3, 4),), training=True)
    root = r.row("").backward
    # the doubling of the slice's gradient, 3 * 2 = 6 multiplies, flows on towards lin's output:
    # input-gradient work, found through the copy into a view of the result
    assert root.op_components["aten::mul"] == {"input": {"elementwise": 6}}
    assert root.nodes["CopySlices"] >= 1 and r.training.unmapped_nodes == {}
    # lin: dW = 3 * 4 * 4 = 48 MACs, db sums 12 elements; its input needs no gradient
    assert _bwd(r, "lin") == {"aten::mm": {"weight": {"macs": 48}}, "aten::sum": {"weight": {"reduction": 12}}}
