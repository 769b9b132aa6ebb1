"""This machine, measured: peak FLOP/s of a large matmul and bandwidth of a large copy, on CPU.

Guarantees: each figure is the best (minimum-time) of several runs using all of torch's threads,
measured once per (dtype, thread count, torch version) and cached in
``$XDG_CACHE_HOME/reconcile/local-hardware.json`` (else ``~/.cache/reconcile/``) with the date;
``measure_layers`` times each module's own work on real tensors with forward hooks and leaves the
model without them. Measured peaks are what torch reaches here, not the silicon's theoretical peak:
a layer slower than the roofline is expected, a layer faster than it is reported, never clipped.
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
COPY_BYTES = 256 * 2**20  # 256 MiB each way: far beyond any CPU cache, so this is DRAM bandwidth
REPEAT = 5
BUDGET = 1.0  # seconds per measurement at least: a quiet moment on a shared machine
METHOD = "matmul-conv-streams-1"  # part of the cache key: a changed measurement is measured again


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


def measure(dtype: str, repeat: int = REPEAT) -> dict[str, Any]:
    """Peak FLOP/s: the best rate of square matmuls in ``dtype`` over ``MATMUL_SIZES`` and of a
    3x3 convolution; bandwidth: the best of a copy, an in-place scale and a sum of 256 MiB."""
    import torch

    rates = {}
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
        rates[n] = 2 * n**3 / _best(mm, repeat, BUDGET)
    if dtype != "int8":
        # torch's CPU matmul and convolution use different libraries (MKL / oneDNN) that reach
        # different rates on the same cores: a 3x3 convolution, 512 -> 512 channels at 28 x 28,
        # 2 * 512 * 512 * 9 * 784 FLOPs, is timed too and the best of all is the peak
        x = torch.randn(1, 512, 28, 28).to(getattr(torch, dtype))
        w = torch.randn(512, 512, 3, 3).to(getattr(torch, dtype))
        with torch.no_grad():
            rates["conv3x3"] = 2 * 512 * 512 * 9 * 784 / _best(
                lambda: torch.nn.functional.conv2d(x, w, padding=1), repeat, BUDGET)
    n_best = max(rates, key=lambda k: rates[k])
    # bandwidth: the best of a copy (read + write), an in-place scale (read + write of the same
    # lines: no write-allocate read) and a sum (read only), each far larger than any cache
    src = torch.ones(COPY_BYTES // 4)
    dst = torch.empty_like(src)
    streams = {
        "copy": 2 * COPY_BYTES / _best(lambda: dst.copy_(src), repeat, BUDGET),
        "in-place scale": 2 * COPY_BYTES / _best(lambda: src.mul_(1.0), repeat, BUDGET),
        "sum": COPY_BYTES / _best(lambda: src.sum(), repeat, BUDGET),
    }
    s_best = max(streams, key=lambda k: streams[k])
    return {
        "dtype": dtype,
        "peak_flops": rates[n_best],
        "bandwidth": streams[s_best],
        "matmul": f"{dtype} square matmuls and a conv, best rate at {n_best}: "
                  + ", ".join(f"{k}: {v / 1e9:.1f} G" for k, v in rates.items()) + " FLOP/s",
        "copy": f"{COPY_BYTES // 2**20} MiB float32, best at {s_best}: "
                + ", ".join(f"{k}: {v / 1e9:.1f} G" for k, v in streams.items()) + " B/s",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }


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
    if not isinstance(entry, dict) or not {"peak_flops", "bandwidth"} <= set(entry):
        entry = measure(dtype)
        cache[key] = entry
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:  # a read-only home still gets the measured numbers, uncached
            log.warning("could not cache the local measurement in %s: %s", path, exc)
    return Platform("local", f"this machine (CPU, {entry['threads']} threads)", float(entry["peak_flops"]),
                    float(entry["bandwidth"]), f"measured {dtype} matmul/conv",
                    f"measured {entry['date']}: {entry['matmul']}; {entry['copy']}; cached in {path}", here=True,
                    cache_bytes=last_level_cache())


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
