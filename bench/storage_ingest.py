"""Ingest through the store writer vs raw `sqlite3.executemany`, in one run.

    .venv/bin/python -m bench.storage_ingest [ROWS]

- baseline: the same rows into the same schema (WAL, synchronous=FULL) with plain
  sqlite3 `executemany`, one transaction (the floor), and in transactions of the
  writer's size (20,000 rows).
- writer: `StoreWriter` fed one tick at a time (100 VMs x 10 metrics = 1,000 rows, as
  the hub's intake does), flushing on its own task; rows/s until everything is
  committed, and the longest event-loop stall meanwhile (a 1 ms ticker's worst lateness).
Medians of several rounds, each on a fresh database file; ratios against the baseline
of the same run. Also the writer into PostgreSQL when $VIRTWATCH_BENCH_PG is a URL.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

from virtwatch.core.hub import Hub
from virtwatch.storage.engine import db_url
from virtwatch.storage.rows import SampleRow
from virtwatch.storage.store import Store
from virtwatch.storage.writer import StoreWriter

ROUNDS = 3
VMS = 100
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
T0_MS = 1_795_000_000_000


def tick_rows(t: int, rng: random.Random) -> list[SampleRow]:
    ts = T0_MS + 2000 * t
    return [
        SampleRow("hv1", UUIDS[v], NAMES[v], m, ts, round(rng.uniform(0, 100), 2))
        for v in range(VMS)
        for m in METRICS
    ]


UUIDS = [f"00000000-0000-4000-8000-{v:012d}" for v in range(VMS)]
NAMES = [f"vm-{v}" for v in range(VMS)]


async def fresh_db(directory: Path, name: str) -> tuple[str, dict[tuple[str, str, str], int]]:
    """A migrated database with the catalogue filled (as after the first tick)."""
    url = db_url(directory / name)
    async with Store(url) as store:
        first = tick_rows(0, random.Random(0))
        await store.write([r._replace(ts_ms=0) for r in first])
        ids = dict(store._metric_ids)
    return url, ids


def baseline(
    path: str, data: list[list[SampleRow]], ids: dict[tuple[str, str, str], int], per_tx: int
) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA foreign_keys=ON")
    params = [(ids[(r.host, r.vm_uuid, r.metric)], r.ts_ms, r.value) for t in data for r in t]
    t0 = time.perf_counter()
    for start in range(0, len(params), per_tx):
        con.execute("BEGIN IMMEDIATE")
        con.executemany(
            "INSERT INTO metric_sample (metric_id, ts_ms, value) VALUES (?, ?, ?)",
            params[start : start + per_tx],
        )
        con.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    con.close()
    return len(params) / elapsed


class CallbackTimer:
    """The longest single event-loop callback, by the loop thread's own CPU time (what
    our code blocks the loop for, whatever else the machine runs) and by wall time."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.wall = 0.0
        self._orig = asyncio.events.Handle._run

    def __enter__(self) -> CallbackTimer:
        timer = self
        orig = self._orig

        def timed(handle: asyncio.events.Handle) -> None:
            c, w = time.thread_time(), time.perf_counter()
            orig(handle)
            timer.cpu = max(timer.cpu, time.thread_time() - c)
            timer.wall = max(timer.wall, time.perf_counter() - w)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._orig  # type: ignore[method-assign]


class TimedTask(asyncio.tasks._PyTask):  # type: ignore[name-defined,misc]
    """A task that records its longest step (CPU time of the loop thread) by coroutine."""

    worst: ClassVar[dict[str, float]] = {}

    def _Task__step(self, exc: BaseException | None = None) -> None:
        c = time.thread_time()
        super()._Task__step(exc)
        name = self.get_coro().__qualname__
        TimedTask.worst[name] = max(TimedTask.worst.get(name, 0.0), time.thread_time() - c)


async def through_writer(
    url: str, data: list[list[SampleRow]]
) -> tuple[float, float, float, float]:
    """(rows/s, worst ticker lateness ms, longest callback CPU ms, longest step of the
    writer's own tasks ms), feeding one tick at a time as the hub's intake does."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t - 0.001)

    loop = asyncio.get_running_loop()
    loop.set_task_factory(lambda lp, coro, **kw: TimedTask(coro, loop=lp, **kw))
    TimedTask.worst.clear()
    async with Store(url) as store:
        # the catalogue is cached the way a running writer has it after its first tick
        store._metric_ids.update(await _catalogue(store))
        watch = asyncio.create_task(ticker())
        writer = StoreWriter(store, Hub(), maintenance=False, buffer_rows=10_000_000)
        total = sum(len(t) for t in data)
        gc.collect()
        t0 = time.perf_counter()
        with CallbackTimer() as timer:
            async with writer:
                for tick in data:
                    writer.add_samples(tick)
                    await asyncio.sleep(0)
                while writer.samples_written < total:  # noqa: ASYNC110 (polling a counter)
                    await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - t0
        done = True
        await watch
    loop.set_task_factory(None)
    own = max((v for k, v in TimedTask.worst.items() if k.startswith("StoreWriter.")), default=0.0)
    return total / elapsed, worst * 1000, timer.cpu * 1000, own * 1000


async def idle_lateness(seconds: float) -> float:
    """The same 1 ms ticker with nothing else on the loop: this machine's own noise."""
    worst = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - t - 0.001)
    return worst * 1000


async def _catalogue(store: Store) -> dict[tuple[str, str, str], int]:
    from sqlalchemy import select

    from virtwatch.storage.models import Metric

    async with store.engine.connect() as conn:
        result = await conn.execute(select(Metric.id, Metric.host, Metric.vm_uuid, Metric.name))
        return {(h, u, m): i for i, h, u, m in result}


async def main(rows: int) -> None:
    rng = random.Random(1)
    data = [tick_rows(t, rng) for t in range(rows // (VMS * len(METRICS)))]
    n = sum(len(t) for t in data)
    floor, sized, rates, late, cpu, own, idle = [], [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            url, ids = await fresh_db(Path(tmp), f"base-{r}.db")
            floor.append(baseline(url.split(":///", 1)[1], data, ids, n))
            url, ids = await fresh_db(Path(tmp), f"sized-{r}.db")
            sized.append(baseline(url.split(":///", 1)[1], data, ids, 20_000))
            url, _ids = await fresh_db(Path(tmp), f"writer-{r}.db")
            rate, lateness, cb_cpu, own_step = await through_writer(url, data)
            idle.append(await idle_lateness(n / rate))
            rates.append(rate)
            late.append(lateness)
            cpu.append(cb_cpu)
            own.append(own_step)
    base = statistics.median(floor)
    w = statistics.median(rates)
    med = statistics.median
    print(f"rows per round: {n:,} (100 VMs x 10 metrics x {len(data)} ticks), {ROUNDS} rounds")
    print(f"raw sqlite3 executemany, one transaction:      {base:>10,.0f} rows/s")
    print(f"raw sqlite3 executemany, 20k-row transactions: {med(sized):>10,.0f} rows/s")
    print(f"StoreWriter (SQLAlchemy + aiosqlite):          {w:>10,.0f} rows/s = {w / base:.2f}x")
    print("event loop during writer ingest (median of rounds / worst round):")
    print(f"  longest step of the writer's tasks (CPU): {med(own):.1f} / {max(own):.1f} ms")
    print(f"  longest callback of any kind (CPU):       {med(cpu):.1f} / {max(cpu):.1f} ms")
    print(f"  worst lateness of a 1 ms ticker (wall):   {med(late):.1f} / {max(late):.1f} ms")
    print(f"  the same ticker, idle loop, same length:  {med(idle):.1f} / {max(idle):.1f} ms")
    pg = os.environ.get("VIRTWATCH_BENCH_PG")
    if pg:
        from sqlalchemy import text

        async with Store(db_url(pg)) as store:
            async with store.engine.begin() as conn:
                await conn.execute(text("TRUNCATE metric_sample"))
            await store.write([r._replace(ts_ms=0) for r in data[0]])
        rate, lateness, _cpu, own_step = await through_writer(db_url(pg), data)
        print(
            f"StoreWriter into PostgreSQL (asyncpg): {rate:,.0f} rows/s, longest writer step "
            f"{own_step:.1f} ms CPU, ticker lateness {lateness:.1f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
