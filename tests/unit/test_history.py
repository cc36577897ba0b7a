"""The metric rings: bounded, ordered, two tiers, gaps never become zeros."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.canned import NOW, fleet_snapshot
from virtwatch.core.collect.history import HOST, MetricHistory, Ring, Series


def test_a_ring_keeps_the_newest_points_in_order() -> None:
    r = Ring(3)
    assert r.points() == []
    assert r.oldest() is None
    assert r.newest() is None
    for i in range(5):
        r.append(float(i), float(10 * i))
    assert len(r) == 3
    assert r.points() == [(2.0, 20.0), (3.0, 30.0), (4.0, 40.0)]
    assert r.points(since=3.0) == [(3.0, 30.0), (4.0, 40.0)]
    assert r.last_values(2) == [30.0, 40.0]
    assert r.last_values(10) == [20.0, 30.0, 40.0]
    assert r.oldest() == 2.0
    assert r.newest() == (4.0, 40.0)


def test_a_ring_needs_room() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Ring(0)


@given(st.integers(1, 50), st.lists(st.floats(0, 1e6, allow_nan=False), max_size=200))
def test_a_ring_is_the_tail_of_what_was_appended(capacity: int, values: list[float]) -> None:
    r = Ring(capacity)
    for i, v in enumerate(values):
        r.append(float(i), v)
    tail = values[-capacity:] if values else []
    got = [v for _t, v in r.points()]
    assert len(got) == len(tail)
    for a, b in zip(got, tail, strict=True):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-3)  # stored as float32
    assert [t for t, _v in r.points()] == [float(i) for i in range(len(values))][-capacity:]


def test_series_falls_back_to_bucket_means_beyond_the_fine_ring() -> None:
    s = Series(fine_points=10, coarse_points=100, bucket_s=10.0)
    for i in range(100):  # one sample a second, value = second
        s.add(float(i), float(i))
    assert s.points(since=95.0) == [(float(t), float(t)) for t in range(95, 100)]
    pts = s.points(since=0.0)
    fine_start = 90.0
    coarse = [p for p in pts if p[0] < fine_start]
    assert coarse[0] == (5.0, 4.5)  # bucket [0, 10): mean 4.5 drawn at its middle
    assert len(coarse) == 9
    assert pts[-10:] == [(float(t), float(t)) for t in range(90, 100)]


def test_history_records_vm_and_host_metrics_and_skips_unknowns() -> None:
    h = MetricHistory(fine_points=5)
    snap = fleet_snapshot()
    h.record(snap)
    web01 = "10000000-0000-4000-8000-000000000001"
    [(t, v)] = h.series(snap.host, web01, "cpu_pct", since=0)
    assert t == NOW
    assert v == pytest.approx(23.4)
    assert h.series(snap.host, HOST, "host.cpu_pct", since=0) == [(NOW, 31.5)]
    rdp = "10000000-0000-4000-8000-000000000011"  # CPU unknown: no point, not a zero
    assert h.series(snap.host, rdp, "cpu_pct", since=0) == []
    assert "mem_alloc_kib" in h.metrics(snap.host, rdp)
    assert h.sparkline(snap.host, web01, "cpu_pct", 8) == [pytest.approx(23.4)]
    assert h.sparkline("nowhere", web01, "cpu_pct", 8) == []


def test_history_forgets_vms_that_left_long_ago() -> None:
    h = MetricHistory(forget_after_s=60)
    snap = fleet_snapshot()
    h.record(snap)
    later = dataclasses.replace(snap, domains=snap.domains[:1], taken_at=NOW + 120)
    h.record(later)
    assert (snap.host, snap.domains[0].uuid) in h.tracked()
    assert (snap.host, snap.domains[1].uuid) not in h.tracked()


def test_covers_says_when_the_rings_reach_back_far_enough() -> None:
    h = MetricHistory(fine_points=10, bucket_s=15)
    snap = fleet_snapshot()
    for i in range(10):
        h.record(dataclasses.replace(snap, taken_at=NOW + 2 * i, domains=tuple(
            d._replace(measured_at=NOW + 2 * i) for d in snap.domains
        )))  # fmt: skip
    uuid = snap.domains[0].uuid
    assert h.covers(snap.host, uuid, "mem_alloc_kib", NOW)
    assert not h.covers(snap.host, uuid, "mem_alloc_kib", NOW - 300)
    assert not h.covers(snap.host, "missing", "cpu_pct", NOW)
