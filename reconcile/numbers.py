"""The one number formatter. Every K/M/G, MiB and percentage in reconcile's output comes from here.

It imports nothing of reconcile, so every layer that shows a number (report, roofline, the CLI)
imports it from below, never from ``reconcile.report``."""

from __future__ import annotations

from fractions import Fraction

_SI = ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K"))


def exact(n: int | Fraction) -> str:
    """Exact value with thousands separators: 1,814,073,344; fractions as 1,234 1/2."""
    if isinstance(n, Fraction) and n.denominator != 1:
        whole, rem = divmod(n.numerator, n.denominator)
        if n < 0 and rem:
            whole += 1
            rem = n.denominator - rem
        frac = f"{rem}/{n.denominator}"
        return f"{whole:,} {frac}" if whole else frac
    return f"{int(n):,}"


def si(n: int | Fraction | float, digits: int = 3) -> str:
    """Short value with an SI suffix: 1.814 G. Values below 1000 are printed whole."""
    v = float(n)
    for scale, suffix in _SI:
        if abs(v) >= scale:
            return f"{v / scale:.{digits}f} {suffix}"
    return f"{int(v):,}" if v == int(v) else f"{v:.{digits}f}"


def mib(nbytes: int | Fraction, digits: int = 2) -> str:
    return f"{float(nbytes) / 2**20:.{digits}f} MiB"


def percent(part: int | Fraction, whole: int | Fraction, digits: int = 1) -> str:
    if not whole:
        return "n/a"
    return f"{100 * float(part) / float(whole):.{digits}f}%"


def ratio(x: Fraction | float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{float(x):.{digits}f}"
