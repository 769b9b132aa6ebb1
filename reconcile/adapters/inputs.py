"""Not a counter: a model's default inputs, found in a worker.

Finding them may import user code (``package.module:callable`` with ``example_inputs``) or
transformers (to read a config): in a worker that runs under the run's timeout, with its output
captured and its processes contained, like every tool. The result is the inputs themselves
(``ToolRun.detail``), or the one-line reason they could not be found.
"""

from __future__ import annotations

from reconcile.adapters.base import Adapter
from reconcile.records import ToolRun


class InputsProbe(Adapter):
    name = "inputs"
    distribution = "reconcile"
    needs_model = False  # the runner calls ``probe(model_name)`` instead of building the model

    def version(self) -> str:
        from reconcile._version import __version__

        return __version__

    def attempted(self) -> str:
        return "reconcile.models.default_inputs(spec)"

    def probe(self, model: str) -> ToolRun:
        from reconcile import models

        inputs = models.default_inputs(models.resolve(model))
        return ToolRun(tool=self.name, version=self.version(), status="ok", detail=inputs)
