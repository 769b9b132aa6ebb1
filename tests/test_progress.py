"""Progress on stderr: one plain line per finished model when stderr is not a terminal, a tqdm
bar when it is; stdout is never written to."""

from __future__ import annotations

import io
from types import SimpleNamespace

from reconcile.progress import PREFIX, Progress


def _settle(progress: Progress, model: str, tool: str, status: str = "ok") -> None:
    progress.on_done(SimpleNamespace(model=model, tool=tool), SimpleNamespace(status=status))


def test_one_line_per_finished_model_when_not_a_terminal():
    out = io.StringIO()
    ticks = iter([0.0, 3.0, 7.0])
    p = Progress(2, 2, stream=out, clock=lambda: next(ticks))
    _settle(p, "vgg16", "thop")
    assert out.getvalue() == ""  # vgg16 has one of its 2 runs
    _settle(p, "resnet18", "thop", "failed")
    _settle(p, "vgg16", "fvcore")
    _settle(p, "resnet18", "fvcore")
    p.close()
    assert out.getvalue().splitlines() == [
        f"{PREFIX} [1/2] vgg16: 2 tool runs, 3 s elapsed",
        f"{PREFIX} [2/2] resnet18: 2 tool runs, 1 did not finish, 7 s elapsed",
    ]


def test_no_lines_when_asked_for_none():
    out = io.StringIO()
    p = Progress(1, 1, stream=out, lines=False)
    _settle(p, "m", "thop")
    assert out.getvalue() == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal_with_models_done_and_the_last_run():
    out = _Terminal()
    p = Progress(2, 1, stream=out)
    assert p.bar is not None
    p.on_start(SimpleNamespace(model="resnet18", tool="fvcore"))
    p.bar.refresh()
    assert "running resnet18 fvcore" in out.getvalue()
    _settle(p, "resnet18", "fvcore")
    p.bar.refresh()
    assert "models 1/2" in out.getvalue() and "resnet18 fvcore ok" in out.getvalue()
    p.close()
    assert PREFIX not in out.getvalue()


def test_a_job_started_again_after_its_group_died_is_running_once():
    # run_jobs starts a job again, alone, when the group worker sharing its model's build died
    p = Progress(1, 1, stream=_Terminal())
    job = SimpleNamespace(model="resnet18", tool="thop")
    p.on_start(job)
    p.on_start(job)
    assert p.running == ["resnet18 thop"]
    _settle(p, "resnet18", "thop")
    assert p.running == []
    p.close()
