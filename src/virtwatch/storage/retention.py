"""Retention: how long each table keeps rows, and the job that deletes older ones.

Raw samples are deleted only below both rollup watermarks of their host (never
before the minute and hour tiers consumed them), whatever the configured age or
size cap says. Deletes go in bounded time slices, one transaction each. The size cap
(SQLite) deletes the oldest rolled-up raw data first, then the oldest minutes, then
the oldest hours, and returns the freed pages to the file system.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from virtwatch.core.config import validate
from virtwatch.core.config_schema import StorageSection
from virtwatch.storage.engine import sqlite_path
from virtwatch.storage.models import (
    Audit,
    DomainEventRow,
    ErrorLog,
    HealthAlertRow,
    HealthResultRow,
    HostConnectionRow,
    Metric,
    MetricHour,
    MetricMinute,
    MetricSample,
    RollupState,
    TaskLog,
)
from virtwatch.storage.store import Store

HOUR_S = 3600
DAY_S = 86_400
_STEP_MS = {"raw": 3_600_000, "minute": DAY_S * 1000, "hour": 7 * DAY_S * 1000}
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Retention:
    """How long rows are kept, in seconds, and the file size cap in bytes (0 = none)."""

    raw_s: int = 24 * HOUR_S
    minute_s: int = 30 * DAY_S
    hour_s: int = 730 * DAY_S
    events_s: int = 90 * DAY_S
    errors_s: int = 90 * DAY_S
    audit_s: int = 90 * DAY_S
    tasks_s: int = 90 * DAY_S
    health_s: int = 7 * DAY_S  # one row per check run: the bulkiest record table
    alerts_s: int = 90 * DAY_S
    max_size_bytes: int = 8192 * MIB


def parse_retention(section: Mapping[str, Any], path: Path | None = None) -> Retention:
    """The `[storage]` keys for retention (hours/days and MiB; the schema's
    `StorageSection`), checked with clear errors."""
    return retention_of(validate(StorageSection, section, prefix="storage", path=path))


def retention_of(sec: StorageSection) -> Retention:
    return Retention(
        raw_s=round(sec.raw_hours * HOUR_S),
        minute_s=round(sec.minute_days * DAY_S),
        hour_s=round(sec.hour_days * DAY_S),
        events_s=round(sec.events_days * DAY_S),
        errors_s=round(sec.errors_days * DAY_S),
        audit_s=round(sec.audit_days * DAY_S),
        tasks_s=round(sec.tasks_days * DAY_S),
        health_s=round(sec.health_days * DAY_S),
        alerts_s=round(sec.alerts_days * DAY_S),
        max_size_bytes=sec.max_size_mb * MIB,
    )


def raw_cutoff(now_ms: int, keep_ms: int, watermarks: Sequence[int | None]) -> int | None:
    """Raw samples older than this may go: past their age AND consumed by every tier.
    None when a tier has not consumed anything yet."""
    if not watermarks or any(w is None for w in watermarks):
        return None
    return min(now_ms - keep_ms, *(w for w in watermarks if w is not None))


@dataclass(slots=True)
class RetentionReport:
    deleted: dict[str, int] = field(default_factory=dict)
    capped: bool = False  # the size cap had to delete rows
    over_cap: bool = False  # still over the cap with nothing deletable left
    vacuumed_pages: int = 0
    complete: bool = True  # False: the time budget ran out; the rest is for the next run

    def add(self, table: str, n: int) -> None:
        if n:
            self.deleted[table] = self.deleted.get(table, 0) + n


async def _oldest_sample(store: Store, table: Any, host: str | None = None) -> int | None:
    per_metric = select(func.min(table.ts_ms)).where(table.metric_id == Metric.id).scalar_subquery()
    q = select(func.min(per_metric))
    if host is not None:
        q = q.where(Metric.host == host)
    async with store.engine.connect() as conn:
        value = (await conn.execute(q)).scalar()
    return None if value is None else int(value)


async def _oldest_at(store: Store, col: ColumnElement[int]) -> int | None:
    async with store.engine.connect() as conn:
        value = (await conn.execute(select(func.min(col)))).scalar()
    return None if value is None else int(value)


async def _delete_sliced(
    store: Store,
    table: Any,
    col: ColumnElement[int],
    oldest: int | None,
    cutoff: int,
    step_ms: int,
    *where: ColumnElement[bool],
    deadline: float | None = None,
    report: RetentionReport | None = None,
) -> int:
    """DELETE rows with col < cutoff, one time slice per transaction; past `deadline`
    (monotonic) it stops after a slice with `_OutOfTime` (what is deleted stays so)."""
    deleted = 0
    lo = oldest
    while lo is not None and lo < cutoff:
        hi = min(cutoff, lo + step_ms)
        async with store.engine.begin() as conn:
            result = await conn.execute(delete(table).where(col < hi, *where))
            n = max(0, result.rowcount or 0)
        deleted += n
        if report is not None:
            report.add(table.name, n)  # counted per committed slice, even if we stop next
        lo = hi
        if deadline is not None and lo < cutoff and time.monotonic() >= deadline:
            raise _OutOfTime  # at least one slice per call: every run makes progress
    return deleted


async def _tier_watermarks(store: Store) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(RollupState.host, RollupState.tier, RollupState.watermark_ms)
        )
        for host, tier, wm in rows:
            out.setdefault(host, {})[tier] = int(wm)
    return out


async def _hosts(store: Store) -> list[str]:
    async with store.engine.connect() as conn:
        return [h for (h,) in await conn.execute(select(Metric.host).distinct())]


class _OutOfTime(Exception):
    """The run's time budget is spent; the rest waits for the next run."""


async def _delete_raw(
    store: Store, host: str, cutoff: int, deadline: float | None, report: RetentionReport
) -> int:
    oldest = await _oldest_sample(store, MetricSample, host)
    ids = select(Metric.id).where(Metric.host == host)
    t = MetricSample.__table__
    return await _delete_sliced(
        store,
        t,
        t.c.ts_ms,
        oldest,
        cutoff,
        _STEP_MS["raw"],
        t.c.metric_id.in_(ids),
        deadline=deadline,
        report=report,
    )


async def _delete_tier(
    store: Store,
    model: Any,
    cutoff: int,
    step: str,
    deadline: float | None,
    report: RetentionReport,
) -> int:
    oldest = await _oldest_sample(store, model)
    t = model.__table__
    return await _delete_sliced(
        store, t, t.c.ts_ms, oldest, cutoff, _STEP_MS[step], deadline=deadline, report=report
    )


_RECORD_TABLES: tuple[tuple[str, Any, str], ...] = (
    ("events_s", DomainEventRow, "at_ms"),
    ("errors_s", ErrorLog, "last_at_ms"),
    ("audit_s", Audit, "started_at_ms"),
    ("tasks_s", TaskLog, "at_ms"),
    ("health_s", HealthResultRow, "at_ms"),
    ("alerts_s", HealthAlertRow, "at_ms"),
    ("events_s", HostConnectionRow, "at_ms"),
)


async def used_bytes(store: Store) -> int | None:
    """Bytes of the SQLite file in use (free pages excluded); None on PostgreSQL."""
    if store.dialect != "sqlite":
        return None
    async with store.engine.connect() as conn:
        page_size = (await conn.exec_driver_sql("PRAGMA page_size")).scalar_one()
        pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar_one()
        free = (await conn.exec_driver_sql("PRAGMA freelist_count")).scalar_one()
    return int(page_size) * (int(pages) - int(free))


def _sqlite_file_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


async def file_bytes(store: Store) -> int | None:
    """Size of the database on disk: the SQLite file and its WAL, or PostgreSQL's database."""
    path = sqlite_path(store.url)
    if path is not None:
        return await asyncio.to_thread(_sqlite_file_bytes, path)
    if store.dialect == "postgresql":
        async with store.reader.connect() as conn:
            q = text("SELECT pg_database_size(current_database())")
            return int((await conn.execute(q)).scalar_one())
    return None


async def release_free_pages(store: Store) -> int:
    """Give free pages back to the file system (auto_vacuum=INCREMENTAL) and truncate
    the WAL; returns the pages released. SQLite only."""
    if store.dialect != "sqlite":
        return 0
    async with store.engine.connect() as conn:
        before = int((await conn.exec_driver_sql("PRAGMA freelist_count")).scalar_one())
        await conn.rollback()  # no transaction may be open around the vacuum
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        # execute() would step the pragma once and free one page; a script runs it out
        await driver.executescript("PRAGMA incremental_vacuum;")
        await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after = int((await conn.exec_driver_sql("PRAGMA freelist_count")).scalar_one())
        await conn.rollback()
    return before - after


async def _cap(
    store: Store, policy: Retention, report: RetentionReport, now_ms: int, deadline: float | None
) -> None:
    cap = policy.max_size_bytes
    if cap <= 0:
        return
    for _ in range(10_000):  # bounded: each pass deletes one slice or stops
        used = await used_bytes(store)
        if used is None or used <= cap:
            return
        report.capped = True
        marks = await _tier_watermarks(store)
        deleted = 0
        for host in await _hosts(store):
            wm = marks.get(host, {})
            cut = raw_cutoff(now_ms, 0, [wm.get("minute"), wm.get("hour")])
            oldest = await _oldest_sample(store, MetricSample, host)
            if cut is not None and oldest is not None and oldest < cut:
                deleted += await _delete_raw(
                    store, host, min(cut, oldest + _STEP_MS["raw"]), deadline, report
                )
        if not deleted:
            for name, model in (("minute", MetricMinute), ("hour", MetricHour)):
                oldest = await _oldest_sample(store, model)
                if oldest is not None:
                    deleted += await _delete_tier(
                        store, model, oldest + _STEP_MS[name], name, deadline, report
                    )
                    break
        if not deleted:
            report.over_cap = True
            return
    report.vacuumed_pages += await release_free_pages(store)


async def apply(
    store: Store, policy: Retention, *, now: float, budget_s: float | None = None
) -> RetentionReport:
    """Delete what the policy no longer keeps, then enforce the size cap. With
    `budget_s`, stop between slices once it is spent (`report.complete` is then False:
    call again; each slice is committed, nothing is half-done)."""
    report = RetentionReport()
    deadline = None if budget_s is None else time.monotonic() + budget_s
    try:
        await _apply(store, policy, int(now * 1000), report, deadline)
    except _OutOfTime:
        report.complete = False
    if report.capped:
        report.vacuumed_pages += await release_free_pages(store)
    return report


async def _apply(
    store: Store, policy: Retention, now_ms: int, report: RetentionReport, deadline: float | None
) -> None:
    marks = await _tier_watermarks(store)
    for host in await _hosts(store):
        wm = marks.get(host, {})
        cut = raw_cutoff(now_ms, policy.raw_s * 1000, [wm.get("minute"), wm.get("hour")])
        if cut is not None:
            await _delete_raw(store, host, cut, deadline, report)
    await _delete_tier(
        store, MetricMinute, now_ms - policy.minute_s * 1000, "minute", deadline, report
    )
    await _delete_tier(store, MetricHour, now_ms - policy.hour_s * 1000, "hour", deadline, report)
    for key, model, col_name in _RECORD_TABLES:
        t = model.__table__
        col = t.c[col_name]
        cutoff = now_ms - int(getattr(policy, key)) * 1000
        oldest = await _oldest_at(store, col)
        await _delete_sliced(
            store, t, col, oldest, cutoff, _STEP_MS["minute"], deadline=deadline, report=report
        )
    await _cap(store, policy, report, now_ms, deadline)
