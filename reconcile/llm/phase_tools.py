"""Every counting tool on the forward passes of a language-model phase (``reconcile.llm``), each
reconciled against the native count of the same forward like a plain model's run.

Not an adapter: it runs a tool's own adapter (``reconcile.tools``) on one ``Step``'s inputs, as
``reconcile.llm.inputs`` builds them, and explains the run with the tool's convention against
``StepCount.native``. Guarantees:

- a step with a cache (``past > 0``) gets the ``DynamicCache`` transformers builds, filled to
  ``past`` tokens, FRESH for every forward the tool makes (a forward pre-hook on the root swaps
  it in, removed afterwards): DeepSpeed's warm-up forward would otherwise append a token and the
  profiled forward attend N + 2 keys. A step without one (a prefill) passes ``past_key_values=None``
  (and ``use_cache``, and ``logits_to_keep`` when 0, at their defaults) and the model builds its
  own empty cache, as ``model(input_ids)`` does;
- a tool that cannot take the cache (calflops calls ``.to()`` on every input) is a failed run
  with its own error, never left out;
- a phase's tool result is the sum of its steps' runs (a generation: the tool on each forward
  pass); it is failed if any step failed, and says which.
Runs tools in this process (they patch torch globals while counting): call it from a worker.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, replace
from typing import Any, Iterator

from reconcile.records import ToolRun


@dataclass(frozen=True)
class PhaseToolRun:
    """One tool on every forward of a phase: the runs and their explanations, step by step."""

    tool: str
    steps: tuple[Any, ...]  # reconcile.llm.phases.Step
    explanations: tuple[Any, ...]  # reconcile.explain.core.ToolExplanation, one per step

    @property
    def status(self) -> str:
        return "ok" if all(e.status == "ok" for e in self.explanations) else "failed"

    @property
    def reason(self) -> str:
        """The first failed step's label and the tool's error ("" when every step ran)."""
        for s, e in zip(self.steps, self.explanations):
            if e.status != "ok":
                return f"{s.label}: {e.run.error_type}: {e.run.error_message}"
        return ""

    def headline(self, key: str) -> int:
        """A headline number summed over the steps (every step ran)."""
        return sum(int(e.run.headline[key]) for e in self.explanations)

    @property
    def main(self) -> str:
        """The tool's main operation count's headline key (thop "ops", FlopCounterMode "flops", ...)."""
        return self.explanations[0].main if self.explanations else ""

    @property
    def unit(self) -> str:
        """The unit of that count as the tool's convention reads it (MACs, FLOPs)."""
        return self.explanations[0].unit if self.explanations else ""

    def main_total(self) -> int:
        """The tool's main operation count summed over the steps (every step ran)."""
        return sum(int(e.run.headline[e.main]) for e in self.explanations)

    @property
    def residual(self) -> Any:
        return sum((e.residual for e in self.explanations), 0)


def _adapter(tool: str) -> Any:
    """The tool's adapter; a pinned version (``tool_versions.toml``) from its own folder, as the
    runner's worker loads it (this runs in a child process of its own: the pin's copy of its
    module replaces the environment's for the rest of it)."""
    from reconcile import tools, versions

    mod, cls = tools.adapter_of(tools.get(tool).name).split(":")
    pin = versions.get(tool)
    if pin is not None:
        versions.check(pin.name)
        versions.activate(pin)
    adapter = getattr(importlib.import_module(mod), cls)()
    if pin is not None:
        adapter.name, adapter.distribution = pin.name, pin.dist
    return adapter


@contextlib.contextmanager
def _fresh_cache(model: Any, step: Any, args: tuple[Any, ...], cache: Any) -> Iterator[tuple[Any, ...]]:
    """The step's positional inputs, a filled cache swapped in before every forward of the root."""
    from reconcile.llm import inputs as llm_inputs

    idx = next((i for i, a in enumerate(args) if a is cache), None)
    if idx is None:
        yield args
        return
    if step.past == 0:
        # what ``model(input_ids, position_ids)`` does by itself: its own cache (use_cache defaults
        # to the config's True), logits for every position (logits_to_keep 0)
        import inspect

        names = list(inspect.signature(model.forward).parameters)
        drop = {"past_key_values"} | ({"logits_to_keep"} if step.logits == 0 else set())
        if getattr(getattr(model, "config", None), "use_cache", False):
            drop.add("use_cache")  # the config's default says the same
        yield tuple(None if i < len(names) and names[i] in drop else a for i, a in enumerate(args))
        return

    def hook(_mod: Any, a: tuple[Any, ...]) -> tuple[Any, ...]:
        a = list(a)
        if idx < len(a):
            a[idx] = llm_inputs.filled_cache(model, step.batch, step.past)
        return tuple(a)

    handle = model.register_forward_pre_hook(hook)
    try:
        yield args
    finally:
        handle.remove()


def _device(model: Any) -> str:
    p = next(model.parameters(), None)
    return p.device.type if p is not None else "cpu"


def run_step(tool: str, model: Any, step: Any) -> ToolRun:
    """The tool's adapter on one forward of ``step`` (see the module docstring for the cache)."""
    from reconcile.llm import inputs as llm_inputs

    from reconcile.llm.count import routed_experts

    args, cache = llm_inputs.step_inputs(model, step)
    # a mixture of experts runs as the native count ran it (``count.ROUTING_RULE``: batched_mm)
    with routed_experts(model) as experts, _fresh_cache(model, step, args, cache) as run_args:
        run = _adapter(tool).run(model, run_args)
    if run.status != "ok":
        return run
    notes = [f"{step.label}: a fresh cache of {step.past} tokens for every forward the tool makes (a pre-hook on "
             "the root)" if step.past else f"{step.label}: past_key_values and use_cache None: the model's own empty cache"]
    if experts:
        notes.append(f"{step.label}: the experts run as transformers' batched_mm, as in the native count (each token "
                     "through its top-k experts)")
    return replace(run, notes=(*run.notes, *notes))


def run_phase(tool: str, model: Any, phase_count: Any) -> PhaseToolRun:
    """The tool on every forward of a counted phase, each run explained against that step's native
    count with the tool's convention (a zero residual: every difference has a named cause)."""
    from reconcile import conventions
    from reconcile.explain.core import explain_run

    try:
        conv = conventions.get(tool)
    except (ImportError, AttributeError):
        conv = None
    explanations = []
    for s in phase_count.steps:
        run = run_step(tool, model, s.step)
        # the tool ran the model where it was built (meta, as native): no CPU-only fused kernels
        native = replace(s.native, tool_device=str(_device(model)))
        pred = conv.predict(native) if conv is not None and run.status == "ok" else None
        explanations.append(explain_run(run, pred, conv, native))
    return PhaseToolRun(tool, tuple(s.step for s in phase_count.steps), tuple(explanations))


# ----- a whole generation through the tool's own profiler around ``model.generate`` ---------------

@dataclass(frozen=True)
class GenerateRun:
    """A tool's total over ``model.generate`` (every forward it made), against its convention's
    prediction summed over the native count's steps: ``macs == predicted + residual`` and
    ``predicted == native + sum(causes)``."""

    tool: str
    macs: int
    native: int  # native MACs of the phase
    predicted: int  # the convention's headline MACs summed over the counted steps
    causes: tuple[tuple[str, int], ...]  # (cause, MACs) summed over rows and steps

    @property
    def residual(self) -> int:
        return self.macs - self.predicted


def _calflops_generate(model: Any, ids: Any, new: int) -> int:
    import torch
    from calflops.calculate_pipline import CalFlopsPipline

    pipe = CalFlopsPipline(model, include_backPropagation=False, compute_bp_factor=2.0)
    pipe.start_flops_calculate(ignore_list=None)
    try:
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                           do_sample=False)
        return int(pipe.get_total_macs())
    finally:
        pipe.end_flops_calculate()


GENERATE = {"calflops": _calflops_generate}  # tools whose profiler can be wrapped around generate


def run_generate(tool: str, model: Any, phase_count: Any) -> GenerateRun:
    """``tool``'s profiler started, ``model.generate`` run greedy for the phase's T new tokens
    (``min_new_tokens`` = T, so no end-of-sequence stops it early), its total MACs read, and
    reconciled with the convention over the native steps. Needs real weights (generate reads the
    logits' values), on CPU; run it in a worker (the profiler patches torch globals)."""
    import torch

    from reconcile import conventions

    phase = phase_count.phase
    if phase.kind != "generate":
        raise ValueError("run_generate is for a generate:P+T phase")
    ids = torch.zeros(phase.batch, phase.prompt, dtype=torch.long)
    macs = GENERATE[tool](model, ids, phase.new)
    conv = conventions.get(tool)
    predicted = 0
    causes: dict[str, int] = {}
    for s in phase_count.steps:
        pred = conv.predict(s.native)
        predicted += int(pred.headline["macs"])
        for la in pred.layers:
            for t in la.terms.get("macs", ()):
                causes[t.cause] = causes.get(t.cause, 0) + int(t.amount)
        for t in pred.headline_terms.get("macs", ()):
            causes[t.cause] = causes.get(t.cause, 0) + int(t.amount)
        for ts in pred.unattributed_terms.values():
            for t in ts:
                causes[t.cause] = causes.get(t.cause, 0) + int(t.amount)
    native = phase_count.totals["macs"]
    return GenerateRun(tool, macs, native, predicted, tuple(sorted((c, a) for c, a in causes.items() if a)))
