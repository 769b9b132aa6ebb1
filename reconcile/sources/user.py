"""Your own models: ``package.module:callable``, a factory function or an ``nn.Module`` class
called with no arguments, imported from the working directory.

The callable may carry its inputs:
- ``example_inputs``: a callable returning a tuple (positional) or a dict (keyword arguments) of
  tensors; only their shapes, dtypes and (for integer tensors) value range are used, so every
  tool gets the same seeded values;
- or ``example_input_shape`` (with optional ``example_input_dtype`` and ``example_input_high``).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from typing import Any, Callable

from reconcile.errors import ReconcileError
from reconcile.inputs import InputSpec, check_inputs, parse_dtype

# "pkg.mod:callable" or "pkg.mod:Outer.factory"; dotted identifiers on both sides.
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
CALLABLE_RE = re.compile(rf"^({_DOTTED}):({_DOTTED})$")


def published(name: str) -> dict[str, Any]:
    return {}


def resolve(body: str, check: bool = True) -> str:
    if not CALLABLE_RE.match(body):
        raise ReconcileError(
            f"bad model spec {body!r}: write package.module:callable, e.g. mypkg.nets:make_net"
        )
    return body


def factory(name: str) -> Callable[[], Any]:
    return load(name)


def build_failed(name: str, exc: BaseException) -> ReconcileError:
    """The one-line error for a factory that raised (``models.build`` tries cheaper ways first)."""
    return ReconcileError(
        f"model factory {name!r} raised {type(exc).__name__}: {one_line(exc)}; "
        "fix it so it builds the model when called with no arguments"
    )


def default_inputs(name: str) -> tuple[InputSpec, ...]:
    fn = load(name)
    example = getattr(fn, "example_inputs", None)
    if example is not None:
        return _from_example(name, example)
    shape = getattr(fn, "example_input_shape", None)
    if shape is None:
        raise ReconcileError(
            f"no input shape for {name!r}: pass --input-shape (e.g. 1,3,224,224) or give the "
            "callable an attribute example_input_shape = (1, 3, 224, 224), or example_inputs"
        )
    if isinstance(shape, (list, tuple)):  # also torch.Size
        shape = tuple(shape)
    if not isinstance(shape, tuple):
        raise ReconcileError(
            f"{name}.example_input_shape = {shape!r} is not a tuple: make it a tuple of positive "
            "integers such as (1, 3, 224, 224)"
        )
    dtype = parse_dtype(str(getattr(fn, "example_input_dtype", "float32")))
    high = getattr(fn, "example_input_high", None)
    return (InputSpec(shape, dtype, high),)


def _from_example(name: str, example: Any) -> tuple[InputSpec, ...]:
    import torch

    try:
        value = example() if callable(example) else example
    except Exception as exc:  # noqa: BLE001
        raise ReconcileError(f"{name}.example_inputs raised {type(exc).__name__}: {one_line(exc)}; fix it") from exc
    if isinstance(value, torch.Tensor):
        value = (value,)
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (tuple, list)):
        items = [(None, v) for v in value]
    else:
        raise ReconcileError(f"{name}.example_inputs returned a {type(value).__name__}: return a tuple "
                             "(positional) or a dict (keyword arguments) of tensors")
    specs = []
    for key, t in items:
        if not isinstance(t, torch.Tensor):
            raise ReconcileError(f"{name}.example_inputs: {key or 'an input'} is a {type(t).__name__}, "
                                 "not a tensor: give tensors only (defaults cover the rest)")
        dtype = parse_dtype(str(t.dtype))
        high = None
        if dtype in ("long", "int32") and t.device.type != "meta" and t.numel():
            high = int(t.max()) + 1 if int(t.max()) >= 1 else None
        specs.append(InputSpec(tuple(int(d) for d in t.shape), dtype, high, key))
    return check_inputs(specs)


def load(name: str) -> Callable[[], Any]:
    """Import ``package.module`` from the working directory and return the named callable."""
    module_name, _, attr_path = name.partition(":")
    # The CLI is usually run from the project that holds the model, as `python -m` would.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a file written moments ago must be found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ReconcileError(
            f"cannot import module {module_name!r} for model {name!r}: {one_line(exc)}; "
            f"run from the directory that contains it or install it (searched from {cwd})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ReconcileError(
            f"importing module {module_name!r} for model {name!r} raised "
            f"{type(exc).__name__}: {one_line(exc)}; fix the module"
        ) from exc
    obj: Any = module
    where = module_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            close = difflib.get_close_matches(part, [n for n in dir(obj) if not n.startswith("_")], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; check the name after ':'"
            raise ReconcileError(f"{where!r} has no attribute {part!r} (model {name!r}){hint}")
        obj = getattr(obj, part)
        where = f"{where}.{part}" if where != module_name else f"{module_name}:{part}"
    if not callable(obj):
        raise ReconcileError(
            f"{name!r} is a {type(obj).__name__}, not a callable: point at a function or "
            "nn.Module class that builds the model with no arguments"
        )
    return obj


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if len(text) <= 300 else text[:297] + "..."
