"""One test per cause of disagreement: a model built to show it, the tool that shows it, and the
cause's amount worked out by hand. ``test_every_cause_has_a_test`` keeps the catalogue and these
tests in step: a cause without a test here (or a test for a cause that no longer exists) fails.

Tools that leave the process as they found it run in this process; torchstat (which patches
``nn.Module.__call__`` for good) runs through ``reconcile.runner``, all its models in one call.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reconcile.conventions.base import CAUSES
from reconcile.counter import count
from reconcile.runner import Job, run_jobs
from tests.harness import assert_explained, explain, explain_in_process
from tests.models_small import Fn



def causes(ex, metric: str | None = None) -> dict:
    summary = ex.summaries[metric] if metric else ex.summaries[ex.main]
    return {k: v for k, v in summary.causes.items() if v}


def run(tool: str, model: nn.Module, *shape: int):
    ex = explain_in_process(tool, model.eval(), (torch.randn(*shape),))
    assert_explained(ex)
    return ex


# ----- torchstat: its models are built in the runner's workers, by name ---------------------------


def _stat_conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 1, 2, bias=False), nn.ReLU())


def _stat_twice() -> nn.Module:
    return Fn(lambda self, x: self.conv(self.conv(x)), conv=nn.Conv2d(1, 1, 1, bias=False))


STAT_MODELS = {"conv": (_stat_conv, (1, 1, 3, 3)), "twice": (_stat_twice, (1, 1, 2, 2))}


def build(name: str, device: str) -> nn.Module:
    return STAT_MODELS[name][0]().eval().to(device)


@pytest.fixture(scope="module")
def torchstat():
    jobs = [Job(name, "torchstat", shape) for name, (_, shape) in STAT_MODELS.items()]
    runs = run_jobs(jobs, build=f"{__name__}:build")
    out = {}
    for (name, (factory, shape)), r in zip(STAT_MODELS.items(), runs):
        assert r.status == "ok", (name, r.error_type, r.error_message)
        torch.manual_seed(0)
        ex = explain("torchstat", r, count(factory().eval(), (torch.randn(*shape),)))
        assert_explained(ex)
        out[name] = ex
    return out


# ----- one test per cause -------------------------------------------------------------------------


def test_cause_mac_vs_flop(torchstat):
    # torchstat MAdd of Conv2d(1, 1, 2, no bias) on 1x1x3x3: 2x2 outputs of k = 4 multiplies and
    # k - 1 = 3 adds: 7 x 4 = 28; native 4 x 4 = 16 MACs. The adds counted apart: +4 x 4 = 16, less
    # one per output: -4. ReLU: 1 per output element, 4.
    ex = torchstat["conv"]
    assert ex.run.headline["Total MAdd"] == 28 + 4
    assert causes(ex, "Total MAdd") == {"mac_vs_flop": 16, "per_output_minus_one": -4, "activation": 4}


def test_cause_per_output_minus_one(torchstat):
    # the same conv: 28 = 16 + 16 - 4, k - 1 = 3 adds per output, not 4, on 4 outputs
    (conv,) = [le for le in torchstat["conv"].layers if le.module == "0"]
    assert {c.id: c.amount for c in conv.causes["MAdd"]} == {"mac_vs_flop": 16, "per_output_minus_one": -4}


def test_cause_total_not_sum(torchstat):
    # torchstat's "Total MemRead" cell holds the last row's value: rows conv (input 9 + weight 4
    # elements) x 4 B = 52 and relu 4 x 4 B = 16; the total shows 16, not 68: -52
    ex = torchstat["conv"]
    assert ex.run.headline["Total MemRead(B)"] == 16
    assert causes(ex, "Total MemRead(B)")["total_not_sum"] == -52


def test_cause_repeated_calls(torchstat):
    # torchstat keeps the last call of a module called twice: a 1x1 conv on 1x1x2x2, twice = 2 x 4
    # native MACs; torchstat's MAdd of one call, (1 multiply + 0 adds) x 4 = 4: repeated_calls -4
    # (and for k = 1: +4 adds counted apart, -4 for k - 1)
    ex = torchstat["twice"]
    assert ex.run.headline["Total MAdd"] == 4
    assert causes(ex, "Total MAdd") == {"repeated_calls": -4, "mac_vs_flop": 4, "per_output_minus_one": -4}


def test_cause_bias():
    # ptflops-aten: Linear(4, 3) on 2x4 runs as addmm, counted with its bias: 2*4*3 = 24 MACs + 2*3 = 6
    ex = run("ptflops-aten", nn.Sequential(nn.Linear(4, 3)), 2, 4)
    assert ex.raw_total == 30 and causes(ex) == {"bias": 6}


def test_cause_norm():
    # thop: BatchNorm2d(2) on 1x2x3x3 = 18 elements, 2 per element doubled for affine = 4 x 18 = 72
    ex = run("thop", nn.Sequential(nn.BatchNorm2d(2)), 1, 2, 3, 3)
    assert ex.raw_total == 72 and causes(ex) == {"norm": 72}


def test_cause_activation():
    # ptflops: ReLU module on 1x10: its hook counts 10 elements (activation) ...
    ex = run("ptflops", nn.Sequential(nn.ReLU()), 1, 10)
    assert causes(ex)["activation"] == 10


def test_cause_double_count():
    # ... and ReLU.forward calls the patched F.relu, which counts the same 10 again, in the total only
    ex = run("ptflops", nn.Sequential(nn.ReLU()), 1, 10)
    assert ex.raw_total == 20 and causes(ex) == {"activation": 10, "double_count": 10}
    assert ex.normalized["macs"] == 0  # the double-counted ReLU is no MAC


def test_cause_nested_skipped():
    # ptflops hooks timm's Attention (timm importable) and, the module being atomic, never sums the
    # Linears inside it. Attention(8, heads 2) on 1x4x8: qkv 4*8*24 = 768 MACs, proj 4*8*8 = 256 -> -1024;
    # the hook's own QK^T + AV 2 heads x 2 x 4*4*4 = 256 MACs are the native attention MACs
    from timm.layers import Attention

    ex = run("ptflops", nn.Sequential(Attention(8, num_heads=2)), 1, 4, 8)
    assert causes(ex)["nested_skipped"] == -1024


def test_cause_dead_code():
    # fvcore's jit trace drops work nothing returned depends on: Linear(4, 3, no bias) on 1x4 whose
    # result the forward discards: 4*3 = 12 MACs native counts, fvcore does not: -12
    ex = run("fvcore", Fn(lambda self, x: (self.unused(x), x * 2)[1], unused=nn.Linear(4, 3, bias=False)), 1, 4)
    assert ex.raw_total == 0 and causes(ex) == {"dead_code": -12}


def test_cause_pool():
    # thop: AdaptiveAvgPool2d(1) on 1x2x4x4: (window 16 + 1) per output x 2 outputs = 34
    ex = run("thop", nn.Sequential(nn.AdaptiveAvgPool2d(1)), 1, 2, 4, 4)
    assert ex.raw_total == 34 and causes(ex) == {"pool": 34}


def test_cause_elementwise():
    # ptflops: MultiheadAttention(8, 2) on 1x3x8 (self-attention, batch first): its hook counts the
    # query scaling as 1 per query element, 3 x 8 = 24 (besides projections, products, softmax)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    ex = run("ptflops", Fn(lambda self, x: self.mha(x, x, x)[0], mha=mha), 1, 3, 8)
    assert causes(ex)["elementwise"] == 24


def test_cause_softmax():
    # thop: Softmax(dim=1) on 1x5: exp 5, sum 4, divide 5 = 3 x 5 - 1 = 14
    ex = run("thop", nn.Sequential(nn.Softmax(dim=1)), 1, 5)
    assert ex.raw_total == 14 and causes(ex) == {"softmax": 14}


def test_cause_interpolate():
    # fvcore: bilinear upsampling x2 of 1x1x2x2 -> 16 outputs at 4 per output element = 64; native MACs 0
    ex = run("fvcore", nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear")), 1, 1, 2, 2)
    assert ex.raw_total == 64 and causes(ex) == {"interpolate": 64}


def test_cause_rnn_gates():
    # thop RNNCell(2, 3) on 1x2: h*(in + h) = 3*5 = 15 products (= native MACs) + h = 3 for the
    # nonlinearity's sum (rnn_gates), and the two bias vectors 2h = 6 adds (bias): 15 + 3 + 6 = 24
    ex = run("thop", nn.Sequential(nn.RNNCell(2, 3)), 1, 2)
    assert ex.raw_total == 24 and ex.native_macs == 15
    assert causes(ex) == {"rnn_gates": 3, "bias": 6}


def test_cause_formula():
    # thop ConvTranspose2d(1, 1, 2, stride 2) on 1x1x2x2: N_out * Cin/g * K = 16 * 1 * 4 = 64 where the
    # MACs are N_in * Cout/g * K = 4 * 1 * 4 = 16: formula +48
    ex = run("thop", nn.Sequential(nn.ConvTranspose2d(1, 1, 2, stride=2, bias=False)), 1, 1, 2, 2)
    assert ex.raw_total == 64 and causes(ex) == {"formula": 48}


def test_cause_per_batch_row():
    # torchinfo: Linear(4, 3, no bias) on 2x5x4 counted as output_size[0] 2 x 12 weights = 24 where the
    # MACs are 2*5 tokens * 4 * 3 = 120: per_batch_row -96 (4 of each sample's 5 tokens left out)
    ex = run("torchinfo", nn.Sequential(nn.Linear(4, 3, bias=False)), 2, 5, 4)
    assert ex.raw_total == 24 and causes(ex) == {"per_batch_row": -96}
    assert ex.normalized["macs"] == 120


def test_cause_per_sample():
    # ptflops: Linear(4, 3, no bias) on 2x4: 2*4*3 = 24 MACs, printed per sample: 12
    ex = run("ptflops", nn.Sequential(nn.Linear(4, 3, bias=False)), 2, 4)
    assert ex.raw_total == 12 and causes(ex) == {"per_sample": -12}
    assert ex.normalized["macs"] == 24


def test_cause_batch_differs():
    # torchsummary runs batch 2 whatever the user's batch. (B, T, E) -> (T, B, E) into Linear(4, 4):
    # native batch 3, fc's output 5x3x4 = 60 elements; torchsummary's 5x2x4 prints [-1, 2, 4] -> -8.
    # Per sample as native sees it: 60/3 = 20 -> per_sample -40... with the batch in dim 1 the sample
    # is 3*4 = 12 (per_sample -48); at batch 2 it holds 8: batch_differs -4; the -1 sign: -16
    fc = nn.Linear(4, 4)
    ex = explain_in_process("torchsummary", Fn(lambda self, x: self.fc(x.transpose(0, 1)), fc=fc).eval(),
                            (torch.randn(3, 5, 4),))
    assert_explained(ex)
    (row,) = ex.layers[:1]
    assert row.raw["output_prod"] == -8
    assert {c.id: c.amount for c in row.causes["output_prod"]} == {"per_sample": -48, "batch_differs": -4,
                                                                     "memory_model": -16}


def test_cause_functional_not_seen():
    # thop: torch.matmul in the root's forward, 1x2x3 @ 1x3x2 = 2*3*2 = 12 MACs, not seen by hooks
    # (the root has a child, so thop does not take it for a leaf without a rule)
    ex = run("thop", Fn(lambda self, x: torch.matmul(self.act(x), x.transpose(-1, -2)), act=nn.ReLU()), 1, 2, 3)
    assert ex.raw_total == 0 and causes(ex) == {"functional_not_seen": -12}


def test_cause_unsupported_module():
    # thop matches exact types: a subclass of Linear(4, 3, no bias) on 1x4 is not counted: -12 MACs
    class MyLinear(nn.Linear):
        pass

    ex = run("thop", nn.Sequential(MyLinear(4, 3, bias=False)), 1, 4)
    assert ex.raw_total == 0 and causes(ex) == {"unsupported_module": -12}


def test_cause_unsupported_op():
    # fvcore has no handle for scaled_dot_product_attention: q = k = v = 1x1x2x4: QK^T 2*2*4 = 16
    # and AV 2*2*4 = 16 MACs, counted as 0: -32
    ex = run("fvcore", Fn(lambda self, x: F.scaled_dot_product_attention(x, x, x)), 1, 1, 2, 4)
    assert ex.raw_total == 0 and causes(ex) == {"unsupported_op": -32}


def test_cause_params_tied():
    # torchsummary: b's weight is a's (4x4 = 16, no bias): each row counts it, 32 in total
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    ex = run("torchsummary", nn.Sequential(a, b), 1, 4)
    assert ex.run.headline["Total params"] == 32
    assert causes(ex, "Total params") == {"params_tied": 16}


def test_cause_params_missed():
    # thop reads only the modules it hooks: a free nn.Parameter of 3 on the root is missed
    model = Fn(lambda self, x: self.lin(x) * self.w, lin=nn.Linear(4, 3, bias=False))
    model.w = nn.Parameter(torch.ones(3))
    ex = run("thop", model, 1, 4)
    assert causes(ex, "params") == {"params_missed": -3}


def test_cause_params_frozen():
    # ptflops counts trainable parameters only: a frozen Linear(4, 3) = 4*3 + 3 = 15
    lin = nn.Linear(4, 3).requires_grad_(False)
    ex = run("ptflops", nn.Sequential(lin, nn.Linear(3, 2)), 1, 4)
    assert causes(ex, "params") == {"params_frozen": -15}


def test_cause_memory_model():
    # torchsummary's pass size: 2 (gradients) x 4 B x |prod(output shape)|: Linear(4, 3) on 1x4 gives
    # 3 elements = 24 B; native writes 3 float32 = 12 B: +12
    ex = run("torchsummary", nn.Sequential(nn.Linear(4, 3)), 1, 4)
    assert ex.run.headline["Forward/backward pass size (bytes)"] == 24
    assert causes(ex, "Forward/backward pass size (bytes)") == {"memory_model": 12}


def test_cause_trace_size_arithmetic():
    # fvcore's trace of ``1 - x.shape[1]`` and ``x.shape[0] * x.shape[1]`` holds an aten::rsub and
    # an aten::mul on size tensors, listed as unsupported: +1 call each (tests/test_fvcore_trace.py)
    from tests.test_fvcore_trace import Sizes, _explained, _trace_causes

    ex = _explained(Sizes(), torch.randn(2, 3, 4))
    assert_explained(ex)
    root = next(le for le in ex.layers if le.module == "")
    assert _trace_causes(root) == {("aten::mul", "trace_size_arithmetic"): 1, ("aten::rsub", "trace_size_arithmetic"): 1}


def test_cause_trace_differs():
    # traced: x.neg() under torch.jit.is_tracing() (+1); eager: x.abs() instead (-1) and an unused
    # x.sigmoid() the trace drops (-1)
    from tests.test_fvcore_trace import Paths, _explained, _trace_causes

    ex = _explained(Paths(), torch.randn(2, 4))
    assert_explained(ex)
    root = next(le for le in ex.layers if le.module == "")
    assert _trace_causes(root) == {("aten::abs", "trace_differs"): -1, ("aten::neg", "trace_differs"): 1,
                                   ("aten::sigmoid", "trace_differs"): -1}
def test_cause_groups_ignored():
    # FlopCounterMode around forward + backward: Conv2d(4, 4, 3, padding=1, groups=4) on 1x4x4x4, its
    # input needing no gradient: forward and weight gradient each 4 x 4 outputs x 4 channels x 9 x
    # (4/4) = 576 MACs; FCM counts the weight gradient as if dense, 2 x 4 groups x 576 = 4,608
    # FLOPs: 2 x 3 x 576 = 3,456 more than 2 per MAC
    from reconcile.adapters.flopcountermode import FlopCounterModeTrainingAdapter
    from reconcile.counter import count

    model, x = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)).train(), torch.randn(1, 4, 4, 4)
    tool_run = FlopCounterModeTrainingAdapter().run(model, (x,))
    ex = explain("flopcountermode", tool_run, count(model, (x,), training=True))
    assert_explained(ex)
    assert (tool_run.headline["forward_flops"], tool_run.headline["backward_flops"]) == (1_152, 4_608)
    assert causes(ex) == {"mac_vs_flop": 2 * 576, "groups_ignored": 3_456}
def test_cause_outside_root():
    # FlopCounterMode around forward + backward of a model returning h = enc(x) and pool(h), both
    # Linear(4, 4, bias=False) on 1x4: pool's backward (input 16 + weight 16 MACs = 64 FLOPs) runs
    # before h's gradient is complete, so before FCM's module tracker opens the root: it is in
    # Global only, moved from the root's row (-64) to the total-only record (+64)
    from reconcile.adapters.flopcountermode import FlopCounterModeTrainingAdapter
    from reconcile.counter import count
    from tests.test_fcm_training_rows import Pooled

    torch.manual_seed(0)
    model, x = Pooled().train(), torch.randn(1, 4)
    tool_run = FlopCounterModeTrainingAdapter().run(model, (x,))
    ex = explain("flopcountermode", tool_run, count(model, (x,), training=True))
    assert_explained(ex)
    root = next(le for le in ex.layers if le.module == "")
    assert [c.amount for c in root.causes["flops"] if c.id == "outside_root"] == [-64]
    assert [(c.id, c.amount) for c in ex.unattributed.causes["Global outside Pooled"]] == [("outside_root", 64)]


def test_cause_train_mode():
    # BatchNorm2d(2) in training mode on 2x2x2x2 = 16 elements: mmengine (which never calls eval())
    # counts 5 per element on batch statistics: 2 * 16 = 32 as with running statistics (norm) and
    # 3 * 16 = 48 more (train_mode)
    model = nn.Sequential(nn.BatchNorm2d(2)).train()
    x = torch.randn(2, 2, 2, 2)
    from tests.harness import adapter

    ex = explain("mmengine", adapter("mmengine").run(model, (x,)), count(model, (x,), mode="train"))
    assert_explained(ex)
    assert causes(ex) == {"norm": 32, "train_mode": 48}


def test_cause_pool_kernel_1d():
    # MaxPool2d(2) on 1x1x4x4 -> 1x1x2x2, 4 outputs: torchscan reads kernel_size=2 as 2 elements,
    # (2 - 1) * 4 = 4 MACs, where a 2x2 window is (4 - 1) * 4 = 12: pool 12, pool_kernel_1d -8
    from tests.harness import adapter

    model, x = nn.Sequential(nn.MaxPool2d(2)).eval(), torch.randn(1, 1, 4, 4)
    ex = explain("torchscan", adapter("torchscan").run(model, (x,)), count(model, (x,)))
    assert_explained(ex)
    assert causes(ex) == {"pool": 12, "pool_kernel_1d": -8}


def test_cause_params_buffers():
    # BatchNorm1d(3): torchscan's Param # is weight + bias 6 plus running mean and var 3 + 3 and
    # num_batches_tracked 1: 13, where the parameters are 6
    from tests.harness import adapter

    model, x = nn.Sequential(nn.BatchNorm1d(3)).eval(), torch.randn(2, 3)
    ex = explain("torchscan", adapter("torchscan").run(model, (x,)), count(model, (x,)))
    assert_explained(ex)
    assert causes(ex, "layer_params") == {"params_buffers": 7}


class _SharedConv(nn.Module):
    """One Conv2d registered three times: as ``conv``, as ``again`` beside it (coat's ParallelBlock
    holds one Mlp as mlp2, mlp3 and mlp4) and as ``block.conv`` (coat's cpe modules, held by the
    root and by each block of their stage)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, bias=False)
        self.again = self.conv
        self.block = nn.Module()
        self.block.conv = self.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_cause_shared_module():
    # conv 1->2 k3 on 1x1x4x4: 2 x 2 x 2 outputs x 9 = 72 MACs, 18 weights, one call. thop's
    # model.apply(add_hooks) reaches it by 2 paths, conv and block.conv (children() gives the
    # root's conv once, not again as "again"): 2 hooks count the call
    # twice, total_ops 144; dfs_count adds it under both paths: 144 + 144 = 288 MACs, and its
    # total_params 18 twice: 36. shared_module: 288 - 72 = 216 MACs, 18 parameters
    ex = run("thop", _SharedConv(), 1, 1, 4, 4)
    assert ex.run.headline == {"macs": 288, "params": 36}
    assert {r.module: r.raw for r in ex.run.layers} == {"conv": {"ops": 144, "params": 18},
                                                        "block.conv": {"ops": 144, "params": 18}}
    assert causes(ex) == {"shared_module": 216}
    assert causes(ex, "params") == {"shared_module": 18}


def test_every_cause_has_a_test():
    module = sys.modules[__name__]
    tested = {name.removeprefix("test_cause_") for name in dir(module) if name.startswith("test_cause_")}
    assert tested == set(CAUSES)


class _ReluOnly(nn.Module):
    """A ReLU, and one parameter: thop 0.0.22 reads the model's device from its first parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x)


def relu_only() -> nn.Module:
    return _ReluOnly()


def test_cause_float32():
    # thop 0.0.22 keeps its counters in float32: a ReLU counts 1 per element, and on 2^24 + 1 =
    # 16,777,217 elements that is a count float32 cannot hold: it stores 16,777,216, so -1
    from reconcile import conventions
    from reconcile.explain.core import explain_run

    shape = (1, 16_777_217)
    native, run = run_jobs([Job("tests.test_causes:relu_only", "native", shape, device="meta"),
                            Job("tests.test_causes:relu_only", "thop@0.0.22", shape)], timeout=300)
    assert run.status == "ok", run.error_message
    assert run.headline["macs"] == 16_777_216
    conv = conventions.get("thop@0.0.22")
    ex = explain_run(run, conv.predict(native.detail), conv, native.detail)
    assert_explained(ex)
    assert causes(ex) == {"activation": 16_777_217, "float32": -1}
