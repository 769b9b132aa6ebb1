"""The phase flags of ``reconcile count``: ``--prefill P``, ``--decode N``, ``--generate P+T``,
``--batch B``. Each phase given is counted for each model, in a worker (``runner`` job
``native-llm``), and printed as text or one JSON object per model and phase."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from reconcile.errors import ReconcileError
from reconcile.llm.phases import Phase, parse

PHASES_JOB = "native-llm"


def add_phase_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("language-model phases (causal LMs such as hf:LlamaForCausalLM; "
                             "docs/language-models.md)")
    g.add_argument("--prefill", metavar="P", help="count the prompt: one forward over P tokens into an empty cache")
    g.add_argument("--decode", metavar="N", help="count one new token reading a key-value cache of N tokens")
    g.add_argument("--generate", metavar="P+T", help="count a greedy generation: a P-token prompt then T new "
                   "tokens (T forward passes, as transformers' generate runs them)")
    g.add_argument("--batch", type=int, metavar="B", help="sequences per phase (default 1)")


def phases_of(ns: argparse.Namespace) -> list[Phase]:
    """The phases asked for, checked (a bad value: one ReconcileError line)."""
    batch = getattr(ns, "batch", None)
    if batch is not None and batch < 1:
        raise ReconcileError(f"--batch must be at least 1, got {batch}")
    b = f"{batch}*" if batch else ""
    out = []
    for kind in ("prefill", "decode", "generate"):
        value = getattr(ns, kind, None)
        if value is None:
            continue
        if "*" in str(value):
            raise ReconcileError(f"--{kind} {value}: give the batch with --batch B")
        out.append(parse(f"{kind}:{b}{str(value).strip()}"))
    if batch is not None and not out:
        raise ReconcileError("--batch goes with a phase: --prefill P, --decode N or --generate P+T")
    if out and getattr(ns, "training", False):
        raise ReconcileError("phases count inference (prefill, decode, generation): drop --training, or count "
                             "the training step without --prefill/--decode/--generate")
    return out


def count_phases(spec: str, phase: Phase, device: str = "meta", timeout: float = 300.0,
                 tools: Sequence[str] = ()) -> Any:
    """``count_phase`` of one model spec in a worker: the ``PhaseCount`` (a ReconcileError: why not);
    with ``tools``, each also run on the phase's forwards there and reconciled (``PhaseCount.tools``)."""
    from reconcile import models
    from reconcile.isolated import failure
    from reconcile.runner import Job, run_jobs

    name = models.resolve(spec, check=False).name
    job = Job(name, PHASES_JOB, inputs=(models.InputSpec((1, 1), "long"),), mode="eval", device=device,
              options=(("phase", phase.text),) + ((("tools", ",".join(tools)),) if tools else ()))
    (run,) = run_jobs([job], timeout=timeout, workers=1)
    if run.status != "ok":
        raise ReconcileError(failure(name, run) or f"{name}: {run.error_message}")
    from dataclasses import replace

    return replace(run.detail, model=name)


def run(ns: argparse.Namespace, phases: list[Phase], device: str, timeout: float, fmt: str, depth: int | None,
        err: Callable[[str], None]) -> int:
    from reconcile import models
    from reconcile.llm import render

    failed = 0
    for spec in models.split_specs(ns.specs):
        for phase in phases:
            try:
                pc = count_phases(spec, phase, device, timeout)
            except ReconcileError as exc:
                msg = str(exc)
                err(msg if msg.startswith(spec) else f"{spec}: {msg}")
                failed += 1
                continue
            if fmt == "json":
                print(json.dumps(render.plain(pc, depth if depth is not None else 3)))
            else:
                print(render.text(pc))
                print()
            sys.stdout.flush()
    return 2 if failed else 0


def write_reports(folder: Any, names: list[str], phases: list[Phase], device: str, timeout: float,
                  err: Callable[[str], None], hardware: str | None = None, tools: Sequence[str] = ()) -> int:
    """``report --prefill/--decode/--generate``: beside each model's report, its phases as
    ``<stem>.phases.md`` (the counts, the rules of thumb against them and, with ``hardware``, the
    roofline of each phase), ``<stem>.phases.json`` (one object per phase) and, for a prefill and
    a decode, ``<stem>.phases.png`` (intensity per layer, prefill against decode). ``tools``: the
    counting tools run on each phase's forwards and reconciled (a table per phase)."""
    from reconcile import pipeline
    from reconcile.llm import render
    from reconcile.llm.roofline import phase_roofline, platforms_for

    failed = 0
    for name in names:
        pcs = []
        for phase in phases:
            try:
                pcs.append(count_phases(name, phase, device, timeout, tools))
            except ReconcileError as exc:
                msg = str(exc)
                err(msg if msg.startswith(name) else f"{name}: {msg}")
                failed += 1
        if not pcs:
            continue
        stem = pipeline.file_stem(name)
        roofs = [phase_roofline(pc, platforms_for(pc, hardware)) for pc in pcs] if hardware else []
        plain = [{**render.plain(pc), "rules": render.rules_plain(pc.rules), "tools": render.tools_plain(pc.tools),
                  **({"roofline": render.roofline_plain(rf)} if roofs else {})} for pc, rf in zip(pcs, roofs or [None] * len(pcs))]
        body = json.dumps({"model": name, "phases": plain}, indent=1) + "\n"
        files = {f"{stem}.phases.md": render.markdown(pcs, roofs, f"{stem}.phases.png"), f"{stem}.phases.json": body}
        pre = [r for r in roofs if r.phase.startswith("prefill")][:1]
        dec = [r for r in roofs if r.phase.startswith("decode")][-1:]
        if pre and dec:
            from reconcile.llm.plot import phases_png

            files[f"{stem}.phases.png"] = phases_png(pre + dec)
        try:
            pipeline.write_files(folder, files)
        except pipeline.WriteFailed as exc:
            err(f"{exc}: the phases of {name} were not written")
            failed += 1
            continue
        print(f"wrote {folder / stem}.phases.md (.json{', .png' if f'{stem}.phases.png' in files else ''})")
    return failed
