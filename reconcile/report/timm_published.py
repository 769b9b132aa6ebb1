"""``reports/timm-published.md``: timm's published table against reconcile's prediction, row by row.
A pure function of the checks (``reconcile.sources.timm_published.Check``); imports no torch."""

from __future__ import annotations

from typing import Sequence

from reconcile.numbers import exact
from reconcile.sources import timm_published as tp


def _signed(n: int) -> str:
    return ("+" if n > 0 else "−" if n < 0 else "") + exact(abs(n))


def _amounts(amounts: dict, metrics=("flops", "params", "activations")) -> str:
    names = {"flops": "MACs", "params": "parameters", "activations": "activations"}
    return ", ".join(f"{_signed(amounts[k])} {names[k]}" for k in metrics if amounts.get(k))


def _switches(p: tp.Prediction) -> str:
    """What reconcile's default fvcore run (timm's defaults) differs from the table's by, per switch."""
    parts = []
    if p.fused_attention:
        parts.append("fused attention (timm's default) " + _amounts(dict(p.fused_attention)))
    if p.not_reparameterized:
        parts.append("not re-parameterized " + _amounts(dict(p.not_reparameterized)))
    return "; ".join(parts)


def markdown(checks: Sequence[tp.Check], command: str = "reconcile zoo --source timm --published") -> str:
    every = tp.summary(checks)
    defaults = [c for c in checks if c.default_size]
    at_default = tp.summary(defaults)
    macts = {s: sum(1 for c in checks if c.macts_status == s) for s in (tp.MATCHED, tp.EXPLAINED, tp.UNEXPLAINED)}
    lines = [
        "# timm's published table, reproduced", "",
        f"Source: {tp.TABLE_SOURCE} (kept as `reconcile/sources/timm_benchmark.csv`; its model list is that "
        f"of timm {tp.TABLE_TIMM}). Each row predicted from reconcile's native count with fvcore's convention, "
        "the model built as timm's `benchmark.py` built it for the table: fvcore's counts (`infer_gmacs` = "
        "`round(FlopCountAnalysis.total() / 1e9, 2)`, `infer_macts` its activations), attention on the "
        "non-fused path, re-parameterized (`--reparam`), eval, batch 1, at the row's square size. fvcore "
        "itself is not run. How the table was made: `reconcile/sources/timm_published.py`. "
        f"Regenerate with `{command}`.", "",
        "| rows | matched | explained by a named cause | unexplained | failed |", "|:---|---:|---:|---:|---:|",
        f"| at the model's default size ({len(defaults)} models) | {at_default[tp.MATCHED]} | "
        f"{at_default[tp.EXPLAINED]} | {at_default[tp.UNEXPLAINED]} | {at_default[tp.FAILED]} |",
        f"| every row ({len(checks)}) | {every[tp.MATCHED]} | {every[tp.EXPLAINED]} | {every[tp.UNEXPLAINED]} "
        f"| {every[tp.FAILED]} |", "",
        "*matched*: `infer_gmacs` and `param_count` reproduced to the printed 2 decimals. *explained*: not, "
        "but the model as the table's timm built it is, and the cause's amount is exact. `infer_macts` "
        f"(fvcore's activations) too: {macts[tp.MATCHED]} matched, {macts[tp.EXPLAINED]} explained, "
        f"{macts[tp.UNEXPLAINED]} unexplained.", "",
    ]
    odd = [c for c in checks if c.status in (tp.UNEXPLAINED, tp.FAILED) or c.macts_status == tp.UNEXPLAINED]
    lines += ["## Unexplained or failed", ""]
    if not odd:
        lines += ["None.", ""]
    else:
        lines += ["| model | size | status | why |", "|:---|---:|:---|:---|"]
        for c in odd:
            why = c.prediction.error if c.prediction is not None and c.prediction.error else "no named cause"
            lines.append(f"| {c.row.model} | {c.row.img_size} | {c.status} (macts {c.macts_status}) | {why} |")
        lines.append("")
    named = [c for c in checks if c.cause]
    lines += ["## Named causes: the model changed in timm since the table", "",
              "| model | size | published (M params, GMACs, M acts) | today's prediction | cause | exact amount (today minus the table's model) |",
              "|:---|---:|:---|:---|:---|:---|"]
    for c in named:
        p = c.prediction
        lines.append(f"| {c.row.model} | {c.row.img_size} | {c.row.param_count}, {c.row.gmacs}, {c.row.macts} | "
                     f"{tp.printed(p.params, 1e6)}, {tp.printed(p.flops, 1e9)}, {tp.printed(p.activations, 1e6)} | "
                     f"{c.cause} | {_amounts(dict(c.amounts))} |")
    lines += ["", "## Every row", "",
              "fvcore MACs and activations as the table's run counted them (predicted); *native*: reconcile's "
              "own MAC count of the same model; *timm's defaults*: what a plain `timm.create_model` (fused "
              "attention, not re-parameterized) adds to fvcore's numbers, the amount by which reconcile's fvcore "
              "run of `timm:NAME` differs from the table.", "",
              "| model | size | params (pub.) | params | GMACs (pub.) | fvcore MACs | native MACs | M acts (pub.) | activations | status | timm's defaults |",
              "|:---|---:|---:|---:|---:|---:|---:|---:|---:|:---|:---|"]
    for c in checks:
        p = c.prediction
        if p is None or p.error:
            lines.append(f"| {c.row.model} | {c.row.img_size} | {c.row.param_count} | | {c.row.gmacs} | | | "
                         f"{c.row.macts} | | {c.status} | |")
            continue
        status = c.status + ("" if c.macts_status == tp.MATCHED else f" (macts {c.macts_status})")
        lines.append(f"| {c.row.model} | {c.row.img_size}{'' if c.default_size else '*'} | {c.row.param_count} | "
                     f"{exact(p.params)} | {c.row.gmacs} | {exact(p.flops)} | {exact(p.native_macs)} | {c.row.macts} | "
                     f"{exact(p.activations)} | {status} | {_switches(p)} |")
    lines += ["", "\\* a size other than the model's pretrained config's (reconcile's default input)."]
    return "\n".join(lines) + "\n"
