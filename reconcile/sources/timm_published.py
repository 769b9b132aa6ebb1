"""timm's own published complexity table, and the check of reconcile's count against it.

The table: ``timm_benchmark.csv`` beside this module, a verbatim copy of
``results/benchmark-infer-amp-nchw-pt291-cu128-4090.csv`` of huggingface/pytorch-image-models at
commit 90cae8c5ab83d2d7e23b1fb2bab1559bfdcbc7e9 (torch 2.9.1, CUDA 12.8, RTX 4090; sha256 in
``TABLE_SHA256``). 1,627 rows, 1,282 models: ``param_count`` in millions and ``infer_gmacs`` in
GMACs, both ``round(x / 1e6 or 1e9, 2)``, ``infer_macts`` (fvcore's activations) in millions.
It is read with the ``csv`` module only: loading it runs no code.

How the table was made (``benchmark.py``'s ``InferenceBenchmarkRunner``; every stored version of
it, 066e4906 and 6c376d81 and later copies, profiles the same way; the file at the CSV's commit is
not in the searchable store, so what it switched on is read from the numbers, below):

- the counter: DeepSpeed's ``get_model_profile`` when importable, else fvcore's
  ``FlopCountAnalysis`` and ``ActivationCountAnalysis`` on ``torch.ones((1,) + input_size)``;
  DeepSpeed sets no ``macts``, and every row has one: **fvcore** ran. ``infer_gmacs`` is
  ``round(fca.total() / 1e9, 2)`` (fvcore's "flop" is one multiply-add), ``infer_macts``
  ``round(aca.total() / 1e6, 2)``, at batch 1 whatever ``infer_batch_size`` says;
- the model: ``create_model(name, num_classes=None, in_chans=3, global_pool=None, scriptable=False,
  drop_rate=0.)`` (None arguments are dropped: timm's defaults), eval mode, float32 (``amp`` is an
  autocast around the timed steps only, not around the profile), profiled after the timed
  steps, outside ``no_grad``; the retry loop has no ``break``, so the number kept is the second,
  CPU, profile; ``param_count`` is ``sum(p.numel() for p in model.parameters())``;
- **re-parameterized** (``--reparam``: ``timm.utils.reparameterize_model``, which fuses
  conv + BN and RepVGG-style branches, before ``param_count``): mobileone_s0's 2.08 M, 0.28 GMACs,
  3.79 M activations are its re-parameterized figures (5.29 M, 1.09, 15.48 unfused);
- **attention on the non-fused path** (``TIMM_FUSED_ATTN=0``, or the model built exportable):
  deit3_medium's 8.0 GMACs and 15.93 M activations are fvcore's count with ``q @ k.T`` and
  ``attn @ v`` as two matmuls (8,003,576,320 MACs, 15,930,696 activations), where the fused
  ``F.scaled_dot_product_attention`` is one op fvcore has no handle for (7,526,691,328; 10,994,664).
- the input: ``infer_img_size`` square (``--img-size``; a model's first row is at its pretrained
  config's size, further rows at other sizes).

So the prediction of a row is reconcile's fvcore convention applied to the native count of the
model built that way (``reconcile.adapters.timm_published``), never fvcore's own output.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

TABLE = Path(__file__).with_name("timm_benchmark.csv")
TABLE_SHA256 = "7ef180f30bfcf3271aed993ddff2114c88a83b58e6f7e56acbd76e702e6f3136"
TABLE_SOURCE = ("huggingface/pytorch-image-models results/benchmark-infer-amp-nchw-pt291-cu128-4090.csv "
                "at commit 90cae8c5ab83d2d7e23b1fb2bab1559bfdcbc7e9")
# the table's model list is that of timm 1.0.24 to 1.0.26 less eva02_enormous_patch14_clip_224 and
# vit_7b_patch16_dinov3 (1.0.22 lacks five of its models, csatv2 among them; 1.0.28 adds nine)
TABLE_TIMM = "1.0.24 to 1.0.26"


@dataclass(frozen=True)
class Row:
    """One published row, its numbers exactly as printed (the strings of the CSV)."""

    model: str
    img_size: int
    param_count: str  # millions, 2 decimals
    gmacs: str  # GMACs, 2 decimals
    macts: str  # millions, 2 decimals


def rows(path: Path = TABLE) -> list[Row]:
    with path.open(newline="") as fh:
        return [Row(r["model"], int(r["infer_img_size"]), r["param_count"], r["infer_gmacs"], r["infer_macts"])
                for r in csv.DictReader(fh)]


@functools.lru_cache(maxsize=1)
def _by_size() -> dict[tuple[str, int], Row]:
    return {(row.model, row.img_size): row for row in rows()}


def row_at(model: str, size: int) -> Row | None:
    """The published row of ``model`` at a square input of ``size``, None if there is none."""
    return _by_size().get((model, size))


def gmacs(model: str, size: int) -> float | None:
    """The model's published GMACs at a square input of ``size`` (None: no such row): a cost
    estimate for scheduling, not a figure to check against."""
    row = row_at(model, size)
    return float(row.gmacs) if row is not None and row.gmacs else None


def printed(value: int, scale: float) -> float:
    """The figure as benchmark.py printed it: ``round(value / scale, 2)``."""
    return round(value / scale, 2)


@dataclass(frozen=True)
class Changed:
    """A model timm changed after the table: how it was then, as ``create_model`` keyword arguments
    that rebuild it (its count then predicted like any other), and what changed where."""

    version: str  # the first timm release with the change
    what: str
    kwargs: Mapping[str, object] = field(default_factory=dict)  # rebuild as it was; {} when none can
    # a change no keyword rebuilds: {metric: amount}, fvcore's predicted numbers of the model under
    # ``version`` minus under the release before it, each predicted from reconcile's native count
    measured: Mapping[str, int] = field(default_factory=dict)


# Found by building each with the wheels of timm 1.0.22, 1.0.26, 1.0.28, 1.0.30 and 1.0.31
# (``pip download --no-deps timm==V``): the structure the table counted is that of every release
# before ``version``.
CHANGED: dict[str, Changed] = {
    "ecaresnext50t_32x4d": Changed(
        "1.0.31", "its stages were (2, 2, 2, 2) blocks, a copy of ecaresnext26t_32x4d's, until timm 1.0.30; "
        "(3, 4, 6, 3) from 1.0.31 (timm/models/resnet.py)", {"layers": (2, 2, 2, 2)}),
    **{name: Changed(
        "1.0.31", "the mixed rotary embedding's frequencies, computed on every forward, were rewritten in timm "
        "1.0.31 (timm/layers/pos_embed_sincos.py): fvcore sees fewer activations, the same GMACs to 2 decimals",
        measured=measured) for name, measured in (
            # fvcore flops and activations, 1.0.30 -> 1.0.31 (non-fused attention, as the table):
            # small 4,609,241,472 -> 4,608,338,304 and 12,851,440 -> 11,948,272; base 17,584,546,560 ->
            # 17,582,740,224 and 25,701,880 -> 23,895,544; large 61,608,952,832 -> 61,604,135,936 and
            # 68,335,976 -> 63,519,080 (the _ape variants alike); parameters unchanged
            ("vit_small_patch16_rope_mixed_224", {"flops": -903_168, "activations": -903_168}),
            ("vit_small_patch16_rope_mixed_ape_224", {"flops": -903_168, "activations": -903_168}),
            ("vit_base_patch16_rope_mixed_224", {"flops": -1_806_336, "activations": -1_806_336}),
            ("vit_base_patch16_rope_mixed_ape_224", {"flops": -1_806_336, "activations": -1_806_336}),
            ("vit_large_patch16_rope_mixed_224", {"flops": -4_816_896, "activations": -4_816_896}),
            ("vit_large_patch16_rope_mixed_ape_224", {"flops": -4_816_896, "activations": -4_816_896}),
        )},
}

MATCHED, EXPLAINED, UNEXPLAINED, FAILED = "matched", "explained", "unexplained", "failed"


@dataclass(frozen=True)
class Prediction:
    """What fvcore printed for a row, predicted from the native count, and the exact amounts of
    the switches benchmark.py's run took, each as (fvcore flops, activations, params) deltas."""

    flops: int  # fvcore's total (MACs) of the model built as the table's run built it
    activations: int
    params: int
    native_macs: int  # reconcile's own count of that model
    fused_attention: Mapping[str, int] = field(default_factory=dict)  # timm's default path minus the table's
    not_reparameterized: Mapping[str, int] = field(default_factory=dict)  # before reparam minus after
    as_at_table: Mapping[str, int] = field(default_factory=dict)  # CHANGED[model].kwargs rebuilt: its numbers
    error: str = ""


@dataclass(frozen=True)
class Check:
    row: Row
    default_size: bool  # the row is at the model's pretrained config size (reconcile's default input)
    status: str  # MATCHED, EXPLAINED, UNEXPLAINED, FAILED
    prediction: Prediction | None
    cause: str = ""  # the named cause of an EXPLAINED row, "" otherwise
    amounts: Mapping[str, int] = field(default_factory=dict)  # the cause's exact amounts: today minus the table's
    macts_status: str = ""  # MATCHED, EXPLAINED or UNEXPLAINED for infer_macts


def _same(pred: Mapping[str, int], row: Row) -> dict[str, bool]:
    return {"params": printed(pred["params"], 1e6) == float(row.param_count),
            "flops": printed(pred["flops"], 1e9) == float(row.gmacs),
            "activations": printed(pred["activations"], 1e6) == float(row.macts)}


def check(row: Row, pred: Prediction | None, default_size: bool) -> Check:
    """Classify one row: MATCHED when fvcore as benchmark.py ran it gives the printed
    ``infer_gmacs`` and ``param_count``; EXPLAINED when it does not but the model as the table's
    timm built it (``CHANGED``) does, the amount being today's count minus then; else UNEXPLAINED."""
    if pred is None or pred.error:
        return Check(row, default_size, FAILED, pred)
    now = {"flops": pred.flops, "activations": pred.activations, "params": pred.params}
    same = _same(now, row)
    changed = CHANGED.get(row.model)
    then: dict[str, int] | None = None
    if changed is not None:
        if pred.as_at_table:
            then = dict(pred.as_at_table)
        elif changed.measured:
            then = {k: v - changed.measured.get(k, 0) for k, v in now.items()}
    amounts = {k: now[k] - then[k] for k in now if now[k] != then[k]} if then else {}
    cause = f"model changed in timm {changed.version}: {changed.what}" if changed and amounts else ""
    if same["flops"] and same["params"]:
        status, main_cause = MATCHED, ""
    elif then is not None and all(_same(then, row)[k] for k in ("flops", "params")):
        status, main_cause = EXPLAINED, cause
    else:
        status, main_cause = UNEXPLAINED, ""
    if same["activations"]:
        macts = MATCHED
    elif then is not None and _same(then, row)["activations"]:
        macts = EXPLAINED
    else:
        macts = UNEXPLAINED
    return Check(row, default_size, status, pred, main_cause or (cause if macts == EXPLAINED else ""),
                 amounts if (main_cause or macts == EXPLAINED) else {}, macts)


def summary(checks: Sequence[Check]) -> dict[str, int]:
    out = {MATCHED: 0, EXPLAINED: 0, UNEXPLAINED: 0, FAILED: 0}
    for c in checks:
        out[c.status] += 1
    return out
