"""A phase count as a job of ``reconcile.runner`` (the helper job ``native-llm``): the model is
built in a worker on meta (on CPU when its forward reads values) and ``count_phase`` runs there;
``detail`` holds the ``PhaseCount``."""

from __future__ import annotations

from typing import Any

from reconcile.adapters.base import Adapter
from reconcile.records import ToolRun


class PhaseAdapter(Adapter):
    name = "native-llm"
    distribution = "reconcile"
    device = "meta"
    fallback_device = "cpu"

    def __init__(self, phase: str = "decode:128", fit: bool = True, tools: str = "") -> None:
        from reconcile.llm.phases import parse

        self.phase = parse(phase)
        self.fit = fit
        self.tools = tuple(t for t in tools.split(",") if t)  # counting tools run on the phase's forwards

    def version(self) -> str:
        from reconcile._version import __version__

        return __version__

    def attempted(self) -> str:
        return f"reconcile.llm.count_phase(model, {self.phase.text!r})"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        from reconcile.llm.count import count_phase

        import dataclasses

        from reconcile.errors import ReconcileError
        from reconcile.llm.rules import explain_phase

        result = count_phase(model, self.phase, name="model", fit=self.fit)
        try:  # the rules of thumb need the model's config (dimensions): computed here, beside it
            result = dataclasses.replace(result, rules=tuple(explain_phase(result, model)))
        except ReconcileError as exc:  # not a transformer language model's config: no rules, said so
            result = dataclasses.replace(result, notes=(*result.notes, f"no rules of thumb: {exc}"))
        if self.tools:  # each tool in a child of this worker, on the same model and counted forwards
            from reconcile.llm.explained import run_tools

            runs = run_tools(model, [result], self.tools)
            result = dataclasses.replace(result, tools=tuple(runs[t][0] for t in self.tools))
        return ToolRun(tool=self.name, version=self.version(), status="ok",
                       headline=dict(result.totals), detail=result,
                       notes=(f"counted on the {result.steps[0].native.device} device",))
