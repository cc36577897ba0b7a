"""Minute aggregates of chosen series as columns, for the export: per series the minute
starts encoded once and one JSON array per aggregate, written by the database itself (a
day of 100 VMs is ~1.45 M minutes: too many to pass through Python a row at a time).

Values are rounded by `rounded`; the SQL here computes exactly the same numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from virtwatch.core.triage.spike_watch import Series
from virtwatch.storage.models import Metric, MetricMinute

MINUTE_MS = 60_000
STEP_S = 60
ARRAYS = ("count", "avg", "min", "max", "p95")  # the arrays of a series, in this order
IDS_PER_CHUNK = 32  # series per query: small enough that two connections share the work evenly
_WHOLE_MAX = 4503599627370496.0  # 2**52: above it a double has no fraction left to round
_TABLE = MetricMinute.__tablename__


def rounded(x: float | None) -> float | None:
    """The export's rounding: from 100 up (in size) the nearest whole number, below 100
    two decimals; halves away from zero. None when there is no number: not finite, or
    2**52 (~4.5e15) or more in size (no metric's unit comes near it: a glitch)."""
    if x is None or not abs(x) < _WHOLE_MAX:
        return None
    a = abs(x)
    if a < 100:
        return math.copysign(math.floor(a * 100 + 0.5), x) / 100
    return math.copysign(math.floor(a + 0.5), x)


def _sqlite_rounded(x: str) -> str:
    # CAST(real AS INTEGER) truncates toward zero: +0.5 / -0.5 first rounds halves away
    return (
        f"CASE WHEN {x} >= 100 THEN"
        f" (CASE WHEN {x} < {_WHOLE_MAX} THEN CAST({x} + 0.5 AS INTEGER) END)"
        f" WHEN {x} >= 0 THEN CAST({x} * 100 + 0.5 AS INTEGER) / 100.0"
        f" WHEN {x} > -100 THEN CAST({x} * 100 - 0.5 AS INTEGER) / 100.0"
        f" WHEN {x} > -{_WHOLE_MAX} THEN CAST({x} - 0.5 AS INTEGER) END"
    )


def _postgres_rounded(x: str) -> str:
    # floor, not a cast: PostgreSQL's float-to-integer cast rounds halves to even.
    # NaN compares above everything there, so it falls through every branch to NULL.
    return (
        f"CASE WHEN {x} >= 100 AND {x} < {_WHOLE_MAX} THEN floor({x} + 0.5)"
        f" WHEN {x} >= 0 AND {x} < 100 THEN floor({x} * 100 + 0.5) / 100"
        f" WHEN {x} > -100 AND {x} < 0 THEN -floor(0.5 - {x} * 100) / 100"
        f" WHEN {x} > -{_WHOLE_MAX} AND {x} <= -100 THEN -floor(0.5 - {x}) END"
    )


def columns_sql(
    dialect: str, ids: Sequence[int], lo_ms: int, hi_ms: int, *, with_ts: bool = False
) -> str:
    """One query: per series of `ids` with minutes in [lo_ms, hi_ms): id, minutes, first
    and last minute start (ms), then the ARRAYS as JSON texts (and with `with_ts` every
    minute start in ms). Only integers are spliced in. On SQLite an aggregate sees rows in
    the order the plan reads them (see `key_ordered`); PostgreSQL is told the order."""
    where = (
        f"metric_id IN ({','.join(str(int(i)) for i in ids)})"
        f" AND ts_ms >= {int(lo_ms)} AND ts_ms < {int(hi_ms)}"
    )
    head = "SELECT metric_id, count(*), min(ts_ms), max(ts_ms)"
    if dialect == "postgresql":
        values = ['"count"', '"sum" / NULLIF("count", 0)', '"min"', '"max"', "p95"]
        arrays = [values[0], *(_postgres_rounded(v) for v in values[1:])]
        if with_ts:
            arrays.append("ts_ms")
        aggs = ", ".join(f"json_agg({a} ORDER BY ts_ms)::text" for a in arrays)
    else:
        values = ['"count"', '"sum" / "count"', '"min"', '"max"', "p95"]  # x / 0 is NULL
        arrays = [values[0], *(_sqlite_rounded(v) for v in values[1:])]
        if with_ts:
            arrays.append("ts_ms")
        aggs = ", ".join(f"json_group_array({a})" for a in arrays)
    return f"{head}, {aggs} FROM {_TABLE} WHERE {where} GROUP BY metric_id"


def ts_sql(dialect: str, ids: Sequence[int], lo_ms: int, hi_ms: int) -> str:
    """Every minute start (epoch s) of each series of `ids`, as a JSON array."""
    where = (
        f"metric_id IN ({','.join(str(int(i)) for i in ids)})"
        f" AND ts_ms >= {int(lo_ms)} AND ts_ms < {int(hi_ms)}"
    )
    agg = (
        "json_agg(ts_ms / 1000 ORDER BY ts_ms)::text"
        if dialect == "postgresql"
        else "json_group_array(ts_ms / 1000)"
    )
    return f"SELECT metric_id, {agg} FROM {_TABLE} WHERE {where} GROUP BY metric_id"


def key_ordered(plan: Sequence[str]) -> bool:
    """True when a SQLite plan (EXPLAIN QUERY PLAN details) reads metric_minute along its
    primary key (metric_id, ts_ms) and sorts nothing, so each group's aggregate sees its
    rows oldest first. (SQLite before 3.44 has no ORDER BY inside an aggregate.)"""
    reads = [p for p in plan if _TABLE in p]
    return (
        bool(reads)
        and not any("TEMP B-TREE" in p for p in plan)
        and all(
            p.startswith(f"SEARCH {_TABLE} USING PRIMARY KEY") or p == f"SCAN {_TABLE}"
            for p in reads
        )
    )


def reorder(ts_ms: Sequence[int], arrays: Sequence[str]) -> tuple[list[int], tuple[str, ...]]:
    """Minute starts (ms) in whatever order, and the JSON arrays alongside them -> the
    starts in epoch seconds oldest first, and the arrays in that order."""
    order = sorted(range(len(ts_ms)), key=ts_ms.__getitem__)
    out = []
    for text in arrays:
        values = json.loads(text)
        out.append(json.dumps([values[i] for i in order], separators=(",", ":")))
    return [int(ts_ms[i]) // 1000 for i in order], tuple(out)


def contiguous(n: int, first_ms: int, last_ms: int) -> bool:
    """`n` distinct minute starts from first to last leave no minute out."""
    return last_ms - first_ms == (n - 1) * MINUTE_MS and first_ms % 1000 == 0


@dataclass(frozen=True, slots=True)
class MinuteColumns:
    """One series' minutes of a window: `n` minutes from `start` (epoch s) every STEP_S,
    or, when some are missing, at the starts listed in `ts` (a JSON array of epoch s);
    `arrays` are JSON arrays of n values each, in ARRAYS order (null: no value)."""

    series: Series
    n: int
    start: int
    ts: str | None
    arrays: tuple[str, ...]


async def catalogue(
    conn: AsyncConnection,
    *,
    hosts: Collection[str] = (),
    vms: Collection[str] = (),
    window: tuple[float, float] | None = None,
) -> dict[int, Series]:
    """metric id -> Series of every stored series of `hosts` (all hosts when empty). With
    `vms` (names or UUIDs): only those VMs' series and the host series of their hosts.
    With `window` (since, until): only series with a minute in it (one index probe each).
    In export order: by host, the host's own series first, then VMs by name, metrics by
    name."""
    m, t = Metric, MetricMinute
    q = select(m.id, m.host, m.vm_uuid, m.vm_name, m.name)
    if hosts:
        q = q.where(m.host.in_(sorted(hosts)))
    if vms:
        names = sorted(vms)
        q = q.where(or_(m.vm_uuid == "", m.vm_uuid.in_(names), m.vm_name.in_(names)))
    if window is not None:
        lo, hi = math.floor(window[0] * 1000), math.floor(window[1] * 1000)
        q = q.where(exists().where(t.metric_id == m.id, t.ts_ms >= lo, t.ts_ms < hi).correlate(m))
    rows = (await conn.execute(q.order_by(m.host, m.vm_name, m.vm_uuid, m.name))).all()
    if vms:
        vm_hosts = {host for _, host, uuid, _, _ in rows if uuid}
        rows = [r for r in rows if r[2] or r[1] in vm_hosts]
    return {int(mid): Series(host, uuid, name, vm_name) for mid, host, uuid, vm_name, name in rows}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


class ColumnsFailed(Exception):
    """A connection reading a `ColumnsJob` failed: what it had not read is missing."""


class ColumnsJob:
    """Reads the minute columns of `series` in [since, until) a chunk of series per query.
    Every connection handed to `work` takes chunks until none is left, so a second
    connection joining later shares what remains. `stream()` hands the series over in
    `series` order as soon as their chunk is read, keeping none (a day of 100 VMs is
    ~48 MB of text); or, without it, `result()` is all of them once every chunk is read.

    `plan_ok` judges a SQLite plan (default `key_ordered`); when it refuses, the minute
    starts are read too and every series is put in time order in Python (slow, exact)."""

    def __init__(
        self,
        since: float,
        until: float,
        series: dict[int, Series],
        *,
        ids_per_chunk: int = IDS_PER_CHUNK,
        plan_ok: Callable[[Sequence[str]], bool] = key_ordered,
    ) -> None:
        self._lo, self._hi = math.floor(since * 1000), math.floor(until * 1000)
        self._series = series
        ids = list(series)
        self._chunks = [ids[i : i + ids_per_chunk] for i in range(0, len(ids), ids_per_chunk)]
        self._todo = deque(enumerate(self._chunks))
        self._read_chunks = [asyncio.Event() for _ in self._chunks]  # read, or never will be
        self._read_ok = [False for _ in self._chunks]
        self._found: dict[int, MinuteColumns] = {}
        self._plan_ok = plan_ok
        self._error: BaseException | None = None

    async def work(self, conn: AsyncConnection) -> None:
        """Read chunks on `conn` until none is left (or another connection failed)."""
        try:
            while self._todo and self._error is None:
                k, ids = self._todo.popleft()
                await self._read(conn, ids)
                self._read_ok[k] = True
                self._read_chunks[k].set()
        except BaseException as err:
            if self._error is None:
                self._error = err
            for done in self._read_chunks:  # wake `stream`: nothing more is coming
                done.set()
            raise

    async def stream(self) -> AsyncIterator[MinuteColumns]:
        """Every series with minutes in the window, in order, each as soon as it is read
        (someone must be running `work`). ColumnsFailed when a worker failed."""
        for k, ids in enumerate(self._chunks):
            await self._read_chunks[k].wait()
            if not self._read_ok[k]:
                err = self._error
                raise ColumnsFailed(str(err) or type(err).__name__ if err else "not read")
            for mid in ids:
                found = self._found.pop(mid, None)  # handed over, not kept
                if found is not None:
                    yield found

    def result(self) -> list[MinuteColumns]:
        return [self._found[i] for i in self._series if i in self._found]

    async def _read(self, conn: AsyncConnection, ids: list[int]) -> None:
        dialect = conn.dialect.name
        sql = columns_sql(dialect, ids, self._lo, self._hi)
        ordered = True
        if dialect != "postgresql":
            plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
            ordered = self._plan_ok([str(row[-1]) for row in plan])
            if not ordered:
                sql = columns_sql(dialect, ids, self._lo, self._hi, with_ts=True)
        gapped = []
        for row in await conn.exec_driver_sql(sql):
            mid, n, first, last = (int(v) for v in row[:4])
            arrays = tuple(_text(v) for v in row[4 : 4 + len(ARRAYS)])
            ts = None
            if not ordered:
                starts, arrays = reorder(json.loads(_text(row[-1])), arrays)
                first = starts[0] * 1000
                if not contiguous(n, first, starts[-1] * 1000):
                    ts = json.dumps(starts, separators=(",", ":"))
            elif not contiguous(n, first, last):
                gapped.append(mid)
            self._found[mid] = MinuteColumns(self._series[mid], n, first // 1000, ts, arrays)
        if gapped:  # the minute starts of series with holes (sorted here: cheap, and sure)
            found: Any = await conn.exec_driver_sql(ts_sql(dialect, gapped, self._lo, self._hi))
            for mid, text in found:
                starts = json.loads(_text(text))
                if any(a >= b for a, b in itertools.pairwise(starts)):
                    starts.sort()
                ts = json.dumps(starts, separators=(",", ":"))
                self._found[mid] = replace(self._found[mid], ts=ts)
