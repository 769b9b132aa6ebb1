"""The proof that a tool the runner tries on meta first (``Adapter.shapes_device``,
``worker._on_shapes``) reports the run it makes on CPU, on every zoo sample.

A zoo fixture's record of such a tool is made on meta wherever the model runs there and takes
the same path as on CPU (on CPU where not: nothing in the record says which). Each is compared
here with the tool's run on CPU (``Job(device="cpu")``, a worker and a build of its own), field
for field but ``seconds``: an ``ok`` record must be the CPU run exactly, and a failed one a
failure there too (a meta run that succeeds where the CPU run fails would change the tool's
result). The zoo fixtures' own runs are the meta half, so the proof costs one run per model,
not two."""

from __future__ import annotations

from dataclasses import replace

from reconcile import tools
from reconcile.runner import Job, run_jobs
from reconcile.worker import _resolve

SHAPES_TOOLS = tuple(name for name, t in tools.all_tools().items() if getattr(_resolve(t.adapter), "shapes_device", None))


def differences(runs) -> tuple[int, list[str]]:
    """``runs``: a zoo fixture's ``pipeline.ModelRuns`` by name. (the ok records compared, each
    record that differs from the tool's CPU run, one line each)."""
    jobs, records = [], []
    for mr in runs.values():
        for tool in SHAPES_TOOLS:
            jobs.append(Job(mr.name, tool, inputs=mr.inputs, mode=mr.mode, device="cpu"))
            records.append(next(r for r in mr.runs if r.tool == tool))
    cpu = run_jobs(jobs, workers=2, timeout=600)
    compared, differ = 0, []
    for job, record, on_cpu in zip(jobs, records, cpu):
        if record.status != "ok":
            if on_cpu.status == "ok":
                differ.append(f"{job.tool} on {job.model}: {record.status} in the zoo, ok on cpu {on_cpu.headline}")
            continue
        compared += 1
        if replace(record, seconds=0.0) != replace(on_cpu, seconds=0.0):
            differ.append(f"{job.tool} on {job.model}: zoo {record.headline} / cpu {on_cpu.status} {on_cpu.headline}")
    return compared, differ
