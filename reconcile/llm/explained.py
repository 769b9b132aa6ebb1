"""A language model's phases explained, as one markdown report: for each phase, the native count,
the rules of thumb against it, the counters run on its forwards and reconciled, and the roofline;
and the prefill-vs-decode picture. Until the main command line takes phases, this is its command:

    python -m reconcile.llm.explained hf:LlamaForCausalLM --dtype bfloat16 \
        --phases prefill:128,decode:128,decode:1024,generate:128+4 --tools all \
        --hardware a100-80gb,h100-sxm --out reports/llm/llama-2-7b

The model is built on meta (free at any size); each tool runs in a forked child process (tools
patch torch globals while counting), so this process is left as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from reconcile.errors import ReconcileError

DTYPES = ("float32", "bfloat16", "float16")


def build(spec: str, dtype: str) -> Any:
    """The ``hf:`` model on meta, in ``dtype``, SDPA attention (what transformers picks on CPU)."""
    import torch

    from reconcile.sources import huggingface

    if not spec.startswith("hf:"):
        raise ReconcileError(f"{spec!r}: phases are counted for transformers models, e.g. hf:LlamaForCausalLM")
    name = huggingface.resolve(spec[3:])
    with torch.device("meta"):
        model = huggingface.factory(name)()
    model.config.use_cache = True  # serving uses the cache (reconcile's hf: default turns it off)
    return model.to(getattr(torch, dtype)).eval()


def _tool_in_child(args: tuple[str, str, str, str]) -> Any:
    tool, spec, dtype, phase = args
    from reconcile.llm.phase_tools import run_phase
    from reconcile.llm import count_phase

    model = build(spec, dtype)
    return run_phase(tool, model, count_phase(model, phase, fit=False))


def run_tool(tool: str, spec: str, dtype: str, phase: str) -> Any:
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(_tool_in_child, ((tool, spec, dtype, phase),))


def run_tools(model: Any, counts: Sequence[Any], tools: Sequence[str]) -> dict[str, list[Any]]:
    """Each tool on every counted phase (``count_phase`` results of ``model``), tool -> one
    ``PhaseToolRun`` per phase. The model is built and counted once, by the caller; each tool runs
    in a child forked with ``os.fork`` (tools patch torch globals; a runner's worker, a daemon, may
    not start ``multiprocessing`` children), which inherits both and sends its runs back pickled. A
    child that dies (a tool crashing the interpreter) is that tool's failed run on every phase; an
    error of reconcile's own in a child is raised here."""
    import os
    import pickle

    from reconcile.explain.core import explain_run
    from reconcile.llm.phase_tools import PhaseToolRun, run_phase
    from reconcile.records import ToolRun

    out: dict[str, list[Any]] = {}
    for tool in tools:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                os.close(read)
                try:
                    body = pickle.dumps(("ok", [run_phase(tool, model, pc) for pc in counts]))
                except BaseException as exc:
                    body = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
                with os.fdopen(write, "wb") as f:
                    f.write(body)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            body = f.read()
        _, status_code = os.waitpid(pid, 0)
        status, value = pickle.loads(body) if body else ("died", None)
        if status == "error":
            raise RuntimeError(f"{tool} on the phases: {value}")
        if status == "died":
            code = os.waitstatus_to_exitcode(status_code)
            died = ToolRun(tool, "", "failed", error_type="ChildDied",
                           error_message=f"the process running {tool} ended with exit code {code}")
            value = [PhaseToolRun(tool, tuple(s.step for s in pc.steps),
                                  tuple(explain_run(died, None, None, s.native) for s in pc.steps)) for pc in counts]
        out[tool] = value
    return out


def report(spec: str, dtype: str, phases: Sequence[str], tools: Sequence[str], hardware: str,
           picture: str = "") -> tuple[str, list[Any]]:
    """(markdown, the phase rooflines) of the model's phases."""
    from reconcile import numbers
    from reconcile.llm import count_phase
    from reconcile.llm.render import roofline_markdown, rules_markdown, tools_markdown
    from reconcile.llm.roofline import phase_roofline, platforms_for
    from reconcile.llm.rules import explain_phase

    model = build(spec, dtype)
    cfg = model.config
    out = [f"# {spec} ({dtype}): cost per phase, exact and explained", "",
           f"hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads "
           f"({getattr(cfg, 'num_key_value_heads', None) or cfg.num_attention_heads} key-value heads), vocabulary "
           f"{cfg.vocab_size}; SDPA attention; counted on meta by the native counter.", "",
           "Regenerate: `python -m reconcile.llm.explained " + " ".join(sys.argv[1:]) + "`", ""]
    roofs = []
    counts = [count_phase(model, text) for text in phases]
    runs = run_tools(model, counts, tools) if tools else {}  # the tools on the counted forwards
    for i, pc in enumerate(counts):
        t = pc.totals
        out += [f"## {pc.phase.text}", "",
                f"{len(pc.steps)} forward(s): {', '.join(s.step.label for s in pc.steps)}. MACs {numbers.exact(t['macs'])}, "
                f"FLOPs {numbers.exact(t['flops'])}; bytes read {numbers.exact(t['bytes_read'])}, written "
                f"{numbers.exact(t['bytes_written'])} (weights {numbers.exact(t['weight_bytes'])}, KV cache read "
                f"{numbers.exact(t['kv_read'])}, appended {numbers.exact(t['kv_appended'])}); KV cache "
                f"{numbers.exact(pc.kv.bytes_per_token)} bytes per token, {numbers.exact(pc.kv.total_bytes)} at "
                f"{pc.kv.tokens} tokens.", ""]
        if pc.decode_cost and pc.decode_cost["macs"].holds:
            a, b = pc.decode_cost["macs"].coefficients[:2] if len(pc.decode_cost["macs"].coefficients) > 1 else \
                (pc.decode_cost["macs"].coefficients[0], 0)
            out += [f"One decode step at KV length N: {numbers.exact(a)} + {numbers.exact(b)} N MACs (fitted "
                    "exactly on counted steps, checked on another).", ""]
        out += rules_markdown(pc.phase.text, explain_phase(pc, model))
        if tools:
            out += tools_markdown(pc.phase.text, [runs[tool][i] for tool in tools])
        rf = phase_roofline(pc, platforms_for(pc, hardware))
        roofs.append(rf)
        out += roofline_markdown(rf)
    if picture:
        out += ["## Prefill against decode", "", f"![arithmetic intensity per layer]({picture})", ""]
    return "\n".join(out) + "\n", roofs


def _tools(text: str) -> list[str]:
    """``--tools``: names of the registry (``reconcile.tools``), or ``all`` for every one but native."""
    from reconcile import tools as registry

    known = [n for n, t in registry.all_tools().items() if not t.reference]
    if text.strip() == "all":
        return known
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ReconcileError(f"unknown tool {unknown[0]!r} in --tools: choose from {', '.join(known)} (or all)")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reconcile.llm.explained", description=__doc__.splitlines()[0])
    p.add_argument("model", help="hf:ClassName[:key=value...], e.g. hf:LlamaForCausalLM")
    p.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    p.add_argument("--phases", default="prefill:128,decode:128,decode:1024")
    p.add_argument("--tools", default="", help="comma-separated, e.g. deepspeed,calflops; all: every tool of the "
                   "registry, its pinned versions included (a tool that cannot run a phase is listed with its reason)")
    p.add_argument("--hardware", default="a100-80gb,h100-sxm")
    p.add_argument("--out", required=True, help="output stem: writes STEM.md and STEM.png")
    a = p.parse_args(argv)
    try:
        stem = Path(a.out)
        stem.parent.mkdir(parents=True, exist_ok=True)
        phases = [s for s in a.phases.split(",") if s]
        tools = _tools(a.tools)
        text, roofs = report(a.model, a.dtype, phases, tools, a.hardware, picture=stem.name + ".png")
        from reconcile.llm.plot import phases_png

        pre = [r for r in roofs if r.phase.startswith("prefill")][:1]
        dec = [r for r in roofs if r.phase.startswith("decode")][-1:]
        if pre and dec:
            stem.with_suffix(".png").write_bytes(phases_png(pre + dec))
        else:
            text = text.replace(f"![arithmetic intensity per layer]({stem.name}.png)", "(no prefill and decode pair)")
        stem.with_suffix(".md").write_text(text)
    except ReconcileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(stem.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
