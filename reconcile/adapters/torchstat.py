"""torchstat 0.0.7, run through its own internals because its public ``stat()`` cannot finish.

``torchstat.stat()`` builds its table with ``DataFrame.append``, removed in pandas 2, so it raises
before printing anything. This adapter calls the same internals ``stat()`` calls,
``ModelStat(model, (C, H, W))._analyze_model()``, unchanged, and then recomputes the totals of
``torchstat/reporter.py::report_format`` with the reporter's own arithmetic (a pandas frame summed
column by column), including its quirk: the "total" row's MemRead/MemWrite cells hold the *last
row's* values (the reporter reuses its loop variables), while MemR+W is a true sum.

Guarantees:
- every number is torchstat's own: per-layer values are its ``StatNode`` fields converted to exact
  ``int`` / ``Fraction`` (``memory`` is the float32 it stored, as an exact fraction of MiB);
- rows sum to the totals: params, MAdd, Flops, memory bytes and MemR+W are sums over rows;
  "Total MemRead(B)" / "Total MemWrite(B)" equal the last row's MemRead / MemWrite;
- the tool runs on a deepcopy. torchstat replaces ``__call__`` of every leaf module class at class
  level and never restores it; the adapter puts those class attributes back afterwards, but the
  tool still belongs in a throwaway process (``reconcile.runner`` gives it one).
"""

from __future__ import annotations

import copy
from collections import Counter
from fractions import Fraction
from typing import Any

from reconcile.adapters.base import Adapter, ToolFailure, capture_output, failure_reason, module_names
from reconcile.records import ToolLayer, ToolRun

MIB = 1024**2
_PER_SAMPLE = "per sample: torchstat ignores the batch dimension"


class TorchstatAdapter(Adapter):
    name = "torchstat"
    distribution = "torchstat"
    _attempted = "torchstat.statistics.ModelStat(model, input_size)._analyze_model()"

    def _run(self, model: Any, inputs: tuple[Any, ...]) -> ToolRun:
        import torch.nn as nn
        from torchstat.statistics import ModelStat

        if len(inputs) != 1:
            raise ValueError(f"torchstat takes one input of size (C, H, W); this model takes {len(inputs)} inputs")
        if not hasattr(inputs[0], "shape"):
            raise ValueError(f"torchstat takes one tensor input of size (C, H, W), got {type(inputs[0]).__name__}")
        input_size = tuple(int(d) for d in inputs[0].shape[1:])
        self._attempted = f"torchstat.statistics.ModelStat(model, {input_size})._analyze_model()"

        work = copy.deepcopy(model)
        names = module_names(work)
        by_name = dict(work.named_modules())
        calls: Counter[str] = Counter()

        entered: list[tuple[str, str, Any]] = []  # the module running when the tool fails

        def count_call(module: nn.Module, args: Any) -> None:
            calls[names[id(module)]] += 1
            first = args[0] if args else None
            entered.append((names[id(module)], type(module).__name__, tuple(getattr(first, "shape", ())) or None))

        for mod in work.modules():
            mod.register_forward_pre_hook(count_call)  # on the throwaway copy only

        saved = _class_calls(work)
        try:
            with capture_output() as cap:
                nodes = ModelStat(work, input_size)._analyze_model()
        except Exception as exc:
            reason = _own_assertion(exc, names, input_size) or failure_reason(
                "torchstat", exc, entered[-1] if entered else None,
                f"feeds one random float input of size (1, {', '.join(map(str, input_size))})")
            if reason is None:
                raise
            raise ToolFailure(reason, exc) from exc
        finally:
            _restore_class_calls(saved)

        totals = _reporter_totals(nodes)
        layers = tuple(_layer(node, by_name, calls) for node in nodes)
        _check_rows_sum_to_totals(layers, totals)

        headline: dict[str, int | str] = {
            "Total params": totals["params"],
            "Total memory (MB)": "{:.2f}".format(totals["memory(MB)"]),  # reporter: "{:.2f}MB"
            "Total memory (bytes)": sum(int(layer.raw["memory_bytes"]) for layer in layers),
            "Total MAdd": totals["MAdd"],
            "Total Flops": totals["Flops"],
            "Total MemRead(B)": totals["MemRead(B)"],
            "Total MemWrite(B)": totals["MemWrite(B)"],
            "Total MemR+W(B)": totals["MemR+W(B)"],
        }
        units = {
            "Total params": "parameters: direct parameters of each leaf that ran, frozen included",
            "Total memory (MB)": f"MiB (2**20 B), 4 B per output element, last call per leaf, {_PER_SAMPLE}",
            "Total memory (bytes)": f"bytes, 4 B per output element, last call per leaf, {_PER_SAMPLE}",
            "Total MAdd": f"multiplies and adds counted separately, {_PER_SAMPLE}",
            "Total Flops": "torchstat Flops (MAC-like, +bias, +1 per activation/pool element), batch 1",
            "Total MemRead(B)": "bytes, the LAST row's value (reporter quirk), not a sum",
            "Total MemWrite(B)": "bytes, the LAST row's value (reporter quirk), not a sum",
            "Total MemR+W(B)": "bytes read plus written, summed over rows, batch 1",
        }
        notes = [
            "torchstat.stat() fails on pandas >= 2 (DataFrame.append); ran "
            f"ModelStat(model, {input_size})._analyze_model() and recomputed report_format's totals "
            "with its own arithmetic",
            "torchstat feeds its own torch.rand(1, *input_size) float32 input: batch 1",
            "Total MemRead(B)/MemWrite(B) are the last row's values, as torchstat's total row shows them",
        ]
        if inputs[0].shape[0] != 1:
            notes.append(f"our batch is {inputs[0].shape[0]}; torchstat always runs batch 1")
        repeated = [f"{n or '(root)'} ({calls[n]} calls)" for n in (node.name for node in nodes) if calls[n] > 1]
        if repeated:
            notes.append(
                "torchstat keeps only the LAST call's numbers of a module called more than once: " + ", ".join(repeated)
            )
        never = [node.name for node in nodes if calls[node.name] == 0]
        if never:
            notes.append("leaf modules that never ran (all zeros): " + ", ".join(never))

        return self.ok(
                        headline=headline,
            units=units,
            layers=layers,
            warnings=tuple(_printed_lines(cap.stdout + cap.stderr)) + tuple(cap.warnings),
            notes=tuple(notes),
            attempted=self._attempted,
        )


def _class_calls(model: Any) -> list[tuple[type, Any]]:
    """Each leaf class's own ``__call__`` entry (or ``None``), before torchstat replaces it."""
    seen: dict[type, Any] = {}
    for mod in model.modules():
        cls = type(mod)
        if cls not in seen:
            seen[cls] = cls.__dict__.get("__call__")
    return list(seen.items())


def _restore_class_calls(saved: list[tuple[type, Any]]) -> None:
    for cls, own in saved:
        if own is None:
            if "__call__" in cls.__dict__:
                delattr(cls, "__call__")
        else:
            setattr(cls, "__call__", own)


def _own_assertion(exc: BaseException, names: dict[int, str], input_size: tuple[int, ...]) -> str | None:
    """torchstat's own bare asserts, in words: the (C, H, W) input check, and ``wrap_call``'s check
    that a patched ``__call__`` belongs to a class it patched (a subclass of a patched leaf class
    that has children of its own inherits the patched ``__call__``)."""
    if not isinstance(exc, AssertionError):
        return None
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in frames[-1:]:  # the frame that asserted
        if frame.f_code.co_name == "wrap_call" and "module" in frame.f_locals:
            module = frame.f_locals["module"]
            base = next((c.__name__ for c in type(module).__mro__[1:] if c.__module__.startswith("torch.nn.")), "?")
            return (f"torchstat patches __call__ of the leaf layer classes it finds: {type(module).__name__} "
                    f"{names.get(id(module), '?')} subclasses {base} but has children, so it is not a leaf "
                    "and its inherited __call__ fails torchstat's check")
        if frame.f_code.co_name == "__init__" and "statistics" in frame.f_code.co_filename and len(input_size) != 3:
            return (f"torchstat needs one (C, H, W) input: this model's first input is "
                    f"{'x'.join(map(str, (1, *input_size)))}")
    return None


def _reporter_totals(nodes: list[Any]) -> dict[str, Any]:
    """The "total" row of ``torchstat.reporter.report_format``, computed the way it computes it
    (reporter.py lines 23-59): a DataFrame of the nodes, ``.sum()`` per column, and MemRead/MemWrite
    taken from the loop variables ``mread, mwrite`` left by the last node."""
    import pandas as pd

    data = []
    mread = mwrite = None
    for node in nodes:
        mread, mwrite = [i for i in node.Memory]
        data.append([node.name, node.parameter_quantity, node.inference_memory, node.MAdd, node.Flops, mread, mwrite])
    df = pd.DataFrame(data)
    df.columns = ["module name", "params", "memory(MB)", "MAdd", "Flops", "MemRead(B)", "MemWrite(B)"]
    df["MemR+W(B)"] = df["MemRead(B)"] + df["MemWrite(B)"]
    return {
        "params": int(df["params"].sum()),
        "memory(MB)": df["memory(MB)"].sum(),  # a float32 sum, formatted "{:.2f}" by the reporter
        "MAdd": int(df["MAdd"].sum()),
        "Flops": int(df["Flops"].sum()),
        "MemRead(B)": int(mread),
        "MemWrite(B)": int(mwrite),
        "MemR+W(B)": int(df["MemR+W(B)"].sum()),
    }


def _layer(node: Any, by_name: dict[str, Any], calls: Counter[str]) -> ToolLayer:
    mread, mwrite = (int(v) for v in node.Memory)
    out_elements = 1
    for d in node.output_shape:
        out_elements *= int(d)
    module = by_name.get(node.name)
    return ToolLayer(
        module=node.name,
        type=type(module).__name__ if module is not None else "",
        calls=calls[node.name],
        raw={
            "params": int(node.parameter_quantity),
            # the float32 MiB value torchstat stored, exactly; memory_bytes is the same quantity
            # before its division: prod(output.shape[1:]) * 4 (its zeroed buffer if never run)
            "memory": Fraction(float(node.inference_memory)),
            "memory_bytes": out_elements * 4,
            "MAdd": int(node.MAdd),
            "Flops": int(node.Flops),
            "MemRead": mread,
            "MemWrite": mwrite,
            "MemR+W": mread + mwrite,
        },
        key=node.name,
    )


def _check_rows_sum_to_totals(layers: tuple[ToolLayer, ...], totals: dict[str, Any]) -> None:
    """A reconcile bug, not a tool failure, if the reporter's totals are not the row sums."""
    for raw_key, total_key in (("params", "params"), ("MAdd", "MAdd"), ("Flops", "Flops"), ("MemR+W", "MemR+W(B)")):
        rows = sum(int(layer.raw[raw_key]) for layer in layers)
        if rows != totals[total_key]:
            raise AssertionError(f"torchstat rows sum to {rows} {raw_key}, its total is {totals[total_key]}")


def _printed_lines(text: str) -> list[str]:
    """Each distinct line torchstat printed, in first-seen order, with a repeat count."""
    seen: Counter[str] = Counter()
    order: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line not in seen:
            order.append(line)
        seen[line] += 1
    return [line if seen[line] == 1 else f"{line} (printed {seen[line]} times)" for line in order]
