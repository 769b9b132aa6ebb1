"""The native counter against torchvision's published figures, for all 80 classification models.

``weights.meta["_ops"]`` is GMACs to 3 decimals (conv + matmul-family MACs, batch 1, at the
weights' eval crop) and ``meta["num_params"]`` is exact: both are references nobody here computed.
"""

from __future__ import annotations

import pytest
import torchvision
from torchvision.models import get_model_weights, list_models

from reconcile import models
from reconcile.counter import count
from reconcile.zoo_table import TORCHVISION

NAMES = sorted(list_models(module=torchvision.models))


def test_table_matches_torchvision():
    assert sorted(TORCHVISION) == NAMES
    for name in NAMES:
        w = list(get_model_weights(name))[0]
        assert TORCHVISION[name] == (f"{type(w).__name__}.{w.name}", w.transforms.keywords["crop_size"],
                                     w.meta["_ops"], w.meta["num_params"]), name


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_native_matches_published(name, built_on_meta):
    _, crop, ops, num_params = TORCHVISION[name]
    spec = models.resolve(name)
    inp = models.default_input(spec)
    assert inp.shape == (1, 3, crop, crop)
    # built by tests/test_models.py earlier in the session (the same models.build call), else here
    model = built_on_meta.pop(name, None)
    if model is None:
        model = models.build(spec, device="meta")
    result = count(model, models.make_inputs(inp, device="meta"), name=name)
    assert round(result.totals["macs"] / 1e9, 3) == ops
    assert result.totals["params"] == num_params
    assert result.totals["unknown_ops"] == 0, {r.name: r.unknown_ops for r in result.rows if r.unknown_ops}
