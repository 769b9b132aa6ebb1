"""Runs shared between test files, made once per session (``make test`` is one session).

Each fixture here holds the result of an expensive step that more than one test file checks, so
the step runs once; every test still makes its own assertions on it."""

from __future__ import annotations

import os
import tempfile

import pytest

# ``make test`` runs the files on pytest-xdist workers (``-n``, one file per worker at a time). Each
# worker gets a temporary folder of its own, before anything asks tempfile for it, and its
# subprocesses inherit it through TMPDIR: a test that checks a run left nothing in the temporary
# folder then sees only its own worker's runs, never a folder another worker's run holds open.
# The name is short ("/tmp/w0" and 8 characters: 15 bytes, 16 from worker 10 on), so a local Ray
# instance's sockets fit under it (executors._short_temp_dir: at most 16 bytes; "rt-gw0-" and 8
# made 20, and every Ray test of that worker failed on Ray's 107-byte socket path limit).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_WORKER_TMP = None
if _WORKER:
    import shutil
    from multiprocessing import util as _mp_util

    _WORKER_TMP = tempfile.mkdtemp(prefix=f"w{_WORKER.removeprefix('gw')}")
    os.environ["TMPDIR"] = tempfile.tempdir = _WORKER_TMP
    # removed as the worker exits, after multiprocessing has removed its own pymp-* folder from it
    # (that finalizer has priority -100; removing the folder earlier made it print a traceback)
    _mp_util.Finalize(None, shutil.rmtree, args=(_WORKER_TMP, True), exitpriority=-200)


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


# The files that take longest (whole zoo and end-to-end runs), first: pytest-xdist hands files to
# workers in this order (``--no-loadscope-reorder``), so no worker is left with a long file at the
# end while the other has finished. The Ray, signal and fault files (mostly waiting: test_ray_lockdown
# 89 s of wall time for 19 CPU-s) come right after the real-world sample (CPU-bound, 241 CPU-s), so
# the other worker waits beside it rather than beside another waiting file (2026-12-07, beside a
# niced zoo: the sample 243 -> 176 s, the whole run 12 min 3 s -> 11 min 46 s). The rest keep their
# order.
FIRST = ("test_zoo_realworld.py", "test_ray_lockdown.py", "test_ray.py", "test_kill.py", "test_faults.py",
         "test_zoo_tools.py", "test_reports.py", "test_models.py", "test_zoo_native.py")


def pytest_collection_modifyitems(session, config, items):
    if not _WORKER:  # one process: the files' own order
        return
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))
