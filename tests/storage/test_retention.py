"""Retention: ages, the size cap, and the rule that unrolled raw data is never deleted."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.storage.samples import DAY_MS, T0_MS, day_of_samples
from virtwatch.core.config import ConfigError
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.records import DomainEvent, EventKind
from virtwatch.storage import retention, rollup
from virtwatch.storage.models import (
    DomainEventRow,
    ErrorLog,
    MetricHour,
    MetricMinute,
    MetricSample,
)
from virtwatch.storage.retention import DAY_S, HOUR_S, MIB, Retention
from virtwatch.storage.rollup import HOUR_MS, MINUTE_MS
from virtwatch.storage.settings import parse_storage
from virtwatch.storage.store import Store

T0 = T0_MS / 1000


@given(
    st.integers(0, 10**13),
    st.integers(0, 10**10),
    st.lists(st.one_of(st.none(), st.integers(0, 10**13)), min_size=1, max_size=3),
)
def test_raw_cutoff_never_passes_a_watermark(now: int, keep: int, marks: list[int | None]) -> None:
    cut = retention.raw_cutoff(now, keep, marks)
    if any(m is None for m in marks):
        assert cut is None
    else:
        assert cut is not None
        assert cut <= now - keep
        assert all(cut <= m for m in marks if m is not None)


async def _count(store: Store, model: type, where: object = None) -> int:
    q = select(func.count()).select_from(model)
    if where is not None:
        q = q.where(where)  # type: ignore[arg-type]
    async with store.reader.connect() as conn:
        return int((await conn.execute(q)).scalar_one())


async def test_unrolled_raw_data_is_never_deleted(store_url: str) -> None:
    """Three days of raw samples, none rolled up: however old, none may go."""
    rows = day_of_samples(vms=1, metrics=("cpu_pct",), span_ms=3 * DAY_MS, step_ms=60_000)
    policy = Retention(raw_s=HOUR_S)
    now = T0 + 3 * DAY_S
    async with Store(store_url) as store:
        await store.write(rows)
        report = await retention.apply(store, policy, now=now)
        assert report.deleted.get("metric_sample", 0) == 0
        assert await _count(store, MetricSample) == len(rows)
        # only the minute tier caught up: still nothing goes (the hour tier needs it)
        until = T0_MS + 3 * DAY_MS
        while await rollup.rollup_step(store, "hv1", rollup.Tier.MINUTE, until, now_ms=until):
            pass
        await retention.apply(store, policy, now=now)
        assert await _count(store, MetricSample) == len(rows)
        # half a day of hours consumed: exactly the raw rows below that hour watermark go
        half = T0_MS + DAY_MS // 2
        while await rollup.rollup_step(store, "hv1", rollup.Tier.HOUR, half, now_ms=half):
            pass
        report = await retention.apply(store, policy, now=now)
        below = sum(1 for r in rows if r.ts_ms < half)
        assert report.deleted["metric_sample"] == below
        assert await _count(store, MetricSample) == len(rows) - below
        assert await _count(store, MetricSample, MetricSample.ts_ms < half) == 0
        # everything consumed: raw rows older than the policy's hour go, the rest stay
        await rollup.rollup(store, ["hv1"], now_ms=T0_MS + 3 * DAY_MS + HOUR_MS)
        await retention.apply(store, policy, now=now)
        keep_from = int(now * 1000) - HOUR_MS
        assert await _count(store, MetricSample) == sum(1 for r in rows if r.ts_ms >= keep_from)
        # and the tiers still hold every sample ever taken
        async with store.reader.connect() as conn:
            for model in (MetricMinute, MetricHour):
                total = (await conn.execute(select(func.sum(model.count)))).scalar_one()
                assert total == len(rows)


async def test_tiers_and_records_age_out(store_url: str) -> None:
    rows = day_of_samples(vms=1, metrics=("cpu_pct",), span_ms=10 * DAY_MS, step_ms=600_000)
    policy = Retention(
        raw_s=DAY_S, minute_s=2 * DAY_S, hour_s=5 * DAY_S, events_s=3 * DAY_S, errors_s=5 * DAY_S
    )
    now = T0 + 10 * DAY_S
    old_error = ErrorReport(
        AppError(ErrorCode.TIMEOUT, "slow", "wait"), "hv1", None, T0 + 3600, count=2
    )
    new_error = ErrorReport(AppError(ErrorCode.TIMEOUT, "slow", "wait"), "hv1", None, now - 60)
    events = [
        DomainEvent("hv1", "u", "vm", EventKind.LIFECYCLE, f"e{d}", T0 + d * DAY_S)
        for d in range(10)
    ]
    async with Store(store_url) as store:
        await store.write(rows, [old_error, new_error, *events])
        await rollup.rollup(store, ["hv1"], now_ms=int(now * 1000))
        await retention.apply(store, policy, now=now)
        now_ms = int(now * 1000)
        assert await _count(store, MetricSample, MetricSample.ts_ms < now_ms - DAY_MS) == 0
        assert await _count(store, MetricSample) > 0
        assert await _count(store, MetricMinute, MetricMinute.ts_ms < now_ms - 2 * DAY_MS) == 0
        assert await _count(store, MetricMinute) > 0
        assert await _count(store, MetricHour, MetricHour.ts_ms < now_ms - 5 * DAY_MS) == 0
        # five days of hours, less the last one: it ends at `now`, inside the grace period
        assert await _count(store, MetricHour) == 5 * 24 - 1
        assert await _count(store, DomainEventRow) == 3  # days 7, 8, 9
        assert await _count(store, ErrorLog) == 1  # the incident last seen 10 days ago went


async def test_the_size_cap_deletes_oldest_rolled_data_first(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cap.db'}"
    rows = day_of_samples(vms=4, metrics=("cpu_pct", "mem"), span_ms=DAY_MS // 2, step_ms=2000)
    unrolled = day_of_samples(
        host="hv2", vms=1, metrics=("cpu_pct",), span_ms=HOUR_MS, step_ms=1000, seed=9
    )
    now = T0 + DAY_S
    async with Store(url) as store:
        for i in range(0, len(rows), 20_000):
            await store.write(rows[i : i + 20_000])
        await store.write(unrolled)
        await rollup.rollup(store, ["hv1"], now_ms=int(now * 1000))
        used = await retention.used_bytes(store)
        size_before = await retention.file_bytes(store)
        assert used is not None
        assert size_before is not None
        cap = used // 2
        policy = Retention(max_size_bytes=cap)  # the ages alone would keep everything
        report = await retention.apply(store, policy, now=now)
        assert report.capped
        used_after = await retention.used_bytes(store)
        assert used_after is not None
        assert used_after <= cap
        # hv2 was never rolled up: every one of its raw samples is still there
        async with store.reader.connect() as conn:
            from virtwatch.storage.models import Metric

            hv2 = (
                await conn.execute(
                    select(func.count())
                    .select_from(MetricSample)
                    .join(Metric)
                    .where(Metric.host == "hv2")
                )
            ).scalar_one()
        assert hv2 == len(unrolled)
        # the oldest rolled raw data went first; the tiers still cover all of hv1
        assert report.deleted["metric_sample"] > 0
        assert "metric_minute" not in report.deleted
        assert report.vacuumed_pages > 0
        size_after = await retention.file_bytes(store)
        assert size_after is not None
        assert size_after < size_before


async def test_the_cap_then_takes_minutes_when_raw_is_gone(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cap2.db'}"
    rows = day_of_samples(vms=2, metrics=("cpu_pct",), span_ms=2 * DAY_MS, step_ms=30_000)
    now = T0 + 2 * DAY_S + 3600
    async with Store(url) as store:
        await store.write(rows)
        await rollup.rollup(store, ["hv1"], now_ms=int(now * 1000))
        await retention.apply(store, Retention(raw_s=HOUR_S), now=now)
        assert await _count(store, MetricSample) == 0
        minutes_before = await _count(store, MetricMinute)
        used = await retention.used_bytes(store)
        assert used is not None
        report = await retention.apply(store, Retention(max_size_bytes=used - 4096), now=now)
        assert report.capped
        assert not report.over_cap
        assert 0 < await _count(store, MetricMinute) < minutes_before
        async with store.reader.connect() as conn:
            oldest = (await conn.execute(select(func.min(MetricMinute.ts_ms)))).scalar_one()
        assert oldest >= T0_MS + DAY_MS  # the oldest day of minutes went first
        assert await _count(store, MetricHour) == 2 * 2 * 24  # hours untouched


def test_retention_is_configured_in_the_storage_section() -> None:
    section = tomllib.loads(
        "[storage]\nraw_hours = 6\nminute_days = 7\nhour_days = 365.5\nmax_size_mb = 512\n"
        "events_days = 30\nbuffer_rows = 5000\n"
    )["storage"]
    s = parse_storage(section)
    assert s.retention.raw_s == 6 * HOUR_S
    assert s.retention.minute_s == 7 * DAY_S
    assert s.retention.hour_s == int(365.5 * DAY_S)
    assert s.retention.events_s == 30 * DAY_S
    assert s.retention.errors_s == 90 * DAY_S  # untouched keys keep their defaults
    assert s.retention.max_size_bytes == 512 * MIB
    assert s.buffer_rows == 5000
    assert parse_storage({}).retention == Retention()


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("raw_hours = 0", "storage.raw_hours"),
        ('minute_days = "long"', "storage.minute_days"),
        ("max_size_mb = -1", "storage.max_size_mb"),
        ("buffer_rows = 10", "storage.buffer_rows"),
        ("db = 3", "storage.db"),
    ],
)
def test_a_bad_storage_value_names_its_key(toml: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        parse_storage(tomllib.loads(toml), Path("/etc/virtwatch.toml"))


def test_defaults_are_the_documented_ones() -> None:
    r = Retention()
    assert (r.raw_s, r.minute_s, r.hour_s) == (DAY_S, 30 * DAY_S, 730 * DAY_S)
    assert r.events_s == r.errors_s == r.audit_s == 90 * DAY_S
    assert MINUTE_MS == 60_000


async def test_a_big_backlog_goes_in_slices_that_each_commit(store_url: str) -> None:
    """With no time budget left, each run still deletes one slice, and says it is not
    done; repeated runs finish the job exactly as one unbounded run would."""
    rows = day_of_samples(vms=1, metrics=("cpu_pct",), span_ms=5 * DAY_MS, step_ms=600_000)
    now = T0 + 5 * DAY_S
    policy = Retention(raw_s=10 * DAY_S, minute_s=DAY_S)  # minutes go, a day a slice
    async with Store(store_url) as store:
        await store.write(rows)
        await rollup.rollup(store, ["hv1"], now_ms=int(now * 1000))
        before = await _count(store, MetricMinute)
        first = await retention.apply(store, policy, now=now, budget_s=0)
        assert not first.complete
        assert first.deleted["metric_minute"] > 0
        assert await _count(store, MetricMinute) == before - first.deleted["metric_minute"]
        runs = 1
        while not (await retention.apply(store, policy, now=now, budget_s=0)).complete:
            runs += 1
            assert runs < 10
        now_ms = int(now * 1000)
        assert await _count(store, MetricMinute, MetricMinute.ts_ms < now_ms - DAY_MS) == 0
        assert await _count(store, MetricMinute) > 0
