"""Rollups: the pure arithmetic, and the SQL job against it on real databases."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.storage.samples import DAY_MS, T0_MS, day_of_samples
from virtwatch.core.percentile import percentile
from virtwatch.storage import rollup
from virtwatch.storage.models import MetricHour, MetricMinute, MetricSample, RollupState
from virtwatch.storage.rollup import HOUR_MS, MINUTE_MS, Aggregate, Tier
from virtwatch.storage.rows import SampleRow
from virtwatch.storage.store import Store

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 10 * HOUR_MS), finite), min_size=1, max_size=200
    ),
    st.sampled_from([MINUTE_MS, HOUR_MS]),
)
def test_aggregate_partitions_the_samples(
    samples: list[tuple[int, int, float]], width: int
) -> None:
    aggs = rollup.aggregate(samples, width)
    assert sum(a.count for a in aggs) == len(samples)
    assert [(a.metric_id, a.ts_ms) for a in aggs] == sorted({(a.metric_id, a.ts_ms) for a in aggs})
    for a in aggs:
        assert a.ts_ms % width == 0
        members = [v for m, t, v in samples if m == a.metric_id and a.ts_ms <= t < a.ts_ms + width]
        assert a.count == len(members)
        assert (a.min, a.max, a.p95) == (min(members), max(members), percentile(members, 95))
        assert math.isclose(a.sum, math.fsum(members), rel_tol=1e-12, abs_tol=1e-6)


@given(st.integers(0, 10**13), st.one_of(st.none(), st.integers(0, 10**13)))
def test_rollup_bound_never_passes_a_pending_sample(now: int, pending: int | None) -> None:
    for width in (MINUTE_MS, HOUR_MS):
        bound = rollup.rollup_bound(now, pending, width, rollup.DEFAULT_GRACE_MS)
        assert bound % width == 0
        assert bound <= now - rollup.DEFAULT_GRACE_MS
        if pending is not None:
            assert bound <= pending


async def _tier_rows(store: Store, model: type[MetricMinute] | type[MetricHour]) -> list[Aggregate]:
    async with store.reader.connect() as conn:
        result = await conn.execute(
            select(
                model.metric_id,
                model.ts_ms,
                model.count,
                model.sum,
                model.min,
                model.max,
                model.p95,
            ).order_by(model.metric_id, model.ts_ms)
        )
        return [Aggregate(*row) for row in result]


async def _raw_count(store: Store) -> int:
    async with store.reader.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(MetricSample))).scalar_one()
        )


def _oracle(store: Store, rows: list[SampleRow], width: int) -> list[Aggregate]:
    ids = store._metric_ids
    return rollup.aggregate(
        [(ids[(r.host, r.vm_uuid, r.metric)], r.ts_ms, r.value) for r in rows], width
    )


def _same(got: list[Aggregate], want: list[Aggregate]) -> None:
    assert [(a.metric_id, a.ts_ms, a.count, a.min, a.max, a.p95) for a in got] == [
        (a.metric_id, a.ts_ms, a.count, a.min, a.max, a.p95) for a in want
    ]
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g.sum, w.sum, rel_tol=1e-9, abs_tol=1e-6)


async def test_a_simulated_day_rolls_up_exactly(store_url: str) -> None:
    """The sum of counts in each tier equals the raw count, and every bucket's
    count, sum, min, max and p95 equal the pure definition's."""
    rows = day_of_samples(vms=2)  # 2 VMs x 2 metrics x 43,200 samples
    async with Store(store_url) as store:
        for start in range(0, len(rows), 20_000):
            await store.write(rows[start : start + 20_000])
        steps = await rollup.rollup(store, ["hv1"], now_ms=T0_MS + DAY_MS + HOUR_MS)
        assert {s.tier for s in steps} == {Tier.MINUTE, Tier.HOUR}
        raw = await _raw_count(store)
        minutes = await _tier_rows(store, MetricMinute)
        hours = await _tier_rows(store, MetricHour)
        assert raw == len(rows)
        assert sum(a.count for a in minutes) == raw
        assert sum(a.count for a in hours) == raw
        assert len(minutes) == 4 * 1440
        assert len(hours) == 4 * 24
        _same(minutes, _oracle(store, rows, MINUTE_MS))
        _same(hours, _oracle(store, rows, HOUR_MS))
        marks = await rollup.watermarks(store)
        now = T0_MS + DAY_MS + HOUR_MS
        for tier in Tier:
            bound = rollup.rollup_bound(now, None, tier.width_ms, rollup.DEFAULT_GRACE_MS)
            assert marks[("hv1", tier)] == bound >= T0_MS + DAY_MS


async def test_rollup_is_incremental_and_never_counts_twice(store_url: str) -> None:
    rows = day_of_samples(vms=1, metrics=("cpu_pct",), span_ms=3 * HOUR_MS)
    async with Store(store_url) as store:
        await store.write(rows)
        # in small steps, as the writer does every minute, then again at the same time
        for now in range(T0_MS + 5 * MINUTE_MS, T0_MS + 4 * HOUR_MS, 7 * MINUTE_MS):
            await rollup.rollup(store, ["hv1"], now_ms=now, max_steps=1)
        final = T0_MS + 4 * HOUR_MS
        await rollup.rollup(store, ["hv1"], now_ms=final)
        assert await rollup.rollup(store, ["hv1"], now_ms=final) == []
        _same(await _tier_rows(store, MetricMinute), _oracle(store, rows, MINUTE_MS))
        _same(await _tier_rows(store, MetricHour), _oracle(store, rows, HOUR_MS))


async def test_catch_up_after_a_gap(store_url: str) -> None:
    """Recorder down for five hours: the first run afterwards consumes the rest of the
    data before the gap, skips the gap, and rolls up what came after it."""
    before = day_of_samples(vms=1, metrics=("cpu_pct",), span_ms=90 * MINUTE_MS)
    after = day_of_samples(
        vms=1, metrics=("cpu_pct",), start_ms=T0_MS + 7 * HOUR_MS, span_ms=HOUR_MS
    )
    async with Store(store_url) as store:
        await store.write(before)
        # the recorder rolled up to 01:00 and stopped at 01:30
        await rollup.rollup(store, ["hv1"], now_ms=T0_MS + HOUR_MS + rollup.DEFAULT_GRACE_MS)
        assert sum(a.count for a in await _tier_rows(store, MetricMinute)) == 1800
        assert await _tier_rows(store, MetricHour) != []
        await store.write(after)  # back at 07:00, recording until 08:00
        steps = await rollup.rollup(store, ["hv1"], now_ms=T0_MS + 9 * HOUR_MS)
        assert all(s.start_ms < s.end_ms for s in steps)
        both = before + after
        minutes = await _tier_rows(store, MetricMinute)
        _same(minutes, _oracle(store, both, MINUTE_MS))
        _same(await _tier_rows(store, MetricHour), _oracle(store, both, HOUR_MS))
        hours_present = sorted({(a.ts_ms - T0_MS) // HOUR_MS for a in minutes})
        assert hours_present == [0, 1, 7]  # nothing invented for the gap


async def test_minutes_still_pending_in_the_writer_are_not_rolled(store_url: str) -> None:
    rows = day_of_samples(vms=1, metrics=("cpu_pct",), span_ms=10 * MINUTE_MS)
    async with Store(store_url) as store:
        await store.write(rows)
        pending = T0_MS + 6 * MINUTE_MS + 30_000  # a sample of minute 6 is not written yet
        await rollup.rollup(store, ["hv1"], now_ms=T0_MS + HOUR_MS, oldest_pending_ms=pending)
        minutes = await _tier_rows(store, MetricMinute)
        assert max(a.ts_ms for a in minutes) == T0_MS + 5 * MINUTE_MS
        async with store.reader.connect() as conn:
            marks = dict(
                (await conn.execute(select(RollupState.tier, RollupState.watermark_ms))).all()
            )
        assert marks["minute"] == T0_MS + 6 * MINUTE_MS
        assert "hour" not in marks  # the hour is not complete either: nothing consumed
        assert await _tier_rows(store, MetricHour) == []


async def test_hosts_roll_up_independently(store_url: str) -> None:
    a = day_of_samples(host="hv-a", vms=1, metrics=("cpu_pct",), span_ms=HOUR_MS)
    b = day_of_samples(host="hv-b", vms=1, metrics=("cpu_pct",), span_ms=2 * HOUR_MS, seed=3)
    async with Store(store_url) as store:
        await store.write(a + b)
        await rollup.rollup(store, ["hv-a"], now_ms=T0_MS + 3 * HOUR_MS)
        minutes = await _tier_rows(store, MetricMinute)
        assert sum(m.count for m in minutes) == len(a)
        await rollup.rollup(
            store, await rollup.hosts_with_samples(store), now_ms=T0_MS + 3 * HOUR_MS
        )
        counts = Counter(h for (h, _t) in (await rollup.watermarks(store)))
        assert counts == {"hv-a": 2, "hv-b": 2}
        assert sum(m.count for m in await _tier_rows(store, MetricMinute)) == len(a) + len(b)


async def test_hosts_nobody_records_any_more_are_found(store_url: str) -> None:
    old = day_of_samples(host="hv-gone", vms=1, metrics=("cpu_pct",), span_ms=HOUR_MS)
    live = day_of_samples(host="hv-live", vms=1, metrics=("cpu_pct",), span_ms=3 * HOUR_MS)
    async with Store(store_url) as store:
        await store.write(old + live)
        quiet = T0_MS + 2 * HOUR_MS
        assert await rollup.idle_hosts(store, quiet_since_ms=quiet) == ["hv-gone"]
        assert sorted(await rollup.idle_hosts(store, quiet_since_ms=T0_MS)) == []
