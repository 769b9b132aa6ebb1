"""Progress of a multi-model run on stderr: part of the command-line layer (the library never
prints). A tqdm bar when stderr is a terminal (models done / total, the model and tool of each
run in progress, elapsed and remaining time); one plain line per finished model otherwise (CI
logs). Nothing goes to stdout, so ``--format json`` output is unchanged.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Callable

PREFIX = "reconcile: progress"  # plain lines start with it, so logs and tests can tell them apart


class Progress:
    """Counts settled tool runs per model; ``on_done`` is the runner's callback."""

    def __init__(self, models: int, tools: int, *, stream: IO[str] | None = None, lines: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.models, self.tools = models, tools
        self.done: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.finished = 0
        self.clock = clock
        self.start = clock()
        self.lines = lines
        self.running: list[str] = []  # "model tool" of the runs in progress, in start order
        self.bar: Any = None
        if _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=models * tools, file=self.stream, unit="run", dynamic_ncols=True,
                            leave=False, desc=f"models 0/{models}")

    def on_start(self, job: Any) -> None:
        if f"{job.model} {job.tool}" not in self.running:  # a job run again alone after its group died
            self.running.append(f"{job.model} {job.tool}")
        if self.bar is not None:
            self.bar.set_postfix_str("running " + ", ".join(self.running))

    def on_done(self, job: Any, run: Any) -> None:
        model = job.model
        if f"{model} {job.tool}" in self.running:
            self.running.remove(f"{model} {job.tool}")
        self.done[model] = self.done.get(model, 0) + 1
        if run.status not in ("ok", "not run"):  # a tool that cannot count the run was never started
            self.failed[model] = self.failed.get(model, 0) + 1
        model_finished = self.done[model] == self.tools
        if model_finished:
            self.finished += 1
        if self.bar is not None:
            self.bar.set_description(self._description(), refresh=False)
            self.bar.set_postfix_str("running " + ", ".join(self.running) if self.running
                                     else f"{model} {job.tool} {run.status}", refresh=False)
            self.bar.update(1)
        elif model_finished and self.lines:
            failed = self.failed.get(model, 0)
            note = f", {failed} did not finish" if failed else ""
            print(f"{PREFIX} [{self.finished}/{self.models}] {model}: {self.tools} tool runs{note}, "
                  f"{self.clock() - self.start:.0f} s elapsed", file=self.stream, flush=True)

    def skip(self, model: str) -> None:
        """A model whose runs are not done now (a resumed zoo keeps them from an earlier run)."""
        self.finished += 1
        if self.bar is not None:
            self.bar.set_description(self._description(), refresh=False)
            self.bar.update(self.tools)

    def _description(self) -> str:
        failed = sum(self.failed.values())
        return f"models {self.finished}/{self.models}" + (f", {failed} runs failed" if failed else "")

    def write(self, text: str, file: IO[str] | None = None) -> None:
        """Print a line without breaking the bar."""
        if self.bar is not None:
            self.bar.write(text, file=file or sys.stdout)
        else:
            print(text, file=file or sys.stdout, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
