"""The store: an open database with a current schema, and the writes virtwatch makes.

Rows go in with SQLAlchemy Core, batched (at most MAX_ROWS_PER_STATEMENT rows per
statement), one transaction per flush: the metric catalogue, samples and records
commit together or not at all. Reads go through a separate read-only engine.
"""

from __future__ import annotations

import asyncio
import enum
from collections import defaultdict
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, cast

from sqlalchemy import Table, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as UpsertInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.uri import redact_text
from virtwatch.core.records import (
    AuditRecord,
    DomainEvent,
    HealthAlert,
    HealthResult,
    HostConnection,
    TaskUpdate,
)
from virtwatch.storage import revision, rows
from virtwatch.storage.engine import make_engine
from virtwatch.storage.models import (
    Audit,
    DomainEventRow,
    ErrorLog,
    HealthAlertRow,
    HealthResultRow,
    HostConnectionRow,
    Metric,
    MetricSample,
    TaskLog,
)
from virtwatch.storage.rows import Record, SampleRow

MAX_ROWS_PER_STATEMENT = 2000
MetricKey = tuple[str, str, str]  # (host, vm_uuid, metric)
# a SampleRow, or the same fields as a plain tuple: the writer buffers plain tuples, which
# the garbage collector stops tracking (a NamedTuple it tracks for ever: a full buffer of
# 200,000 made every full collection ~25 ms longer here)
Sample = tuple[str, str, str, str, int, float]  # host, vm_uuid, vm_name, metric, ts_ms, value

__all__ = ["MAX_ROWS_PER_STATEMENT", "Sample", "SampleRow", "Store", "StoreState"]

_PLAIN: dict[type, tuple[Table, Callable[[Any], dict[str, Any]]]] = {
    HealthResult: (HealthResultRow.__table__, rows.health_row),  # type: ignore[dict-item]
    HealthAlert: (HealthAlertRow.__table__, rows.alert_row),  # type: ignore[dict-item]
    DomainEvent: (DomainEventRow.__table__, rows.event_row),  # type: ignore[dict-item]
    TaskUpdate: (TaskLog.__table__, rows.task_row),  # type: ignore[dict-item]
    AuditRecord: (Audit.__table__, rows.audit_row),  # type: ignore[dict-item]
    HostConnection: (HostConnectionRow.__table__, rows.connection_row),  # type: ignore[dict-item]
}


_SAMPLE_INSERT = {
    style: "INSERT INTO metric_sample (metric_id, ts_ms, value) "
    f"VALUES ({', '.join(marks)}) ON CONFLICT DO NOTHING"
    for style, marks in (
        ("qmark", ("?", "?", "?")),
        ("numeric_dollar", ("$1", "$2", "$3")),
        ("format", ("%s", "%s", "%s")),
    )
}


class StoreState(enum.StrEnum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Store:
    """`async with Store(url) as store:` opens the database and, when its schema is
    behind, runs the migrations (Alembic loads only then)."""

    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        self.url = url
        self._run_migrations = run_migrations
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self._metric_ids: dict[MetricKey, int] = {}
        self.state = StoreState.UNOPENED
        self.rows_written = 0
        self.statements = 0
        self.migrated_from: str | None = None
        self.revision: str | None = None

    def __repr__(self) -> str:
        return f"<Store {self.dialect} {self.state}>"

    @property
    def dialect(self) -> str:
        return self.url.split(":", 1)[0].split("+", 1)[0]

    def _check_open(self) -> None:
        if self.state is not StoreState.OPEN:
            raise AppError(
                ErrorCode.DATABASE_ERROR,
                f"the store is {self.state}",
                "this is a bug in virtwatch: the store was used outside `async with`",
            )

    @property
    def engine(self) -> AsyncEngine:
        """The writer engine: one connection, BEGIN IMMEDIATE on SQLite."""
        self._check_open()
        assert self._engine is not None
        return self._engine

    @property
    def reader(self) -> AsyncEngine:
        """A read-only engine for queries (never blocks the writer under WAL)."""
        self._check_open()
        assert self._reader is not None
        return self._reader

    def insert(self, table: Any) -> UpsertInsert:
        """The dialect's INSERT (it has ON CONFLICT on both SQLite and PostgreSQL;
        typed as SQLite's, whose upsert methods PostgreSQL's mirrors)."""
        if self.dialect == "sqlite":
            return sqlite_insert(table)
        return cast(UpsertInsert, pg_insert(table))

    async def open(self) -> Store:
        if self.state is not StoreState.UNOPENED:
            raise AppError(
                ErrorCode.DATABASE_ERROR,
                f"the store is {self.state}; a Store opens once",
                "this is a bug in virtwatch: build a new Store",
            )
        try:
            # inside: a SQLite file whose directory cannot be made fails here
            self._engine = make_engine(self.url)
            # a cheap read first: a database already at the head needs no Alembic at all
            current = await revision.revision_of(self._engine)
            if self._run_migrations and current != revision.HEAD_REVISION:
                from virtwatch.storage import migrate  # Alembic loads only to migrate

                self.migrated_from, self.revision = await migrate.upgrade(self._engine)
            else:
                self.revision = current
                if self._run_migrations:
                    self.migrated_from = current
        except Exception as err:
            if self._engine is not None:
                await self._engine.dispose()
            self._engine = None
            self.state = StoreState.CLOSED
            raise AppError(
                ErrorCode.DATABASE_ERROR,
                f"cannot open the database {redact_text(self.url)}: "
                f"{err.__class__.__name__}: {redact_text(str(err))}",
                "check the --db path is writable (or the PostgreSQL server is up) and not "
                "used by a newer virtwatch",
                Severity.CRITICAL,
            ) from err
        self._reader = make_engine(self.url, reader=True)
        self.state = StoreState.OPEN
        return self

    async def close(self) -> None:
        for engine in (self._reader, self._engine):
            if engine is not None:
                await engine.dispose()
        self._engine = self._reader = None
        self.state = StoreState.CLOSED

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- writes ------------------------------------------------------------------

    async def _ensure_metrics(
        self, conn: AsyncConnection, samples: Sequence[Sample]
    ) -> dict[MetricKey, int]:
        """Catalogue ids for every sample's metric, inserting new ones inside `conn`'s
        transaction. The cache learns them only after the commit (see `write`)."""
        missing: dict[MetricKey, str] = {}
        cache = self._metric_ids
        for start in range(0, len(samples), MAX_ROWS_PER_STATEMENT):
            for r in samples[start : start + MAX_ROWS_PER_STATEMENT]:
                key = (r[0], r[1], r[3])  # host, vm_uuid, metric
                if key not in cache:
                    missing[key] = r[2]
            await asyncio.sleep(0)  # a big flush never holds the loop for long
        if not missing:
            return {}
        stmt = self.insert(Metric).on_conflict_do_nothing(
            index_elements=[Metric.host, Metric.vm_uuid, Metric.name]
        )
        params = [
            {"host": h, "vm_uuid": u, "vm_name": n, "name": m} for (h, u, m), n in missing.items()
        ]
        for start in range(0, len(params), MAX_ROWS_PER_STATEMENT):
            await conn.execute(stmt, params[start : start + MAX_ROWS_PER_STATEMENT])
        found: dict[MetricKey, int] = {}
        result = await conn.execute(
            select(Metric.id, Metric.host, Metric.vm_uuid, Metric.name).where(
                Metric.host.in_({k[0] for k in missing})
            )
        )
        for mid, host, uuid, name in result:
            found[(host, uuid, name)] = mid
        return found

    async def _insert_chunks(
        self, conn: AsyncConnection, stmt: Any, params: Sequence[dict[str, Any]]
    ) -> None:
        for start in range(0, len(params), MAX_ROWS_PER_STATEMENT):
            await conn.execute(stmt, params[start : start + MAX_ROWS_PER_STATEMENT])
            self.statements += 1

    async def _write_errors(self, conn: AsyncConnection, reports: Sequence[ErrorReport]) -> None:
        params = rows.merge_error_rows(rows.error_row(r) for r in reports)
        ins = self.insert(ErrorLog)
        t = ErrorLog.__table__.c
        stmt = ins.on_conflict_do_update(
            index_elements=[t.fingerprint, t.first_at_ms],
            set_={
                "count": case(
                    (ins.excluded["count"] > t["count"], ins.excluded["count"]), else_=t["count"]
                ),
                "last_at_ms": case(
                    (ins.excluded.last_at_ms > t.last_at_ms, ins.excluded.last_at_ms),
                    else_=t.last_at_ms,
                ),
                "severity": ins.excluded.severity,
                "message": ins.excluded.message,
                "hint": ins.excluded.hint,
                "context": ins.excluded.context,
                "cause": ins.excluded.cause,
                "closed": ins.excluded.closed,
            },
        )
        await self._insert_chunks(conn, stmt, params)

    async def _write_samples(
        self, conn: AsyncConnection, samples: Sequence[Sample], new_ids: dict[MetricKey, int]
    ) -> None:
        # the hot path: plain tuples through the driver's executemany, one statement per
        # MAX_ROWS_PER_STATEMENT rows, so no long run of Python work blocks the loop
        cache = self._metric_ids
        sql = _SAMPLE_INSERT[conn.dialect.paramstyle]
        for start in range(0, len(samples), MAX_ROWS_PER_STATEMENT):
            chunk = samples[start : start + MAX_ROWS_PER_STATEMENT]
            params = [
                (cache.get((r[0], r[1], r[3])) or new_ids[(r[0], r[1], r[3])], r[4], r[5])
                for r in chunk
            ]
            await conn.exec_driver_sql(sql, params)
            self.statements += 1

    async def write(self, samples: Sequence[Sample], records: Sequence[Record] = ()) -> int:
        """Write samples and records in ONE transaction; returns the rows written.

        Raises the database's own exception when it refuses (disk full, locked, down):
        nothing of the batch is then committed, and the caller still holds it.
        """
        if not samples and not records:
            return 0
        by_type: dict[type, list[Any]] = defaultdict(list)
        for rec in records:
            by_type[type(rec)].append(rec)
        async with self.engine.begin() as conn:
            new_ids = await self._ensure_metrics(conn, samples)
            if samples:
                await self._write_samples(conn, samples, new_ids)
            if reports := by_type.pop(ErrorReport, []):
                await self._write_errors(conn, reports)
            for kind, items in by_type.items():
                table, convert = _PLAIN[kind]
                await self._insert_chunks(conn, self.insert(table), [convert(i) for i in items])
        self._metric_ids.update(new_ids)
        self.rows_written += len(samples) + len(records)
        return len(samples) + len(records)

    async def write_samples(self, samples: Sequence[Sample]) -> int:
        """Insert samples in batched statements, one transaction."""
        return await self.write(samples)

    # ---- small reads (tests, CLI) ------------------------------------------------

    async def count_samples(self, *, vm_name: str | None = None, metric: str | None = None) -> int:
        q = select(func.count()).select_from(MetricSample).join(Metric)
        if vm_name is not None:
            q = q.where(Metric.vm_name == vm_name)
        if metric is not None:
            q = q.where(Metric.name == metric)
        async with self.reader.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def series(self, host: str, vm_uuid: str, metric: str) -> list[tuple[int, float]]:
        """Raw (ts_ms, value) points of one metric, oldest first."""
        q = (
            select(MetricSample.ts_ms, MetricSample.value)
            .join(Metric)
            .where(Metric.host == host, Metric.vm_uuid == vm_uuid, Metric.name == metric)
            .order_by(MetricSample.ts_ms)
        )
        async with self.reader.connect() as conn:
            return [(int(t), float(v)) for t, v in await conn.execute(q)]
