"""Thirty days of history for 100 VMs x 10 metrics at 2 s: file size with the default
retention, and the queries a chart and the dashboard make over it.

    .venv/bin/python -m bench.storage_history [--vms 100] [--days 30] [--db PATH]

Simulated smartly: where the raw samples would already have expired, the minute and
hour tiers are generated directly (SQL, in time order as a recorder writes them); the
last 25 hours are raw samples. Then the real code runs: the rollup of the last hour,
the default retention (which deletes the raw hour and the minute day beyond it), the
queries. Query times are medians of several runs; reference: a bare SQL SELECT of the
same rows in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from virtwatch.storage import retention, rollup
from virtwatch.storage.engine import db_url
from virtwatch.storage.queries import Queries, Resolution
from virtwatch.storage.retention import Retention
from virtwatch.storage.store import Store

METRICS = (
    "cpu_pct",
    "vcpu_delay_pct",
    "mem_used_kib",
    "mem_alloc_kib",
    "disk_rd_bps",
    "disk_wr_bps",
    "disk_rd_iops",
    "disk_wr_iops",
    "net_rx_bps",
    "net_tx_bps",
)
HOST = "hv1"
MIN_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
RUNS = 5

# the tick times [?, ?) as a table t(ts)
SERIES = (
    "WITH RECURSIVE t(ts) AS (SELECT ? UNION ALL SELECT ts + {step} FROM t WHERE ts + {step} < ?)"
)
# a value like the metric's: KiB are integers, rates and percentages have decimals
VALUE = (
    "CASE WHEN m.name LIKE 'mem%' THEN 1000000 + abs(random() % 3000000) "
    "ELSE abs(random() % 1000000) / 100.0 END"
)


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024 / 1024:,.0f} MiB"


def generate(path: Path, vms: int, now_ms: int, days: int) -> dict[str, float]:
    """Catalogue, raw (last 25 h), minutes (days + 1 .. 1 h ago), hours, watermarks."""
    took: dict[str, float] = {}
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")  # generation only; the store's own writes use FULL
    con.execute("PRAGMA cache_size=-2000000")  # 2 GB: a month of inserts in time order
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO metric (host, vm_uuid, vm_name, name) VALUES (?, ?, ?, ?)",
        [
            (HOST, f"00000000-0000-4000-8000-{v:012d}", f"vm-{v:03d}", m)
            for v in range(vms)
            for m in METRICS
        ],
    )
    con.execute("COMMIT")
    cut = now_ms - now_ms % HOUR_MS - HOUR_MS  # tiers generated below, rollup above
    t0 = time.perf_counter()
    start = now_ms - now_ms % 2000 - 25 * HOUR_MS
    for lo in range(start, now_ms, HOUR_MS):  # one transaction per hour of ticks
        hi = min(now_ms, lo + HOUR_MS)
        con.execute("BEGIN")
        con.execute(
            f"{SERIES.format(step=2000)} "
            f"INSERT INTO metric_sample (metric_id, ts_ms, value) SELECT m.id, t.ts, {VALUE} "
            "FROM t CROSS JOIN metric AS m",
            (lo, hi),
        )
        con.execute("COMMIT")
    took["raw"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    first_minute = now_ms - now_ms % MIN_MS - (days + 1) * DAY_MS
    for lo in range(first_minute, cut, DAY_MS):  # one transaction per day of minutes
        hi = min(cut, lo + DAY_MS)
        con.execute("BEGIN")
        con.execute(
            f"{SERIES.format(step=MIN_MS)}, "
            f"v AS (SELECT m.id AS id, t.ts AS ts, {VALUE} AS x FROM t CROSS JOIN metric AS m) "
            "INSERT INTO metric_minute (metric_id, ts_ms, count, sum, min, max, p95) "
            "SELECT id, ts, 30, x * 30, x * 0.5, x * 1.5, x * 1.4 FROM v",
            (lo, hi),
        )
        con.execute("COMMIT")
    took["minute"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    first_hour = first_minute - first_minute % HOUR_MS
    con.execute("BEGIN")
    con.execute(
        f"{SERIES.format(step=HOUR_MS)}, "
        f"v AS (SELECT m.id AS id, t.ts AS ts, {VALUE} AS x FROM t CROSS JOIN metric AS m) "
        "INSERT INTO metric_hour (metric_id, ts_ms, count, sum, min, max, p95) "
        "SELECT id, ts, 1800, x * 1800, x * 0.2, x * 3, x * 2 FROM v",
        (first_hour, cut),
    )
    con.executemany(
        "INSERT INTO rollup_state (tier, host, watermark_ms, updated_at_ms) VALUES (?, ?, ?, ?)",
        [("minute", HOST, cut, now_ms), ("hour", HOST, cut, now_ms)],
    )
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    took["hour"] = time.perf_counter() - t0
    return took


async def median_ms(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    times = []
    result: Any = None
    for _ in range(RUNS):
        t0 = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def bare_ms(path: Path, sql: str, params: tuple[Any, ...]) -> tuple[float, int]:
    con = sqlite3.connect(path)
    times, n = [], 0
    for _ in range(RUNS):
        t0 = time.perf_counter()
        n = len(con.execute(sql, params).fetchall())
        times.append((time.perf_counter() - t0) * 1000)
    con.close()
    return statistics.median(times), n


async def main(vms: int, days: int, db: Path | None, queries_only: bool) -> None:
    now_ms = int(time.time() * 1000)
    if queries_only:
        assert db is not None  # checked by the command line
        async with Store(db_url(db), run_migrations=False) as store:
            await run_queries(store, db, vms, days, now_ms)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = db or Path(tmp) / "history.db"
        if path.exists():
            raise SystemExit(f"{path} exists; give a new path")
        url = db_url(path)
        async with Store(url):
            pass  # the schema at head, auto_vacuum=INCREMENTAL, WAL
        print(f"simulating {days} days of {vms} VMs x {len(METRICS)} metrics at 2 s ...")
        took = generate(path, vms, now_ms, days)
        print(
            f"  generated raw {took['raw']:.0f} s, minutes {took['minute']:.0f} s, "
            f"hours {took['hour']:.0f} s (bulk SQL, not the product's code path)"
        )
        async with Store(url) as store:
            size0 = await retention.file_bytes(store)
            t0 = time.perf_counter()
            steps = await rollup.rollup(store, [HOST], now_ms=now_ms)
            t_roll = time.perf_counter() - t0
            rolled = sum(1 for s in steps if s.rows)
            t0 = time.perf_counter()
            report = await retention.apply(store, Retention(), now=now_ms / 1000)
            t_ret = time.perf_counter() - t0
            q = Queries(store)
            t0 = time.perf_counter()
            stats = await q.stats()
            t_stats = time.perf_counter() - t0
            print(
                f"real rollup of the last hour: {t_roll:.1f} s "
                f"({len(steps)} chunks, {rolled} with rows)"
            )
            print(
                f"real retention (defaults): {t_ret:.1f} s, deleted "
                + ", ".join(f"{k} {v:,}" for k, v in sorted(report.deleted.items()))
            )
            print(f"db stats: {t_stats:.1f} s")
            for t in stats.tables:
                if t.rows:
                    print(f"  {t.table:<14} {t.rows:>12,} rows")
            print(
                f"FILE SIZE after {days} days, default retention: {mib(stats.file_bytes)} "
                f"({mib(stats.used_bytes)} in use; before rollup+retention {mib(size0)})"
            )

            await run_queries(store, path, vms, days, now_ms)


async def run_queries(store: Store, path: Path, vms: int, days: int, now_ms: int) -> None:
    q = Queries(store)
    uuid = "00000000-0000-4000-8000-000000000007"
    since, until = (now_ms - days * DAY_MS) / 1000, now_ms / 1000
    ms_chart, series = await median_ms(
        lambda: q.series(HOST, uuid, "cpu_pct", since, until, Resolution.MINUTE)
    )
    bare_chart, n_bare = bare_ms(
        path,
        "SELECT s.ts_ms, s.count, s.sum, s.min, s.max, s.p95 FROM metric_minute s "
        "JOIN metric m ON m.id = s.metric_id WHERE m.host = ? AND m.vm_uuid = ? "
        "AND m.name = ? AND s.ts_ms >= ? AND s.ts_ms < ? ORDER BY s.ts_ms",
        (HOST, uuid, "cpu_pct", int(since * 1000), int(until * 1000)),
    )
    print(
        f"{days}-day chart, one VM, minute resolution: {ms_chart:.1f} ms for "
        f"{len(series.points):,} points "
        f"(bare sqlite3 SELECT: {bare_chart:.1f} ms, {n_bare:,} rows)"
    )
    ms_auto, auto = await median_ms(lambda: q.series(HOST, uuid, "cpu_pct", since, until))
    print(
        f"{days}-day chart at the automatic resolution ({auto.resolution}): "
        f"{ms_auto:.1f} ms for {len(auto.points):,} points"
    )
    uuids = [f"00000000-0000-4000-8000-{v:012d}" for v in range(vms)]
    day = (now_ms - DAY_MS) / 1000
    ms_open, hist = await median_ms(lambda: q.histories(uuids, ["cpu_pct"], day, until))
    points = sum(len(p) for per in hist.values() for p in per.values())
    bare_open, n_open = bare_ms(
        path,
        "SELECT m.vm_uuid, m.name, s.ts_ms, s.count, s.sum, s.min, s.max, s.p95 "
        "FROM metric_minute s JOIN metric m ON m.id = s.metric_id "
        f"WHERE m.vm_uuid IN ({', '.join('?' * len(uuids))}) AND m.name = 'cpu_pct' "
        "AND s.ts_ms >= ? AND s.ts_ms < ? ORDER BY s.metric_id, s.ts_ms",
        (*uuids, int(day * 1000), int(until * 1000)),
    )
    print(
        f"24 h dashboard open, {vms} VMs (CPU history, one query): {ms_open:.1f} ms for "
        f"{points:,} points (bare sqlite3 SELECT: {bare_open:.1f} ms, {n_open:,} rows)"
    )
    ms_latest, latest = await median_ms(lambda: q.latest(uuids))
    print(
        f"latest minute of every metric of {vms} VMs (one query): {ms_latest:.1f} ms, "
        f"{sum(len(v) for v in latest.values()):,} values"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--vms", type=int, default=100)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--db", type=Path)
    p.add_argument("--queries-only", action="store_true", help="reuse --db, time the queries")
    a = p.parse_args()
    if a.queries_only and (a.db is None or not a.db.exists()):
        raise SystemExit("--queries-only needs --db with a database this script made")
    asyncio.run(main(a.vms, a.days, a.db, a.queries_only))
