"""Adapter for pthflops 0.4.2 (``pthflops.count_ops``), run the way its users run it:
``count_ops(model, input)`` with its defaults (``mode="fx"``, ``print_readable=True``,
``verbose=True``: it prints a table of every node with a non-zero count and the total, captured
here). Its ``mode="jit"`` is broken on torch 2.14 (it calls ``torch.onnx._optimize_trace``, which
is gone), so fx is the only mode run.

pthflops runs the model through a ``torch.fx.Interpreter`` over ``torch.fx.symbolic_trace(model)``:
each ``call_module`` node (torch.nn modules are fx leaves) gets a formula by module type, each
``call_function`` node named ``add`` / ``mul`` / ``matmul`` one by function name; everything else
(``call_method`` nodes, other functions) is 0. It takes one input tensor and reports no parameters.

Guarantees, for a run with status ``ok``:

* ``headline``: ``flops``, ``count_ops``'s first return value (its "FLOPs"), an exact int.
* ``layers``: one row per module (``named_modules()`` names, root ``""``), exclusive:
  ``raw["flops"]`` the sum of the counts ``count_ops`` returned per fx node (its second return
  value, node name -> count, non-zero nodes only) for the nodes whose innermost module is that
  module: a ``call_module`` node is its target module's; a ``call_function`` node belongs to the
  innermost module on fx's ``nn_module_stack`` (the module whose ``forward`` called it; root
  when none). Node names are mapped to modules by tracing the model again with
  ``torch.fx.symbolic_trace`` (fx's names are deterministic for the same model).
* Reconciliation: the rows sum to ``headline["flops"]``; ``unattributed`` is empty.
"""

from __future__ import annotations

import copy
from typing import Any

from reconcile.adapters.base import Adapter, ToolFailure, capture_output, exact_number, module_names
from reconcile.records import ToolLayer, ToolRun


class PthflopsAdapter(Adapter):
    name = "pthflops"
    distribution = "pthflops"
    # its count is fx node shapes alone: tried on meta first (the runner's ``_on_shapes``) once
    # another tool of the model's group ran the model on CPU to the end, and kept only where the
    # CPU build traces to the same graph (``path``), the same run field for field on every zoo
    # sample (tests/meta_proof.py), at a fraction of the CPU run's cost (vgg16: 0.04 s against
    # 0.66 s); alone, or on a model meta cannot run, it is counted on CPU as ever
    shapes_device = "meta"

    def path(self, model: Any, inputs: tuple[Any, ...]) -> str:
        """What its count reads of the model besides shapes: the code of the graph
        ``torch.fx.symbolic_trace`` makes of it (nothing runs; the model is not changed). A
        forward that branches on where its weights are (``next(self.parameters()).device``)
        traces otherwise on meta and on CPU, and so does one that bakes a device into the graph."""
        import torch

        return torch.fx.symbolic_trace(model).code

    def attempted(self) -> str:
        return "pthflops.count_ops(deepcopy(model), input)"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        import torch

        if len(inputs) != 1 or not isinstance(inputs[0], torch.Tensor):
            raise ToolFailure(f"pthflops takes one input tensor; this model takes {len(inputs)} inputs",
                              TypeError("count_ops(model, input)"))
        work = copy.deepcopy(model)  # count_ops switches the model to eval() and back
        names = module_names(work)
        paths = {path: names[id(m)] for path, m in work.named_modules()}
        with capture_output() as cap:
            from pthflops import count_ops

            try:
                total, per_node = count_ops(work, inputs[0])
            except Exception as exc:
                if "symbolically traced variables cannot be used as inputs to control flow" in str(exc) or \
                        type(exc).__name__ == "TraceError":
                    raise ToolFailure("pthflops' torch.fx.symbolic_trace cannot trace this model's forward", exc) from exc
                if "'int' object is not subscriptable" in str(exc):  # torchvision's shufflenet_v2
                    raise ToolFailure("pthflops takes any tuple a traced node returns for its own (output, FLOPs, "
                                      "params): this forward's x.size() returns a torch.Size, of which it keeps the "
                                      "first number, so indexing the size fails", exc) from exc
                if "'int' object has no attribute 'numel'" in str(exc):
                    raise ToolFailure("pthflops counts an add / mul by its output's numel(): this forward adds or "
                                      "multiplies Python ints (sizes), whose result has none", exc) from exc
                raise
            graph = torch.fx.symbolic_trace(work).graph
        owner: dict[str, str] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                owner[node.name] = paths.get(str(node.target), str(node.target))
            else:
                stack = list(node.meta.get("nn_module_stack", {}).values())
                path = stack[-1][0] if stack else ""
                owner[node.name] = paths.get(path, path)
        flops = {name: 0 for name in paths.values()}
        for node_name, value in per_node:
            module = owner.get(str(node_name), "")
            flops[module] = flops.get(module, 0) + exact_number(value)
        types = {names[id(m)]: type(m).__name__ for m in work.modules()}
        layers = tuple(ToolLayer(module=name, type=types.get(name, ""), calls=0, raw={"flops": value}, key=name)
                       for name, value in flops.items())
        printed = [line.strip() for line in cap.stdout.splitlines() if "FLOPs" in line]
        return self.ok(
                        headline={"flops": exact_number(total)},
            units={"flops": "FLOPs"},
            layers=layers,
            unattributed={},
            warnings=tuple([*cap.warnings, *(line.strip() for line in cap.stderr.splitlines() if line.strip())]),
            notes=(
                "count_ops(model, input) in fx mode (its jit mode is broken on torch 2.14)",
                "per-node counts charged to modules through a second torch.fx.symbolic_trace of the same model",
                *printed[-1:],
            ),
        )
