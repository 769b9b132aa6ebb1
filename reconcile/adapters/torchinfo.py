"""torchinfo 1.8.0, run through its public ``summary()`` as its users run it, its returned
``ModelStatistics`` read as data.

Called as ``torchinfo.summary(model, input_data=..., mode=..., device="cpu", verbose=0)``:
``input_data`` is the input tensor itself (one input), a list of them (several), or a dict of
keyword inputs when a ``None`` sits between them (torchinfo adds up the storage size of every
element of ``input_data`` and fails on ``None``; its docs say to pass a dict of kwargs then);
``mode`` is the job's mode (``"eval"``, torchinfo's default, unless the job is in train mode);
``device="cpu"`` because with ``input_size`` torchinfo would move the model to CUDA when there is
one; ``verbose=0`` since nothing may reach the terminal (the summary text is rendered with
``str(stats)`` while captured, and its MB lines kept).

Guarantees, for a run with status ``ok``:
- the tool runs on a deepcopy: ``summary()`` calls ``model.train(saved_mode)`` on the way out (one
  mode for every submodule, whatever they had), keeps the model in a module-global cache
  (``_cached_forward_pass``, cleared here after the run) and adds hooks for the run;
- ``headline``: ``Total mult-adds`` (``total_mult_adds``, MACs), ``Total params``, ``Trainable
  params``, ``Non-trainable params``, and each size in exact bytes: ``Input size (bytes)``
  (``total_input``), ``Forward/backward pass size (bytes)`` (``total_output_bytes``), ``Params size
  (bytes)`` (``total_param_bytes``), ``Estimated Total Size (bytes)`` (their sum); beside them the
  strings ``summary()`` prints for them ("... (MB)", MB = 1e6 bytes);
- ``layers``: one row per entry of ``summary_list``, in its order, named by ``named_modules()``
  (``id(layer.module)``; ``var_name`` is only the attribute name), ``call`` = the how-manieth entry
  of that module (a module called twice has two entries, the second ``is_recursive``; a container
  ``add_missing_container_layers`` inserts has an entry that no call made), ``key`` torchinfo's
  own row label ``Class: depth-index``. ``raw`` holds what the entry adds to each total:
  ``macs`` (leaf entries: ``layer.macs``), ``params`` and ``trainable_params`` (0 when recursive;
  a leaf's ``num_params`` / ``trainable_params``, a container's ``max(leftover_params(), 0)`` /
  ``max(leftover_trainable_params(), 0)``), ``param_bytes`` (leaf entries, 0 when recursive) and
  ``pass_bytes`` (leaf entries with parameters: ``2 * output_bytes``);
- rows sum to the headline on the data: ``Total mult-adds`` = sum of ``macs``, and likewise
  ``params``, ``trainable_params``, ``pass_bytes`` and ``param_bytes`` (checked on every run).
"""

from __future__ import annotations

import copy
import inspect
import re
from collections import Counter
from typing import Any

from reconcile.adapters.base import Adapter, ToolFailure, capture_output, failure_reason, module_names
from reconcile.records import Number, ToolLayer, ToolRun

_MB_LINES = ("Input size (MB)", "Forward/backward pass size (MB)", "Params size (MB)", "Estimated Total Size (MB)")
_LINE = re.compile(r"^(" + "|".join(re.escape(label) for label in _MB_LINES) + r"): (.*)$")
_SIZES = {"Input size (bytes)": "total_input", "Forward/backward pass size (bytes)": "total_output_bytes",
          "Params size (bytes)": "total_param_bytes"}


def _input_data(model: Any, inputs: tuple[Any, ...]) -> tuple[Any, str, list[str]]:
    """What ``input_data`` is given, how the call reads, and a note when it is not positional."""
    import torch

    if all(isinstance(x, torch.Tensor) for x in inputs):
        if len(inputs) == 1:
            return inputs[0], "x", []
        return list(inputs), "[" + ", ".join(f"x{i}" for i in range(len(inputs))) + "]", []
    signature = inspect.signature(model.forward)
    try:
        bound = signature.bind(*inputs)
    except TypeError as exc:
        raise TypeError(f"cannot pass the inputs to torchinfo as keywords of forward(): {exc}") from exc
    kwargs = {k: v for k, v in bound.arguments.items() if v is not None}
    return kwargs, "{" + ", ".join(f"{k!r}: ..." for k in kwargs) + "}", [
        f"inputs passed as the dict of keywords {sorted(kwargs)}: torchinfo sizes every element of a list "
        "input_data and fails on the None between them"]


class TorchinfoAdapter(Adapter):
    name = "torchinfo"
    distribution = "torchinfo"
    _attempted = 'torchinfo.summary(model, input_data=x, mode="eval", device="cpu", verbose=0)'

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        import torchinfo
        from torchinfo import torchinfo as ti

        work = copy.deepcopy(model)
        names = module_names(work)
        data, shown, notes = _input_data(work, tuple(inputs))
        mode = "train" if work.training else "eval"
        self._attempted = f'torchinfo.summary(model, input_data={shown}, mode="{mode}", device="cpu", verbose=0)'

        # where the forward was when it failed: the innermost module running, or for an error in
        # torchinfo's own forward hook (which runs after ours) the module that just returned
        running: list[tuple[str, str, tuple[int, ...] | None]] = []
        returned: list[tuple[str, str, tuple[int, ...] | None]] = []

        def enter(module: Any, args: Any) -> None:
            first = args[0] if args else None
            running.append((names[id(module)], type(module).__name__, tuple(getattr(first, "shape", ())) or None))

        def leave(module: Any, args: Any, output: Any) -> None:
            returned[:] = [running.pop()] if running else []

        handles = [h for m in work.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
        try:
            with capture_output() as cap:
                stats = torchinfo.summary(work, input_data=data, mode=mode, device="cpu", verbose=0)
                printed = str(stats)
        except Exception as exc:
            # summary() wraps a failing forward in RuntimeError("Failed to run torchinfo...") from it
            original = exc.__cause__ if exc.__cause__ is not None and "Failed to run torchinfo" in str(exc) else exc
            in_hook = "unsupported input or output type" in str(original)
            where = (returned[-1] if in_hook and returned else running[-1] if running else None)
            reason = failure_reason("torchinfo", original, where, "runs the model on the inputs it is given")
            if reason is None:
                at = f" in {where[1]} {where[0]}" if where and where[0] else ""
                reason = f"torchinfo failed{at}"
            raise ToolFailure(reason, original) from exc
        finally:
            for h in handles:
                h.remove()
            ti.clear_cached_forward_pass()  # summary() caches the record list (and so the model) by class name

        layers = self._layers(stats, names)
        headline: dict[str, Number | str] = {
            "Total mult-adds": int(stats.total_mult_adds),
            "Total params": int(stats.total_params),
            "Trainable params": int(stats.trainable_params),
            "Non-trainable params": int(stats.total_params - stats.trainable_params),
            **{key: int(getattr(stats, attr)) for key, attr in _SIZES.items()},
        }
        headline["Estimated Total Size (bytes)"] = sum(int(headline[k]) for k in _SIZES)  # type: ignore[arg-type]
        _check_rows(layers, headline)
        shown_lines = {}
        for line in printed.splitlines():
            match = _LINE.match(line.strip())
            if match:
                shown_lines[match.group(1)] = match.group(2)
        headline.update(shown_lines)

        notes = ["run on a deepcopy: summary() sets one train/eval mode on every submodule when it restores the "
                 "mode, and caches the model's records in a module-global dict (cleared after the run)", *notes]
        repeated = sorted({layer.module for layer in layers if layer.calls > 1})
        if repeated:
            notes.append("one record per call: mult-adds and pass size count every call, parameters the first: "
                         + ", ".join(repeated))
        inserted = sorted({layer.module for layer in layers if layer.key.endswith(" (inserted)")})
        if inserted:
            notes.append("records no call made, inserted by torchinfo where a call's ancestors were not listed: "
                         + ", ".join(name or "(root)" for name in inserted))
        return self.ok(
                        headline=headline,
            units={
                "Total mult-adds": "mult-adds (MACs)",
                "Total params": "params", "Trainable params": "params", "Non-trainable params": "params",
                **{key: "bytes, exact" for key in (*_SIZES, "Estimated Total Size (bytes)")},
                **{label: "MB (1e6 B), as printed" for label in _MB_LINES},
            },
            layers=tuple(layers),
            warnings=tuple(cap.warnings) + tuple(line for line in cap.stderr.splitlines() if line.strip()),
            notes=tuple(notes),
            attempted=self._attempted,
        )

    @staticmethod
    def _layers(stats: Any, names: dict[int, str]) -> list[ToolLayer]:
        calls: Counter[str] = Counter(names[id(layer.module)] for layer in stats.summary_list if layer.executed)
        seen: Counter[str] = Counter()
        out = []
        for layer in stats.summary_list:
            name = names[id(layer.module)]
            raw: dict[str, Number] = {}
            if layer.is_leaf_layer:
                raw["macs"] = int(layer.macs)
                raw["params"] = 0 if layer.is_recursive else int(layer.num_params)
                raw["trainable_params"] = 0 if layer.is_recursive else int(layer.trainable_params)
                raw["param_bytes"] = 0 if layer.is_recursive else int(layer.param_bytes)
                if layer.num_params > 0:
                    raw["pass_bytes"] = 2 * int(layer.output_bytes)
            else:
                raw["params"] = 0 if layer.is_recursive else max(int(layer.leftover_params()), 0)
                raw["trainable_params"] = 0 if layer.is_recursive else max(int(layer.leftover_trainable_params()), 0)
            label = layer.get_layer_name(False, True) + ("" if layer.executed else " (inserted)")
            out.append(ToolLayer(module=name, type=type(layer.module).__name__, calls=calls[name], raw=raw, key=label,
                                 call=seen[name]))
            seen[name] += 1
        return out


def _check_rows(layers: list[ToolLayer], headline: dict[str, Any]) -> None:
    """Rows add up to the headline on the data (ModelStatistics' own sums)."""
    for key, raw in (("Total mult-adds", "macs"), ("Total params", "params"), ("Trainable params", "trainable_params"),
                     ("Forward/backward pass size (bytes)", "pass_bytes"), ("Params size (bytes)", "param_bytes")):
        rows = sum(int(layer.raw.get(raw, 0)) for layer in layers)
        if rows != headline[key]:
            raise AssertionError(f"torchinfo's {key} is {headline[key]}, its rows' {raw} add up to {rows}")
