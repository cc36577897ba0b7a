"""The reads the UI and the CLI make, each one query however many VMs it covers.

Times in and out are epoch seconds. A metric series comes at the resolution its
range needs (raw under ~2 h, minutes under ~3 days, else hours) from the rollup
tables, never from a GROUP BY over raw samples. Records come back as the core types
that travel on the hub (DomainEvent, TaskUpdate, ...), errors as `ErrorEntry`.
"""

from __future__ import annotations

import enum
import itertools
import operator
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from virtwatch.core.errors import ErrorCode, Severity
from virtwatch.core.libvirt.uri import redact_text
from virtwatch.core.records import (
    AuditRecord,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthResult,
    HealthState,
    HostConnection,
    TaskState,
    TaskUpdate,
)
from virtwatch.storage import retention
from virtwatch.storage.lease import Claim, live_claims
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
from virtwatch.storage.revision import current_revision
from virtwatch.storage.rows import (
    alert_from_row,
    audit_from_row,
    connection_from_row,
    event_from_row,
    ms,
    seconds_or_none,
)
from virtwatch.storage.store import Store

RAW_MAX_S = 2 * 3600
MINUTE_MAX_S = 3 * 86_400
DEFAULT_LIMIT = 1000


class Resolution(enum.StrEnum):
    RAW = "raw"
    MINUTE = "minute"
    HOUR = "hour"


def resolution_for(span_s: float) -> Resolution:
    """The tier a chart of this span reads: raw under ~2 h, minutes under ~3 days."""
    if span_s <= RAW_MAX_S:
        return Resolution.RAW
    if span_s <= MINUTE_MAX_S:
        return Resolution.MINUTE
    return Resolution.HOUR


class Point(NamedTuple):
    """One point of a series: a raw sample or one bucket's aggregates. A tuple: a
    30-day chart builds 43,000 of them (0.3 us each; a frozen dataclass takes 1.4)."""

    at: float  # sample time, or bucket start
    samples: int  # raw samples in the bucket (1 for a raw sample)
    mean: float
    min: float
    max: float
    p95: float


@dataclass(frozen=True, slots=True)
class Series:
    host: str
    vm_uuid: str
    metric: str
    resolution: Resolution
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """One error-log row: an incident of one fingerprint."""

    id: int
    fingerprint: str
    code: ErrorCode | str
    category: str
    severity: Severity
    message: str
    hint: str
    context: dict[str, str]
    cause: str
    host: str | None
    vm: str | None
    count: int
    first_at: float
    last_at: float
    closed: bool


@dataclass(frozen=True, slots=True)
class TableStats:
    table: str
    rows: int
    oldest: float | None
    newest: float | None


@dataclass(frozen=True, slots=True)
class DbStats:
    url: str  # redacted
    dialect: str
    revision: str | None
    file_bytes: int | None
    used_bytes: int | None
    tables: tuple[TableStats, ...]
    watermarks: dict[tuple[str, str], float] = field(default_factory=dict)  # (host, tier)
    claims: tuple[Claim, ...] = ()  # live writer claims, by host then rank

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (schema 1: keys are only ever added)."""
        return {
            "schema": 1,
            "url": self.url,
            "dialect": self.dialect,
            "revision": self.revision,
            "file_bytes": self.file_bytes,
            "used_bytes": self.used_bytes,
            "tables": {
                t.table: {"rows": t.rows, "oldest": t.oldest, "newest": t.newest}
                for t in self.tables
            },
            "rollup_watermarks": [
                {"host": h, "tier": tier, "up_to": at}
                for (h, tier), at in sorted(self.watermarks.items())
            ],
            "writer_claims": [
                {
                    "host": c.host,
                    "holder": c.holder,
                    "role": c.role,
                    "pid": c.pid,
                    "nodename": c.nodename,
                    "started": c.started_ms / 1000,
                    "heartbeat": c.heartbeat_ms / 1000,
                    "writing": c.writing,
                }
                for c in self.claims
            ],
        }

    def lines(self) -> list[str]:
        """Plain text for a terminal: one line per table, times in UTC."""
        out = [f"database  {self.url}  ({self.dialect}, schema revision {self.revision})"]
        if self.file_bytes is not None:
            used = "" if self.used_bytes is None else f" ({_mib(self.used_bytes)} in use)"
            out.append(f"size      {_mib(self.file_bytes)}{used}")
        out.append(f"{'table':<16} {'tier':<7} {'rows':>12}  {'oldest (UTC)':<19}  newest (UTC)")
        tiers = {"metric_sample": "raw", "metric_minute": "minute", "metric_hour": "hour"}
        for t in self.tables:
            out.append(
                f"{t.table:<16} {tiers.get(t.table, ''):<7} {t.rows:>12}  "
                f"{_when(t.oldest):<19}  {_when(t.newest)}"
            )
        for (host, tier), at in sorted(self.watermarks.items()):
            out.append(f"rollup    {tier:<6} of {host} consumed raw samples up to {_when(at)}")
        for c in self.claims:
            what = "writes" if c.writing else "stands by for"
            out.append(
                f"writer    {c.describe()} {what} {c.host} "
                f"(started {_when(c.started_ms / 1000)}, heartbeat {_when(c.heartbeat_ms / 1000)})"
            )
        return out


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


_vm_and_metric = operator.itemgetter(0, 1)


def _tier(resolution: Resolution) -> Any:
    return MetricMinute if resolution is Resolution.MINUTE else MetricHour


class Queries:
    """Read-only queries over an open Store (its reader engine)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def _all(self, q: Any) -> Sequence[Any]:
        async with self._store.reader.connect() as conn:
            rows: Sequence[Any] = (await conn.execute(q)).all()
            return rows

    async def _driver_rows(self, q: Any) -> Sequence[Sequence[Any]]:
        """The rows of `q` as the driver gives them (tuples; asyncpg Records), without
        SQLAlchemy's Row objects: a 30-day chart is 43,000 rows, and building a Row for
        each doubled its time. Only for plain int/float/str columns (no type processing)."""
        async with self._store.reader.connect() as conn:
            result = await conn.execute(q)  # buffered by the async driver
            try:
                rows: Sequence[Sequence[Any]] = result.cursor.fetchall()
            finally:
                result.close()
            return rows

    # ---- metrics ---------------------------------------------------------------------

    def _points_query(self, resolution: Resolution, since: float, until: float, *where: Any) -> Any:
        # metric ids first (an IN list over the catalogue), then key range scans per
        # metric, already in (metric, time) order: no sort, however many VMs
        ids = select(Metric.id).where(*where)
        if resolution is Resolution.RAW:
            s = MetricSample
            return (
                select(Metric.vm_uuid, Metric.name, s.ts_ms, s.value)
                .join(Metric, Metric.id == s.metric_id)
                .where(s.metric_id.in_(ids), s.ts_ms >= ms(since), s.ts_ms < ms(until))
                .order_by(s.metric_id, s.ts_ms)
            )
        t = _tier(resolution)
        return (
            select(Metric.vm_uuid, Metric.name, t.ts_ms, t.count, t.sum, t.min, t.max, t.p95)
            .join(Metric, Metric.id == t.metric_id)
            .where(t.metric_id.in_(ids), t.ts_ms >= ms(since), t.ts_ms < ms(until))
            .order_by(t.metric_id, t.ts_ms)
        )

    @staticmethod
    def _points(resolution: Resolution, rows: Iterable[Sequence[Any]]) -> list[Point]:
        """Rows of `_points_query` (vm_uuid, metric, ts, ...) -> points; the hot loop of
        a chart, so no per-row function calls beyond the Point itself."""
        new = tuple.__new__  # Point(...) without the keyword handling of its __new__
        if resolution is Resolution.RAW:
            return [new(Point, (r[2] / 1000, 1, r[3], r[3], r[3], r[3])) for r in rows]
        return [new(Point, (r[2] / 1000, r[3], r[4] / r[3], r[5], r[6], r[7])) for r in rows]

    async def series(
        self,
        host: str,
        vm_uuid: str,
        metric: str,
        since: float,
        until: float,
        resolution: Resolution | None = None,
    ) -> Series:
        """One metric of one VM ("" = the host itself) over [since, until)."""
        res = resolution or resolution_for(until - since)
        q = self._points_query(
            res, since, until, Metric.host == host, Metric.vm_uuid == vm_uuid, Metric.name == metric
        )
        points = tuple(self._points(res, await self._driver_rows(q)))
        return Series(host, vm_uuid, metric, res, points)

    async def histories(
        self,
        vm_uuids: Sequence[str],
        metrics: Sequence[str],
        since: float,
        until: float,
        resolution: Resolution | None = None,
        *,
        host: str | None = None,
    ) -> dict[str, dict[str, list[Point]]]:
        """Per-VM history of the visible rows in ONE query (SELECT ... IN):
        {vm_uuid: {metric: points}}; a VM or metric without data is absent."""
        if not vm_uuids or not metrics:
            return {}
        res = resolution or resolution_for(until - since)
        where: list[Any] = [Metric.vm_uuid.in_(list(vm_uuids)), Metric.name.in_(list(metrics))]
        if host is not None:
            where.append(Metric.host == host)
        out: dict[str, dict[str, list[Point]]] = {}
        rows = await self._driver_rows(self._points_query(res, since, until, *where))
        # rows come ordered by metric: one group per (VM, metric) of each host
        for (uuid, name), group in itertools.groupby(rows, key=_vm_and_metric):
            out.setdefault(uuid, {}).setdefault(name, []).extend(self._points(res, group))
        return out

    async def latest(
        self,
        vm_uuids: Sequence[str],
        metrics: Sequence[str] | None = None,
        *,
        resolution: Resolution = Resolution.MINUTE,
        host: str | None = None,
    ) -> dict[str, dict[str, Point]]:
        """The latest aggregate (or raw sample) of each metric of many VMs, ONE query:
        {vm_uuid: {metric: point}}. Each metric's latest row is found through its key."""
        if not vm_uuids:
            return {}
        t: Any = MetricSample if resolution is Resolution.RAW else _tier(resolution)
        x = t.__table__.alias("newer")
        newest = select(func.max(x.c.ts_ms)).where(x.c.metric_id == Metric.id).scalar_subquery()
        cols: list[Any] = (
            [t.ts_ms, t.value]
            if resolution is Resolution.RAW
            else [t.ts_ms, t.count, t.sum, t.min, t.max, t.p95]
        )
        q = (
            select(Metric.vm_uuid, Metric.name, *cols)
            .join(Metric, Metric.id == t.metric_id)
            .where(Metric.vm_uuid.in_(list(vm_uuids)), t.ts_ms == newest)
        )
        if metrics is not None:
            q = q.where(Metric.name.in_(list(metrics)))
        if host is not None:
            q = q.where(Metric.host == host)
        out: dict[str, dict[str, Point]] = {}
        for row in await self._all(q):
            out.setdefault(row[0], {})[row[1]] = self._points(resolution, [row])[0]
        return out

    async def metric_names(self, vm_uuid: str | None = None) -> list[tuple[str, str, str, str]]:
        """The catalogue: (host, vm_uuid, vm_name, metric), optionally of one VM."""
        q = select(Metric.host, Metric.vm_uuid, Metric.vm_name, Metric.name).order_by(
            Metric.host, Metric.vm_name, Metric.name
        )
        if vm_uuid is not None:
            q = q.where(Metric.vm_uuid == vm_uuid)
        return [(h, u, n, m) for h, u, n, m in await self._all(q)]

    # ---- records ---------------------------------------------------------------------

    async def errors(
        self,
        since: float | None = None,
        until: float | None = None,
        *,
        min_severity: Severity | None = None,
        host: str | None = None,
        vm: str | None = None,
        code: str | None = None,
        text: str | None = None,
        open_only: bool = False,
        limit: int = DEFAULT_LIMIT,
    ) -> list[ErrorEntry]:
        """The error log, newest (last seen) first. `since/until` select incidents that
        were seen in the window; `text` matches message, hint, code, host or VM."""
        e = ErrorLog
        q = select(e).order_by(e.last_at_ms.desc(), e.id.desc()).limit(limit)
        if since is not None:
            q = q.where(e.last_at_ms >= ms(since))
        if until is not None:
            q = q.where(e.first_at_ms < ms(until))
        if min_severity is not None:
            q = q.where(e.severity >= int(min_severity))
        if host is not None:
            q = q.where(e.host == host)
        if vm is not None:
            q = q.where(e.vm == vm)
        if code is not None:
            q = q.where(e.code == code)
        if open_only:
            q = q.where(e.closed.is_(False))
        if text:
            pattern = f"%{text.lower()}%"
            q = q.where(
                or_(
                    func.lower(e.message).like(pattern),
                    func.lower(e.hint).like(pattern),
                    func.lower(e.code).like(pattern),
                    func.lower(func.coalesce(e.host, "")).like(pattern),
                    func.lower(func.coalesce(e.vm, "")).like(pattern),
                )
            )
        out: list[ErrorEntry] = []
        for row in await self._all(q):
            try:
                code_value: ErrorCode | str = ErrorCode(row.code)
            except ValueError:
                code_value = row.code  # written by a newer virtwatch
            out.append(
                ErrorEntry(
                    row.id,
                    row.fingerprint,
                    code_value,
                    row.category,
                    Severity(row.severity),
                    row.message,
                    row.hint,
                    dict(row.context or {}),
                    row.cause,
                    row.host,
                    row.vm,
                    row.count,
                    row.first_at_ms / 1000,
                    row.last_at_ms / 1000,
                    row.closed,
                )
            )
        return out

    async def health_history(
        self,
        since: float,
        until: float,
        *,
        check: str | None = None,
        subject: str | None = None,
        host: str | None = None,
        limit: int = 10 * DEFAULT_LIMIT,
    ) -> list[HealthResult]:
        """Health check runs in the window, oldest first."""
        h = HealthResultRow
        q = select(h).where(h.at_ms >= ms(since), h.at_ms < ms(until))
        if check is not None:
            q = q.where(h.check == check)
        if subject is not None:
            q = q.where(h.subject == subject)
        if host is not None:
            q = q.where(h.host == host)
        q = q.order_by(h.at_ms, h.id).limit(limit)
        return [
            HealthResult(
                r.check,
                r.subject,
                HealthState(r.state),
                HealthState(r.raw_state),
                r.value,
                r.unit,
                r.warn,
                r.crit,
                r.message,
                r.at_ms / 1000,
                r.host,
            )
            for r in await self._all(q)
        ]

    async def health_alerts(
        self, since: float, until: float, *, limit: int = DEFAULT_LIMIT
    ) -> list[HealthAlert]:
        a = HealthAlertRow
        q = (
            select(a)
            .where(a.at_ms >= ms(since), a.at_ms < ms(until))
            .order_by(a.at_ms, a.id)
            .limit(limit)
        )
        return [alert_from_row(r) for r in await self._all(q)]

    async def events(
        self,
        since: float,
        until: float,
        *,
        host: str | None = None,
        vm_uuid: str | None = None,
        kinds: Sequence[EventKind] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[DomainEvent]:
        """Domain events in the window, oldest first."""
        d = DomainEventRow
        q = select(d).where(d.at_ms >= ms(since), d.at_ms < ms(until))
        if host is not None:
            q = q.where(d.host == host)
        if vm_uuid is not None:
            q = q.where(d.vm_uuid == vm_uuid)
        if kinds:
            q = q.where(d.kind.in_([str(k) for k in kinds]))
        q = q.order_by(d.at_ms, d.id).limit(limit)
        return [event_from_row(r) for r in await self._all(q)]

    async def audit(
        self,
        since: float,
        until: float,
        *,
        host: str | None = None,
        vm_uuid: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[AuditRecord]:
        """Admin actions started in the window, oldest first."""
        a = Audit
        q = select(a).where(a.started_at_ms >= ms(since), a.started_at_ms < ms(until))
        if host is not None:
            q = q.where(a.host == host)
        if vm_uuid is not None:
            q = q.where(a.vm_uuid == vm_uuid)
        q = q.order_by(a.started_at_ms, a.id).limit(limit)
        return [audit_from_row(r) for r in await self._all(q)]

    async def tasks(
        self,
        since: float,
        until: float,
        *,
        task_id: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[TaskUpdate]:
        """Background task state changes in the window, oldest first."""
        t = TaskLog
        q = select(t).where(t.at_ms >= ms(since), t.at_ms < ms(until))
        if task_id is not None:
            q = q.where(t.task_id == task_id)
        q = q.order_by(t.at_ms, t.id).limit(limit)
        return [
            TaskUpdate(
                r.task_id,
                r.name,
                r.kind,
                TaskState(r.state),
                r.attempt,
                r.max_attempts,
                r.at_ms / 1000,
                seconds_or_none(r.started_at_ms),
                seconds_or_none(r.next_try_at_ms),
                r.error_code,
                r.message,
                r.host,
                r.vm_name,
            )
            for r in await self._all(q)
        ]

    async def connections(
        self, since: float, until: float, *, host: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[HostConnection]:
        c = HostConnectionRow
        q = select(c).where(c.at_ms >= ms(since), c.at_ms < ms(until))
        if host is not None:
            q = q.where(c.host == host)
        q = q.order_by(c.at_ms, c.id).limit(limit)
        return [connection_from_row(r) for r in await self._all(q)]

    # ---- the database itself -------------------------------------------------------------

    async def stats(self, *, now: float | None = None) -> DbStats:
        """Row counts per table and tier, sizes, oldest and newest times, watermarks, and
        the writer claims live at `now` (default: the wall clock): who writes each host."""
        tables: list[TableStats] = []
        async with self._store.reader.connect() as conn:
            claims = await live_claims(conn, ms(time.time() if now is None else now))
            revision = await conn.run_sync(current_revision)
            for tier in (MetricSample, MetricMinute, MetricHour):
                tables.append(await _sample_table_stats(conn, tier))
            record_tables: tuple[tuple[Any, Any], ...] = (
                (ErrorLog, ErrorLog.last_at_ms),
                (DomainEventRow, DomainEventRow.at_ms),
                (Audit, Audit.started_at_ms),
                (TaskLog, TaskLog.at_ms),
                (HealthResultRow, HealthResultRow.at_ms),
                (HealthAlertRow, HealthAlertRow.at_ms),
                (HostConnectionRow, HostConnectionRow.at_ms),
            )
            for model, col in record_tables:
                n, lo, hi = (
                    await conn.execute(select(func.count(), func.min(col), func.max(col)))
                ).one()
                tables.append(
                    TableStats(
                        model.__tablename__, int(n), seconds_or_none(lo), seconds_or_none(hi)
                    )
                )
            n_metric = (await conn.execute(select(func.count()).select_from(Metric))).scalar_one()
            tables.append(TableStats("metric", int(n_metric), None, None))
            marks = {
                (h, t): w / 1000
                for h, t, w in await conn.execute(
                    select(RollupState.host, RollupState.tier, RollupState.watermark_ms)
                )
            }
        return DbStats(
            redact_text(self._store.url),
            self._store.dialect,
            revision,
            await retention.file_bytes(self._store),
            await retention.used_bytes(self._store),
            tuple(tables),
            marks,
            tuple(claims),
        )


async def _sample_table_stats(conn: AsyncConnection, model: Any) -> TableStats:
    n = (await conn.execute(select(func.count()).select_from(model))).scalar_one()
    # per metric MIN/MAX over the (metric_id, ts_ms) key: index probes, not a scan
    lo = select(func.min(model.ts_ms)).where(model.metric_id == Metric.id).scalar_subquery()
    hi = select(func.max(model.ts_ms)).where(model.metric_id == Metric.id).scalar_subquery()
    oldest, newest = (await conn.execute(select(func.min(lo), func.max(hi)))).one()
    return TableStats(model.__tablename__, int(n), seconds_or_none(oldest), seconds_or_none(newest))
