"""torchsummary 1.5.1, run through its public ``summary()`` with its per-row dict captured.

``summary(model, input_size, batch_size=-1, device="cpu")`` only prints. While it runs, the
module-global ``OrderedDict`` of ``torchsummary.torchsummary`` is replaced by a recording
subclass (restored in ``finally``); the first instance it creates is the function's local
``summary`` dict, the later ones its per-row dicts. Its rows are per *call*, keyed
``"<Class>-<n>"`` in post-order. Temporary forward hooks on the same copy record which module
each hooked call belonged to, so every row gets its ``named_modules()`` name and call index.

Guarantees:
- the tool runs on a deepcopy (it never calls ``eval()``, runs batch 2 with autograd on and leaves
  hooks behind when it fails); ``device="cpu"`` is passed because the default is CUDA;
- the headline holds each summary line exactly as printed (strings) and the exact quantity behind
  it in bytes (``... (bytes)``; MiB = bytes / 2**20), and the counts as ints;
- rows sum to the totals: "Total params" = sum of ``nb_params``; "Trainable params" = sum of
  ``nb_params`` over rows with ``trainable == 1``; "Forward/backward pass size (bytes)" =
  ``|2 * 4 * sum(output_prod)|``; "Params size (bytes)" = ``4 * Total params``.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from typing import Any

from reconcile.adapters.base import Adapter, ToolFailure, capture_output, failure_reason, module_names
from reconcile.records import ToolLayer, ToolRun

_BATCH = -1  # summary()'s default batch_size: shapes print "-1" and the MB figures are per sample
_LABELS = (
    "Total params",
    "Trainable params",
    "Non-trainable params",
    "Input size (MB)",
    "Forward/backward pass size (MB)",
    "Params size (MB)",
    "Estimated Total Size (MB)",
)
_LINE = re.compile(r"^(" + "|".join(re.escape(label) for label in _LABELS) + r"): (.*)$")


class TorchsummaryAdapter(Adapter):
    name = "torchsummary"
    distribution = "torchsummary"
    _attempted = 'torchsummary.summary(model, input_size, batch_size=-1, device="cpu")'

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        import torch.nn as nn
        import torchsummary.torchsummary as ts

        for i, x in enumerate(inputs):
            if not hasattr(x, "shape"):
                raise ValueError(f"torchsummary takes tensor inputs only (it builds random ones from their sizes): "
                                 f"input {i} is {type(x).__name__}")
        sizes = [tuple(int(d) for d in x.shape[1:]) for x in inputs]
        # summary() wraps a tuple into [tuple]; several inputs are passed as a list of tuples
        input_size: Any = sizes[0] if len(sizes) == 1 else sizes
        self._attempted = f'torchsummary.summary(model, {input_size!r}, batch_size=-1, device="cpu")'

        work = copy.deepcopy(model)
        names = module_names(work)
        order: list[int] = []  # id(module) of each call torchsummary hooks, in hook order
        calls: Counter[int] = Counter()

        def record(module: nn.Module, args: Any, output: Any) -> None:
            order.append(id(module))

        entered: list[tuple[str, str, Any]] = []  # the module running when the tool fails

        def count(module: nn.Module, args: Any) -> None:
            calls[id(module)] += 1
            first = args[0] if args else None
            entered.append((names[id(module)], type(module).__name__, tuple(getattr(first, "shape", ())) or None))

        for mod in work.modules():
            mod.register_forward_pre_hook(count)
            # the same modules summary() hooks (torchsummary.py:37-42); registered before its
            # hooks, so per call ours fires first and the two sequences line up
            if not isinstance(mod, (nn.Sequential, nn.ModuleList)) and mod is not work:
                mod.register_forward_hook(record)

        modules_by_id = {id(m): m for m in work.modules()}
        made: list[dict] = []
        original = ts.OrderedDict

        class _Recording(original):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        ts.OrderedDict = _Recording
        try:
            with capture_output() as cap:
                ts.summary(work, input_size, batch_size=_BATCH, device="cpu")
        except Exception as exc:
            # the failing hook is torchsummary's for the last module ours recorded (ours fire first);
            # a failing forward is the last module entered
            last = order[-1] if order and "has no attribute 'size'" in str(exc) else None
            if last is not None:
                where = (names[last], type(modules_by_id[last]).__name__, None)
            else:
                where = entered[-1] if entered else None
            reason = failure_reason("torchsummary", exc, where, "feeds random float inputs of the sizes it is given")
            if reason is None:
                raise
            raise ToolFailure(reason, exc) from exc
        finally:
            ts.OrderedDict = original

        table = made[0]
        if len(table) != len(order):
            raise AssertionError(f"torchsummary made {len(table)} rows, our hooks saw {len(order)} calls")
        modules = {id(m): m for m in work.modules()}
        seen: Counter[int] = Counter()
        layers = []
        for (key, row), ident in zip(table.items(), order):
            module = modules[ident]
            if key.rsplit("-", 1)[0] != type(module).__name__:
                raise AssertionError(f"torchsummary row {key} lines up with a {type(module).__name__}")
            raw: dict[str, int] = {
                "nb_params": int(row["nb_params"]),
                # np.prod(output_shape) exactly as summary() adds it up: the batch is -1, so a
                # single output gives minus its per-sample size; a tuple output multiplies every
                # dim of every element (both -1s cancel)
                "output_prod": _prod(row["output_shape"]),
            }
            if "trainable" in row:
                raw["trainable"] = int(bool(row["trainable"]))
            layers.append(
                ToolLayer(
                    module=names[ident],
                    type=type(module).__name__,
                    calls=calls[ident],
                    raw=raw,
                    key=key,
                    call=seen[ident],
                )
            )
            seen[ident] += 1

        headline = _headline(layers, sizes, cap.stdout)
        notes = [
            "torchsummary runs its own torch.rand(2, *input_size) float32 input with autograd on, "
            "on a deepcopy; batch_size=-1, so every MB figure is per sample",
            "per-row data captured by substituting a recording OrderedDict in torchsummary.torchsummary",
        ]
        repeated = sorted({layer.module for layer in layers if layer.calls > 1})
        if repeated:
            notes.append(
                "one row per call, so these modules' nb_params and outputs count once per call: " + ", ".join(repeated)
            )
        dtypes = sorted({str(x.dtype) for x in inputs} - {"torch.float32"})
        if dtypes:
            notes.append(f"our inputs are {', '.join(dtypes)}; torchsummary feeds float32 regardless")
        return self.ok(
                        headline=headline,
            units={
                "Total params": "weight + bias numel per hooked call",
                **{label: "MiB (2**20 B), as printed" for label in _LABELS[3:]},
                **{label.replace("(MB)", "(bytes)"): "bytes, exact" for label in _LABELS[3:]},
            },
            layers=tuple(layers),
            warnings=tuple(cap.warnings) + tuple(line for line in cap.stderr.splitlines() if line.strip()),
            notes=tuple(notes),
            attempted=self._attempted,
        )


def _prod(shape: Any) -> int:
    """``np.prod`` of a (possibly nested, rectangular) shape list, in exact integers."""
    if isinstance(shape, (list, tuple)):
        n = 1
        for item in shape:
            n *= _prod(item)
        return n
    return int(shape)


def _headline(layers: list[ToolLayer], sizes: list[tuple[int, ...]], printed: str) -> dict[str, int | str]:
    """Exact values from the rows with summary()'s formulas (torchsummary.py:82-113), next to
    the strings it printed; the printed counts are checked against the exact ones."""
    total = sum(int(layer.raw["nb_params"]) for layer in layers)
    trainable = sum(int(layer.raw["nb_params"]) for layer in layers if layer.raw.get("trainable") == 1)
    input_elems = 1
    for size in sizes:  # np.prod(input_size) over every input's dims: one product for all inputs
        input_elems *= _prod(list(size))
    input_bytes = abs(input_elems * _BATCH * 4)
    pass_bytes = abs(2 * sum(int(layer.raw["output_prod"]) for layer in layers) * 4)  # x2 "for gradients"
    params_bytes = abs(total * 4)

    shown = {}
    for line in printed.splitlines():
        match = _LINE.match(line.strip())
        if match:
            shown[match.group(1)] = match.group(2)
    if set(shown) != set(_LABELS):
        raise AssertionError(f"torchsummary printed {sorted(shown)}, expected {list(_LABELS)}")
    exact = {"Total params": total, "Trainable params": trainable, "Non-trainable params": total - trainable}
    for label, value in exact.items():
        if int(shown[label].replace(",", "")) != value:
            raise AssertionError(f"torchsummary printed {label}: {shown[label]}, rows give {value}")
    return {
        **exact,
        "Input size (MB)": shown["Input size (MB)"],
        "Input size (bytes)": input_bytes,
        "Forward/backward pass size (MB)": shown["Forward/backward pass size (MB)"],
        "Forward/backward pass size (bytes)": pass_bytes,
        "Params size (MB)": shown["Params size (MB)"],
        "Params size (bytes)": params_bytes,
        "Estimated Total Size (MB)": shown["Estimated Total Size (MB)"],
        "Estimated Total Size (bytes)": input_bytes + pass_bytes + params_bytes,
    }
