"""Shared test harness: run a tool on a model, predict it from the native count, explain.

``explain_in_process`` runs the adapter in this process: only for tools that leave the process
as they found it (thop, ptflops, fvcore, torchsummary, native). torchstat patches
``nn.Module.__call__`` for good, so its tests go through ``reconcile.runner``.
"""

from __future__ import annotations

import importlib

from reconcile import conventions
from reconcile.counter import count
from reconcile.explain.core import ToolExplanation, explain_run
from reconcile.records import NativeCount, ToolRun


def adapter(tool: str):
    from reconcile import tools

    module, _, cls = tools.adapter_of(tool).partition(":")  # a helper job (native-trace) too
    return getattr(importlib.import_module(module), cls)()


def explain(tool: str, run: ToolRun, native: NativeCount) -> ToolExplanation:
    conv = conventions.get(tool)
    return explain_run(run, conv.predict(native), conv, native)


def explain_in_process(tool: str, model, inputs) -> ToolExplanation:
    """Run ``tool`` on a CPU model, count the same model natively, explain the run."""
    run = adapter(tool).run(model, tuple(inputs))
    assert run.status == "ok", f"{tool} failed: {run.error_type}: {run.error_message}"
    return explain(tool, run, count(model, tuple(inputs)))


def residual_rows(ex: ToolExplanation) -> list[str]:
    """Every row (and the total-only record and headline) with a nonzero residual, as text."""
    out = []
    rows = list(ex.layers) + [r for r in (ex.unattributed, ex.headline) if r is not None]
    for le in rows:
        bad = {k: v for k, v in le.residual.items() if v}
        if bad:
            out.append(f"{le.module or '(model)'} [{le.type}] call={le.call} raw={dict(le.raw)} "
                       f"predicted={dict(le.predicted)} residual={bad}")
    return out


def assert_explained(ex: ToolExplanation) -> None:
    """Zero residual on every row, metric, total-only record and headline number."""
    bad = residual_rows(ex)
    assert not bad, f"{ex.tool}: {len(bad)} rows not explained:\n" + "\n".join(bad[:20])
    assert ex.residual == 0
