"""``--hardware local``'s cache (``reconcile.roofline.local``): reused only while it is recent and
was measured on a quiet machine, and the platform always says when its figures were measured and
whether they came from the cache (issue 21: a busy moment stored DRAM 15.5 GB/s, then 10.6, and it
was reused later without a word). ``measure`` is replaced by a fake that records its calls: the
real one takes half a minute."""

from __future__ import annotations

import datetime
import json

import pytest
import torch

from reconcile.roofline import local

NOW = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.timezone.utc)


def _entry(at: datetime.datetime | None, share: float | None, bandwidth: float = 2e10) -> dict:
    entry = {"dtype": "float32", "peak_flops": 1e11, "bandwidth": bandwidth, "matmul": "m", "copy": "c",
             "cache_bytes": None, "cache_bandwidth": None, "cache": "k", "threads": torch.get_num_threads(),
             "torch": torch.__version__, "date": "2026-12-01"}
    if at is not None:
        entry["measured_at"] = at.isoformat()
    if share is not None:
        entry["cpu_share"] = share
    return entry


@pytest.mark.parametrize("at, share, why", [
    (NOW - datetime.timedelta(hours=3), 0.97, ""),  # recent and quiet: reused
    (NOW - datetime.timedelta(days=6, hours=23), 0.97, ""),
    (NOW - datetime.timedelta(days=8), 0.97, "measured 8 days ago (more than 7)"),
    (NOW - datetime.timedelta(hours=1), 0.15, "busy then (its threads got 15% of their CPU time)"),
    (None, None, "does not say when it was measured"),  # the format before: measured again
])
def test_when_a_cached_measurement_is_taken_again(at, share, why):
    got = local.stale(_entry(at, share), NOW)
    assert (why in got) if why else got == ""


def _cache(tmp_path) -> dict:
    return json.loads((tmp_path / "reconcile" / "local-hardware.json").read_text())


def _key() -> str:
    return f"float32/threads={torch.get_num_threads()}/torch={torch.__version__}/{local.METHOD}"


@pytest.mark.parametrize("age, share, measured_again", [
    (datetime.timedelta(minutes=30), 0.95, False),
    (datetime.timedelta(days=30), 0.95, True),
    (datetime.timedelta(minutes=30), 0.2, True),
])
def test_the_cache_is_never_reused_silently(tmp_path, monkeypatch, age, share, measured_again):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    now = datetime.datetime.now(datetime.timezone.utc)
    (tmp_path / "reconcile").mkdir()
    (tmp_path / "reconcile" / "local-hardware.json").write_text(json.dumps({_key(): _entry(now - age, share, 1e10)}))
    calls = []

    def fake(dtype, repeat=5):
        calls.append(dtype)
        return _entry(now, 0.96, 2e10)  # a fresh, quiet measurement: DRAM 20 GB/s

    monkeypatch.setattr(local, "measure", fake)
    plat = local.platform("float32")
    assert calls == (["float32"] if measured_again else [])
    # the figures used are the fresh ones when measured again, else the cached 10 GB/s
    assert plat.bandwidth == (2e10 if measured_again else 1e10)
    assert _cache(tmp_path)[_key()]["bandwidth"] == plat.bandwidth
    # the name (every rendering shows it) says when, and whether from the cache
    assert "measured " in plat.name and "UTC" in plat.name
    assert ("from the cache" in plat.name) == (not measured_again)
    if not measured_again:
        assert "30 min ago" in plat.name


def test_a_busy_measurement_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    now = datetime.datetime.now(datetime.timezone.utc)
    monkeypatch.setattr(local, "measure", lambda dtype, repeat=5: _entry(now, 0.3))
    plat = local.platform("float32")
    assert "on a busy machine (30% of its CPU time): low figures, measured again next time" in plat.name
    calls = []
    monkeypatch.setattr(local, "measure", lambda dtype, repeat=5: calls.append(dtype) or _entry(now, 0.9))
    again = local.platform("float32")  # the busy one is not reused
    assert calls == ["float32"] and "busy" not in again.name


def test_measure_records_when_and_how_busy(monkeypatch):
    # the real measurement, its kernels cut to one tiny matmul and stream so it takes a moment
    monkeypatch.setattr(local, "MATMUL_SIZES", (64,))
    monkeypatch.setattr(local, "CONV_SHAPES", ())
    monkeypatch.setattr(local, "COPY_BYTES", 2**20)
    monkeypatch.setattr(local, "BUDGET", 0.05)
    monkeypatch.setattr(local, "SHORT_BUDGET", 0.01)
    monkeypatch.setattr(local, "last_level_cache", lambda: None)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    entry = local.measure("float32", repeat=2)
    at = datetime.datetime.fromisoformat(entry["measured_at"])
    assert before <= at <= datetime.datetime.now(datetime.timezone.utc)
    # a share of the threads' CPU time: above 0, and at most 1 plus rounding and Python's own
    # threads (a process cannot use more CPU time than its threads have wall time)
    assert 0 < entry["cpu_share"] <= 1.5
    assert entry["cpus"] >= 1 and (entry["load"] is None or entry["load"] >= 0)
