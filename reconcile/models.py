"""Model specs: what the user names, what input it gets, and how it is built.

A spec names a model of one source (``reconcile.sources``): a torchvision classification model
(``resnet18``), a timm model (``timm:convnext_atto``), a transformers model built from its
config (``hf:LlamaForCausalLM:num_hidden_layers=4``), or ``package.module:callable``.
Guarantees:

- ``resolve`` validates a spec without building anything (and, for torchvision and timm names,
  without importing torch).
- ``build`` returns the model in eval mode on the requested device ("meta" or "cpu"), never
  downloads anything and never pays for random weight initialization. The model is the same on
  both devices: the same modules, the same tensors shared (tied weights stay tied), the same
  buffers (on CPU they hold what the model's own code computed, e.g. index tables).
- On "cpu" every parameter holds a deterministic value: values never matter for counting, but
  uninitialized memory can hold NaN or denormals that slow the tools down.
- Every patch made while building is undone before ``build`` returns, even on error.
- Mistakes a user can fix raise ``ReconcileError`` with a one-line message.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from reconcile.errors import ReconcileError
from reconcile.inputs import (  # noqa: F401 - re-exported: the model layer's public names
    DTYPES,
    InputSpec,
    Inputs,
    check_inputs,
    describe as describe_inputs,
    make_inputs,
    model_dtype,
    parse_dtype,
    parse_input,
    parse_input_shape,
    torch_dtype,
    with_dtype,
)
from reconcile.config import DEVICES, MODES  # noqa: F401 - checked in RunConfig, used by build
from reconcile.sources import PREFIXES, SOURCES, source

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

KINDS = tuple(SOURCES)

# The build patches process globals (torch.nn.init, WeightsEnum, Module.load_state_dict);
# two threads building at once would restore each other's patches out of order.
_BUILD_LOCK = threading.RLock()


@dataclass(frozen=True)
class ModelSpec:
    text: str  # what the user typed
    kind: str  # one of KINDS
    name: str  # canonical name: "resnet18", "timm:vit_tiny_patch16_224", "hf:BertModel", "pkg.mod:fn"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ModelSpec.kind must be one of {KINDS}, got {self.kind!r}")


# ---------------------------------------------------------------------------------------------
# Parsing and resolving


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
            "(see `reconcile models`), timm:NAME, hf:ClassName or package.module:callable"
        )
    return specs


def resolve(spec: str, *, check: bool = True) -> ModelSpec:
    """Validate ``spec`` without building anything. ``check=False`` checks only what needs no
    import (a transformers class and its config keys are then checked where the model is built)."""
    text = spec
    spec = (spec or "").strip()
    if not spec:
        raise ReconcileError(
            "empty model spec: give a torchvision name (see `reconcile models`), timm:NAME, "
            "hf:ClassName or package.module:callable"
        )
    prefix, colon, body = spec.partition(":")
    if colon and prefix.lower() in PREFIXES:
        kind = PREFIXES[prefix.lower()]
        if not body.strip():
            raise ReconcileError(f"empty model name after {prefix}: e.g. timm:resnet50 or hf:BertModel")
        return ModelSpec(text=text, kind=kind, name=source(kind).resolve(body.strip(), check=check))
    if colon:
        return ModelSpec(text=text, kind="callable", name=source("callable").resolve(spec))
    return ModelSpec(text=text, kind="torchvision", name=source("torchvision").resolve(spec))


def torchvision_names() -> list[str]:
    return source("torchvision").names()


def published(spec: ModelSpec | str) -> dict[str, Any]:
    """Figures published for the model (torchvision: weights, crop_size, _ops, num_params)."""
    if isinstance(spec, str):
        return source("torchvision").published(spec)
    return source(spec.kind).published(spec.name)


def default_inputs(spec: ModelSpec) -> Inputs:
    """The inputs a model is counted on when the user gives none."""
    return check_inputs(source(spec.kind).default_inputs(spec.name))


def default_input(spec: ModelSpec) -> InputSpec:
    """The first default input (a single-input model's only one)."""
    return default_inputs(spec)[0]


# ---------------------------------------------------------------------------------------------
# Building


def build(spec: ModelSpec, device: str = "meta") -> "torch.nn.Module":
    """Build ``spec`` in eval mode on ``device`` ("meta" or "cpu") without initializing weights."""
    if device not in DEVICES:
        raise ReconcileError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    factory = source(spec.kind).factory(spec.name)

    def checked() -> "torch.nn.Module":
        model = factory()
        _check_module(spec, model)
        return model

    with _BUILD_LOCK:
        try:
            model = (_build_meta if device == "meta" else _build_cpu)(spec.name, checked)
        except ReconcileError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model's own code failed: say so, don't crash
            if spec.kind == "callable":
                raise source("callable").build_failed(spec.name, exc) from exc
            raise ReconcileError(f"building {spec.name} raised {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from exc
    return model.eval()


def _build_meta(name: str, factory: Callable[[], Any]) -> "torch.nn.Module":
    """Under ``torch.device("meta")``, where initialization costs nothing. Builders that compute
    on tensors (RegNet's block widths, a factory calling .item()) cannot run there: they are
    built on CPU (with init skipped) and moved to meta, which keeps tied tensors tied."""
    import torch

    try:
        with torch.device("meta"):
            model = factory()
    except ReconcileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on meta means: try a real device
        log.info("%s does not build on meta (%s: %s); building on CPU", name, type(exc).__name__, exc)
        model = _build_cpu(name, factory, fill=False)
    if any(t.device.type != "meta" for t in _tensors(model)):
        model = model.to("meta")
    return model


def _build_cpu(name: str, factory: Callable[[], Any], fill: bool = True) -> "torch.nn.Module":
    """A real build (buffers computed by the model's own code, ties made by it) with
    ``torch.nn.init`` skipped; plainly if that fails, since skipped init leaves garbage that code
    inspecting its weights may reject. Then every parameter gets a deterministic value."""
    try:
        with _init_skipped():
            model = factory()
    except ReconcileError:
        raise
    except Exception as exc:  # noqa: BLE001
        from reconcile import memory

        if memory.failed_allocation(exc):  # out of memory: so would the plain build be, after its init
            raise
        log.info("%s does not build with init skipped (%s: %s); building plainly",
                 name, type(exc).__name__, exc)
        model = factory()
    if any(t.device.type != "cpu" for t in _tensors(model)):
        model = model.to("cpu")
    if fill:
        _fill(model)
    return model


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


def _tensors(model: "torch.nn.Module") -> Iterator["torch.Tensor"]:
    yield from model.parameters()
    yield from model.buffers()


def _fill(model: "torch.nn.Module") -> None:
    """Give every floating parameter a cheap deterministic value (buffers keep what the model
    computed: index tables, masks, running statistics).

    A matrix or kernel gets 1/fan_in, so a plain layer's output stays at the scale of its
    input. One constant for all would scale activations by constant * fan_in per layer: 0.01 on
    VGG-16's 3x3x512 convs multiplies by 0.01 * 4608 = 46 each time, while a small fan_in
    shrinks them towards denormals. (Residual sums still grow, about 2x per block: ResNet-152's
    logits reach ~4e13, finite in float32.) Norm scales get 1, everything else 0.
    """
    import torch

    with torch.no_grad():
        for name, t in model.named_parameters():  # each tied tensor once
            if t.dtype.is_floating_point:
                if t.dim() >= 2:
                    value = 1.0 / max(1, t.numel() // t.shape[0])
                elif name.endswith("weight"):
                    value = 1.0
                else:
                    value = 0.0
                t.fill_(value)
            else:
                t.zero_()
        for name, b in model.named_buffers():
            # uninitialized running statistics (init skipped) would be garbage; keep computed ones
            if b.dtype.is_floating_point and not torch.isfinite(b).all():
                b.fill_(1.0 if name.endswith("running_var") else 0.0)


# ---------------------------------------------------------------------------------------------
# Running


def prepare(model: "torch.nn.Module", inputs: Sequence[InputSpec], device: str,
            mode: str = "eval") -> tuple["torch.nn.Module", tuple[Any, ...]]:
    """The model in ``mode`` and in its inputs' floating dtype, and its positional arguments.

    ``--input-dtype bfloat16`` runs the model in bfloat16 too (casting only the input would make
    every layer fail on mixed dtypes); integer inputs (token ids) leave the model as built."""
    if mode not in MODES:
        raise ReconcileError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    dtype = model_dtype(inputs)
    if dtype is not None:
        model = model.to(torch_dtype(dtype))
    model.train(mode == "train")
    return model, make_inputs(inputs, device, model)
