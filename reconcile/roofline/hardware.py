"""Named hardware: peak dense compute per dtype and DRAM bandwidth, from ``hardware.toml``.

Guarantees: every figure carries its source and the date it was read; where sources disagree all
are kept and exactly one per quantity is marked used (checked on load). ``platform(spec, dtype)``
turns a name (``a100-80gb``), ``custom:peak=19.5e12,bandwidth=1.555e12`` or a measured ``local``
entry into the ``Platform`` a roofline uses: one peak (chosen by dtype) and one bandwidth.
No torch import here (``local`` measuring lives in ``local.py``).
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Mapping

from reconcile.errors import ReconcileError

QUANTITIES = ("fp32", "tf32", "fp16", "bf16", "int8", "bandwidth")

# the compute dtype of a forward -> the peak that bounds it; float32 uses the CUDA-core FP32 peak
# unless TF32 is asked for (PyTorch's default for matmuls keeps full FP32)
DTYPE_PEAK = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8"}
PEAK_LABEL = {"fp32": "FP32", "tf32": "TF32 tensor", "fp16": "FP16 tensor", "bf16": "BF16 tensor",
              "int8": "INT8 tensor"}


@dataclass(frozen=True)
class Figure:
    """One figure from one source."""

    quantity: str
    value: int  # FLOP/s (OP/s for int8) or bytes/s
    used: bool
    source: str
    read: str  # date read, ISO


@dataclass(frozen=True)
class Hardware:
    key: str
    name: str
    figures: tuple[Figure, ...]

    def used(self, quantity: str) -> Figure | None:
        for f in self.figures:
            if f.quantity == quantity and f.used:
                return f
        return None

    def alternatives(self, quantity: str) -> tuple[Figure, ...]:
        return tuple(f for f in self.figures if f.quantity == quantity and not f.used)


@dataclass(frozen=True)
class Platform:
    """What a roofline needs: one peak and one bandwidth, and where they came from."""

    key: str
    name: str
    peak_flops: float  # FLOP/s
    bandwidth: float  # bytes/s
    peak_label: str  # "FP32", "BF16 tensor", "measured float32 matmul", ...
    source: str
    # True for this machine (local) and user-given figures: measured CPU times are compared with
    # bounds only on these, never with a named GPU's
    here: bool = False
    # the last-level cache and the bandwidth measured from it (local; custom when given): a layer
    # whose working set fits is bounded by the cache's bandwidth, not DRAM's. Named entries have
    # none (no source in the table gives a GPU's L2 bandwidth), so they stay DRAM-only.
    cache_bytes: int | None = None
    cache_bandwidth: float | None = None  # bytes/s

    @property
    def has_cache_roof(self) -> bool:
        return bool(self.cache_bytes and self.cache_bandwidth)

    @property
    def ridge(self) -> float:
        """I_max = pi / beta, FLOPs per byte: below it a layer is bandwidth-bound."""
        return self.peak_flops / self.bandwidth

    @property
    def cache_ridge(self) -> float | None:
        """pi / beta_cache: the ridge for layers whose working set fits the cache."""
        return self.peak_flops / self.cache_bandwidth if self.has_cache_roof else None


@functools.lru_cache(maxsize=1)
def table() -> Mapping[str, Hardware]:
    """The hardware table, checked: known quantities, positive integers, one used figure each."""
    text = resources.files("reconcile.roofline").joinpath("hardware.toml").read_text(encoding="utf-8")
    out: dict[str, Hardware] = {}
    for hw in tomllib.loads(text)["hw"]:
        figs = tuple(Figure(v["quantity"], v["value"], v["used"], v["source"], v["read"]) for v in hw["value"])
        for f in figs:
            if f.quantity not in QUANTITIES or not isinstance(f.value, int) or f.value <= 0:
                raise ValueError(f"hardware.toml: {hw['key']}: bad figure {f}")
        for q in {f.quantity for f in figs}:
            if sum(f.used for f in figs if f.quantity == q) != 1:
                raise ValueError(f"hardware.toml: {hw['key']}: {q} needs exactly one used figure")
        if not any(f.quantity == "bandwidth" for f in figs):
            raise ValueError(f"hardware.toml: {hw['key']}: no bandwidth")
        out[hw["key"]] = Hardware(hw["key"], hw["name"], figs)
    return out


def peak_quantity(dtype: str, tf32: bool = False) -> str:
    try:
        q = DTYPE_PEAK[dtype]
    except KeyError:
        raise ReconcileError(f"no peak for compute dtype {dtype!r}: use one of {', '.join(DTYPE_PEAK)}") from None
    return "tf32" if (q == "fp32" and tf32) else q


def named(key: str, dtype: str, tf32: bool = False) -> Platform:
    hw = table().get(key)
    if hw is None:
        raise ReconcileError(f"unknown hardware {key!r}: use one of {', '.join(table())}, local, or "
                             "custom:peak=FLOPS,bandwidth=BYTES_PER_S")
    q = peak_quantity(dtype, tf32)
    peak = hw.used(q)
    if peak is None:
        raise ReconcileError(f"{hw.name} has no {PEAK_LABEL[q]} peak in the table (it lacks the unit): "
                             "pick another --input-dtype or give custom:peak=...,bandwidth=...")
    bw = hw.used("bandwidth")
    assert bw is not None
    return Platform(key, hw.name, float(peak.value), float(bw.value), f"{PEAK_LABEL[q]} dense",
                    f"{peak.source} (read {peak.read}); {bw.source} (read {bw.read})")


CUSTOM_KEYS = ("peak", "bandwidth", "cache", "cache_bandwidth")
_CUSTOM_HELP = "write custom:peak=19.5e12,bandwidth=1.555e12 (optionally ,cache=BYTES,cache_bandwidth=BYTES_PER_S)"


def custom(text: str) -> Platform:
    """``custom:peak=19.5e12,bandwidth=1.555e12`` (FLOP/s, bytes/s), optionally with a cache roof:
    ``,cache=33554432,cache_bandwidth=3.6e11`` (its size in bytes and its bandwidth)."""
    body = text.split(":", 1)[1] if ":" in text else ""
    vals: dict[str, float] = {}
    for part in body.split(","):
        k, _, v = part.partition("=")
        try:
            vals[k.strip()] = float(v)
        except ValueError:
            raise ReconcileError(f"bad --hardware {text!r}: {_CUSTOM_HELP}") from None
    if not {"peak", "bandwidth"} <= set(vals) <= set(CUSTOM_KEYS) or ("cache" in vals) != ("cache_bandwidth" in vals) \
            or not all(0 < x < float("inf") for x in vals.values()):
        raise ReconcileError(f"bad --hardware {text!r}: {_CUSTOM_HELP} (all positive: FLOP/s, bytes/s, bytes)")
    cache = vals.get("cache")
    return Platform("custom", "custom", vals["peak"], vals["bandwidth"], "given", f"given on the command line: {text}",
                    here=True, cache_bytes=None if cache is None else int(cache),
                    cache_bandwidth=vals.get("cache_bandwidth"))


def split_keys(text: str) -> list[str]:
    """``a100-80gb,custom:peak=1e12,bandwidth=1e11,local`` -> entries (a custom entry keeps its commas)."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if out and out[-1].startswith("custom:") and part.split("=", 1)[0] in CUSTOM_KEYS \
                and ":" not in part:
            out[-1] += "," + part
        else:
            out.append(part)
    return out
