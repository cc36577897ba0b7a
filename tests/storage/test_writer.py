"""The store writer on real databases: every record kind, a disk that fills up and
frees again, a write lock held by another process, a full buffer."""

from __future__ import annotations

import asyncio
import gc
import sys
import textwrap

from sqlalchemy import func, select

from tests.canned import NOW, fleet_snapshot
from tests.storage.databases import pg_run
from tests.waiting import until
from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.health.checks import store_readings
from virtwatch.core.health.monitor import Thresholds, judge
from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.records import (
    AuditRecord,
    ConnectionState,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthResult,
    HealthState,
    HostConnection,
    Outcome,
    TaskState,
    TaskUpdate,
)
from virtwatch.storage.models import (
    Audit,
    DomainEventRow,
    HealthAlertRow,
    HealthResultRow,
    HostConnectionRow,
    MetricSample,
    TaskLog,
)
from virtwatch.storage.queries import Queries, Resolution
from virtwatch.storage.rows import SampleRow, rows_from_snapshot
from virtwatch.storage.store import Store
from virtwatch.storage.writer import StoreWriter, WriterState, WriterStats

PER_TICK = len(rows_from_snapshot(fleet_snapshot()))
LIMITS = Thresholds(10.0, 60.0)


def verdict(stats: WriterStats) -> tuple[HealthState, str]:
    """The health check's verdict on the writer (core/health/checks.py, as the registry runs it)."""
    [reading] = store_readings("database", stats, LIMITS, NOW)
    return reading.state or judge(reading.value, LIMITS), reading.message


def health(i: int, at: float = NOW) -> HealthResult:
    return HealthResult(
        "host.cpu", "hv1", HealthState.WARN, HealthState.CRIT, 91.0 + i, "%", 80, 95, "busy", at
    )


async def count(store: Store, model: type) -> int:
    async with store.reader.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())


def publish_ticks(hub: Hub, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        hub.publish(fleet_snapshot(tick=i, taken_at=NOW + 2 * i))


async def test_every_record_kind_reaches_its_table(store_url: str) -> None:
    hub = Hub()
    err = AppError(ErrorCode.TIMEOUT, "qemu+ssh://root:hunter2@hv1/system timed out", "wait")
    first = ErrorReport(err, "hv1", "web-01", NOW, count=3, first_at=NOW - 10)
    later = ErrorReport(err, "hv1", "web-01", NOW + 5, count=7, first_at=NOW - 10, closed=True)
    replayed = ErrorReport(err, "hv1", "web-01", NOW + 1, count=4, first_at=NOW - 10)
    async with Store(store_url) as store:
        async with StoreWriter(store, hub, maintenance=False):
            publish_ticks(hub, 3)
            hub.publish(first)
            hub.publish(DomainEvent("hv1", "u1", "web-01", EventKind.LIFECYCLE, "stopped", NOW))
            hub.publish(
                TaskUpdate("t1", "shutdown web-01", "action.shutdown", TaskState.RUNNING, 1, 3, NOW)
            )
            hub.publish(
                AuditRecord(
                    "hv1",
                    "u1",
                    "web-01",
                    "shutdown",
                    "root",
                    "10.0.0.9",
                    Outcome.VERIFIED,
                    NOW,
                    2.5,
                )
            )
            hub.publish(health(0))
            hub.publish(
                HealthAlert("host.cpu", "hv1", HealthState.OK, HealthState.WARN, "busy", NOW)
            )
            hub.publish(
                HostConnection(
                    "hv1", "qemu+ssh://root:pw@hv1/system", ConnectionState.DOWN, NOW, NOW - 3
                )
            )
            await until(lambda: store.rows_written >= 3 * PER_TICK + 7, what="first flush")
            hub.publish(later)  # the same incident, reported again later
            hub.publish(replayed)  # an older report arriving late changes nothing
        assert await count(store, MetricSample) == 3 * PER_TICK
        for model in (DomainEventRow, TaskLog, Audit, HealthResultRow, HealthAlertRow):
            assert await count(store, model) == 1, model
        assert await count(store, HostConnectionRow) == 1
        [row] = await Queries(store).errors()
        assert (row.count, row.first_at, row.last_at, row.closed) == (7, NOW - 10, NOW + 5, True)
        assert "hunter2" not in row.message
        assert "***" in row.message
        [conn_row] = await Queries(store).connections(NOW - 60, NOW + 60)
        assert "pw" not in conn_row.uri


async def test_batches_stay_within_2000_rows_per_statement(store_url: str) -> None:
    rows = [SampleRow("h", f"u{i % 10}", "n", "cpu_pct", i, float(i)) for i in range(4500)]
    async with Store(store_url) as store:
        writer = StoreWriter(store, Hub(), maintenance=False)
        writer.add_samples(rows)
        assert await writer.flush() == 4500
        assert store.statements == 3
        assert writer.stats().buffered == 0


async def test_flushes_called_while_the_writer_flushes_take_turns(store_url: str) -> None:
    """`virtwatch health --db` flushes by hand while the writer's own task runs: each
    row is written once and counted once, whoever flushed it."""
    async with Store(store_url) as store:
        writer = StoreWriter(store, Hub(), maintenance=False, flush_interval_s=0.01)
        async with writer:
            for part in range(6):
                writer.add_samples(
                    ("h", f"u{i % 10}", "n", "cpu_pct", part * 30_000 + i, 1.0)
                    for i in range(25_000)  # more than one transaction's worth
                )
                await asyncio.gather(writer.flush(), writer.flush())
        assert writer.samples_written == 150_000
        assert writer.stats().buffered == 0
        assert await count(store, MetricSample) == 150_000


def test_buffered_samples_give_the_garbage_collector_nothing_to_walk() -> None:
    """A full buffer must not lengthen every full collection (each one stalls the loop):
    the writer keeps samples as plain tuples, which the collector stops tracking."""
    writer = StoreWriter(Store("sqlite+aiosqlite://"), Hub(), buffer_rows=50_000)
    gc.collect()
    tracked = len(gc.get_objects())
    rows = [SampleRow("h", f"u{i % 10}", "n", "cpu_pct", i, float(i)) for i in range(20_000)]
    writer.add_samples(rows)
    del rows
    gc.collect()
    assert writer.stats().buffered_samples == 20_000
    assert len(gc.get_objects()) - tracked < 1_000  # not one object per row


async def test_samples_as_rows_or_plain_tuples_are_written_alike(store_url: str) -> None:
    named = [SampleRow("h", "u1", "vm1", "cpu_pct", 5000 + i, float(i)) for i in range(3)]
    plain = [("h", "u2", "vm2", "cpu_pct", 3000 + i, float(i)) for i in range(3)]
    async with Store(store_url) as store:
        writer = StoreWriter(store, Hub(), maintenance=False)
        writer.add_samples(named)
        writer.add_samples(iter(plain))  # any iterable
        assert writer.oldest_pending_ms() == 3000  # rollups stop short of it
        assert await writer.flush() == 6
        assert writer.oldest_pending_ms() is None
        assert await store.series("h", "u1", "cpu_pct") == [(5000 + i, float(i)) for i in range(3)]
        assert await store.series("h", "u2", "cpu_pct") == [(3000 + i, float(i)) for i in range(3)]


async def _set_max_pages(store: Store, pages: int | None) -> int:
    """Limit the writer connection's file size (SQLITE_FULL beyond it); None lifts it."""
    async with store.engine.connect() as conn:
        current = int((await conn.exec_driver_sql("PRAGMA page_count")).scalar_one())
        limit = current if pages is None else pages
        await conn.exec_driver_sql(f"PRAGMA max_page_count = {limit}")
    return current


async def test_disk_full_keeps_the_app_up_reports_it_and_recovers(store_url: str) -> None:
    if not store_url.startswith("sqlite"):
        return await _refusing_postgres(store_url)
    hub = Hub()
    reports: Subscription[ErrorReport] = hub.subscribe(ErrorReport)
    async with Store(store_url) as store:
        async with StoreWriter(store, hub, maintenance=False) as writer:
            publish_ticks(hub, 5)
            await until(lambda: store.rows_written >= 5 * PER_TICK, what="rows before the limit")
            pages = await _set_max_pages(store, None)  # not one page more: the disk is full
            publish_ticks(hub, 200, start=5)
            await until(lambda: writer.stats().state is WriterState.FAILING, what="failing")
            stats = writer.stats()
            assert stats.buffered_samples >= 200 * PER_TICK - 2000
            assert "full" in (stats.last_error or "")
            assert verdict(stats)[0] is HealthState.CRIT
            full = await _first_report(reports, ErrorCode.DATABASE_ERROR)
            assert full.error.severity is Severity.CRITICAL
            assert "full" in full.error.message
            hub.publish(health(1))  # the app goes on: producers never wait for the disk
            await _set_max_pages(store, pages * 100)  # space returns
            await until(
                lambda: (
                    writer.stats().state is WriterState.RUNNING and writer.stats().buffered == 0
                ),
                what="recovery",
            )
            assert verdict(writer.stats())[0] is HealthState.OK
        assert await count(store, MetricSample) == 205 * PER_TICK  # not one row lost
        assert await count(store, HealthResultRow) == 1
        logged = await Queries(store).errors(code=ErrorCode.DATABASE_ERROR)
        assert logged
        assert "full" in logged[0].message


async def _first_report(sub: Subscription[ErrorReport], code: ErrorCode) -> ErrorReport:
    async def find() -> ErrorReport:
        async for report in sub:
            if report.error.code is code:
                return report
        raise AssertionError("hub closed")

    return await asyncio.wait_for(find(), 30)


async def _refusing_postgres(url: str) -> None:
    """PostgreSQL refuses writes (the database turned read-only): the same promises."""
    name = url.rsplit("/", 1)[-1]
    hub = Hub()
    reports: Subscription[ErrorReport] = hub.subscribe(ErrorReport)
    kick = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    async with Store(url) as store:
        async with StoreWriter(store, hub, maintenance=False) as writer:
            publish_ticks(hub, 5)
            await until(lambda: store.rows_written >= 5 * PER_TICK, what="rows before")
            pg_run(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on', kick)
            publish_ticks(hub, 50, start=5)
            await until(lambda: writer.stats().state is WriterState.FAILING, what="failing")
            assert verdict(writer.stats())[0] is HealthState.CRIT
            await _first_report(reports, ErrorCode.DATABASE_ERROR)
            pg_run(f'ALTER DATABASE "{name}" RESET default_transaction_read_only', kick)
            await until(
                lambda: (
                    writer.stats().state is WriterState.RUNNING and writer.stats().buffered == 0
                ),
                what="recovery",
            )
        assert await count(store, MetricSample) == 55 * PER_TICK


async def test_a_full_buffer_drops_oldest_samples_and_keeps_errors_and_health(
    store_url: str,
) -> None:
    if not store_url.startswith("sqlite"):
        return  # the refusal is simulated with SQLite's max_page_count; see above for PG
    hub = Hub()
    async with Store(store_url) as store:
        async with StoreWriter(store, hub, buffer_rows=1000, maintenance=False) as writer:
            publish_ticks(hub, 1)
            await until(lambda: store.rows_written >= PER_TICK, what="first rows")
            pages = await _set_max_pages(store, None)
            for i in range(1, 300):
                hub.publish(fleet_snapshot(tick=i, taken_at=NOW + 2 * i))
                if i % 10 == 0:
                    hub.publish(health(i, NOW + 2 * i))
                    hub.publish(
                        ErrorReport(AppError(ErrorCode.TIMEOUT, f"e{i}", ""), "hv1", None, NOW + i)
                    )
                await asyncio.sleep(0)
            await until(lambda: writer.stats().dropped_samples > 0, what="drops")
            assert writer.stats().buffered <= 1000
            await _set_max_pages(store, pages * 100)
            await until(lambda: writer.stats().buffered == 0, what="drained")
            dropped = writer.stats().dropped_samples
        assert await count(store, HealthResultRow) == 29  # every health row kept
        errors = await Queries(store).errors(code=ErrorCode.TIMEOUT)
        assert len(errors) == 29  # every error kept
        stored = await count(store, MetricSample)
        assert stored == 300 * PER_TICK - dropped  # everything not counted as dropped
        after_limit = MetricSample.ts_ms > int(NOW * 1000)
        async with store.reader.connect() as conn:
            oldest, newest = (
                await conn.execute(
                    select(func.min(MetricSample.ts_ms), func.max(MetricSample.ts_ms)).where(
                        after_limit
                    )
                )
            ).one()
        assert newest == int((NOW + 2 * 299) * 1000)  # the newest samples survived
        assert oldest > int((NOW + 2 * 200) * 1000)  # the oldest went first
        exhausted = await Queries(store).errors(code=ErrorCode.RESOURCE_EXHAUSTED)
        assert exhausted
        assert "dropped" in exhausted[0].message


HOLD_SQLITE = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
"""

HOLD_PG = """
import asyncio, sys, asyncpg
async def main():
    con = await asyncpg.connect(sys.argv[1])
    async with con.transaction():
        await con.execute("LOCK TABLE metric_sample, metric IN EXCLUSIVE MODE")
        print("locked", flush=True)
        await asyncio.sleep(float(sys.argv[2]))
    await con.close()
asyncio.run(main())
"""


async def test_a_write_lock_held_elsewhere_loses_nothing_and_reports_nothing(
    store_url: str,
) -> None:
    """Another process holds the write lock for 7 s (longer than SQLite's busy timeout
    of 5 s): the writer waits and retries quietly; every row arrives."""
    hub = Hub()
    reports: Subscription[ErrorReport] = hub.subscribe(ErrorReport)
    if store_url.startswith("sqlite"):
        script, target = HOLD_SQLITE, store_url.split(":///", 1)[1]
    else:
        script, target = HOLD_PG, store_url.replace("postgresql+asyncpg", "postgresql")
    async with Store(store_url) as store:
        async with StoreWriter(store, hub, maintenance=False) as writer:
            publish_ticks(hub, 2)
            await until(lambda: store.rows_written >= 2 * PER_TICK, what="first rows")
            holder = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                textwrap.dedent(script),
                target,
                "7",
                stdout=asyncio.subprocess.PIPE,
            )
            assert holder.stdout is not None
            assert (await holder.stdout.readline()).strip() == b"locked"
            for i in range(2, 30):
                publish_ticks(hub, 1, start=i)
                await asyncio.sleep(0.2)
            assert await holder.wait() == 0
            await until(lambda: writer.stats().buffered == 0, what="drained after the lock")
            assert writer.stats().state is WriterState.RUNNING
        assert await count(store, MetricSample) == 30 * PER_TICK
    assert reports.pending() == 0  # no error reached the user


def test_the_health_check_reads_the_writer_stats() -> None:
    from dataclasses import replace

    base = WriterStats(
        state=WriterState.RUNNING,
        buffered_samples=0,
        buffered_records=0,
        dropped_samples=0,
        dropped_records=0,
        rows_written=10,
        flushes=1,
        failed_flushes=0,
        last_flush_at=NOW,
        failing_since=None,
        last_error=None,
        lag_s=0.4,
    )
    assert verdict(base)[0] is HealthState.OK
    assert verdict(replace(base, lag_s=15))[0] is HealthState.WARN
    assert verdict(replace(base, lag_s=90))[0] is HealthState.CRIT
    state, message = verdict(replace(base, dropped_samples=5))
    assert state is HealthState.WARN
    assert "5 rows dropped" in message
    failing = replace(
        base, state=WriterState.FAILING, failing_since=NOW - 30, last_error="disk full"
    )
    state, message = verdict(failing)
    assert state is HealthState.CRIT
    assert "disk full" in message
    assert verdict(replace(base, state=WriterState.CLOSED))[0] is HealthState.UNKNOWN


async def test_the_writer_rolls_up_and_retains_as_it_goes(store_url: str) -> None:
    """With maintenance on (the default), the writer's own task rolls up every host it
    writes and applies retention; the clock is injected, the database is real."""
    hub = Hub()
    clock = [NOW]
    async with Store(store_url) as store:
        async with StoreWriter(store, hub, clock=lambda: clock[0]) as writer:
            for i in range(0, 31 * 60, 2):  # 31 minutes of ticks, 2 s apart
                hub.publish(fleet_snapshot(tick=i, taken_at=NOW + i))
                await asyncio.sleep(0)
            clock[0] = NOW + 32 * 60
            await until(lambda: writer.rollup_steps > 0, what="a rollup round")
        marks = await Queries(store).stats()
        minute_mark = marks.watermarks[("qemu:///system", "minute")]
        assert minute_mark >= NOW + 30 * 60 - 60
        minutes = await Queries(store).series(
            "qemu:///system",
            "10000000-0000-4000-8000-000000000001",
            "cpu_pct",
            NOW,
            NOW + 30 * 60,
            resolution=Resolution.MINUTE,
        )
        assert minutes.resolution is Resolution.MINUTE
        assert sum(p.samples for p in minutes.points) == 30 * 30  # every sample of 30 minutes
        assert writer.retention_runs >= 1
