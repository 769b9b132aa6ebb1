"""Write reconcile/sources/timm_table.py from the installed timm: every name of
``timm.list_models()`` with the input size of its default pretrained config, so resolving a
``timm:`` spec and its default input needs no ``import torch``. tests/test_sources.py checks the
table against timm itself. Run after changing the timm pin:
``.venv/bin/python scripts/timm_table.py``."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render() -> str:
    import timm

    lines = [
        '"""Every model of ``timm.list_models()`` -> the (C, H, W) input of its default pretrained config.',
        "",
        f"Generated from timm {timm.__version__} by ``scripts/timm_table.py``; a test checks it against timm.",
        '"""',
        "",
        f'TIMM_VERSION = "{timm.__version__}"',
        "",
        "TIMM: dict[str, tuple[int, int, int]] = {",
    ]
    for name in timm.list_models():
        cfg = timm.models.get_pretrained_cfg(name)
        size = tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)
        lines.append(f'    "{name}": {size!r},')
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    (ROOT / "reconcile" / "sources" / "timm_table.py").write_text(render())
