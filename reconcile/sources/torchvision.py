"""torchvision classification models, built as their first published weights define them
(num_classes, transform_input, googlenet's dropped aux heads, vit_h_14 at 518 px) without
downloading those weights, so parameter counts equal ``weights.meta["num_params"]``. Names,
crops and published figures come from the generated ``zoo_table`` (no ``import torch``)."""

from __future__ import annotations

import contextlib
import difflib
from typing import Any, Callable, Iterator

from reconcile.errors import ReconcileError
from reconcile.inputs import InputSpec


def names() -> list[str]:
    """The classification models of ``torchvision.models``, sorted (from ``zoo_table``, which a
    test checks against torchvision)."""
    from reconcile.zoo_table import TORCHVISION

    return sorted(TORCHVISION)


def published(name: str) -> dict[str, Any]:
    """torchvision's published figures for a model's first weights: weights, crop, _ops, num_params."""
    from reconcile.zoo_table import TORCHVISION

    weights, crop, ops, num_params = TORCHVISION[name]
    return {"weights": weights, "crop_size": crop, "_ops": ops, "num_params": num_params}


def resolve(body: str, check: bool = True) -> str:
    known = names()
    if body in known:
        return body
    lowered = {n.lower(): n for n in known}
    if body.lower() in lowered:
        return lowered[body.lower()]
    raise ReconcileError(_unknown_model_message(body, known))


def _unknown_model_message(spec: str, known: list[str]) -> str:
    import torchvision  # only on this error path

    from reconcile.sources.timm import table as timm_table

    if spec in torchvision.models.list_models():
        return (f"{spec!r} is a torchvision model but not a classification model: "
                "wrap it in a factory and pass package.module:callable")
    if spec in timm_table():
        return f"unknown model {spec!r}: torchvision has no such model, timm does: write timm:{spec}"
    close = difflib.get_close_matches(spec.lower(), known, n=3)
    if close:
        return f"unknown model {spec!r}: did you mean {', '.join(close)}? (see `reconcile models`)"
    if "." in spec:
        module, _, attr = spec.rpartition(".")
        return (f"unknown model {spec!r}: to load a callable separate module and name with a colon, "
                f"e.g. {module}:{attr}")
    return (f"unknown model {spec!r}: not a torchvision classification model (see `reconcile models`); "
            "write timm:NAME for a timm model, hf:ClassName for a transformers model, or "
            "package.module:callable for your own")


def default_inputs(name: str) -> tuple[InputSpec, ...]:
    size = published(name)["crop_size"]  # the first weights' eval crop
    return (InputSpec((1, 3, size, size)),)


def factory(name: str) -> Callable[[], Any]:
    def build() -> Any:
        import torchvision
        from torchvision.models import get_model_weights

        # The first member is the oldest published checkpoint: the configuration the model is
        # known by and the one its meta["num_params"] and eval crop describe.
        weights = list(get_model_weights(name))[0]
        with _weights_without_download():
            return torchvision.models.get_model(name, weights=weights)

    return build


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
