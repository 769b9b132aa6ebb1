"""Runs shared between test files, made once per session (``make test`` is one session).

Each fixture here holds the result of an expensive step that more than one test file checks, so
the step runs once; every test still makes its own assertions on it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def built_on_meta() -> dict:
    """torchvision models built on meta, by name: ``tests/test_models.py`` builds each of the 80
    (network blocked) and leaves it here after checking it; ``tests/test_zoo_native.py`` counts
    it, or builds it itself when run alone. Building the 80 is about half of their CPU time."""
    return {}


@pytest.fixture(autouse=True)
def _torch_as_it_was():
    """Puts back any function of ``torch``, ``torch.nn.functional`` or ``torch.Tensor`` a test's
    in-process tool run left patched. calflops, flops-profiler and DeepSpeed's profiler patch them
    and leave the patches when the model raises (flops-profiler on ``padding='same'``): reconcile
    runs every job in its own process, but a test that runs an adapter in pytest's process would
    otherwise hand its patches to every later test (a later ptflops count doubled)."""
    import torch
    import torch.nn.functional as F

    saved = [(owner, dict(vars(owner))) for owner in (torch, F, torch.Tensor)]
    yield
    for owner, before in saved:
        for name, value in before.items():
            if vars(owner).get(name) is not value:
                try:
                    setattr(owner, name, value)
                except (AttributeError, TypeError):  # read-only slots are not what tools patch
                    pass
