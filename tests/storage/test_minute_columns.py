"""The export's minute columns: the rounding rule (pure, and the SQL of both databases
against it), the plan check, gaps, and the job shared by connections, on real databases."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from virtwatch.core.triage.spike_watch import Series
from virtwatch.storage.engine import db_url
from virtwatch.storage.minutes import (
    ARRAYS,
    ColumnsFailed,
    ColumnsJob,
    MinuteColumns,
    _sqlite_rounded,
    catalogue,
    columns_sql,
    contiguous,
    key_ordered,
    reorder,
    rounded,
)
from virtwatch.storage.models import Metric, MetricMinute
from virtwatch.storage.store import Store

T0 = 1_795_000_000 - 1_795_000_000 % 3600
MIN = 60
HOST = "hv1"
WEB = "20000000-0000-4000-8000-000000000001"
DB = "20000000-0000-4000-8000-000000000002"
# halves both ways, just below and above the 100 and 0.005 edges, large, tiny, signed
TRICKY = [
    0.125, 0.285, 1.005, 2.675, 12.345, 99.994999, 99.995, 99.996, 100.0, 100.5, 123.5,
    0.004999, 0.005, 1e-9, 0.0, -0.125, -0.285, -99.995, -100.5, -150.5, 2.5e9, 1234567.5,
    4.4e15, 4.6e15, 1e300, -1e300,
]  # fmt: skip


# -- the rule -------------------------------------------------------------------------------


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_rounding_keeps_two_decimals_below_100_and_whole_numbers_above(x: float) -> None:
    r = rounded(x)
    assert r is None or math.copysign(1, r) == math.copysign(1, x) or r == 0
    if abs(x) < 100:
        assert r is not None
        assert abs(r - x) <= 0.005 + 1e-12
        assert abs(r * 100 - round(r * 100)) < 1e-6  # two decimals at most
    elif abs(x) < 2**52:
        assert r is not None
        assert r == int(r)
        assert abs(r - x) <= 0.5
    else:
        assert r is None  # no unit comes near: a glitch


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf, None])
def test_what_is_not_a_number_is_null(x: float | None) -> None:
    assert rounded(x) is None


def test_halves_round_away_from_zero() -> None:
    assert [rounded(x) for x in (0.125, -0.125, 123.5, -123.5, 99.995)] == [
        0.13,
        -0.13,
        124,
        -124,
        100,
    ]


@given(st.floats(allow_nan=True, allow_infinity=True))
@example(0.125)
@example(-0.285)
@example(99.995)
@example(2.0**52)
@example(2.0**52 - 0.5)
@example(-(2.0**52) + 0.5)
@example(1.7976931348623157e308)
def test_sqlite_rounds_exactly_like_the_rule(x: float) -> None:
    con = sqlite3.connect(":memory:")
    # as the export writes it: a one-element JSON array
    (text,) = con.execute(f"SELECT json_array({_sqlite_rounded(':x')})", {"x": x}).fetchone()
    con.close()
    assert json.loads(text) == [rounded(x)]


# -- pure helpers ---------------------------------------------------------------------------


def test_the_plan_check_accepts_only_a_primary_key_read_without_sorting() -> None:
    pk = "SEARCH metric_minute USING PRIMARY KEY (metric_id=? AND ts_ms>? AND ts_ms<?)"
    assert key_ordered([pk])
    assert key_ordered(["SCAN metric_minute"])
    assert not key_ordered([pk, "USE TEMP B-TREE FOR GROUP BY"])
    assert not key_ordered(["SEARCH metric_minute USING INDEX ix_minute_ts (ts_ms>? AND ts_ms<?)"])
    assert not key_ordered(["SCAN metric_minute USING COVERING INDEX ix_other"])
    assert not key_ordered(["CO-ROUTINE (subquery-1)", "SCAN (subquery-1)"])
    assert not key_ordered([])


def test_reorder_puts_every_array_in_time_order() -> None:
    ts = [T0 * 1000 + 120_000, T0 * 1000, T0 * 1000 + 60_000]
    starts, arrays = reorder(ts, ["[3,1,2]", "[30.5,10.5,null]"])
    assert starts == [T0, T0 + 60, T0 + 120]
    assert arrays == ("[1,2,3]", "[10.5,null,30.5]")


@pytest.mark.parametrize(
    ("n", "first", "last", "whole"),
    [(1, 0, 0, True), (3, 0, 120_000, True), (3, 0, 180_000, False), (2, 500, 60_500, False)],
)
def test_contiguous(n: int, first: int, last: int, whole: bool) -> None:
    assert contiguous(n, first, last) is whole


def test_only_integers_reach_the_sql() -> None:
    sql = columns_sql("sqlite", [3, 1], 1000, 2000)
    assert "metric_id IN (3,1) AND ts_ms >= 1000 AND ts_ms < 2000" in sql
    with pytest.raises(ValueError, match="invalid literal"):
        columns_sql("sqlite", ["1) OR (1=1"], 0, 1)  # type: ignore[list-item]


# -- on real databases ----------------------------------------------------------------------

Row = tuple[int, int, float, float, float, float]  # minute, count, sum, min, max, p95


def minutes(dialect: str = "sqlite") -> dict[tuple[str, str], list[Row]]:
    """What each series stores: web's cpu has every awkward value, web's disk misses
    minutes 3 and 4, db's cpu lies partly outside the window, the host's is plain."""
    cpu = []
    for m, x in enumerate(TRICKY):
        cpu.append((m, 3, x * 3, x, x + 0.001, -x))
    cpu.append((len(TRICKY), 0, 0.0, math.inf, -math.inf, math.inf))  # nothing counted
    if dialect == "postgresql":  # only PostgreSQL stores a NaN (SQLite makes it NULL)
        cpu.append((len(TRICKY) + 1, 1, math.nan, math.nan, 1.0, math.nan))
    return {
        (WEB, "cpu_pct"): cpu,
        (WEB, "disk_rd_bps"): [(m, 6, 6000.0 * m, 1.5, 2000.25, 1999.5) for m in (0, 1, 2, 5, 6)],
        (DB, "cpu_pct"): [(m, 6, 120.0, 20.0, 20.0, 20.0) for m in range(-5, 5)],
        ("", "host.cpu_pct"): [(m, 6, 186.0, 30.0, 32.0, 32.0) for m in range(10)],
    }


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    names = {WEB: "web-01", DB: "db-01", "": ""}
    async with Store(store_url) as store:
        async with store.engine.begin() as conn:
            for (uuid, metric), rows in minutes(store.dialect).items():
                await conn.execute(
                    insert(Metric).values(host=HOST, vm_uuid=uuid, vm_name=names[uuid], name=metric)
                )
                mid = (
                    await conn.execute(
                        select(Metric.id).where(Metric.vm_uuid == uuid, Metric.name == metric)
                    )
                ).scalar_one()
                await conn.execute(
                    insert(MetricMinute),
                    [
                        {
                            "metric_id": mid,
                            "ts_ms": (T0 + m * MIN) * 1000,
                            "count": n,
                            "sum": total,
                            "min": lo,
                            "max": hi,
                            "p95": p95,
                        }
                        for m, n, total, lo, hi, p95 in rows
                    ],
                )
            await conn.execute(
                insert(Metric).values(host="hv2", vm_uuid="", vm_name="", name="host.cpu_pct")
            )
        yield store


async def read(store: Store, since: float, until: float, **kw: object) -> list[MinuteColumns]:
    async with store.reader.connect() as conn:
        chosen = await catalogue(conn)
        job = ColumnsJob(since, until, chosen, **kw)  # type: ignore[arg-type]
        await job.work(conn)
    return job.result()


def expected(rows: Sequence[Row]) -> list[list[float | None]]:
    return [
        [n for _, n, *_ in rows],
        [rounded(total / n) if n else None for _, n, total, *_ in rows],
        *([rounded(r[i]) for r in rows] for i in (3, 4, 5)),
    ]


async def test_the_arrays_are_the_stored_minutes_rounded(store: Store) -> None:
    got = await read(store, T0, T0 + 3600)
    assert [(c.series.vm_uuid, c.series.metric) for c in got] == [
        ("", "host.cpu_pct"),  # the host's own first, then VMs by name
        (DB, "cpu_pct"),
        (WEB, "cpu_pct"),
        (WEB, "disk_rd_bps"),
    ]
    stored = minutes(store.dialect)
    for c in got:
        rows = [r for r in stored[(c.series.vm_uuid, c.series.metric)] if r[0] >= 0]
        assert (c.start, c.n) == (T0 + rows[0][0] * MIN, len(rows))
        assert [json.loads(a) for a in c.arrays] == expected(rows), c.series
        assert len(c.arrays) == len(ARRAYS)


async def test_missing_minutes_are_listed_and_the_window_bounds_hold(store: Store) -> None:
    # [T0 + 1 min, T0 + 6 min): the disk's minutes 1, 2, 5; db's 1..4; cpu's 1..5
    got = {(c.series.vm_uuid, c.series.metric): c for c in await read(store, T0 + 60, T0 + 360)}
    disk = got[(WEB, "disk_rd_bps")]
    assert (disk.start, disk.n) == (T0 + MIN, 3)
    assert disk.ts is not None
    assert json.loads(disk.ts) == [T0 + MIN, T0 + 2 * MIN, T0 + 5 * MIN]
    assert json.loads(disk.arrays[1]) == [1000, 2000, 5000]  # avg: sum / count
    db = got[(DB, "cpu_pct")]
    assert (db.start, db.n, db.ts) == (T0 + MIN, 4, None)
    assert json.loads(got[("", "host.cpu_pct")].arrays[1]) == [31.0] * 5
    # a window before anything was stored holds db's first minutes only
    early = await read(store, T0 - 10 * MIN, T0 - 3 * MIN)
    assert [(c.series.vm_uuid, c.start, c.n) for c in early] == [(DB, T0 - 5 * MIN, 2)]


async def test_two_connections_share_the_job_and_agree_with_one(store: Store) -> None:
    alone = await read(store, T0 - 3600, T0 + 3600)
    async with store.reader.connect() as conn:
        chosen = await catalogue(conn)
    job = ColumnsJob(T0 - 3600, T0 + 3600, chosen, ids_per_chunk=1)

    async def streamed() -> list[MinuteColumns]:
        return [c async for c in job.stream()]

    async with store.reader.connect() as a, store.reader.connect() as b:
        got, _, _ = await asyncio.gather(streamed(), job.work(a), job.work(b))
    assert got == alone
    assert job.result() == []  # handed over by the stream, not kept


class Failing(ColumnsJob):
    """Its second chunk fails, as a connection lost midway would (a fake, on top of the
    real reads of the first chunk)."""

    reads = 0

    async def _read(self, conn: AsyncConnection, ids: list[int]) -> None:
        self.reads += 1
        if self.reads == 2:
            raise OSError("connection lost")
        await super()._read(conn, ids)


async def test_a_failed_connection_ends_the_stream_with_an_error(store: Store) -> None:
    async with store.reader.connect() as conn:
        chosen = await catalogue(conn)
        job = Failing(T0 - 3600, T0 + 3600, chosen, ids_per_chunk=1)
        worker = asyncio.create_task(job.work(conn))
        got: list[MinuteColumns] = []

        async def consume() -> None:
            async for columns in job.stream():
                got.append(columns)

        with pytest.raises(ColumnsFailed, match="connection lost"):
            await consume()
        with pytest.raises(OSError, match="connection lost"):
            await worker
    assert [c.series.metric for c in got] == ["host.cpu_pct"]  # the chunk read before


async def test_a_plan_read_out_of_order_is_put_in_time_order(store: Store) -> None:
    # SQLite: the minute starts are read too and sorted in Python; PostgreSQL orders itself
    trusted = await read(store, T0 - 3600, T0 + 3600)
    refused = await read(store, T0 - 3600, T0 + 3600, plan_ok=lambda _plan: False)
    assert refused == trusted


async def test_the_catalogue_narrows_to_hosts_and_vms(store: Store) -> None:
    async with store.reader.connect() as conn:
        everything = await catalogue(conn)
        hv2 = await catalogue(conn, hosts={"hv2"})
        db = await catalogue(conn, vms={"db-01"})
        web = await catalogue(conn, vms={WEB}, hosts={HOST})
        nowhere = await catalogue(conn, vms={"web-01"}, hosts={"hv2"})
    assert len(everything) == 5
    assert list(hv2.values()) == [Series("hv2", "", "host.cpu_pct")]
    assert [(s.vm_uuid, s.metric) for s in db.values()] == [("", "host.cpu_pct"), (DB, "cpu_pct")]
    assert [s.metric for s in web.values()] == ["host.cpu_pct", "cpu_pct", "disk_rd_bps"]
    assert nowhere == {}  # no VM of that name there: not even the host's series


async def test_sqlite_reads_the_minutes_in_key_order(tmp_path: Path) -> None:
    """The fast path is the one taken: the real plan passes the check (a covering read of
    the primary key, nothing sorted) for the export's query as it is written."""
    async with Store(db_url(tmp_path / "plan.db")) as store, store.reader.connect() as conn:
        plan = await conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + columns_sql("sqlite", list(range(1, 65)), 0, 86_400_000)
        )
        details = [str(row[-1]) for row in plan]
    assert key_ordered(details), details
