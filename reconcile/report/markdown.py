"""Markdown reports: a pure function from ``ModelReport`` to text that reads well on GitHub.

Deterministic: the same report data gives byte-identical text (no timestamps, no timings, stable
ordering). Imports no torch.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from reconcile.conventions.base import CAUSES, OUTSIDE
from reconcile.explain.core import MetricSummary, ToolExplanation
from reconcile import numbers
from reconcile.report.files import file_stem
from reconcile.report.grouping import TOTAL_ONLY_ROW, LayerGroup, group_layers, layer_table, ran
from reconcile.report.sentences import numbers_out, phrase, sentence, shape
from reconcile.report.tables import Notes, table, tables
from reconcile.report.model import ModelReport

MAX_LAYER_ROWS = 400


def _n(x: object) -> str:
    if x is None:
        return "—"
    if isinstance(x, (int, Fraction)):
        return numbers.exact(x)
    return str(x)


def _signed(x: int | Fraction) -> str:
    if x == 0:
        return "0"
    return ("+" if x > 0 else "−") + numbers.exact(abs(x))


def _share(s: MetricSummary) -> str:
    share = s.explained_share()
    return "—" if share is None else numbers.percent(share, 1)


def _columns(r: ModelReport) -> list[tuple[ToolExplanation, str | None]]:
    """The totals table's columns: each tool's op counts (``(tool, headline key)``; a tool that did
    not finish: ``(tool, None)``). native is the reference every column is measured against."""
    cols: list[tuple[ToolExplanation, str | None]] = []
    for t in r.tools:
        if t.tool == "native" and t.status == "ok":
            continue
        if t.status != "ok":
            cols.append((t, None))
            continue
        cols.extend((t, k) for k, s in t.summaries.items() if s.is_ops)
    return cols


def _total_causes(r: ModelReport) -> list[str]:
    """Every cause with an amount in some tool's op total, by its largest amount."""
    amounts: dict[str, int | Fraction] = {}
    for t, hkey in _columns(r):
        if hkey is not None:
            for cid, v in t.summaries[hkey].causes.items():
                if v:
                    amounts[cid] = max(amounts.get(cid, 0), abs(v))
    return sorted(amounts, key=lambda c: (-amounts[c], c))


def totals_section(r: ModelReport) -> list[str]:
    """One row per tool total: the tool and its version, its number as printed, the gap to the
    native MAC count split into the named causes (a column each, in the tool's own unit, summed
    over the model), and the residual."""
    cols = _columns(r)
    out = ["## Totals, and why they differ"]
    if not cols:
        return out + ["No tool besides native counts operations.", ""]
    notes = Notes()
    labels = [t.tool if k is None or k == t.main else f"{t.tool} ({k})" for t, k in cols]
    summaries = [t.summaries[k] if k is not None else None for t, k in cols]
    ranked = _total_causes(r)
    missed = any(s is not None and s.missed_flops for s in summaries)
    head = ["tool", "version", "reported", "gap to native", *ranked, *(["FLOPs not seen"] if missed else []),
            "residual"]
    rows = []
    for (t, k), label, s in zip(cols, labels, summaries):
        if s is None:
            rows.append([label, t.version, f"**{t.status}**", "—", *("" for _ in ranked), *([""] if missed else []), "—"])
            continue
        reported = notes.cell(_n(s.raw_total), t.run.units.get(k, ""), label) if s.raw_total is not None else "—"
        gap = "—" if s.raw_total is None else _signed(s.raw_total - s.reference)
        causes = ["" if not s.causes.get(cid) else _signed(s.causes[cid]) for cid in ranked]
        rows.append([label, t.version, reported, gap, *causes,
                     *(["" if not s.missed_flops else _signed(s.missed_flops)] if missed else []),
                     f"**{_n(s.residual)}**" if s.residual else "0"])
    out += tables(head, rows, "ll" + "r" * (len(head) - 2), keep=2, tail=1)
    text = ("*gap to native*: the tool's number minus the native MAC count, split into the causes that follow "
            "it. Each cause's amount is in the tool's own unit, summed over the model, and ranked by its largest; "
            "the causes are described with the per-layer notes below. *FLOPs not seen*: native FLOPs of work the "
            "tool did not see (not in its MACs). *residual*: what no cause explains, counted once (sum of absolute "
            "per-layer residuals, plus any part of the headline's that no row shows). Each total as MACs and as "
            f"FLOPs (its conventions removed) and the share explained: `{file_stem(r.model)}.json`.")
    forward = r.native_totals.get("macs")
    against = [f"{label} against {_n(s.reference)} (forward + backward)" for label, s in zip(labels, summaries)
               if s is not None and forward is not None and r.training is not None and s.reference != forward]
    if against:  # a tool run around the training step is measured against native's training count
        text += " Measured against native's training MACs: " + "; ".join(against) + "."
    if not ranked and all(s is None or s.raw_total == s.reference for s in summaries):
        text = "Every tool that ran agrees with the native MAC count exactly. " + text
    text += "".join(f" {item}." for item in notes.items)
    warned = [t for t in r.tools if t.run.warnings]
    if warned:
        text += " Warnings: " + "; ".join(_warnings_text(t.tool, t.run.warnings) for t in warned) + "."
    out += ["", text, ""]
    for t, k in cols:
        if k is not None and k == t.main and t.summaries[k].headline_not_rows:
            out += [f"{t.tool}'s total is {_signed(t.summaries[k].headline_not_rows)} away from the sum of its own "
                    "per-layer rows (a fact about the tool, predicted and explained at the headline).", ""]
    return out


def _warnings_text(tool: str, warnings: Sequence[str]) -> str:
    """A tool's warnings, each text quoted once (mmengine's two analyzers print the same line:
    "(x2)"), the first three distinct ones shown."""
    counts: dict[str, int] = {}
    for w in warnings:
        counts[w] = counts.get(w, 0) + 1
    distinct = list(counts)
    shown = ", ".join(f"`{w}`" + (f" (x{counts[w]})" if counts[w] > 1 else "") for w in distinct[:3])
    more = f", +{len(distinct) - 3} more" if len(distinct) > 3 else ""
    return f"{tool} {len(warnings)} ({shown}{more})"


MAX_NAME = 30  # characters of a group's compressed module names


def _tool_text(tool: str, text: str) -> str:
    # texts usually name their tool ("thop has no rule ..."): no second prefix then
    return text if text.startswith(tool + " ") else f"{tool}: {text}"


def _module_label(m: str) -> str:
    if m.startswith(TOTAL_ONLY_ROW):
        return m
    return f"`{m}`" if m and m != OUTSIDE else ("(model)" if m == "" else m)


def compress_names(modules: Sequence[str], type_: str) -> str:
    """``features.{1,3,6,...}`` for siblings, ``a.{1,2}, b.{4}`` across a few parents, else
    ``13 ReLU modules``; one module keeps its name."""
    if len(modules) == 1:
        return _module_label(modules[0])
    if all(m.startswith(TOTAL_ONLY_ROW) for m in modules):
        return TOTAL_ONLY_ROW + ", ".join(m[len(TOTAL_ONLY_ROW):] for m in modules)
    parents: dict[str, list[str]] = {}
    for m in modules:
        parent, dot, leaf = m.rpartition(".")
        parents.setdefault(parent + dot, []).append(leaf)
    parts = []
    for parent, leaves in parents.items():
        shown = leaves if len(leaves) <= 4 else leaves[:3] + ["..."]
        parts.append(f"{parent}{{{','.join(shown)}}}")
    text = "`" + ", ".join(parts) + "`"
    return text if len(text) <= MAX_NAME else f"{len(modules)} {type_} modules"


def _native_cell(g: LayerGroup) -> str:
    """The native MACs of a group: its modules' own, then (for tools whose rows hold their
    submodules' work too: fvcore, flopcountermode, ptflops' aten backend) "incl." their submodules'."""
    own = g.reference
    others = []
    for v in g.measured_against:
        if v is not None and v != own and v not in others:
            others.append(v)
    if not others:
        return _n(own)
    inclusive = " / ".join(_n(v) for v in others) + " incl."
    return inclusive if own is None else f"{_n(own)}; {inclusive}"


def _difference(raw: int | Fraction | None, reference: int | Fraction | None) -> str:
    """A per-layer cell: the tool's number minus native's ("" when equal), or the tool's own
    number when it has no native figure to be measured against, "—" when it has no row."""
    if raw is None:
        return "—"
    if reference is None:
        return f"({_n(raw)})"
    return "" if raw == reference else _signed(raw - reference)


def _cause_line(cid: str, items: Sequence[str]) -> str:
    what = CAUSES[cid][1] if cid in CAUSES else ""
    return f"- **{cid}**: " + ". ".join(([what] if what else []) + (["; ".join(items)] if items else []))


def layers_section(r: ModelReport) -> list[str]:
    """Differing modules grouped (``group_layers``), then one line per cause: what it is, and the
    numbered sentences the table's *notes* point to. Causes of the totals that no row shows are
    listed too, so that every cause the report names is described once."""
    tools, differing, by_module, types, references = layer_table(r)
    out = ["## Per-layer differences"]
    totals_only = _total_causes(r)
    if not differing:
        out += ["No layer differs from the native count in any tool.", ""]
        lines = [_cause_line(cid, ()) for cid in CAUSES if cid in totals_only]
        return out + (lines + [""] if lines else [])
    groups = group_layers(tools, differing, by_module, types, references)
    # footnotes keyed by cause, in catalogue order; one per (cause, tool, formula)
    keyed: dict[tuple[str, str, str], int] = {}
    for g in groups:
        for cid, tool, c in g.notes:
            keyed.setdefault((cid, tool, shape(c)), 0)
    order = {k: numbers_out(next(c for g in groups for i, t, c in g.notes if (i, t, shape(c)) == k)) for k in keyed}
    ordered = sorted(keyed, key=lambda k: (list(CAUSES).index(k[0]), k[1], order[k]))
    for i, k in enumerate(ordered, 1):
        keyed[k] = i
    extra = sum(m.startswith(TOTAL_ONLY_ROW) for m in differing)
    also = (f", and {extra} function{'s' if extra > 1 else ''} a tool counts in its total outside any of its rows "
            "(\"in the total only\")" if extra else "")
    out += [f"{len(differing) - extra} modules differ from the native MAC count in some tool{also}: {len(groups)} "
            "groups of modules explained alike (same type, causes and formula). A cell is the tool's number minus "
            "the native MACs its rows are measured against, summed over the group (empty: equal; —: the tool has no row for it; "
            "native MACs \"own; N incl.\": N with its submodules' work, for tools whose rows hold it); "
            "*notes* point to the sentences under the table, with the numbers of the group's first module; a module "
            "with a residual is never grouped and is marked **unexplained**. Each tool's own numbers, module by "
            f"module: `{file_stem(r.model)}.csv` and `.json`.", ""]
    head = ["modules", "type", "n", "native MACs"] + [t.tool for t in tools] + ["notes"]
    rows = []
    for g in groups[:MAX_LAYER_ROWS]:
        refs = sorted({keyed[(cid, tool, shape(c))] for cid, tool, c in g.notes})
        notes = ",".join(map(str, refs))
        unexplained = [f"**unexplained {t.tool} {_signed(v)}**" for t, v in zip(tools, g.residual) if v]
        rows.append([compress_names(g.modules, g.type), g.type, str(len(g.modules)), _native_cell(g),
                     *(_difference(v, ref) for v, ref in zip(g.raw, g.measured_against)),
                     "<br>".join(([notes] if notes else []) + unexplained)])
    out += tables(head, rows, "llrr" + "r" * len(tools) + "l", keep=4, tail=1)
    if len(groups) > MAX_LAYER_ROWS:
        out += ["", f"({len(groups) - MAX_LAYER_ROWS} more groups in the JSON and CSV files.)"]
    out += [""]
    by_cause: dict[str, list[str]] = {cid: [] for cid in totals_only}
    for k in ordered:
        cid, tool, _ = k
        example = sentence(next(c for g in groups for i, t, c in g.notes if (i, t, shape(c)) == k))
        by_cause.setdefault(cid, []).append(f"[{keyed[k]}] {_tool_text(tool, example)}")
    lines = [_cause_line(cid, by_cause[cid]) for cid in CAUSES if cid in by_cause]
    lines += [_cause_line(cid, items) for cid, items in by_cause.items() if cid not in CAUSES]
    return out + (lines + [""] if lines else [])


def other_metrics_section(r: ModelReport) -> list[str]:
    """Parameters, memory and other figures: those equal to native in one sentence, each other one
    with its unit, its native reference, and its gap split into causes, one line per tool."""
    agree = []
    by_tool: dict[str, list[str]] = {}
    for t in ran(r.tools):
        for hkey, s in t.summaries.items():
            if s.is_ops:
                continue
            nonzero = sorted(((cid, v) for cid, v in s.causes.items() if v), key=lambda kv: -abs(kv[1]))
            if s.raw_total is not None and s.raw_total == s.reference and not nonzero and not s.residual:
                agree.append(f"{t.tool} {hkey} {_n(s.raw_total)}")
                continue
            unit = t.run.units.get(hkey, "")
            # a figure the tool prints no total for (torchsummary's output_prod) is the sum of its rows
            value = s.raw_total if s.raw_total is not None else s.rows_total
            gap = f" {_signed(value - s.reference)}" if value is not None else ""
            causes = ", ".join(f"{cid} {_signed(v)}" for cid, v in nonzero) or "no cause"
            res = f", **residual {_signed(s.residual)}**" if s.residual else ""
            shown = _n(value) if value is None or value >= 0 else _signed(value)
            if s.raw_total is None and value is not None:
                shown += " (sum of its rows)"
            by_tool.setdefault(t.tool, []).append(
                f"{hkey} {shown} vs native {_n(s.reference)}{gap} = {causes}{res}" + (f" ({unit})" if unit else ""))
    totals = r.native_totals
    text = (f"Native: {_n(totals['params'])} parameters ({_n(totals['params_trainable'])} trainable, "
            f"{_n(totals['params_frozen'])} frozen, each tied tensor once), {_n(totals['buffers'])} buffer elements; the "
            f"forward reads {numbers.mib(totals['bytes_read'])} and writes {numbers.mib(totals['bytes_written'])} "
            f"({_n(totals['activations'])} elements).")
    if agree:
        text += " Equal to the native figure, no cause: " + ", ".join(agree) + "."
    if by_tool:
        text += " Each other figure, its native reference, and the causes of the gap:"
    out = ["## Parameters and memory", text]
    if by_tool:
        out += [""] + [f"- **{tool}**: " + "; ".join(items) for tool, items in by_tool.items()]
    return out + [""]


def failures_section(r: ModelReport) -> list[str]:
    failed = [t for t in r.tools if t.status != "ok"]
    if not failed:
        return []
    out = ["## Tools that did not finish", ""]
    for t in failed:
        run = t.run
        out.append(f"- **{t.tool}** {run.version}: {t.status}. `{run.error_type}`: {run.error_message} "
                   f"(attempted: `{run.attempted}`)")
    return out + [""]


ROOF_TOP = 5  # costliest layers named in the Markdown; every layer's bound is in the JSON


def roofline_section(r: ModelReport) -> list[str]:
    """The native count's roofline (``make report HARDWARE=...``), when the report has one: the
    bound per hardware, and the costliest layers on the first."""
    if r.roofline is None:
        return []
    from reconcile.roofline import render

    rf = r.roofline
    head = render._header(rf)
    out = ["## Roofline: how fast it could run",
           "; ".join([head[0][len(rf.model) + 2:].capitalize(), *head[1:]]) + ". " + render.ASSUMPTIONS, "",
           "| hardware | peak (FLOP/s) | bandwidth (B/s) | ridge (FLOP/B) | lower bound | naive bound | memory-bound time |",
           "|:---|---:|---:|---:|---:|---:|---:|"]
    for p in rf.platforms:
        pl = p.platform
        mem = sum(t.time_s for t in p.times if t.bound == "memory")
        out.append(f"| {pl.key} | {numbers.si(pl.peak_flops)} ({pl.peak_label}) | {numbers.si(pl.bandwidth)} | "
                   f"{pl.ridge:.1f} | {render.seconds(p.total_time_s)} | {render.seconds(p.naive_time_s)} | "
                   f"{numbers.percent(mem, p.total_time_s) if p.total_time_s else 'n/a'} |")
    if rf.platforms and rf.layers:
        p = rf.platforms[0]
        order = sorted(range(len(rf.layers)), key=lambda k: (-p.times[k].time_s, k))[:ROOF_TOP]
        top = ", ".join(f"`{rf.layers[k].label}` {render.seconds(p.times[k].time_s)} ({p.times[k].bound}, "
                        f"{render._intensity(rf.layers[k].intensity)} FLOP/B)" for k in order)
        out += ["", f"Costliest layers on {p.platform.key}: {top} (every layer's FLOPs, bytes and bound per hardware: "
                f"`{file_stem(r.model)}.json`)."]
    return out + [""]


def training_section(r: ModelReport) -> list[str]:
    """Forward + backward, the rules of thumb explained, and one step's memory (``--training``)."""
    t = r.training
    if t is None:
        return []
    parts = t.parts
    other = parts.get("shared", 0) + parts.get("accumulate", 0)
    out = ["## Training: forward + backward, exact", "",
           f"Counted with `--training` on the native counter: {t.seed}. Each backward op is charged to "
           "the module whose forward created the autograd node it belongs to.", ""]
    rows = [["forward", _n(t.forward_macs), _n(t.forward_flops)],
            ["backward: input gradients", _n(parts.get("input", 0)), ""],
            ["backward: weight gradients", _n(parts.get("weight", 0)), ""]]
    if other:
        rows.append(["backward: other (shared, accumulation)", _n(other), ""])
    rows += [["backward", _n(t.backward_macs), _n(t.backward_flops)],
             ["**forward + backward**", f"**{_n(t.forward_macs + t.backward_macs)}**", f"**{_n(t.training_flops)}**"]]
    out += table(["", "MACs", "FLOPs"], rows, "lrr") + [""]
    mrows = []
    for m in t.modules:
        name = m["module"] or "(model)"
        mrows.append([("&nbsp;&nbsp;" * int(m["depth"])) + f"`{name}`", str(m["type"]), numbers.si(m["forward_macs"]),
                      numbers.si(m["backward_macs_input"]), numbers.si(m["backward_macs_weight"]),
                      numbers.si(m["training_macs"]), numbers.si(m["training_flops"])])
    out += ["Per module (inclusive, down to depth 1; `reconcile count --training` shows every module):", ""]
    out += table(["module", "type", "forward MACs", "backward input", "backward weight", "fwd + bwd MACs",
                   "fwd + bwd FLOPs"], mrows, "llrrrrr") + [""]
    out += ["### Rules of thumb against the exact count", ""]
    for rule in t.rules:
        gap = rule.predicted - rule.exact
        out += [f"**{rule.name}**: {phrase(rule.formula)} = {_n(rule.predicted)} FLOPs; exact {_n(rule.exact)}: the "
                f"rule is off by {_signed(gap)} ({numbers.percent(gap, rule.exact, 2)}), split into:", ""]
        out += table(["cause", "FLOPs the rule counts more (+) or less (−)", "why"],
                      [[g.cause, _signed(g.amount),
                        sentence(g)] for g in rule.gaps] + [["**sum**", f"**{_signed(gap)}**", ""]],
                      "lrl") + [""]
    mem = t.memory
    if mem is not None:
        from reconcile.records import OPTIMIZER_STATE

        out += ["### Memory of one training step (exact on meta)", "",
                "Resident before the step: parameters, buffers, the input and the optimizer state "
                "(gradients are set to None by `zero_grad()`); the step adds what is live at its "
                f"busiest op ({mem.peak_at}): saved activations, gradients made so far and the op's "
                "own outputs.", ""]
        rows = [["parameters", _n(mem.params), numbers.mib(mem.params)],
                ["buffers", _n(mem.buffers), numbers.mib(mem.buffers)],
                ["input", _n(mem.inputs), numbers.mib(mem.inputs)],
                ["gradients (trainable parameters)", _n(mem.trainable), numbers.mib(mem.trainable)],
                ["activations saved for backward", _n(mem.saved), numbers.mib(mem.saved)],
                ["most live at one op of the step (saved activations, gradients, outputs)", _n(max(mem.forward_peak, mem.backward_peak, mem.after_backward)),
                 numbers.mib(max(mem.forward_peak, mem.backward_peak, mem.after_backward))]]
        for name, (factor, what) in OPTIMIZER_STATE.items():
            rows.append([f"peak with {name} (state {factor} x parameters: {what})", _n(t.peaks[name]),
                         numbers.mib(t.peaks[name])])
        out += table(["", "bytes", ""], rows, "lrr") + [""]
        for p in t.pass_sizes:
            out += [f"**{p.tool}'s forward/backward pass size** ({p.rule}) = {_n(p.bytes)} bytes "
                    f"({numbers.mib(p.bytes)}) = saved activations {_n(p.saved)} plus:", ""]
            out += table(["term", "bytes", "why"], [[g.cause, _signed(g.amount), sentence(g)] for g in p.terms], "lrl")
            out += [""]
    return out


def _inputs_text(r: ModelReport) -> str:
    if not r.inputs:
        return f"Input {'x'.join(str(d) for d in r.input_shape)} ({r.input_dtype})"
    if len(r.inputs) == 1 and " " in r.inputs[0] and not r.inputs[0].split(" ", 1)[0][0].isalpha():
        shape, _, rest = r.inputs[0].partition(" ")
        return f"Input {shape} ({rest})"
    return "Inputs " + ", ".join(r.inputs)


def regenerate_line(r: ModelReport) -> str:
    """The command that writes this report again, with the options that shaped it."""
    cli = " ".join(["reconcile report", r.model, *r.options])
    make_args = {"--input-shape": "INPUT", "--tools": "TOOLS"}
    if all(o.split(" ", 1)[0] in make_args for o in r.options):
        make = " ".join([f"make report MODELS={r.model}",
                         *(f"{make_args[o.split(' ', 1)[0]]}={o.split(' ', 1)[1]}" for o in r.options)])
        return f"Regenerate with `{make}` (or `{cli}`)."
    return f"Regenerate with `{cli}`."


def model_markdown(r: ModelReport, picture: str = "") -> str:
    """The report; ``picture`` is the file name of the model's PNG beside it ("" : none). What it
    leaves out is in the JSON: each tool's total as MACs and FLOPs and its explained share, how
    each tool was run (its notes) and all its warnings, every module's row, every layer's roofline."""
    versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
    title = (f"{len(r.tools)} counters ran, native could not count it" if r.error
             else f"one model, {len(r.tools)} counters, every difference explained")
    intro = f"{_inputs_text(r)}, {r.mode} mode, CPU; {versions}."
    if r.native_device and r.native_device != "meta":
        why = r.native_notes[0] if r.native_notes and "--device" not in r.options else "as asked (--device cpu)"
        intro += f" Native counted on the {r.native_device} device: {why}."
    lines = [f"# {r.model}: {title}", ""]
    if r.error:
        tool_versions = ", ".join(f"{t.tool} {t.version}" for t in r.tools)
        lines += [intro, "", f"Tools: {tool_versions}.", "", f"**Could not be counted:** {r.error}", ""]
        ran = [t for t in r.tools if t.status == "ok"]
        if ran:
            lines += ["Nothing can be explained without the native count, so each tool that ran is "
                      "shown as it reported itself:", ""]
            lines += table(["tool", "version", "what it reported"],
                            [[t.tool, t.version, ", ".join(f"{k} {_n(v)}" for k, v in t.run.headline.items()
                                                           if not isinstance(v, str))] for t in ran], "lll")
            lines += [""]
        lines += failures_section(r)
        return "\n".join(lines).rstrip() + "\n"
    totals = r.native_totals
    intro += (f" Native reference: **{_n(totals['macs'])} MACs** (torchvision's `_ops` convention), "
              f"{_n(totals['flops'])} FLOPs, {_n(totals['params'])} parameters")
    pub = r.published
    if pub:
        intro += f"; published by torchvision for these weights: `_ops` {pub.get('_ops')} G, `num_params` " \
                 f"{_n(pub.get('num_params'))}"
    native = next((t for t in r.tools if t.tool == "native"), None)
    intro += "." + (f" Native {native.version}: {'; '.join(native.run.notes)}." if native and native.run.notes else "")
    intro += f" {regenerate_line(r)}"
    lines += [intro, ""]
    if picture:
        lines += [f"![{r.model}: each tool's gap to the native MAC count, split into named causes]({picture})", ""]
    lines += totals_section(r)
    lines += failures_section(r)
    lines += layers_section(r)
    lines += other_metrics_section(r)
    lines += roofline_section(r)
    lines += training_section(r)
    return "\n".join(lines).rstrip() + "\n"


def index_entry(r: ModelReport, stem: str) -> dict:
    """One model's row of ``index.md``, as plain data (kept in its JSON, so an index can be
    rebuilt from the reports in a folder)."""
    cells = {}
    for t in r.tools:
        if t.status != "ok":
            cells[t.tool] = t.status
        elif not t.summaries:
            cells[t.tool] = "ran (unexplained)"
        elif t.raw_total is None:
            cells[t.tool] = "ok" if t.residual == 0 else f"residual {_n(t.residual)}"
        else:
            mark = "" if t.residual == 0 else f" (residual {_n(t.residual)})"
            cells[t.tool] = f"{numbers.si(t.raw_total)}{mark}"
    return {
        "model": r.model,
        "file": f"{stem}.md",
        "input": _inputs_text(r).split(" ", 1)[1],
        "macs": _n(r.native_totals.get("macs")) if not r.error else "—",
        "params": _n(r.native_totals.get("params")) if not r.error else "—",
        "tools": cells,
    }


def index_markdown(entries: Sequence[dict]) -> str:
    """``index.md`` from index entries (``index_entry``), one row per model, sorted by model."""
    tools: list[str] = []
    for e in entries:
        for tool in e["tools"]:
            if tool not in tools:
                tools.append(tool)
    head = ["model", "input", "native MACs", "native params"] + tools
    rows = []
    for e in sorted(entries, key=lambda e: e["model"]):
        model = e["model"].replace("|", "\\|")
        rows.append([f"[{model}]({e['file']})", e["input"].replace("|", "\\|"), e["macs"], e["params"]]
                    + [e["tools"].get(name, "") for name in tools])
    out = ["# reconcile: all models", "",
           "Each tool's main total as it reports it (MACs for most; torchstat MAdd; torchsummary reports no "
           "operations). Every number is explained per layer in the model's own report; a residual means a "
           "difference no named cause accounts for.", ""]
    out += tables(head, rows, "llrr" + "r" * len(tools), keep=1)  # split only if a row would pass 160 columns
    return "\n".join(out) + "\n"
