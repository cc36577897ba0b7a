"""The store: an open database with a current schema, and the writes virtwatch makes.

Samples go in with SQLAlchemy Core, one INSERT per batch, never one per row.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.storage import migrate
from virtwatch.storage.engine import make_engine
from virtwatch.storage.models import Metric, MetricSample

MAX_ROWS_PER_STATEMENT = 2000


class StoreState(enum.StrEnum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One measured value on its way to the database."""

    host: str
    vm_uuid: str  # "" for the host itself
    vm_name: str
    metric: str
    ts_ms: int
    value: float


class Store:
    """`async with Store(url) as store:` opens the database and runs migrations."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None
        self._metric_ids: dict[tuple[str, str, str], int] = {}
        self.state = StoreState.UNOPENED
        self.rows_written = 0
        self.statements = 0

    def __repr__(self) -> str:
        return f"<Store {self.dialect} {self.state}>"

    @property
    def dialect(self) -> str:
        return self.url.split(":", 1)[0].split("+", 1)[0]

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None or self.state is not StoreState.OPEN:
            raise AppError(
                ErrorCode.DATABASE_ERROR,
                f"the store is {self.state}",
                "this is a bug in virtwatch: the store was used outside `async with`",
            )
        return self._engine

    async def open(self) -> Store:
        self._engine = make_engine(self.url)
        try:
            await migrate.upgrade(self._engine)
        except Exception as err:
            await self._engine.dispose()
            self._engine = None
            raise AppError(
                ErrorCode.DATABASE_ERROR,
                f"cannot open the database: {err.__class__.__name__}: {err}",
                "check the --db path is writable and not used by a newer virtwatch",
                Severity.CRITICAL,
            ) from err
        self.state = StoreState.OPEN
        return self

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
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

    async def _metric_ids_for(self, rows: Sequence[SampleRow]) -> dict[tuple[str, str, str], int]:
        missing = {
            (r.host, r.vm_uuid, r.metric): r.vm_name
            for r in rows
            if (r.host, r.vm_uuid, r.metric) not in self._metric_ids
        }
        if missing:
            ins = sqlite_insert if self.dialect == "sqlite" else pg_insert
            stmt = ins(Metric).on_conflict_do_nothing(
                index_elements=[Metric.host, Metric.vm_uuid, Metric.name]
            )
            async with self.engine.begin() as conn:
                await conn.execute(
                    stmt,
                    [
                        {"host": h, "vm_uuid": u, "vm_name": n, "name": m}
                        for (h, u, m), n in missing.items()
                    ],
                )
                result = await conn.execute(
                    select(Metric.id, Metric.host, Metric.vm_uuid, Metric.name).where(
                        Metric.host.in_({k[0] for k in missing})
                    )
                )
                for mid, host, uuid, name in result:
                    self._metric_ids[(host, uuid, name)] = mid
        return self._metric_ids

    async def write_samples(self, rows: Sequence[SampleRow]) -> int:
        """Insert samples in batched statements (at most MAX_ROWS_PER_STATEMENT rows each)."""
        if not rows:
            return 0
        ids = await self._metric_ids_for(rows)
        params = [
            {"metric_id": ids[(r.host, r.vm_uuid, r.metric)], "ts_ms": r.ts_ms, "value": r.value}
            for r in rows
        ]
        ins = sqlite_insert if self.dialect == "sqlite" else pg_insert
        stmt = ins(MetricSample).on_conflict_do_nothing()
        async with self.engine.begin() as conn:
            for start in range(0, len(params), MAX_ROWS_PER_STATEMENT):
                await conn.execute(stmt, params[start : start + MAX_ROWS_PER_STATEMENT])
                self.statements += 1
        self.rows_written += len(params)
        return len(params)

    async def count_samples(self, *, vm_name: str | None = None, metric: str | None = None) -> int:
        q = select(func.count()).select_from(MetricSample).join(Metric)
        if vm_name is not None:
            q = q.where(Metric.vm_name == vm_name)
        if metric is not None:
            q = q.where(Metric.name == metric)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def series(self, host: str, vm_uuid: str, metric: str) -> list[tuple[int, float]]:
        """Raw (ts_ms, value) points of one metric, oldest first."""
        q = (
            select(MetricSample.ts_ms, MetricSample.value)
            .join(Metric)
            .where(Metric.host == host, Metric.vm_uuid == vm_uuid, Metric.name == metric)
            .order_by(MetricSample.ts_ms)
        )
        async with self.engine.connect() as conn:
            return [(int(t), float(v)) for t, v in await conn.execute(q)]
