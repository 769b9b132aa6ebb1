"""The zoo check: every tool on many models, the share of layers explained with zero residual.

``ZOO_CI`` is the subset CI runs: at least one model of every torchvision family, the smallest of
each, so the whole check fits in CI's time. ``make zoo`` runs all 80 and writes ``reports/zoo.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from reconcile.explain.core import ToolExplanation
from reconcile.report.model import ModelReport

# family -> smallest member; 15 models
ZOO_CI: tuple[str, ...] = (
    "resnet18",  # ResNet
    "vgg11",  # VGG
    "densenet121",  # DenseNet
    "googlenet",  # Inception (v1)
    "inception_v3",  # Inception v3 (299 px)
    "mobilenet_v3_small",  # MobileNet
    "efficientnet_b0",  # EfficientNet
    "regnet_x_400mf",  # RegNet
    "shufflenet_v2_x0_5",  # ShuffleNet
    "squeezenet1_1",  # SqueezeNet
    "convnext_tiny",  # ConvNeXt
    "vit_b_32",  # ViT
    "swin_t",  # Swin
    "maxvit_t",  # MaxViT
    "mnasnet0_5",  # MNASNet
)


@dataclass(frozen=True)
class Share:
    explained: int  # rows with zero residual on every metric
    rows: int
    status: str

    @property
    def complete(self) -> bool:
        return self.status == "ok" and self.explained == self.rows

    def text(self) -> str:
        if self.status != "ok":
            return self.status
        pct = 100 * self.explained / self.rows if self.rows else 100.0
        return f"{pct:.0f}% ({self.explained}/{self.rows})" if self.explained != self.rows else f"100% ({self.rows})"


def share(t: ToolExplanation) -> Share:
    """Rows (plus the total-only record and the headline) whose every metric has zero residual."""
    if t.status != "ok":
        return Share(0, 0, t.status)
    rows = list(t.layers) + [r for r in (t.unattributed, t.headline) if r is not None]
    ok = sum(1 for le in rows if not any(le.residual.values()))
    return Share(ok, len(rows), "ok" if t.summaries else "no convention")


def zoo_markdown(reports: Sequence[ModelReport], errors: Sequence[tuple[str, str]] = ()) -> str:
    tools: list[str] = []
    for r in reports:
        for t in r.tools:
            if t.tool not in tools:
                tools.append(t.tool)
    head = ["model", "input"] + tools
    lines = ["# Zoo: how much of each tool's output reconcile explains", "",
             "Share of each tool's rows (per-layer rows, the total-only record and the headline) whose every "
             "number is predicted exactly from the native count, i.e. zero residual. Target: 100% everywhere. "
             "`failed` / `timeout`: the tool itself did not finish on that model (see the model's report).", "",
             "| " + " | ".join(head) + " |", "|" + "|".join([":---", ":---"] + ["---:"] * len(tools)) + "|"]
    complete = {t: 0 for t in tools}
    ran = {t: 0 for t in tools}
    for r in reports:
        by = {t.tool: share(t) for t in r.tools}
        cells = []
        for name in tools:
            s = by.get(name)
            if s is None:
                cells.append("")
                continue
            if s.status == "ok":
                ran[name] += 1
                complete[name] += s.complete
            cells.append(s.text() if s.complete or s.status != "ok" else f"**{s.text()}**")
        lines.append("| " + " | ".join([r.model, "x".join(map(str, r.input_shape))] + cells) + " |")
    for model, err in errors:
        lines.append("| " + " | ".join([model, "—"] + [f"error: {err}"] + [""] * (len(tools) - 1)) + " |")
    lines += ["", "| tool | models fully explained | of models it ran on |", "|:---|---:|---:|"]
    lines += [f"| {t} | {complete[t]} | {ran[t]} |" for t in tools]
    return "\n".join(lines) + "\n"
