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

MATMUL_N = 2048  # 2 * 2048^3 = 17.2 GFLOP per matmul: long enough to time, short enough to repeat
COPY_BYTES = 256 * 2**20  # 256 MiB each way: far beyond any CPU cache, so this is DRAM bandwidth
REPEAT = 5


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reconcile" / "local-hardware.json"


def _best(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: allocation, thread pool start
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(dtype: str, repeat: int = REPEAT) -> dict[str, Any]:
    """Peak FLOP/s of an N x N matmul in ``dtype`` and bandwidth of a copy (read + write bytes)."""
    import torch

    n = MATMUL_N
    if dtype == "int8":
        if not hasattr(torch, "_int_mm"):
            raise ReconcileError("this torch has no int8 matmul to measure: use --input-dtype float32")
        a = torch.randint(-8, 8, (n, n), dtype=torch.int8)
        b = torch.randint(-8, 8, (n, n), dtype=torch.int8)
        try:
            mm = lambda: torch._int_mm(a, b)  # noqa: E731
            mm()
        except RuntimeError as exc:
            raise ReconcileError(f"int8 matmul does not run on this CPU's torch ({exc}); "
                                 "use --input-dtype float32") from None
    else:
        dt = getattr(torch, dtype)
        a = torch.randn(n, n).to(dt)
        b = torch.randn(n, n).to(dt)
        mm = lambda: torch.mm(a, b)  # noqa: E731
    t_mm = _best(mm, repeat)
    src = torch.ones(COPY_BYTES // 4)
    dst = torch.empty_like(src)
    t_copy = _best(lambda: dst.copy_(src), repeat)
    return {
        "dtype": dtype,
        "peak_flops": 2 * n**3 / t_mm,
        "bandwidth": 2 * COPY_BYTES / t_copy,
        "matmul": f"{n}x{n} @ {n}x{n} {dtype}, best of {repeat}: {t_mm * 1e3:.2f} ms",
        "copy": f"{COPY_BYTES // 2**20} MiB float32 copy (read + write), best of {repeat}: {t_copy * 1e3:.2f} ms",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }


def platform(dtype: str, refresh: bool = False) -> Platform:
    """The cached measurement for ``dtype`` at this thread count and torch version, measured now if
    there is none (or ``refresh``)."""
    import torch

    key = f"{dtype}/threads={torch.get_num_threads()}/torch={torch.__version__}"
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
                    float(entry["bandwidth"]), f"measured {dtype} matmul",
                    f"measured {entry['date']}: {entry['matmul']}; {entry['copy']}; cached in {path}")


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
