"""Roofline: bytes checked by hand per layer, rows summing to totals, the hardware table, bounds,
the renderers and the pictures. No timing targets here (they live in benchmarks/bench.py)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from fractions import Fraction

import pytest
import torch
from torch import nn

from reconcile import cli, models
from reconcile.counter import count
from reconcile.roofline import Measured, platforms, roofline
from reconcile.roofline import core as rcore
from reconcile.roofline import hardware, local, plot, render

_COUNTS: dict = {}


def _native(name: str, dtype: str = "float32", batch: int = 1):
    key = (name, dtype, batch)
    if key not in _COUNTS:
        spec = models.resolve(name)
        shape = (batch,) + tuple(models.default_input(spec).shape[1:])
        inputs = models.check_inputs((models.InputSpec(shape=shape, dtype=dtype),))
        model, args = models.prepare(models.build(spec, "meta"), inputs, "meta")
        _COUNTS[key] = count(model, args, name=name)
    return _COUNTS[key]


# (model, module) -> (bytes read, bytes written, parameter bytes of the read), float32, batch 1
BYTES = {
    # conv 3->64 7x7 s2: input 3*224*224*4 = 602,112 + weight 64*3*7*7*4 = 37,632 (no bias) = 639,744;
    # output 64*112*112*4 = 3,211,264
    ("resnet18", "conv1"): (639_744, 3_211_264, 37_632),
    # BatchNorm (eval): input 3,211,264 + weight, bias, running mean, running var 4 * 64 * 4 = 1,024
    # = 3,212,288; output 3,211,264 (saved statistics are not an inference kernel's output);
    # parameters are weight + bias only, 2 * 64 * 4 = 512 (running statistics are buffers)
    ("resnet18", "bn1"): (3_212_288, 3_211_264, 512),
    # ReLU(inplace=True): relu_ reads and writes its 3,211,264-byte tensor, nothing else
    ("resnet18", "relu"): (3_211_264, 3_211_264, 0),
    # `out += identity` in BasicBlock.forward (charged to layer1.0): add_ reads both 64*56*56*4 =
    # 802,816-byte tensors (1,605,632) and writes one (802,816)
    ("resnet18", "layer1.0"): (1_605_632, 802_816, 0),
    # Linear 512->1000 (addmm, weight.t() is a view: free): bias 1000*4 = 4,000 + input 512*4 =
    # 2,048 + weight 512*1000*4 = 2,048,000 = 2,054,048; output 4,000; parameters 2,052,000
    ("resnet18", "fc"): (2_054_048, 4_000, 2_052_000),
    # conv 3->64 3x3 + bias: 602,112 + 64*3*9*4 = 6,912 + 256 = 609,280; output 64*224*224*4 = 12,845,056
    ("vgg16", "features.0"): (609_280, 12_845_056, 7_168),
    # in-place ReLU on the 12,845,056-byte output of features.0
    ("vgg16", "features.1"): (12_845_056, 12_845_056, 0),
    # MaxPool 2x2: reads 12,845,056, writes 64*112*112*4 = 3,211,264 (indices are not an output here)
    ("vgg16", "features.4"): (12_845_056, 3_211_264, 0),
    # Linear 25088->4096: input 25088*4 = 100,352 + weight 25088*4096*4 = 411,041,792 + bias 16,384
    # = 411,158,528; output 16,384; parameters 411,058,176
    ("vgg16", "classifier.0"): (411_158_528, 16_384, 411_058_176),
}
# vgg16 has no BatchNorm and no residual add: those two are checked on resnet18 only.


@pytest.mark.parametrize("model,module", list(BYTES))
def test_bytes_by_hand(model, module):
    row = _native(model).row(module)
    assert (row.bytes_read, row.bytes_written, row.param_bytes_read) == BYTES[(model, module)]
    # the per-op split adds up to the module's bytes
    assert sum(v[0] for v in row.op_bytes.values()) == row.bytes_read
    assert sum(v[1] for v in row.op_bytes.values()) == row.bytes_written


def test_bytes_follow_dtype():
    # bfloat16 halves every tensor: conv1 639,744 / 2 = 319,872 read, 3,211,264 / 2 = 1,605,632 written
    row = _native("resnet18", "bfloat16").row("conv1")
    assert (row.bytes_read, row.bytes_written, row.param_bytes_read) == (319_872, 1_605_632, 18_816)
    # batch 8: activations x8, the weight once per call: 8 * 602,112 + 37,632 = 4,854,528
    row = _native("resnet18", batch=8).row("conv1")
    assert (row.bytes_read, row.bytes_written) == (4_854_528, 8 * 3_211_264)


def test_weight_dtype_int8_what_if():
    r = roofline(_native("resnet18"), "a100-80gb", weight_dtype="int8")
    fc = next(la for la in r.layers if la.module == "fc")
    # parameters at 1 byte per element: 2,052,000 / 4 = 513,000; input 2,048 stays float32
    assert (fc.bytes_read, fc.bytes_written, fc.param_bytes) == (2_048 + 513_000, 4_000, 513_000)
    assert fc.flops == _native("resnet18").row("fc").flops  # FLOPs unchanged
    # intensity rises: 1,025,000 FLOPs over 519,048 bytes instead of 2,058,048
    assert fc.intensity == Fraction(1_025_000, 519_048)
    assert r.compute_dtype == "float32"  # the peak stays the activations' dtype's


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "vit_b_16"])
@pytest.mark.parametrize("per_op", [False, True])
def test_rows_sum_to_totals(name, per_op):
    native = _native(name)
    r = roofline(native, "t4", per_op=per_op)
    assert r.flops == native.totals["flops"]
    assert r.bytes_read == native.totals["bytes_read"]
    assert r.bytes_written == native.totals["bytes_written"]
    assert all(isinstance(x, int) for la in r.layers for x in (la.flops, la.bytes_read, la.bytes_written))
    p = r.platforms[0]
    assert p.total_time_s == pytest.approx(sum(t.time_s for t in p.times))
    assert p.total_time_s >= p.naive_time_s * (1 - 1e-12)  # a sum of maxima >= the max of sums


def test_bound_and_time_on_a_custom_platform():
    r = roofline(_native("resnet18"), "custom:peak=1e12,bandwidth=1e11")
    plat = r.platforms[0]
    assert plat.platform.ridge == 10.0
    rows = {la.module: (la, t) for la, t in zip(r.layers, plat.times)}
    la, t = rows["conv1"]
    # I = 236,027,904 / (639,744 + 3,211,264) = 61.3 > 10: compute-bound, 236,027,904 / 1e12 s
    assert t.bound == "compute" and t.time_s == pytest.approx(236_027_904 / 1e12)
    assert t.attainable == pytest.approx(1e12)
    la, t = rows["relu"]
    # 802,816 FLOPs / 6,422,528 bytes = 0.125 < 10: memory-bound, 6,422,528 / 1e11 s
    assert t.bound == "memory" and t.time_s == pytest.approx(6_422_528 / 1e11)
    assert t.attainable == pytest.approx(1e11 * 0.125)


def test_hardware_table_is_sourced():
    tab = hardware.table()
    for key in ("a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "l4", "t4", "v100", "rtx-4090"):
        hw = tab[key]
        assert hw.used("bandwidth") is not None and hw.used("fp32") is not None
        assert all(f.source and f.read == "2026-12-01" for f in hw.figures)
    h100 = tab["h100-sxm"]
    assert h100.used("bandwidth").value == 3_350_000_000_000  # the datasheet's
    assert [f.value for f in h100.alternatives("bandwidth")] == [3_072_000_000_000]  # LLM-Viewer's, kept


@pytest.mark.parametrize("dtype,tf32,peak", [
    ("float32", False, 19.5e12),  # FP32 CUDA cores
    ("float32", True, 156e12),  # TF32 tensor cores, only when asked
    ("float16", False, 312e12),
    ("bfloat16", False, 312e12),
    ("int8", False, 624e12),
])
def test_dtype_picks_the_peak(dtype, tf32, peak):
    (p,) = platforms("a100-80gb", dtype, tf32)
    assert p.peak_flops == peak and p.bandwidth == 2.039e12
    assert p.ridge == pytest.approx(peak / 2.039e12)


def test_hardware_mistakes():
    from reconcile import ReconcileError

    with pytest.raises(ReconcileError, match="unknown hardware"):
        platforms("a100")
    with pytest.raises(ReconcileError, match="no BF16"):
        platforms("t4", "bfloat16")  # Turing has no BF16 tensor cores
    with pytest.raises(ReconcileError, match="custom:peak"):
        platforms("custom:peak=1e12")
    with pytest.raises(ReconcileError, match="cache_bandwidth"):
        platforms("custom:peak=1e12,bandwidth=1e11,cache=1e6")  # a cache needs its bandwidth
    assert hardware.split_keys("t4,custom:peak=1e12,bandwidth=1e11,local") == [
        "t4", "custom:peak=1e12,bandwidth=1e11", "local"]
    assert hardware.split_keys("custom:peak=1e12,bandwidth=1e11,cache=4e6,cache_bandwidth=4e11,t4") == [
        "custom:peak=1e12,bandwidth=1e11,cache=4e6,cache_bandwidth=4e11", "t4"]
    (p,) = platforms("custom:peak=1e12,bandwidth=1e11,cache=4e6,cache_bandwidth=4e11")
    assert (p.cache_bytes, p.cache_bandwidth, p.cache_ridge) == (4_000_000, 4e11, 2.5)


def test_local_uses_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def fake(dtype, repeat=5):
        calls.append(dtype)
        return {"dtype": dtype, "peak_flops": 1e11, "bandwidth": 2e10, "matmul": "m", "copy": "c",
                "cache_bytes": 2**25, "cache_bandwidth": 1e11, "cache": "k",
                "threads": torch.get_num_threads(), "torch": torch.__version__, "date": "2026-12-01",
                "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(), "cpu_share": 0.95}

    monkeypatch.setattr(local, "measure", fake)
    a = local.platform("float32")
    b = local.platform("float32")  # from the cache: measured once (tests/test_local_hardware.py: when not)
    assert calls == ["float32"] and a.ridge == 5.0
    assert dataclasses.replace(a, name="", source="") == dataclasses.replace(b, name="", source="")  # the same figures
    assert "from the cache" in b.name and "from the cache" not in a.name  # which says where they came from
    assert (a.cache_bytes, a.cache_bandwidth, a.cache_ridge) == (2**25, 1e11, 1.0)
    saved = json.loads((tmp_path / "reconcile" / "local-hardware.json").read_text())
    assert list(saved) == [f"float32/threads={torch.get_num_threads()}/torch={torch.__version__}/{local.METHOD}"]


def test_conv_flops_by_hand():
    # ResNet's stem at batch 1: out (224 + 6 - 7) // 2 + 1 = 112; 2 * 64 * 112 * 112 * 3 * 49 =
    # 236,027,904, the native count of resnet18's conv1
    assert local.conv_flops(1, 3, 64, 7, 2, 3, 224) == 236_027_904 == _native("resnet18").row("conv1").flops
    # 3x3, 64 -> 64 at 56, batch 8: 2 * 8 * 64 * 56 * 56 * 64 * 9 = 1,849,688,064
    assert local.conv_flops(8, 64, 64, 3, 1, 1, 56) == 1_849_688_064


def test_measure_layers_leaves_no_hooks():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2)))
    own, total = local.measure_layers(model, (torch.randn(4, 8),), repeat=2)
    assert set(own) == {"", "0", "1", "2", "2.0"} and total > 0
    assert all(v >= 0 for v in own.values())  # a parent's time includes its children's
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_model_kernels_times_each_distinct_kernel_once_and_leaves_no_hooks():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1),
                          nn.Conv2d(4, 4, 3, padding=1), shared, shared, nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    rates = local.model_kernels(model, (torch.randn(1, 3, 8, 8),), repeat=1, budget=0.0)
    # "2" and "3" are "1" again (same settings, same input shape); "4" is "3" itself
    assert sorted(rates) == ["0 (Conv2d 1x3x8x8)", "1 (Conv2d 1x4x8x8)", "6 (Linear 1x256)"]
    assert all(r > 0 for r in rates.values())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_kernel_flops_are_worked_out_from_shapes_not_taken_from_the_count():
    x = torch.randn(1, 3, 8, 8)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    # 1 x 4 x 8 x 8 = 256 outputs, each 3 x 9 = 27 MACs and a bias add: 256 x (2 x 27 + 1) = 14,080
    assert local.kernel_flops(conv, x, conv(x)) == 14_080
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
    y = torch.randn(2, 4, 8, 8)
    # 2 x 4 x 8 x 8 = 512 outputs, each 4 / 2 x 9 = 18 MACs: 512 x 36 = 18,432
    assert local.kernel_flops(grouped, y, grouped(y)) == 18_432
    fc = nn.Linear(256, 10)
    z = torch.randn(3, 256)
    # 3 x 10 = 30 outputs, each 256 MACs and a bias add: 30 x 513 = 15,390
    assert local.kernel_flops(fc, z, fc(z)) == 15_390
    # resnet18's conv1 (no bias): the count the roofline check compares with
    assert local.kernel_flops(*_stem()) == 236_027_904 == _native("resnet18").row("conv1").flops


def test_peak_noise_is_how_far_the_best_kernel_moved():
    # best before 200 G, best after 220 G: |200 - 220| / 220 = 1/11
    assert local.peak_noise({"a": 200e9, "b": 100e9}, {"a": 220e9, "b": 90e9}) == pytest.approx(1 / 11)
    assert local.peak_noise({}, {"a": 1.0}) == 0.0 and local.peak_noise({"a": 5.0}, {"a": 5.0}) == 0.0


@pytest.mark.parametrize("factor,code", [(1.05, 0), (1.2, 1)])
def test_a_compute_bound_layer_within_the_peaks_noise_does_not_fail_the_check(monkeypatch, capsys, factor, code):
    # a local platform of 1 GFLOP/s and 1 TB/s: every convolution compute-bound. resnet18's conv1 at
    # 1x3x32x32: 16 x 16 outputs x 64 channels, 3 x 49 MACs each: 2 x 64 x 256 x 147 = 4,816,896
    # FLOPs, bound 4.816896 ms. The model's kernels' best rate moves from 0.9 to 1.0 G between the
    # timings before and after the layers: noise 10%. conv1 measured 5% faster than its bound is
    # inside it (exit 0, said on stderr), 20% faster is not (exit 1); every other layer is slow.
    plat = hardware.Platform("local", "this machine", 1e9, 1e12, "measured", "measured", here=True)
    monkeypatch.setattr(local, "platform", lambda dtype, refresh=False: plat)
    timings = iter([{"k (Conv2d 1x3x32x32)": 0.9e9}, {"k (Conv2d 1x3x32x32)": 1.0e9}])
    monkeypatch.setattr(local, "model_kernels", lambda model, args: next(timings))
    conv1 = 2 * 64 * 16 * 16 * 3 * 49 / 1e9

    def measure_layers(model, args, repeat):
        return {n: (conv1 / factor if n == "conv1" else 1e3) for n, _ in model.named_modules()}, 1e3

    monkeypatch.setattr(local, "measure_layers", measure_layers)
    # the layers are timed in a worker (reconcile.isolated), which never sees this test's patches:
    # here the same adapter runs in this process instead, on the patched timings
    from reconcile import isolated

    def measured(name, inputs, repeat, kernels, timeout):
        model, args = models.prepare(models.build(models.resolve(name), device="cpu"), inputs, "cpu")
        return isolated.MeasureLayers(repeat, kernels).run(model, args)

    monkeypatch.setattr(isolated, "measured", measured)
    got = cli.main(["roofline", "resnet18", "--input-shape", "1,3,32,32", "--hardware", "local", "--measure"])
    err = capsys.readouterr().err
    assert got == code
    if code:
        assert "check failed: 1 layer(s)" in err and "resnet18 on local: conv1 (1.200)" in err
    else:
        assert "check failed" not in err and "up to 10.0%" in err and "resnet18 on local: conv1 (1.050)" in err


def _stem():
    conv = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    x = torch.randn(1, 3, 224, 224)
    return conv, x, conv(x)


def test_the_model_kernels_raise_the_local_peak_only_when_faster():
    plat = hardware.Platform("local", "this machine", 100e9, 10e9, "measured float32 matmul/conv", "measured", here=True)
    up = local.with_model_kernels(plat, {"a (Conv2d 8x512x14x14)": 120e9, "b (Linear 8x4096)": 50e9})
    assert up.peak_flops == 120e9 and "best a (Conv2d 8x512x14x14) 120.0 G FLOP/s (the peak used)" in up.source
    assert up.peak_label == "measured float32 matmul/conv, this model's a (Conv2d 8x512x14x14)"
    same = local.with_model_kernels(plat, {"b (Linear 8x4096)": 50e9})
    assert same.peak_flops == 100e9 and "(below the standard set's peak)" in same.source
    assert local.with_model_kernels(plat, {}) is plat


def test_faster_than_bound_is_reported_not_clipped():
    native = _native("resnet18")
    r = roofline(native, "custom:peak=1e12,bandwidth=1e11")
    mods = {la.module for la in r.layers}
    fast = Measured({m: 1e-9 for m in mods}, 1e-3, 3)  # every layer impossibly fast
    plat = dataclasses.replace(r.platforms[0].platform, cache_bytes=4 * 2**20, cache_bandwidth=4e11)
    r = rcore.roofline(native, [plat], measured=fast)
    low = rcore.faster_than_bound(r, 0)
    assert {m for m, _b, _g in low} == mods  # every one reported, none clipped
    assert "measured faster than their bound" in render.table(r)
    assert all(b > 1e-9 for _m, b, _g in low)
    # why: conv1 is compute-bound (61.3 FLOP/B > ridge 10); relu's 3,211,264-byte tensor fits a
    # 4 MiB cache: on the cache roof
    assert rcore.why_faster(r, 0, "conv1").startswith("compute-bound")
    assert rcore.why_faster(r, 0, "relu").startswith("memory-bound on the cache roof")
    # a 1 MiB cache: bn1 must move (3,212,288 - 1,048,576) + (3,211,264 - 1,048,576) = 4,326,400 B
    # through DRAM, 43.3 us at 1e11 > 6,423,552 / 4e11 = 16.1 us: on the DRAM roof
    small = dataclasses.replace(plat, cache_bytes=2**20)
    r2 = rcore.roofline(native, [small], measured=fast)
    assert rcore.why_faster(r2, 0, "bn1").startswith("memory-bound on the DRAM roof (working set 6,423,552 B")
    # no cache roof, but the LLC size known (sysfs): bn1 fits 8 MiB, so its data may have been cached
    sysfs_only = dataclasses.replace(plat, cache_bytes=8 * 2**20, cache_bandwidth=None)
    r3 = rcore.roofline(native, [sysfs_only], measured=fast)
    assert "a DRAM-only roof does not model" in rcore.why_faster(r3, 0, "bn1")
    # the tightest layer is the one with the largest bound / measured: conv1's 236 us bound
    assert rcore.tightest(r, 0)[0] == "conv1"


@pytest.mark.parametrize("op,expected", [("aten::relu_", True), ("aten::add_", True), ("aten::__iand__", True),
                                         ("aten::relu", False), ("aten::_softmax", False), ("aten::__and__", False),
                                         ("module::Foo_", False)])
def test_in_place_ops(op, expected):
    assert rcore.in_place(op) is expected


def test_working_set_by_hand():
    # in place: the written tensor is one it read, so only the reads: 3,211,264
    assert rcore.working_set("aten::relu_", 3_211_264, 3_211_264, 0) == 3_211_264
    # out of place: reads + writes, 639,744 + 3,211,264 = 3,851,008
    assert rcore.working_set("aten::convolution", 639_744, 3_211_264, 37_632) == 3_851_008
    # two alike calls (BasicBlock's relu): (1,605,632 read) / 2 = 802,816 per call
    assert rcore.working_set("aten::relu_", 1_605_632, 1_605_632, 0, calls=2) == 802_816
    # int8 weights what-if: parameter bytes 37,632 * 1 / 4 = 9,408: 639,744 - 37,632 = 602,112,
    # + 9,408 = 611,520, + 3,211,264 = 3,822,784
    assert rcore.working_set("aten::convolution", 639_744, 3_211_264, 37_632, num=1, den=4) == 3_822_784


# custom platforms with a 4 MiB or a 2 MiB cache at 4e11 B/s beside DRAM at 1e11 B/s; peak 1e12 FLOP/s
CACHED = "custom:peak=1e12,bandwidth=1e11,cache=4194304,cache_bandwidth=4e11"
SMALL = "custom:peak=1e12,bandwidth=1e11,cache=2097152,cache_bandwidth=4e11"


@pytest.mark.parametrize("hw,module,roof,bound,time_s", [
    # relu reads and writes its 3,211,264-byte tensor: both within 4,194,304, nothing must cross
    # DRAM: cache roof, 6,422,528 B / 4e11 B/s
    (CACHED, "relu", "cache", "memory", 6_422_528 / 4e11),
    # bn1 reads 3,212,288 and writes 3,211,264, each within 4 MiB: cache roof, 6,423,552 / 4e11
    (CACHED, "bn1", "cache", "memory", 6_423_552 / 4e11),
    # conv1 is compute-bound on any roof: 236,027,904 FLOPs / 1e12 = 236 us > 3,851,008 / 4e11
    (CACHED, "conv1", "cache", "compute", 236_027_904 / 1e12),
    # fc: 2,058,048 B / 4e11 = 5.1 us > 1,025,000 FLOPs / 1e12 = 1.0 us
    (CACHED, "fc", "cache", "memory", 2_058_048 / 4e11),
    # 2 MiB cache: relu must read (3,211,264 - 2,097,152) = 1,114,112 B from DRAM and write as much
    # back: 2,228,224 / 1e11 = 22.3 us > 6,422,528 / 4e11 = 16.1 us: the DRAM roof
    (SMALL, "relu", "dram", "memory", 2_228_224 / 1e11),
    # bn1: (3,212,288 - 2,097,152) + (3,211,264 - 2,097,152) = 1,115,136 + 1,114,112 = 2,229,248
    (SMALL, "bn1", "dram", "memory", 2_229_248 / 1e11),
    # layer1.0.relu: two calls of 802,816 B each, each within 2 MiB: cache, 3,211,264 / 4e11
    (SMALL, "layer1.0.relu", "cache", "memory", 3_211_264 / 4e11),
])
def test_cache_roof_by_hand(hw, module, roof, bound, time_s):
    r = roofline(_native("resnet18"), hw)
    (t,) = [t for la, t in zip(r.layers, r.platforms[0].times) if la.module == module]
    assert (t.roof, t.bound) == (roof, bound) and t.time_s == pytest.approx(time_s)
    p = r.platforms[0]
    assert p.platform.cache_ridge == 2.5  # 1e12 / 4e11
    assert p.total_time_s >= p.naive_time_s * (1 - 1e-12)  # still a sum of maxima >= the max of sums
    # the JSON row says which bytes must cross DRAM
    row = next(x for x in render.to_json(r)["hardware"][0]["rows"] if x["module"] == module)
    assert row["roof"] == roof and row["dram_bytes"] == next(
        la for la in r.layers if la.module == module).dram_floor(p.platform.cache_bytes)


def test_cache_roof_at_batch_8():
    cache = "custom:peak=1e12,bandwidth=1e11,cache=33554432,cache_bandwidth=4e11"  # 32 MiB
    # resnet18 relu: 8 * 3,211,264 = 25,690,112 B read and written in place: its working set is
    # 25,690,112 (reads + writes would be 51,380,224), within 33,554,432: cache roof
    r = roofline(_native("resnet18", batch=8), cache)
    rows = {la.module: (la, t) for la, t in zip(r.layers, r.platforms[0].times)}
    assert rows["relu"][0].working_set == 25_690_112 and rows["relu"][1].roof == "cache"
    # vgg16 features.1: in place on 8 * 12,845,056 = 102,760,448 B: must read and write back
    # 2 * (102,760,448 - 33,554,432) = 138,412,032 B through DRAM, 1.384 ms at 1e11 B/s, more than
    # all 205,520,896 B at 4e11 (0.514 ms): the DRAM roof, below the 2.06 ms of a DRAM-only roof
    r = roofline(_native("vgg16", batch=8), cache)
    la, t = next((la, t) for la, t in zip(r.layers, r.platforms[0].times) if la.module == "features.1")
    assert la.dram_floor(33_554_432) == 138_412_032
    assert (t.roof, t.time_s) == ("dram", pytest.approx(138_412_032 / 1e11))


def test_named_hardware_is_dram_only():
    r = roofline(_native("resnet18"), "a100-80gb")
    assert not r.platforms[0].platform.has_cache_roof and r.platforms[0].platform.cache_ridge is None
    assert {t.roof for t in r.platforms[0].times} == {"dram"}


def test_json_and_markdown():
    r = roofline(_native("resnet18"), "a100-80gb,h100-sxm")
    obj = render.to_json(r)
    json.dumps(obj)
    hw = obj["hardware"][1]
    assert hw["bandwidth"] == 3.35e12 and hw["peak_flops"] == 67e12 and hw["ridge"] == pytest.approx(67e12 / 3.35e12)
    assert {"module", "flops", "bytes", "intensity", "bound", "time_s"} <= set(hw["rows"][0])
    assert sum(row["bytes"] for row in hw["rows"]) == obj["bytes_read"] + obj["bytes_written"]
    assert hw["total_time_s"] == pytest.approx(sum(row["time_s"] for row in hw["rows"]))
    md = render.roofline_markdown(r)
    assert md.startswith("### Roofline: resnet18") and "| h100-sxm |" in md


def test_pictures_are_deterministic_pngs():
    r = roofline(_native("resnet18"), "t4")
    a, b = plot.files(r), plot.files(r)
    assert set(a) == {"resnet18-t4-roofline.png", "resnet18-t4-families.png"}
    assert a == b and all(v.startswith(b"\x89PNG") for v in a.values())
    assert b"matplotlib" not in a["resnet18-t4-roofline.png"]  # no software metadata


def test_cli_json(capsys):
    code = cli.main(["roofline", "resnet18", "--hardware", "t4,l4", "--format", "json", "--ops"])
    out, _ = capsys.readouterr()
    assert code == 0
    obj = json.loads(out)
    assert [h["key"] for h in obj["hardware"]] == ["t4", "l4"]
    assert obj["rows_per"] == "op" and obj["flops"] == 3_637_806_568


def test_callable_package():
    import reconcile

    r = reconcile.roofline(_native("resnet18"), "t4")
    assert isinstance(r, rcore.Roofline) and r.platforms[0].platform.key == "t4"


@pytest.mark.parametrize("hw,code", [
    # a bound of at least 1 s per layer (peak 1 FLOP/s, 1 B/s): every layer "beats" it: exit 1
    ("custom:peak=1,bandwidth=1", 1),
    # bounds of at most femtoseconds (1e30 FLOP/s and B/s): nothing can beat them: exit 0
    ("custom:peak=1e30,bandwidth=1e30", 0),
])
def test_cli_measure_check_exit_status(capsys, hw, code):
    # a structural check of the command, not of this machine's speed: bounds far off either way
    got = cli.main(["roofline", "resnet18", "--input-shape", "1,3,32,32", "--hardware", hw, "--measure",
                    "--repeat", "1"])
    out, err = capsys.readouterr()
    assert got == code
    assert "summed bounds / measured" in out and "tightest layer:" in out
    assert ("check failed" in err) == (code == 1)
