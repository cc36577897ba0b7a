"""The UI's and CLI's reads on real databases: the right tier for a range, many VMs in
one statement, the error log's filters, records in a time window."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tests.storage.samples import DAY_MS, T0_MS, day_of_samples
from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.records import (
    AuditRecord,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthResult,
    HealthState,
    Outcome,
    TaskState,
    TaskUpdate,
)
from virtwatch.storage import rollup
from virtwatch.storage.queries import Queries, Resolution, resolution_for
from virtwatch.storage.rollup import HOUR_MS, MINUTE_MS
from virtwatch.storage.store import Store

T0 = T0_MS / 1000
H = 3600.0


@pytest.mark.parametrize(
    ("span_s", "want"),
    [
        (60, Resolution.RAW),
        (2 * H, Resolution.RAW),
        (2 * H + 1, Resolution.MINUTE),
        (3 * 24 * H, Resolution.MINUTE),
        (3 * 24 * H + 1, Resolution.HOUR),
        (730 * 24 * H, Resolution.HOUR),
    ],
)
def test_resolution_for_a_range(span_s: float, want: Resolution) -> None:
    assert resolution_for(span_s) is want


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements the reader runs inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    target = store.reader.sync_engine
    event.listen(target, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(target, "before_cursor_execute", record)


async def _two_days(store: Store, vms: int) -> list[str]:
    rows = day_of_samples(
        vms=vms, metrics=("cpu_pct", "mem_used_kib"), span_ms=2 * DAY_MS, step_ms=60_000
    )
    for i in range(0, len(rows), 20_000):
        await store.write(rows[i : i + 20_000])
    await rollup.rollup(store, ["hv1"], now_ms=T0_MS + 2 * DAY_MS + HOUR_MS)
    return sorted({r.vm_uuid for r in rows})


async def test_series_reads_the_tier_its_range_needs(store_url: str) -> None:
    async with Store(store_url) as store:
        [vm, *_] = await _two_days(store, vms=2)
        q = Queries(store)
        raw = await q.series("hv1", vm, "cpu_pct", T0 + H, T0 + 2 * H)
        assert raw.resolution is Resolution.RAW
        assert len(raw.points) == 60
        assert all(p.samples == 1 and p.min == p.max == p.mean == p.p95 for p in raw.points)
        day = await q.series("hv1", vm, "cpu_pct", T0, T0 + 24 * H)
        assert day.resolution is Resolution.MINUTE
        assert len(day.points) == 1440
        assert sum(p.samples for p in day.points) == 24 * 60
        both = await q.series("hv1", vm, "cpu_pct", T0, T0 + 4 * 24 * H)
        assert both.resolution is Resolution.HOUR
        assert len(both.points) == 48
        assert [p.at for p in both.points] == sorted(p.at for p in both.points)
        first_hour = [p for p in day.points if p.at < T0 + H]
        assert both.points[0].samples == sum(p.samples for p in first_hour)
        assert both.points[0].max == max(p.max for p in first_hour)
        assert both.points[0].min == min(p.min for p in first_hour)
        assert both.points[0].mean == pytest.approx(
            sum(p.mean * p.samples for p in first_hour) / both.points[0].samples
        )


async def test_histories_of_many_vms_are_one_statement(store_url: str) -> None:
    async with Store(store_url) as store:
        vms = await _two_days(store, vms=12)
        q = Queries(store)
        with statements(store) as seen:
            hist = await q.histories(vms[:10], ["cpu_pct", "mem_used_kib"], T0, T0 + 24 * H)
        assert len(seen) == 1
        assert set(hist) == set(vms[:10])
        assert all(len(hist[v]["cpu_pct"]) == 1440 for v in vms[:10])
        with statements(store) as seen:
            latest = await q.latest(vms, ["cpu_pct"])
        assert len(seen) == 1
        assert set(latest) == set(vms)
        newest = T0 + 2 * 24 * H - 60
        assert {p.at for per_vm in latest.values() for p in per_vm.values()} == {newest}
        raw_latest = await q.latest(vms[:3], resolution=Resolution.RAW)
        assert {m for per_vm in raw_latest.values() for m in per_vm} == {"cpu_pct", "mem_used_kib"}
        assert await q.histories([], ["cpu_pct"], T0, T0 + H) == {}
        assert await q.latest(["no-such-vm"]) == {}


def _report(
    code: ErrorCode, msg: str, sev: Severity, host: str, vm: str | None, at: float, **kw: Any
) -> ErrorReport:
    return ErrorReport(AppError(code, msg, "a hint", sev), host, vm, at, **kw)


async def test_the_error_log_filters(store_url: str) -> None:
    reports = [
        _report(ErrorCode.TIMEOUT, "stats timed out", Severity.WARNING, "hv1", "web-01", T0 + 10),
        _report(
            ErrorCode.LIBVIRT_CONNECTION_LOST,
            "libvirtd went away",
            Severity.CRITICAL,
            "hv2",
            None,
            T0 + 500,
            count=40,
            first_at=T0 + 100,
        ),
        _report(ErrorCode.DATABASE_ERROR, "disk full", Severity.ERROR, "hv1", None, T0 + 900),
        _report(
            ErrorCode.TIMEOUT,
            "stats timed out",
            Severity.WARNING,
            "hv1",
            "db-01",
            T0 + 950,
            closed=True,
        ),
    ]
    async with Store(store_url) as store:
        await store.write([], reports)
        q = Queries(store)
        everything = await q.errors()
        assert [e.last_at for e in everything] == [T0 + 950, T0 + 900, T0 + 500, T0 + 10]
        lost = next(e for e in everything if e.code is ErrorCode.LIBVIRT_CONNECTION_LOST)
        assert (lost.count, lost.first_at, lost.category) == (40, T0 + 100, "domain")
        assert lost.hint == "a hint"
        assert [e.severity for e in await q.errors(min_severity=Severity.ERROR)] == [
            Severity.ERROR,
            Severity.CRITICAL,
        ]
        assert {e.vm for e in await q.errors(code=ErrorCode.TIMEOUT)} == {"web-01", "db-01"}
        assert [e.host for e in await q.errors(host="hv2")] == ["hv2"]
        assert [e.vm for e in await q.errors(vm="web-01")] == ["web-01"]
        assert [e.message for e in await q.errors(text="DISK")] == ["disk full"]
        assert [e.vm for e in await q.errors(text="db-0")] == ["db-01"]
        assert len(await q.errors(open_only=True)) == 3
        window = await q.errors(since=T0 + 400, until=T0 + 920)
        assert {e.code for e in window} == {
            ErrorCode.LIBVIRT_CONNECTION_LOST,
            ErrorCode.DATABASE_ERROR,
        }
        assert len(await q.errors(limit=2)) == 2


async def test_records_in_a_window(store_url: str) -> None:
    records: list[Any] = []
    for i in range(10):
        at = T0 + i * 60
        records += [
            DomainEvent(
                "hv1",
                f"u{i % 2}",
                f"vm{i % 2}",
                EventKind.LIFECYCLE if i % 3 else EventKind.IO_ERROR,
                f"event {i}",
                at,
                {"reason": str(i)},
            ),
            HealthResult(
                "host.cpu" if i % 2 else "host.mem",
                "hv1",
                HealthState.OK,
                HealthState.OK,
                float(i),
                "%",
                80.0,
                95.0,
                "fine",
                at,
                "hv1",
            ),
            TaskUpdate(f"t{i % 3}", "shutdown", "action.shutdown", TaskState.RUNNING, 1, 3, at),
        ]
    records += [
        HealthAlert("host.cpu", "hv1", HealthState.OK, HealthState.CRIT, "hot", T0 + 30),
        AuditRecord("hv1", "u0", "vm0", "shutdown", "root", None, Outcome.IGNORED, T0 + 120, 30.0),
        AuditRecord(
            "hv1", "u1", "vm1", "start", "ops", "10.1.1.1", Outcome.VERIFIED, T0 + 400, 2.0
        ),
    ]
    async with Store(store_url) as store:
        await store.write([], records)
        q = Queries(store)
        window = (T0 + 120, T0 + 360)  # minutes 2..5
        events = await q.events(*window)
        assert [e.summary for e in events] == ["event 2", "event 3", "event 4", "event 5"]
        assert events[0].detail == {"reason": "2"}
        assert [e.summary for e in await q.events(*window, vm_uuid="u1")] == ["event 3", "event 5"]
        io = await q.events(T0, T0 + 3600, kinds=[EventKind.IO_ERROR])
        assert [e.summary for e in io] == ["event 0", "event 3", "event 6", "event 9"]
        cpu = await q.health_history(*window, check="host.cpu")
        assert [h.value for h in cpu] == [3.0, 5.0]
        assert all(h.state is HealthState.OK for h in cpu)
        assert len(await q.health_history(*window)) == 4
        [alert] = await q.health_alerts(T0, T0 + 60)
        assert alert.current is HealthState.CRIT
        [shutdown] = await q.audit(*window)
        assert (shutdown.outcome, shutdown.user, shutdown.duration_s) == (
            Outcome.IGNORED,
            "root",
            30.0,
        )
        assert [a.client for a in await q.audit(T0, T0 + 3600, vm_uuid="u1")] == ["10.1.1.1"]
        assert len(await q.tasks(T0, T0 + 3600, task_id="t0")) == 4
        assert len(await q.tasks(*window)) == 4


async def test_stats_count_every_table_and_tier(store_url: str) -> None:
    async with Store(store_url) as store:
        await _two_days(store, vms=1)
        stats = await Queries(store).stats()
    tables = {t.table: t for t in stats.tables}
    assert tables["metric_sample"].rows == 2 * 2 * 1440  # 2 metrics, 2 days of minutes
    assert tables["metric_minute"].rows == 2 * 2 * 1440
    assert tables["metric_hour"].rows == 2 * 2 * 24
    assert tables["metric_sample"].oldest == T0
    assert tables["metric_sample"].newest == T0 + 2 * 24 * H - 60
    assert stats.revision is not None
    assert stats.file_bytes is not None
    assert stats.file_bytes > 0
    assert stats.watermarks[("hv1", "minute")] == (T0_MS + 2 * DAY_MS + HOUR_MS - MINUTE_MS) / 1000
    doc = stats.as_dict()
    assert doc["tables"]["metric_hour"]["rows"] == 96  # type: ignore[index]
    text = "\n".join(stats.lines())
    assert "metric_minute" in text
    assert "minute" in text
