"""``pipeline.collect(on_model=...)``: each model is handed over as soon as its own runs have
settled, while other models' runs are still pending (``reconcile report`` renders it then), and
it is the very object ``collect`` returns. The runner is replaced by one that settles the jobs in
a chosen order, so no tool runs here."""

from __future__ import annotations

from reconcile import pipeline, runner
from reconcile.config import RunConfig
from reconcile.records import ToolRun


def test_each_model_is_handed_over_when_its_runs_settle(monkeypatch):
    events: list[str] = []

    def fake_run_jobs(jobs, *, timeout, workers, on_done=None, on_start=None, build=None):
        results = [ToolRun(job.tool, "0", "failed", error_type="X", error_message=job.model) for job in jobs]
        # every vgg16 job first, then resnet18's, whatever order they were given in
        order = sorted(range(len(jobs)), key=lambda i: jobs[i].model != "vgg16")
        for i in order:
            events.append(f"done {jobs[i].model} {jobs[i].tool}")
            on_done(jobs[i], results[i])
        return results

    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    handed: list[pipeline.ModelRuns] = []

    def on_model(mr):
        events.append(f"model {mr.name}")
        handed.append(mr)

    done: list[str] = []
    out = pipeline.collect(["resnet18", "nosuchmodel", "vgg16"], RunConfig(tools=("native", "thop")),
                           on_done=lambda job, run: done.append(job.tool), on_model=on_model)
    # vgg16 is handed over right after its second run settles, before any resnet18 run does; the
    # spec that did not resolve comes last (it had nothing to wait for)
    assert events == ["done vgg16 native", "done vgg16 thop", "model vgg16",
                      "done resnet18 native", "done resnet18 thop", "model resnet18", "model nosuchmodel"]
    assert done == ["native", "thop", "native", "thop"]  # on_done still told of every run
    # the same objects, in the order of the specs, each with its runs in tool order
    assert [id(m) for m in out] == [id(handed[1]), id(handed[2]), id(handed[0])]
    assert [r.tool for r in out[0].runs] == ["native", "thop"] and out[0].runs[0].error_message == "resnet18"
    assert out[1].error and not out[1].runs
