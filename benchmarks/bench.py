"""reconcile's speed and memory targets, measured side by side in one invocation (`make bench`).

Every target is a ratio against a baseline measured in the same run (or an absolute budget where
the issue sets one), so the numbers mean the same on a slow or a busy machine. Prints one line per
measurement and exits 1 if any target is missed. Not a test: timings never gate `make test`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS: list[tuple[str, str, bool]] = []


def report(name: str, detail: str, ok: bool) -> None:
    RESULTS.append((name, detail, ok))
    print(f"{'ok    ' if ok else 'MISSED'}  {name}: {detail}", flush=True)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_native_vs_flopcounter(repeat: int) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from reconcile import models
    from reconcile.counter import count

    for name in ("resnet50", "vit_b_16"):
        spec = models.resolve(name)
        inp = models.default_input(spec)
        for device in ("meta", "cpu"):
            model = models.build(spec, device=device)
            x = models.make_inputs(inp, device=device)

            def native() -> None:
                count(model, x, name=name)

            def torch_counter() -> None:
                with torch.no_grad(), FlopCounterMode(display=False):
                    model(*x)

            native()  # warm-up both (lazy imports, allocator)
            torch_counter()
            # interleave the two so machine noise hits both alike
            t_native, t_torch = [], []
            for _ in range(repeat):
                t_native.append(best_of(native, 1))
                t_torch.append(best_of(torch_counter, 1))
            a, b = min(t_native), min(t_torch)
            report(f"native vs FlopCounterMode, {name} on {device}",
                   f"{a * 1000:.1f} ms vs {b * 1000:.1f} ms = {a / b:.2f}x (target <= 1.20x)", a / b <= 1.2)


_VGG_MEMORY = r"""
import json, resource, time, sys
sys.path.insert(0, sys.argv[1])
import torch, torchvision
from reconcile import models
from reconcile.counter import count
spec = models.resolve("vgg16"); inp = models.default_input(spec)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
model = models.build(spec, device="meta")
built = time.perf_counter() - t
t = time.perf_counter()
r = count(model, models.make_inputs(inp, device="meta"), name="vgg16")
counted = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"build": built, "count": counted, "kib": peak - base, "macs": r.totals["macs"]}))
"""


def bench_vgg_meta() -> None:
    out = subprocess.run([sys.executable, "-c", _VGG_MEMORY, str(ROOT)], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    mb = m["kib"] / 1024
    report("VGG-16 counted on meta", f"{m['count'] * 1000:.1f} ms (target < 100 ms; build {m['build'] * 1000:.0f} ms)",
           m["count"] < 0.1)
    report("VGG-16 on meta, peak memory above the import baseline", f"{mb:.1f} MB (target < 200 MB)", mb < 200)


_ROOFLINE = r"""
import contextlib, io, json, sys, time
sys.path.insert(0, sys.argv[1])
import torch, torchvision  # noqa: F401  the imports are not part of the target
from reconcile import cli, counter, models  # noqa: F401
from reconcile.roofline import core, hardware, render  # noqa: F401
times = []
for _ in range(int(sys.argv[2])):
    buf = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        code = cli.main(["roofline", "vgg16", "--hardware", "a100-80gb,h100-sxm,t4", "--format", "json"])
    times.append(time.perf_counter() - t)
    assert code == 0 and json.loads(buf.getvalue())["model"] == "vgg16"
print(json.dumps({"first": times[0], "best": min(times)}))
"""


def bench_roofline(repeat: int) -> None:
    """`reconcile roofline vgg16` on meta (build, count, three hardware entries, JSON) after import."""
    out = subprocess.run([sys.executable, "-c", _ROOFLINE, str(ROOT), str(repeat)], capture_output=True, text=True,
                         check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    report("roofline vgg16 on meta after import", f"first {m['first'] * 1000:.0f} ms, best {m['best'] * 1000:.0f} ms "
           "(target: first < 1 s)", m["first"] < 1.0)


def bench_zoo() -> None:
    from reconcile import models
    from reconcile.counter import count

    t = time.perf_counter()
    per = []
    for name in models.torchvision_names():
        spec = models.resolve(name)
        t1 = time.perf_counter()
        count(models.build(spec, device="meta"), models.make_inputs(models.default_input(spec), device="meta"), name=name)
        per.append((time.perf_counter() - t1, name))
    total = time.perf_counter() - t
    slowest = ", ".join(f"{n} {s:.2f}s" for s, n in sorted(per, reverse=True)[:3])
    report("all 80 torchvision models built and counted on meta",
           f"{total:.1f} s (target < 60 s; median {statistics.median(s for s, _ in per) * 1000:.0f} ms; slowest {slowest})",
           total < 60)


def _wall(cmd: list[str]) -> float:
    return _wall_in(ROOT, cmd)


def _wall_in(cwd: Path, cmd: list[str]) -> float:
    return _timed_in(cwd, cmd)[0]


def _timed_in(cwd: Path, cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system of the command and every process it waited
    for: the fork server and its workers) of one run. CPU seconds move less with other load."""
    return _measured_in(cwd, cmd)[:2]


def _measured_in(cwd: Path, cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """``_timed_in``'s wall and CPU seconds, and the page faults of the same processes, of one run
    with ``env`` (default: this process's environment)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            after.ru_minflt - before.ru_minflt)


def _default_tools() -> int:
    from reconcile import tools

    return len(tools.defaults())


def bench_against_plain_script(repeat: int, before: str = "") -> None:
    """`reconcile tools` (every default counter) and `reconcile report` on resnet18,vgg16 against the
    plain one-process script running every default tool one after another (benchmarks/plain_tools.py),
    and `reconcile report` at ``before`` (the commit before the cost work) when given, each a fresh
    process, interleaved so load hits all alike. Target: issue 23's 0.3x."""
    import tempfile

    models = "resnet18,vgg16"
    n = _default_tools()
    plain = [sys.executable, str(ROOT / "benchmarks" / "plain_tools.py"), models]
    with tempfile.TemporaryDirectory() as out:
        old = None
        if before:
            (Path(out) / "before").mkdir()
            old = _tree_at(before, Path(out) / "before")
        tools_cmd = [sys.executable, "-m", "reconcile", "tools", models, "--format", "json"]
        report_cmd = [sys.executable, "-m", "reconcile", "report", models, "--out", f"{out}/reports"]
        times: dict[str, list[float]] = {"plain": [], "tools": [], "report": [], **({"before": []} if old else {})}
        for _ in range(repeat):
            times["plain"].append(_wall(plain))
            times["tools"].append(_wall(tools_cmd))
            times["report"].append(_wall(report_cmd))
            if old:
                times["before"].append(_wall_in(old, report_cmd))
    base = min(times["plain"])
    for key, label in (("tools", f"reconcile tools resnet18,vgg16 ({n} counters)"),
                       ("report", f"reconcile report resnet18,vgg16 ({n} counters, explained, written)")):
        t = min(times[key])
        report(label, f"{t:.1f} s vs plain one-process script {base:.1f} s = {t / base:.2f}x (target <= 0.30x)",
               t / base <= 0.3)
    if old:
        t, b = min(times["report"]), min(times["before"])
        report(f"reconcile report resnet18,vgg16 here vs at {before[:8]}", f"{t:.1f} s vs {b:.1f} s = {t / b:.2f}x "
               f"(the plain script: {base:.1f} s, {b / base:.2f}x before)", t <= b)


# The zoo cost (issue 23): a fixed set of 20 timm models (the first 20 of the committed timm sample,
# written out so that the set never moves with the sample), every default tool, measured on this
# tree and on the commit before the cost work, in the same invocation.
ZOO_COST_MODELS = tuple("timm:" + n for n in (
    "resnet18", "efficientnet_b0", "mobilenetv3_small_100", "regnetx_002", "ghostnet_100", "convnext_atto",
    "rexnet_100", "vit_tiny_patch16_224", "deit_tiny_patch16_224", "cait_xxs24_224", "xcit_nano_12_p16_224",
    "levit_128s", "mobilevit_xxs", "efficientvit_b0", "coatnet_nano_rw_224", "crossvit_tiny_240",
    "maxvit_nano_rw_256", "mixer_s32_224", "resmlp_12_224", "gmlp_ti16_224"))
ZOO_COST_BEFORE = "4e1617762131df9465efcc99d9d839b24cb3d0cf"  # main when the cost work (zoo-cost) began
ZOO_WORKERS = 2  # the local pool's workers on this machine: job-seconds = wall x workers
CLUSTER_WORKERS = 16
PUBLISHED = Path("/work/shared/data/timm-benchmark-infer-amp-nchw-pt291-cu128-4090.csv")


def _tree_at(commit: str, folder: Path) -> Path | None:
    """The repository's files at ``commit`` in ``folder`` (``git archive``: reads the repository,
    changes nothing in it); None when this is not a git checkout holding that commit."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def _timm_count() -> int:
    out = subprocess.run([sys.executable, "-c", "import timm; print(len(timm.list_models()))"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def _mean_published_gmacs(names: list[str] | None) -> tuple[float, int] | None:
    """timm's published GMACs (its benchmark table), averaged over ``names`` (None: every row)."""
    import csv

    if not PUBLISHED.exists():
        return None
    with PUBLISHED.open() as fh:
        rows = {r["model"].split(".")[0]: float(r["infer_gmacs"]) for r in csv.DictReader(fh) if r.get("infer_gmacs")}
    values = list(rows.values()) if names is None else [rows[n] for n in names if n in rows]
    return (sum(values) / len(values), len(values)) if values else None


def bench_zoo_cost(repeat: int, before: str) -> None:
    """`reconcile zoo` on ZOO_COST_MODELS (all default tools) here and at ``before``, each a fresh
    process, interleaved: job-seconds per model (wall x workers / models), their ratio, and from this
    tree's rate the wall time of every timm model here and, on paper, on a 16-worker cluster."""
    import tempfile

    models = ",".join(ZOO_COST_MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "before").mkdir()
        old = _tree_at(before, Path(tmp) / "before")
        trees = {"after": ROOT, **({"before": old} if old else {})}
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
        for i in range(repeat):
            for key, tree in trees.items():
                # cwd decides which reconcile `python -m` imports (the same environment for both)
                times[key].append(_timed_in(tree, [sys.executable, "-m", "reconcile", "zoo", "--models", models,
                                                   "--out", f"{tmp}/{key}-{i}"]))
    n = len(ZOO_COST_MODELS)
    per = {k: min(w for w, _ in v) * ZOO_WORKERS / n for k, v in times.items()}
    cpu = {k: min(c for _, c in v) / n for k, v in times.items()}
    if "before" in per:
        ratio = per["after"] / per["before"]
        report(f"zoo cost, {n} timm models x {_default_tools()} default tools",
               f"{per['after']:.1f} job-s per model vs {per['before']:.1f} at {before[:8]} = {ratio:.2f}x; "
               f"CPU-s per model {cpu['after']:.1f} vs {cpu['before']:.1f} = {cpu['after'] / cpu['before']:.2f}x "
               "(target: below 1)", ratio < 1.0)
    else:
        report("zoo cost, before", f"commit {before[:8]} not in this checkout: no before figure", False)
    count = _timm_count()
    here = per["after"] * count / ZOO_WORKERS
    cluster = per["after"] * count / CLUSTER_WORKERS
    sizes = ""
    mean_all, mean_set = _mean_published_gmacs(None), _mean_published_gmacs([m[5:] for m in ZOO_COST_MODELS])
    if mean_all and mean_set:
        sizes = (f"; the 20 average {mean_set[0]:.2f} published GMACs, timm's table {mean_all[0]:.2f} over "
                 f"{mean_all[1]} models: larger models cost more, so this is a lower bound")
    report(f"timm-all ({count} models of timm.list_models()) at the measured rate",
           f"{here / 3600:.1f} h here ({ZOO_WORKERS} workers), {cluster / 3600:.1f} h on paper on "
           f"{CLUSTER_WORKERS} workers{sizes}", True)


def bench_huge_pages(repeat: int) -> None:
    """`reconcile zoo` on the first 8 of ZOO_COST_MODELS (every default tool) with the fork server's
    malloc asking for huge pages (reconcile.processes.HUGE_PAGES, the default) and without (the
    caller's GLIBC_TUNABLES=glibc.malloc.hugetlb=0 wins), interleaved, each a fresh process: CPU-s
    and page faults of the command and every process it waited for."""
    import os
    import tempfile

    models = ",".join(ZOO_COST_MODELS[:8])
    runs: dict[str, list[tuple[float, float, int]]] = {"huge": [], "small": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            for key, tunables in (("huge", None), ("small", "glibc.malloc.hugetlb=0")):
                env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
                if tunables:
                    env["GLIBC_TUNABLES"] = tunables
                runs[key].append(_measured_in(ROOT, [sys.executable, "-m", "reconcile", "zoo", "--models", models,
                                                     "--out", f"{tmp}/{key}-{i}"], env))
    best = {k: min(v, key=lambda r: r[1]) for k, v in runs.items()}
    (hw, hc, hf), (sw, sc, sf) = best["huge"], best["small"]
    report("huge pages for the fork server's malloc, 8 timm models x every default tool",
           f"CPU {hc:.1f} s vs {sc:.1f} s = {hc / sc:.2f}x, page faults {hf / 1e6:.2f} M vs {sf / 1e6:.2f} M, "
           f"wall {hw:.1f} s vs {sw:.1f} s (target: CPU below 1x)", hc < sc)


def bench_timm_vs_torchvision(repeat: int) -> None:
    """`reconcile report` on a timm model against the same report on the torchvision model of the
    same architecture (timm's resnet18 is torchvision's: 1.814 GMACs, 11,689,512 parameters), each a
    fresh process, interleaved."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        times: dict[str, list[float]] = {"resnet18": [], "timm:resnet18": []}
        for _ in range(repeat):
            for spec in times:
                times[spec].append(_wall([sys.executable, "-m", "reconcile", "report", spec, "--out", out]))
    a, b = min(times["timm:resnet18"]), min(times["resnet18"])
    report("reconcile report timm:resnet18 vs resnet18 (11 counters)",
           f"{a:.1f} s vs {b:.1f} s = {a / b:.2f}x (target <= 1.50x)", a / b <= 1.5)


_LLAMA_TRAINING = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch, transformers  # noqa: F401  the imports are not part of the target
from reconcile import models
from reconcile.counter import core  # noqa: F401
spec = models.resolve(sys.argv[2])
times, cpu = [], []
for _ in range(int(sys.argv[3])):
    t, c = time.perf_counter(), time.process_time()
    model, args = models.prepare(models.build(spec, device="meta"), models.default_inputs(spec), "meta", "train")
    result = core.count(model, args, name=spec.name, training=True)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
print(json.dumps({"best": min(times), "cpu": min(cpu), "training_flops": result.training.totals["training_flops"]}))
"""
LLAMA_7B = ("hf:LlamaForCausalLM:hidden_size=4096:intermediate_size=11008:num_hidden_layers=32:"
            "num_attention_heads=32:num_key_value_heads=32:vocab_size=32000")


def bench_llama_training(repeat: int) -> None:
    """Llama-2-7B dimensions, 128 tokens, built and counted for training (forward + backward,
    memory) on meta after import: issue 13's budget is 5 s."""
    out = subprocess.run([sys.executable, "-c", _LLAMA_TRAINING, str(ROOT), LLAMA_7B, str(repeat)],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    report("Llama-2-7B (128 tokens) training count on meta after import",
           f"best {m['best']:.2f} s wall, {m['cpu']:.2f} s CPU (target < 5 s)", m["best"] < 5.0)
def bench_llm(repeat: int) -> None:
    """Language-model phases on Llama-2-7B dimensions on meta (issue 22): each phase against the
    plain native count of the same forwards without a cache, so the targets are ratios. A
    prefill of 1x4096 against ``count(model, input_ids)`` of 1x4096; a decode step at 4096
    against ``count`` of one token with no cache (the cache on meta costs nothing to build and
    its attention is 4097 keys, not a bigger graph); a 32-step generation against 32 such counts."""
    from reconcile import llm, models
    from reconcile.counter import count

    model = models.build(models.resolve(LLAMA_7B + ":max_position_embeddings=8192"), device="meta")

    plain_inputs = {t: models.make_inputs((models.InputSpec((1, t), "long", 32000, name="input_ids"),
                                           models.InputSpec((1, t), "long", name="attention_mask", fill="ones")),
                                          "meta", model) for t in (1, 128, 4096)}

    def plain(tokens: int) -> None:  # what `reconcile count` runs: ids and a mask of ones
        count(model, plain_inputs[tokens], name="llama")

    def phase(text: str) -> None:
        llm.count_phase(model, text, fit=False)

    def best_pair(a, b, n: int) -> tuple[float, float]:
        a(), b()  # warm-up
        ta, tb = [], []
        for _ in range(n):
            ta.append(best_of(a, 1))
            tb.append(best_of(b, 1))
        return min(ta), min(tb)

    n = max(1, repeat // 2)
    a, b = best_pair(lambda: phase("prefill:4096"), lambda: plain(4096), n)
    report("Llama-2-7B prefill 1x4096 on meta vs a plain count of the forward",
           f"{a:.2f} s vs {b:.2f} s = {a / b:.2f}x (target <= 1.30x)", a / b <= 1.3)
    a, b = best_pair(lambda: phase("decode:4096"), lambda: plain(1), n)
    report("Llama-2-7B decode at N=4096 on meta vs a plain count of one token",
           f"{a:.2f} s vs {b:.2f} s = {a / b:.2f}x (target <= 1.50x)", a / b <= 1.5)
    a, b = best_pair(lambda: phase("generate:128+32"), lambda: [plain(1) for _ in range(31)] and plain(128), 1)
    report("Llama-2-7B generation 128+32 (32 forwards) on meta vs 32 plain counts",
           f"{a:.2f} s vs {b:.2f} s = {a / b:.2f}x (target <= 1.50x)", a / b <= 1.5)


def bench_ray(repeat: int) -> None:
    """`reconcile zoo` on ten models of two sources (three tools), on the local pool and on a local
    Ray instance with 2 CPUs (started and stopped inside each run: its start-up is part of the
    cost), each a fresh process, interleaved."""
    import tempfile

    from tests.test_ray import TEN, TOOLS

    with tempfile.TemporaryDirectory() as out:
        times: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(repeat):
            for ex in times:
                times[ex].append(_wall([sys.executable, "-m", "reconcile", "zoo", "--models", ",".join(TEN),
                                        "--tools", TOOLS, "--out", f"{out}/{ex}", "--executor", ex]))
    a, b = min(times["ray"]), min(times["local"])
    report("reconcile zoo, 10 models x 3 tools: Ray (local instance, 2 CPUs) vs the local pool",
           f"{a:.1f} s vs {b:.1f} s = {a / b:.2f}x (target <= 2.00x)", a / b <= 2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions per measurement (best is kept)")
    parser.add_argument("--only", choices=("counter", "roofline", "tools", "zoo", "zoo-cost", "pages", "training", "llm", "ray"),
                        help="run one group of measurements")
    parser.add_argument("--before", default=ZOO_COST_BEFORE,
                        help="the commit the zoo cost is compared with (default: main before the cost work)")
    ns = parser.parse_args()
    if ns.only in (None, "counter"):
        bench_vgg_meta()
        bench_roofline(ns.repeat)
        bench_native_vs_flopcounter(ns.repeat)
    if ns.only == "roofline":
        bench_roofline(ns.repeat)
    if ns.only in (None, "training"):
        bench_llama_training(max(1, ns.repeat // 2))
    if ns.only in (None, "llm"):
        bench_llm(ns.repeat)
    if ns.only in (None, "tools"):
        bench_against_plain_script(max(1, ns.repeat // 2), ns.before)
        bench_timm_vs_torchvision(max(1, ns.repeat // 2))
    if ns.only in (None, "zoo"):
        bench_zoo()
    if ns.only in (None, "zoo-cost"):
        bench_zoo_cost(1, ns.before)  # minutes per run: once each, interleaved
    if ns.only in (None, "pages"):
        bench_huge_pages(max(1, ns.repeat // 2))
    if ns.only in (None, "ray"):
        bench_ray(max(1, ns.repeat // 2))
    missed = [n for n, _, ok in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(missed)} of {len(RESULTS)} targets met" + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
