"""Model specs: what the user names, what input it gets, and how it is built.

A spec is either a torchvision classification model name (``resnet18``) or
``package.module:callable`` (a factory function or an ``nn.Module`` class called with no
arguments). Guarantees:

- ``resolve`` validates a spec without importing user code or building anything.
- ``build`` returns the model in eval mode on the requested device ("meta" or "cpu"), never
  downloads anything and never pays for random weight initialization. Torchvision models are
  built exactly as their first published weights define them (num_classes, transform_input,
  googlenet's dropped aux heads, vit_h_14 at 518 px), so parameter counts equal
  ``weights.meta["num_params"]``.
- On "cpu" every parameter and buffer holds a deterministic value: values never matter for
  counting, but uninitialized memory can hold NaN or denormals that slow the tools down.
- Every patch made while building is undone before ``build`` returns, even on error.
- Mistakes a user can fix raise ``ReconcileError`` with a one-line message.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from reconcile.errors import ReconcileError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

KINDS = ("torchvision", "callable")
DEVICES = ("meta", "cpu")

# Accepted spellings -> canonical dtype name. "long" rather than "int64" because token ids are
# what people mean by it, and the CLI says `--input-dtype long`.
_DTYPE_ALIASES = {
    "float32": "float32", "float": "float32", "fp32": "float32",
    "float16": "float16", "half": "float16", "fp16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "double": "float64", "fp64": "float64",
    "long": "long", "int64": "long",
    "int32": "int32", "int": "int32",
}
DTYPES = ("float32", "float16", "bfloat16", "float64", "long", "int32")
_INTEGER_DTYPES = ("long", "int32")
_DEFAULT_HIGH = 2  # integer inputs default to {0, 1}: valid ids for any embedding table

# "pkg.mod:callable" or "pkg.mod:Outer.factory"; dotted identifiers on both sides.
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_CALLABLE_RE = re.compile(rf"^({_DOTTED}):({_DOTTED})$")

# The build patches process globals (torch.nn.init, WeightsEnum, Module.load_state_dict);
# two threads building at once would restore each other's patches out of order.
_BUILD_LOCK = threading.RLock()


@dataclass(frozen=True)
class ModelSpec:
    text: str  # what the user typed
    kind: str  # "torchvision" or "callable"
    name: str  # canonical name: the torchvision name, or "package.module:callable"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ModelSpec.kind must be one of {KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: str = "float32"
    high: int | None = None  # integer inputs are drawn from [0, high); None means 2

    def __post_init__(self) -> None:
        # An InputSpec can come from a user's `example_input_*` attributes, so bad values are
        # the user's to fix, not a bug.
        if not self.shape or not all(type(d) is int and d > 0 for d in self.shape):
            raise ReconcileError(
                f"input shape {self.shape!r} must be a non-empty tuple of positive integers, "
                "e.g. (1, 3, 224, 224)"
            )
        if self.dtype not in DTYPES:
            raise ReconcileError(
                f"input dtype {self.dtype!r} is not supported: use one of {', '.join(DTYPES)}"
            )
        if self.high is not None and (type(self.high) is not int or self.high < 1):
            raise ReconcileError(
                f"input high {self.high!r} must be a positive integer (values are drawn from [0, high))"
            )


# ---------------------------------------------------------------------------------------------
# Parsing user text


def split_specs(text: str) -> list[str]:
    """``"resnet18,vgg16, pkg.mod:fn"`` -> the specs in order; blanks and repeats dropped."""
    specs: list[str] = []
    for piece in (text or "").split(","):
        piece = piece.strip()
        if piece and piece not in specs:
            specs.append(piece)
    if not specs:
        raise ReconcileError(
            "no model given: name one or more models separated by commas, e.g. resnet18,vgg16 "
            "(see `reconcile models`) or package.module:callable"
        )
    return specs


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` or ``"1x3x224x224"`` (optionally in brackets) -> ``(1, 3, 224, 224)``."""
    expected = "expected positive integers separated by ',' or 'x', e.g. 1,3,224,224"
    body = (text or "").strip()
    if body and body[0] in "([" and body[-1] in ")]":
        body = body[1:-1]
    pieces = [p.strip() for p in re.split(r"[,xX]", body)]
    # A trailing comma as in Python's "(1,)" is a common habit, not a mistake.
    if len(pieces) > 1 and pieces[-1] == "" and body.rstrip().endswith(","):
        pieces.pop()
    if not body.strip() or not all(p.isdigit() and p.isascii() and int(p) > 0 for p in pieces):
        raise ReconcileError(f"bad input shape {text!r}: {expected}")
    return tuple(int(p) for p in pieces)


def parse_dtype(text: str) -> str:
    """``"long"``/``"int64"`` -> ``"long"``, ``"float"``/``"float32"`` -> ``"float32"``, ..."""
    key = (text or "").strip().lower()
    if key.startswith("torch."):
        key = key[len("torch."):]
    if key not in _DTYPE_ALIASES:
        raise ReconcileError(f"unknown input dtype {text!r}: use one of {', '.join(DTYPES)}")
    return _DTYPE_ALIASES[key]


# ---------------------------------------------------------------------------------------------
# Resolving specs


def torchvision_names() -> list[str]:
    """The classification models of ``torchvision.models``, sorted. Read from the generated
    ``zoo_table`` (checked against torchvision by a test) so resolving needs no ``import torch``."""
    from reconcile.zoo_table import TORCHVISION

    return sorted(TORCHVISION)


def published(name: str) -> dict[str, Any]:
    """torchvision's published figures for a model's first weights: weights, crop, _ops, num_params."""
    from reconcile.zoo_table import TORCHVISION

    weights, crop, ops, num_params = TORCHVISION[name]
    return {"weights": weights, "crop_size": crop, "_ops": ops, "num_params": num_params}


def resolve(spec: str) -> ModelSpec:
    """Validate ``spec`` without importing user code or building anything."""
    text = spec
    spec = (spec or "").strip()
    if not spec:
        raise ReconcileError(
            "empty model spec: give a torchvision name (see `reconcile models`) or package.module:callable"
        )
    if ":" in spec:
        if not _CALLABLE_RE.match(spec):
            raise ReconcileError(
                f"bad model spec {spec!r}: write package.module:callable, e.g. mypkg.nets:make_net"
            )
        return ModelSpec(text=text, kind="callable", name=spec)
    names = torchvision_names()
    if spec in names:
        return ModelSpec(text=text, kind="torchvision", name=spec)
    lowered = {n.lower(): n for n in names}
    if spec.lower() in lowered:
        return ModelSpec(text=text, kind="torchvision", name=lowered[spec.lower()])
    raise ReconcileError(_unknown_model_message(spec, names))


def _unknown_model_message(spec: str, names: list[str]) -> str:
    import torchvision  # only on this error path

    if spec in torchvision.models.list_models():
        return (f"{spec!r} is a torchvision model but not a classification model: "
                "wrap it in a factory and pass package.module:callable")
    close = difflib.get_close_matches(spec.lower(), names, n=3)
    if close:
        return f"unknown model {spec!r}: did you mean {', '.join(close)}? (see `reconcile models`)"
    if "." in spec:
        module, _, attr = spec.rpartition(".")
        return (f"unknown model {spec!r}: to load a callable separate module and name with a colon, "
                f"e.g. {module}:{attr}")
    return (f"unknown model {spec!r}: not a torchvision classification model (see `reconcile models`); "
            "for your own model pass package.module:callable")


# ---------------------------------------------------------------------------------------------
# Default inputs


def default_input(spec: ModelSpec) -> InputSpec:
    """The input a model is counted on when the user gives no ``--input-shape``."""
    if spec.kind == "torchvision":
        size = published(spec.name)["crop_size"]  # the first weights' eval crop (zoo_table)
        return InputSpec((1, 3, size, size))
    factory = _load_callable(spec)
    shape = getattr(factory, "example_input_shape", None)
    if shape is None:
        raise ReconcileError(
            f"no input shape for {spec.name!r}: pass --input-shape (e.g. 1,3,224,224) or give the "
            "callable an attribute example_input_shape = (1, 3, 224, 224)"
        )
    if isinstance(shape, (list, tuple)):  # also torch.Size
        shape = tuple(shape)
    if not isinstance(shape, tuple):
        raise ReconcileError(
            f"{spec.name}.example_input_shape = {shape!r} is not a tuple: make it a tuple of positive "
            "integers such as (1, 3, 224, 224)"
        )
    dtype = getattr(factory, "example_input_dtype", "float32")
    dtype = parse_dtype(str(dtype))
    high = getattr(factory, "example_input_high", None)
    return InputSpec(shape, dtype, high)


def _first_weights(name: str) -> Any:
    from torchvision.models import get_model_weights

    # The first member is the oldest published checkpoint: the configuration the model is
    # known by and the one its meta["num_params"] and eval crop describe.
    return list(get_model_weights(name))[0]


# ---------------------------------------------------------------------------------------------
# Building


def build(spec: ModelSpec, device: str = "meta") -> "torch.nn.Module":
    """Build ``spec`` in eval mode on ``device`` ("meta" or "cpu") without initializing weights."""
    if device not in DEVICES:
        raise ReconcileError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    with _BUILD_LOCK:
        if spec.kind == "torchvision":
            model, on_meta = _build_torchvision(spec.name, device)
        else:
            model, on_meta = _build_callable(spec, device)
        model = _place(model, device, on_meta)
    return model.eval()


def _build_torchvision(name: str, device: str) -> tuple["torch.nn.Module", bool]:
    import torchvision

    weights = _first_weights(name)

    def factory() -> "torch.nn.Module":
        with _weights_without_download():
            return torchvision.models.get_model(name, weights=weights)

    return _construct(name, factory, device)


def _build_callable(spec: ModelSpec, device: str) -> tuple["torch.nn.Module", bool]:
    factory = _load_callable(spec)

    def checked() -> "torch.nn.Module":
        model = factory()
        _check_module(spec, model)
        return model

    try:
        return _construct(spec.name, checked, device)
    except ReconcileError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code failed: say so, don't crash
        raise ReconcileError(
            f"model factory {spec.name!r} raised {type(exc).__name__}: {_one_line(exc)}; "
            "fix it so it builds the model when called with no arguments"
        ) from exc


def _construct(name: str, factory: Callable[[], Any], device: str) -> tuple["torch.nn.Module", bool]:
    """Call ``factory`` as cheaply as it allows. Returns (model, built_on_meta).

    First under ``torch.device("meta")``, where initialization costs nothing. Builders that
    compute on tensors (RegNet's block widths, a factory calling .item()) cannot run there,
    so next on CPU with ``torch.nn.init`` skipped, and last plainly, because skipped init
    leaves garbage that code inspecting its weights may reject. The last failure propagates.
    """
    import torch

    try:
        with torch.device("meta"):
            model = factory()
    except ReconcileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on meta means: try a real device
        log.info("%s does not build on meta (%s: %s); building on CPU", name, type(exc).__name__, exc)
    else:
        if device == "meta" or not _unregistered_tensors(model):
            return model, True
        # Tensors kept as plain attributes are not moved by to_empty(), so they would stay on
        # meta; only a real build gives them storage.
        log.info("%s keeps tensors outside parameters and buffers; building on CPU", name)
    try:
        with _init_skipped():
            return factory(), False
    except ReconcileError:
        raise
    except Exception as exc:  # noqa: BLE001
        log.info("%s does not build with init skipped (%s: %s); building plainly",
                 name, type(exc).__name__, exc)
    return factory(), False


class _NoStateDict(dict):
    """Stands in for a downloaded checkpoint. Empty, so code that renames keys (densenet) is a no-op."""


@contextlib.contextmanager
def _weights_without_download() -> Iterator[None]:
    """Let torchvision's builders run their ``weights is not None`` branch without a checkpoint.

    Everything the weights imply besides the tensors (kwargs from meta, googlenet dropping its
    aux heads after loading) then happens exactly as in torchvision, with no copy of that logic
    here to drift out of date.
    """
    from torch import nn
    from torch.nn.modules.module import _IncompatibleKeys
    from torchvision.models._api import WeightsEnum

    original_get = WeightsEnum.__dict__["get_state_dict"]
    original_load = nn.Module.__dict__["load_state_dict"]

    def get_state_dict(self: Any, *args: Any, **kwargs: Any) -> dict:
        return _NoStateDict()

    def load_state_dict(self: Any, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(state_dict, _NoStateDict):
            return _IncompatibleKeys([], [])
        return original_load(self, state_dict, *args, **kwargs)

    WeightsEnum.get_state_dict = get_state_dict
    nn.Module.load_state_dict = load_state_dict
    try:
        yield
    finally:
        WeightsEnum.get_state_dict = original_get
        nn.Module.load_state_dict = original_load


@contextlib.contextmanager
def _init_skipped() -> Iterator[None]:
    """Make the ``torch.nn.init`` functions no-ops (they are most of the cost of a CPU build).

    Code that bound them at import time (``from torch.nn.init import normal_``) still runs them.
    """
    import torch.nn.init as init

    def skip(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        return tensor

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    originals = {n: getattr(init, n) for n in names}
    for n in names:
        setattr(init, n, skip)
    try:
        yield
    finally:
        for n, fn in originals.items():
            setattr(init, n, fn)


def _check_module(spec: ModelSpec, model: Any) -> None:
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ReconcileError(
            f"model factory {spec.name!r} returned a {type(model).__name__}, not a torch.nn.Module: "
            "make it return the model itself"
        )


def _unregistered_tensors(model: "torch.nn.Module") -> list[str]:
    import torch

    found = []
    for mod_name, mod in model.named_modules():
        for attr, value in vars(mod).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                found.append(f"{mod_name}.{attr}" if mod_name else attr)
    return found


def _place(model: "torch.nn.Module", device: str, on_meta: bool) -> "torch.nn.Module":
    if device == "meta":
        if any(t.device.type != "meta" for t in _tensors(model)):
            model = model.to("meta")
        return model
    if on_meta:
        # to_empty allocates without initializing; every tensor is then filled below.
        model = model.to_empty(device=device)
        _fill(model, buffers=True)
    else:
        # A real build already computed its buffers (index tables, masks): keep them.
        model = model.to(device)
        _fill(model, buffers=False)
    return model


def _tensors(model: "torch.nn.Module") -> Iterator["torch.Tensor"]:
    yield from model.parameters()
    yield from model.buffers()


def _fill(model: "torch.nn.Module", buffers: bool) -> None:
    """Give every parameter (and buffer) a cheap deterministic value.

    A matrix or kernel gets 1/fan_in, so a plain layer's output stays at the scale of its
    input. One constant for all would scale activations by constant * fan_in per layer: 0.01 on
    VGG-16's 3x3x512 convs multiplies by 0.01 * 4608 = 46 each time, while a small fan_in
    shrinks them towards denormals. (Residual sums still grow, about 2x per block: ResNet-152's
    logits reach ~4e13, finite in float32.) Norm scales and running variances get 1,
    everything else 0.
    """
    import torch

    named = list(model.named_parameters())
    if buffers:
        named += list(model.named_buffers())
    with torch.no_grad():
        for name, t in named:
            if t.dtype.is_floating_point:
                if t.dim() >= 2:
                    value = 1.0 / max(1, t.numel() // t.shape[0])
                elif name.endswith(("weight", "running_var")):
                    value = 1.0
                else:
                    value = 0.0
                t.fill_(value)
            else:
                t.zero_()  # integer counters (num_batches_tracked), bool masks, complex


# ---------------------------------------------------------------------------------------------
# Loading user callables


def _load_callable(spec: ModelSpec) -> Callable[[], Any]:
    """Import ``package.module`` from the working directory and return the named callable."""
    module_name, _, attr_path = spec.name.partition(":")
    # The CLI is usually run from the project that holds the model, as `python -m` would.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a file written moments ago must be found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ReconcileError(
            f"cannot import module {module_name!r} for model {spec.name!r}: {_one_line(exc)}; "
            f"run from the directory that contains it or install it (searched from {cwd})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ReconcileError(
            f"importing module {module_name!r} for model {spec.name!r} raised "
            f"{type(exc).__name__}: {_one_line(exc)}; fix the module"
        ) from exc
    obj: Any = module
    where = module_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            close = difflib.get_close_matches(part, [n for n in dir(obj) if not n.startswith("_")], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; check the name after ':'"
            raise ReconcileError(f"{where!r} has no attribute {part!r} (model {spec.name!r}){hint}")
        obj = getattr(obj, part)
        where = f"{where}.{part}" if where != module_name else f"{module_name}:{part}"
    if not callable(obj):
        raise ReconcileError(
            f"{spec.name!r} is a {type(obj).__name__}, not a callable: point at a function or "
            "nn.Module class that builds the model with no arguments"
        )
    return obj


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if len(text) <= 300 else text[:297] + "..."


# ---------------------------------------------------------------------------------------------
# Inputs


def make_inputs(inp: InputSpec, device: str = "cpu") -> tuple["torch.Tensor", ...]:
    """The model's positional inputs: seeded values on CPU, empty tensors on meta."""
    import torch

    if device not in DEVICES:
        raise ReconcileError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    dtype = _torch_dtype(inp.dtype)
    if device == "meta":
        return (torch.empty(inp.shape, dtype=dtype, device="meta"),)
    gen = torch.Generator().manual_seed(0)
    if inp.dtype in _INTEGER_DTYPES:
        high = inp.high if inp.high is not None else _DEFAULT_HIGH
        x = torch.randint(0, high, inp.shape, generator=gen, dtype=dtype)
    else:
        # Drawn in float32 and cast, so a float16 input holds the same values rounded.
        x = torch.randn(inp.shape, generator=gen, dtype=torch.float32).to(dtype)
    return (x.to(device),)


def _torch_dtype(name: str) -> "torch.dtype":
    import torch

    return {
        "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
        "float64": torch.float64, "long": torch.long, "int32": torch.int32,
    }[name]
