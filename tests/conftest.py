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
