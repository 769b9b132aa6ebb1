"""This machine, measured: peak FLOP/s, DRAM bandwidth and last-level-cache bandwidth, on CPU.

Guarantees: each figure is the best (minimum-time) of several warm runs on torch's threads in this
process (``torch.get_num_threads()``, the same threads ``measure_layers`` times layers with),
measured once per (dtype, thread count, torch version, method) and cached in
``$XDG_CACHE_HOME/reconcile/local-hardware.json`` (else ``~/.cache/reconcile/``) with the time it
was measured and how busy the machine was; a cached entry is measured again when it is older than
``MAX_AGE_DAYS``, was measured on a busy machine (``BUSY_SHARE``) or lacks either record, and the
platform's name always says when its figures were measured and whether they came from the cache.
The peak is the best rate of the kernels a CNN or transformer actually runs here: square matmuls
and a fixed set of standard convolution shapes; the DRAM bandwidth the best of three streams far
beyond any cache; the cache bandwidth the best of the same streams on working sets that fit the
last-level cache (its size read from sysfs). ``with_model_kernels`` raises the peak to the best rate
of the checked model's own convolutions and Linears, each timed alone the same way with FLOPs
worked out from its shapes (a fixed set of shapes cannot hold every shape a model runs, and
oneDNN runs some faster than all of the set: vgg16's 512-channel 14x14 convolutions at batch 8
beat it by 5%); ``roofline --measure`` times them just before and just after the layers, since
this machine's speed drifts from one minute to the next (the same convolution's best of 40 runs:
32.8, then 35.3 ms). ``measure_layers`` times each module's own work on real tensors with
forward hooks and leaves the model without them. Measured peaks are what torch reaches here, not
the silicon's theoretical peak: a layer slower than the roofline is expected, a layer faster than
it is reported, never clipped.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from reconcile.errors import ReconcileError
from reconcile.roofline.hardware import Platform

log = logging.getLogger(__name__)

# The best rate over sizes: a large matmul is not always the fastest (on a CPU with small caches
# 2048 ran at half the rate of 512 here), and the peak is the most FLOP/s torch reaches.
MATMUL_SIZES = (256, 512, 1024, 2048)
# torch's CPU matmul (MKL) and convolution (oneDNN) reach different rates on the same cores, and a
# convolution's rate depends on its shape: the standard shapes of ResNet and VGG stages, (in, out
# channels, kernel, stride, padding, height = width), each at batch 1 and 8
CONV_SHAPES = ((3, 64, 7, 2, 3, 224),  # ResNet's stem
               (64, 64, 3, 1, 1, 56), (128, 128, 3, 1, 1, 28), (256, 256, 3, 1, 1, 14), (512, 512, 3, 1, 1, 7),
               (128, 256, 3, 1, 1, 56), (256, 256, 3, 1, 1, 56), (512, 512, 3, 1, 1, 28))
CONV_BATCHES = (1, 8)
COPY_BYTES = 256 * 2**20  # 256 MiB each way: far beyond any CPU cache, so this is DRAM bandwidth
# working sets for the cache bandwidth, as fractions of the last-level cache: all fit it, and the
# smaller ones fit the per-core caches too (the best of all is the cache roof)
CACHE_FRACTIONS = (16, 8, 4, 2)  # LLC / 16 ... LLC / 2
REPEAT = 5
BUDGET = 1.0  # seconds per measurement at least: a quiet moment on a shared machine
# per cache working set (there are many, each run short); convolutions get the full BUDGET: with
# less (0.4 s, 3 runs of a batch-8 shape) a busy moment here left the peak 20% below the rate the
# model's own convolutions then reached
SHORT_BUDGET = 0.4
METHOD = "matmul-convs-streams-cache-2"  # part of the cache key: a changed measurement is measured again
MAX_AGE_DAYS = 7  # a cached measurement older than this is taken again (a changed machine, a new kernel)
# A measurement is busy when its threads got less than this share of the CPU time they could have
# used (process CPU seconds / (wall seconds x threads)): other processes ran on its cores and its
# figures are low (a busy moment stored DRAM 15.5 GB/s, then 10.6). Kernels and streams keep every
# thread running, so a quiet machine gives close to 1; 2 threads here beside 5 other runnable
# processes got 0.15. The 1-minute load average is recorded beside it.
BUSY_SHARE = 0.75


def conv_flops(batch: int, cin: int, cout: int, k: int, stride: int, pad: int, size: int) -> int:
    """FLOPs of a square convolution as the native counter counts them: 2 * N * Cout * Hout * Wout
    * Cin * k * k (padded taps included, as every counter counts them)."""
    out = (size + 2 * pad - k) // stride + 1
    return 2 * batch * cout * out * out * cin * k * k


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reconcile" / "local-hardware.json"


def last_level_cache() -> int | None:
    """Bytes of the largest cache of CPU 0, from sysfs (Linux); None where it cannot be read."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = f.read_text().strip().upper()
            mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * mult)
        except (OSError, ValueError):
            continue
    return max(sizes) if sizes else None


def _best(fn: Callable[[], Any], repeat: int, budget: float = 0.0) -> float:
    """Fastest of at least ``repeat`` runs, going on until ``budget`` seconds have passed: on a
    shared machine the best run is the one least disturbed, and more tries find a quieter one."""
    fn()  # warm-up: allocation, thread pool start
    best = float("inf")
    start = time.perf_counter()
    done = 0
    while done < repeat or time.perf_counter() - start < budget:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        done += 1
    return best


def _streams(torch: Any, nbytes: int, repeat: int, budget: float) -> dict[str, float]:
    """Bytes moved per second by a copy (reads + writes ``nbytes``: working set ``nbytes``), an
    in-place scale (reads and writes one ``nbytes`` tensor: no write-allocate read) and a sum
    (reads ``nbytes``), float32."""
    n = max(nbytes // 4, 1)
    src = torch.ones(n)
    half = torch.ones(max(n // 2, 1))
    dst = torch.empty_like(half)
    return {
        "copy": 2 * half.numel() * 4 / _best(lambda: dst.copy_(half), repeat, budget),
        "in-place scale": 2 * n * 4 / _best(lambda: src.mul_(1.0), repeat, budget),
        "sum": n * 4 / _best(lambda: src.sum(), repeat, budget),
    }


def measure(dtype: str, repeat: int = REPEAT) -> dict[str, Any]:
    """Peak FLOP/s: the best rate of square matmuls in ``dtype`` over ``MATMUL_SIZES`` and of the
    ``CONV_SHAPES`` convolutions; DRAM bandwidth: the best of a copy, an in-place scale and a sum
    of 256 MiB; cache bandwidth: the best of the same on working sets that fit the last-level cache."""
    import resource

    import torch

    load = _load()
    clock, used = time.perf_counter(), _cpu_seconds(resource)
    rates: dict[str, float] = {}
    for n in MATMUL_SIZES:
        if dtype == "int8":
            if not hasattr(torch, "_int_mm"):
                raise ReconcileError("this torch has no int8 matmul to measure: use --peak-dtype float32")
            a = torch.randint(-8, 8, (n, n), dtype=torch.int8)
            b = torch.randint(-8, 8, (n, n), dtype=torch.int8)
            mm = lambda: torch._int_mm(a, b)  # noqa: E731
            try:
                mm()
            except RuntimeError as exc:
                raise ReconcileError(f"int8 matmul does not run on this CPU's torch ({exc}); "
                                     "use --peak-dtype float32") from None
        else:
            a = torch.randn(n, n).to(getattr(torch, dtype))
            b = torch.randn(n, n).to(getattr(torch, dtype))
            mm = lambda: torch.mm(a, b)  # noqa: E731
        rates[f"mm{n}"] = 2 * n**3 / _best(mm, repeat, BUDGET)
    if dtype != "int8":
        with torch.no_grad():
            for cin, cout, k, stride, pad, size in CONV_SHAPES:
                w = torch.randn(cout, cin, k, k).to(getattr(torch, dtype))
                for batch in CONV_BATCHES:
                    x = torch.randn(batch, cin, size, size).to(getattr(torch, dtype))
                    conv = lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)  # noqa: E731
                    rates[f"conv{cin}-{cout}k{k}s{stride}@{size}b{batch}"] = conv_flops(
                        batch, cin, cout, k, stride, pad, size) / _best(conv, repeat, BUDGET)
                    del x
    best_kernel = max(rates, key=lambda k: rates[k])
    streams = _streams(torch, COPY_BYTES, repeat, BUDGET)
    s_best = max(streams, key=lambda k: streams[k])
    llc = last_level_cache()
    cache: dict[str, float] = {}
    if llc:
        for frac in CACHE_FRACTIONS:
            for kind, rate in _streams(torch, llc // frac, repeat, SHORT_BUDGET).items():
                cache[f"{kind} {llc // frac // 2**10} KiB"] = rate
    c_best = max(cache, key=lambda k: cache[k]) if cache else None
    top = sorted(rates, key=lambda k: -rates[k])[:4]
    share = (_cpu_seconds(resource) - used) / ((time.perf_counter() - clock) * torch.get_num_threads())
    return {
        "dtype": dtype,
        "peak_flops": rates[best_kernel],
        "bandwidth": streams[s_best],
        "cache_bytes": llc,
        "cache_bandwidth": cache[c_best] if c_best else None,
        "matmul": f"{dtype}: best of {len(rates)} kernels ({len(MATMUL_SIZES)} square matmuls, "
                  f"{len(rates) - len(MATMUL_SIZES)} convolutions) at {best_kernel}; top: "
                  + ", ".join(f"{k} {rates[k] / 1e9:.1f} G" for k in top) + " FLOP/s",
        "copy": f"{COPY_BYTES // 2**20} MiB float32, best at {s_best}: "
                + ", ".join(f"{k}: {v / 1e9:.1f} G" for k, v in streams.items()) + " B/s",
        "cache": (f"working sets up to {llc // CACHE_FRACTIONS[-1] // 2**10} KiB of the {llc // 2**20} MiB "
                  f"last-level cache, best at {c_best}: {cache[c_best] / 1e9:.1f} GB/s") if c_best
                 else "last-level cache size not readable: no cache roof",
        "rates": rates,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_share": round(share, 3),
        "load": load,
        "cpus": os.cpu_count(),
    }


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_seconds(resource: Any) -> float:
    """CPU seconds this process used so far, every thread (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stale(entry: dict[str, Any], now: datetime.datetime | None = None) -> str:
    """Why a cached measurement must be taken again ("" when it may be reused): too old, taken on
    a busy machine, or made before reconcile recorded when and how busy."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        at = datetime.datetime.fromisoformat(entry["measured_at"])
        share = float(entry["cpu_share"])
    except (KeyError, TypeError, ValueError):
        return "it does not say when it was measured or how busy the machine was"
    age = now - at
    if age > datetime.timedelta(days=MAX_AGE_DAYS):
        return f"it was measured {age.days} days ago (more than {MAX_AGE_DAYS})"
    if share < BUSY_SHARE:
        return f"the machine was busy then (its threads got {share:.0%} of their CPU time)"
    return ""


def measured_when(entry: dict[str, Any], cached: bool, now: datetime.datetime | None = None) -> str:
    """When a measurement was taken, how busy the machine was, and whether it came from the cache."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        at = datetime.datetime.fromisoformat(entry["measured_at"])
    except (KeyError, TypeError, ValueError):
        return f"measured {entry.get('date', 'at an unknown time')}"
    hours = (now - at).total_seconds() / 3600
    ago = f"{hours:.0f} h ago" if hours >= 1 else f"{hours * 60:.0f} min ago"
    text = f"measured {at.strftime('%Y-%m-%d %H:%M')} UTC, {ago}" + (", from the cache" if cached else "")
    share = entry.get("cpu_share")
    if isinstance(share, (int, float)) and share < BUSY_SHARE:
        text += f"; on a busy machine ({share:.0%} of its CPU time): low figures, measured again next time"
    return text


def platform(dtype: str, refresh: bool = False) -> Platform:
    """The cached measurement for ``dtype`` at this thread count and torch version, measured now if
    there is none (or ``refresh``)."""
    import torch

    key = f"{dtype}/threads={torch.get_num_threads()}/torch={torch.__version__}/{METHOD}"
    path = cache_path()
    cache: dict[str, Any] = {}
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    entry = None if refresh else cache.get(key)
    cached = isinstance(entry, dict) and {"peak_flops", "bandwidth", "threads"} <= set(entry)
    why = stale(entry) if cached else "there is none"
    if why:
        log.info("measuring this machine for %s (%s): about half a minute", key, why if not refresh else "asked to")
        cached = False
        entry = measure(dtype)
        cache[key] = entry
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:  # a read-only home still gets the measured numbers, uncached
            log.warning("could not cache the local measurement in %s: %s", path, exc)
    else:
        log.info("this machine's %s figures from %s (%s)", key, path, measured_when(entry, True))
    cache_bw = entry.get("cache_bandwidth")
    when = measured_when(entry, cached)
    return Platform("local", f"this machine (CPU, {entry['threads']} threads; {when})", float(entry["peak_flops"]),
                    float(entry["bandwidth"]), f"measured {dtype} matmul/conv",
                    f"{when}: {entry['matmul']}; DRAM {entry['copy']}; "
                    f"cache {entry.get('cache', 'not measured')}; cached in {path}", here=True,
                    cache_bytes=entry.get("cache_bytes") if cache_bw else None,
                    cache_bandwidth=float(cache_bw) if cache_bw else None)


def measure_layers(model: Any, inputs: tuple[Any, ...], repeat: int = REPEAT) -> tuple[dict[str, float], float]:
    """Per module: the best-of-``repeat`` time of its own work (its forward minus its children's),
    summed over its calls in one forward; and the best whole forward without hooks.

    Hooks add Python overhead to every module's time, which can only make measured times larger:
    a lower bound above a measured time is never caused by the hooks."""
    import torch

    names = {id(m): n for n, m in model.named_modules()}
    stack: list[list[float]] = []  # [start, children's time]
    own: dict[str, float] = {}

    def pre(mod: Any, args: Any) -> None:
        stack.append([time.perf_counter(), 0.0])

    def post(mod: Any, args: Any, out: Any) -> None:
        end = time.perf_counter()
        start, children = stack.pop()
        took = end - start
        if stack:
            stack[-1][1] += took
        name = names[id(mod)]
        own[name] = own.get(name, 0.0) + took - children

    with torch.no_grad():
        total = _best(lambda: model(*inputs), repeat)
        handles = []
        try:
            for m in model.modules():
                handles.append(m.register_forward_pre_hook(pre))
                handles.append(m.register_forward_hook(post))
            model(*inputs)  # warm-up
            best: dict[str, float] = {}
            for _ in range(repeat):
                own.clear()
                stack.clear()
                model(*inputs)
                for k, v in own.items():
                    best[k] = min(best.get(k, float("inf")), v)
        finally:
            for h in handles:
                h.remove()
    return best, total


KERNEL_TYPES = ("Conv1d", "Conv2d", "Conv3d", "Linear")


# per model kernel: twice the standard kernels' time, since a layer that reaches the peak inside
# the model is compared with this best (vgg16's 512-channel convolutions at batch 8 came within
# 0.1% of the best of 1 s runs)
KERNEL_BUDGET = 2.0


def kernel_flops(module: Any, x: Any, out: Any) -> int:
    """FLOPs of one call of a convolution or Linear, worked out here from its shapes (never taken
    from the native count, so that the check still catches a wrong count): 2 per multiply-
    accumulate, 2 * outputs * (in channels / groups) * kernel taps (padded taps included, as
    ``conv_flops``) or 2 * outputs * in features, plus one add per output for a bias."""
    import math

    if type(module).__name__ == "Linear":
        per_output = module.in_features
    else:
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return out.numel() * (2 * per_output + (1 if module.bias is not None else 0))


def model_kernels(model: Any, inputs: tuple[Any, ...], repeat: int = REPEAT,
                  budget: float = KERNEL_BUDGET) -> dict[str, float]:
    """FLOP/s of each distinct convolution and Linear of ``model`` (``KERNEL_TYPES``), each run
    alone on the input its module got (its first call) in one forward: best of ``repeat`` runs and
    at least ``budget`` seconds, FLOPs from ``kernel_flops``. Modules of the same type, settings
    and input shape are timed once. Keys: ``"<module> (<type> <input shape>)"``."""
    import torch

    names = {id(m): n for n, m in model.named_modules()}
    seen: dict[str, tuple[Any, Any, int]] = {}

    def hook(mod: Any, args: Any, out: Any) -> None:
        name = names[id(mod)]
        if name not in seen and len(args) == 1 and isinstance(args[0], torch.Tensor):
            seen[name] = (mod, args[0].detach().clone(), kernel_flops(mod, args[0], out))

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ in KERNEL_TYPES]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    rates: dict[str, float] = {}
    done: set[tuple] = set()
    with torch.no_grad():
        for name, (mod, x, flops) in seen.items():
            key = (type(mod).__name__, repr(mod), tuple(x.shape))
            if key in done or not flops:
                continue
            done.add(key)
            label = f"{name} ({type(mod).__name__} {'x'.join(map(str, x.shape))})"
            # forward itself, not __call__: a layer's measured time (measure_layers) runs from its
            # pre-hook to its post-hook, without __call__'s tens of microseconds
            rates[label] = flops / _best(lambda: mod.forward(x), repeat, budget)
    return rates


def peak_noise(before: dict[str, float], after: dict[str, float]) -> float:
    """How far the best kernel rate moved between two timings of the same kernels (before and after
    the layers): |best before - best after| / the larger, 0 when either is empty. A layer that
    beats a bound set by that peak by less than this is inside the peak's own measurement noise."""
    if not before or not after:
        return 0.0
    b, a = max(before.values()), max(after.values())
    return abs(b - a) / max(a, b)


def with_model_kernels(plat: Platform, rates: dict[str, float]) -> Platform:
    """``plat`` (the local measurement) with its peak raised to the best of ``rates`` when one is
    higher, and the source saying which kernel set it and how many were timed."""
    from dataclasses import replace

    if not rates:
        return plat
    best = max(rates, key=lambda k: rates[k])
    note = (f"; this model's own {len(rates)} convolution/Linear kernels timed alone, best {best} "
            f"{rates[best] / 1e9:.1f} G FLOP/s")
    if rates[best] <= plat.peak_flops:
        return replace(plat, source=plat.source + note + " (below the standard set's peak)")
    return replace(plat, peak_flops=rates[best], peak_label=f"{plat.peak_label}, this model's {best}",
                   source=plat.source + note + " (the peak used)")
