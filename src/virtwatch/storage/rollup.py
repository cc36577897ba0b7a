"""Rollups: raw samples -> per-minute and per-hour aggregates (count, sum, min, max, p95).

Pure functions define the arithmetic (`aggregate`, with core's nearest-rank
`percentile`); the job runs the same arithmetic in SQL (a window function for the
exact p95, INSERT ... SELECT, no rows through Python) per host and tier, in chunks,
each chunk committed together with the tier's watermark, so a crash never
double-counts and a restart catches up.
Both tiers read the raw samples (an exact p95 cannot be built from minute p95s).
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from virtwatch.core.percentile import percentile
from virtwatch.storage.models import Metric, MetricHour, MetricMinute, MetricSample, RollupState
from virtwatch.storage.store import Store

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
CHUNK_METRICS = 1000  # a host this big rolls up ten minutes per transaction
# a minute is rolled up once no sample of it can still arrive: ticks publish a few
# seconds after they are taken, and the writer never rolls past what it still holds
DEFAULT_GRACE_MS = 30_000


class Tier(enum.StrEnum):
    MINUTE = "minute"
    HOUR = "hour"

    @property
    def width_ms(self) -> int:
        return MINUTE_MS if self is Tier.MINUTE else HOUR_MS

    def chunk_ms(self, metrics: int) -> int:
        """How much raw time one transaction consumes: ten minutes (an hour) of a host
        with 1,000 metrics (~300,000 samples at 2 s), longer for smaller hosts, at most
        a day, so one transaction stays short and a catch-up takes few of them."""
        base = 10 * MINUTE_MS if self is Tier.MINUTE else HOUR_MS
        return min(DAY_MS, base * max(1, CHUNK_METRICS // max(1, metrics)))

    @property
    def model(self) -> type[MetricMinute] | type[MetricHour]:
        return MetricMinute if self is Tier.MINUTE else MetricHour


@dataclass(frozen=True, slots=True)
class Aggregate:
    metric_id: int
    ts_ms: int  # bucket start
    count: int
    sum: float
    min: float
    max: float
    p95: float

    @property
    def mean(self) -> float:
        return self.sum / self.count


def floor_to(ts_ms: int, width_ms: int) -> int:
    return ts_ms - ts_ms % width_ms


def aggregate(samples: Iterable[tuple[int, int, float]], width_ms: int) -> list[Aggregate]:
    """(metric_id, ts_ms, value) samples -> one Aggregate per (metric, bucket), sorted."""
    buckets: dict[tuple[int, int], list[float]] = defaultdict(list)
    for metric_id, ts_ms, value in samples:
        buckets[(metric_id, floor_to(ts_ms, width_ms))].append(value)
    return [
        Aggregate(mid, ts, len(vs), math.fsum(vs), min(vs), max(vs), percentile(vs, 95))
        for (mid, ts), vs in sorted(buckets.items())
    ]


def rollup_bound(now_ms: int, oldest_pending_ms: int | None, width_ms: int, grace_ms: int) -> int:
    """The exclusive end (bucket-aligned) up to which a tier may consume raw samples:
    past the grace period, and never past a sample still waiting to be written."""
    limit = now_ms - grace_ms
    if oldest_pending_ms is not None:
        limit = min(limit, oldest_pending_ms)
    return floor_to(limit, width_ms)


@dataclass(frozen=True, slots=True)
class RollupStep:
    host: str
    tier: Tier
    start_ms: int
    end_ms: int  # the new watermark
    rows: int  # aggregate rows written
    more: bool  # raw samples below the bound are still waiting for this tier


def _aggregate_select(host: str, width_ms: int, start_ms: int, end_ms: int) -> object:
    s = MetricSample
    bucket = s.ts_ms - s.ts_ms % width_ms
    part = (s.metric_id, bucket)
    ranked = (
        select(
            s.metric_id.label("metric_id"),
            bucket.label("ts_ms"),
            s.value.label("value"),
            func.row_number().over(partition_by=part, order_by=s.value).label("rn"),
            func.count().over(partition_by=part).label("n"),
        )
        .where(
            s.metric_id.in_(select(Metric.id).where(Metric.host == host)),
            s.ts_ms >= start_ms,
            s.ts_ms < end_ms,
        )
        .subquery("ranked")
    )
    r = ranked.c
    # rn is the nearest rank (core.percentile.nearest_rank(n, 95)), in integers:
    # 100 (rn - 1) < 95 n <= 100 rn
    at_rank = and_(100 * (r.rn - 1) < 95 * r.n, 95 * r.n <= 100 * r.rn)
    return (
        select(
            r.metric_id,
            r.ts_ms,
            func.count(),
            func.sum(r.value),
            func.min(r.value),
            func.max(r.value),
            func.max(case((at_rank, r.value))),
        )
        .where(literal(True))  # SQLite: INSERT ... SELECT ... ON CONFLICT needs a WHERE
        .group_by(r.metric_id, r.ts_ms)
    )


async def _first_raw_at_or_after(conn: AsyncConnection, host: str, start_ms: int) -> int | None:
    # per metric a MIN over the (metric_id, ts_ms) key: a few index probes, not a scan
    per_metric = (
        select(func.min(MetricSample.ts_ms))
        .where(MetricSample.metric_id == Metric.id, MetricSample.ts_ms >= start_ms)
        .scalar_subquery()
    )
    q = select(func.min(per_metric)).where(Metric.host == host)
    value = (await conn.execute(q)).scalar()
    return None if value is None else int(value)


async def _watermark(conn: AsyncConnection, host: str, tier: Tier) -> int | None:
    q = select(RollupState.watermark_ms).where(RollupState.tier == tier, RollupState.host == host)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()  # several recorders on one database: one rolls at a time
    value = (await conn.execute(q)).scalar()
    return None if value is None else int(value)


async def rollup_step(
    store: Store, host: str, tier: Tier, until_ms: int, *, now_ms: int
) -> RollupStep | None:
    """Consume at most one chunk of `host`'s raw samples below `until_ms` into `tier`,
    committing the rows and the new watermark together. None: nothing to do."""
    until_ms = floor_to(until_ms, tier.width_ms)
    state = RollupState.__table__
    async with store.engine.begin() as conn:
        wm = await _watermark(conn, host, tier)
        if wm is None:
            first = await _first_raw_at_or_after(conn, host, 0)
            if first is None or floor_to(first, tier.width_ms) >= until_ms:
                return None  # nothing complete to account for yet
            # the tier's state row starts where the host's samples start; another
            # recorder may create it at the same moment: then lock and use theirs
            await conn.execute(
                store.insert(state).on_conflict_do_nothing(),
                {
                    "tier": str(tier),
                    "host": host,
                    "watermark_ms": floor_to(first, tier.width_ms),
                    "updated_at_ms": now_ms,
                },
            )
            wm = await _watermark(conn, host, tier)
            assert wm is not None
        if wm >= until_ms:
            return None
        first = await _first_raw_at_or_after(conn, host, wm)
        if first is None or first >= until_ms:
            start, end, rows = wm, until_ms, 0  # a gap: nothing to roll, move on
        else:
            start = floor_to(first, tier.width_ms)
            metrics = (
                await conn.execute(
                    select(func.count()).select_from(Metric).where(Metric.host == host)
                )
            ).scalar_one()
            end = min(until_ms, start + tier.chunk_ms(int(metrics)))
            insert = (
                store.insert(tier.model)
                .from_select(
                    ["metric_id", "ts_ms", "count", "sum", "min", "max", "p95"],
                    _aggregate_select(host, tier.width_ms, start, end),  # type: ignore[arg-type]
                )
                .on_conflict_do_nothing()
            )
            rows = (await conn.execute(insert)).rowcount or 0
        await conn.execute(
            update(RollupState)
            .where(RollupState.tier == str(tier), RollupState.host == host)
            .values(watermark_ms=end, updated_at_ms=now_ms)
        )
    return RollupStep(host, tier, start, end, rows, end < until_ms)


async def hosts_with_samples(store: Store) -> list[str]:
    async with store.reader.connect() as conn:
        return [h for (h,) in await conn.execute(select(Metric.host).distinct())]


async def idle_hosts(store: Store, *, quiet_since_ms: int) -> list[str]:
    """Hosts with samples but none at or after `quiet_since_ms`: nobody records them any
    more, so whoever runs maintenance may roll up (and so retire) their last samples."""
    newest = (
        select(func.max(MetricSample.ts_ms))
        .where(MetricSample.metric_id == Metric.id)
        .scalar_subquery()
    )
    q = select(Metric.host).group_by(Metric.host).having(func.max(newest) < quiet_since_ms)
    async with store.reader.connect() as conn:
        return [h for (h,) in await conn.execute(q)]


async def watermarks(store: Store) -> dict[tuple[str, Tier], int]:
    async with store.reader.connect() as conn:
        result = await conn.execute(
            select(RollupState.host, RollupState.tier, RollupState.watermark_ms)
        )
        return {(h, Tier(t)): int(w) for h, t, w in result}


async def rollup(
    store: Store,
    hosts: Iterable[str],
    *,
    now_ms: int,
    oldest_pending_ms: int | None = None,
    grace_ms: int = DEFAULT_GRACE_MS,
    max_steps: int | None = None,
) -> list[RollupStep]:
    """Bring both tiers of `hosts` up to date (or take `max_steps` chunks at most)."""
    steps: list[RollupStep] = []
    for host in hosts:
        for tier in Tier:
            until = rollup_bound(now_ms, oldest_pending_ms, tier.width_ms, grace_ms)
            while max_steps is None or len(steps) < max_steps:
                step = await rollup_step(store, host, tier, until, now_ms=now_ms)
                if step is None:
                    break
                steps.append(step)
                if not step.more:
                    break
    return steps
