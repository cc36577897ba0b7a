"""Ingest through the store writer vs raw `sqlite3.executemany`, and the event-loop
stalls meanwhile, all in one run.

    .venv/bin/python -m bench.storage_ingest [ROWS] [--rounds N] [--curve 2000,500,...]
                                             [--no-gc-freeze]

Each round, on fresh database files (the same schema: WAL, synchronous=FULL):
- floor: the rows through plain sqlite3 `executemany`, one transaction, on the main
  thread: the throughput the writer is compared with.
- writer: `StoreWriter` (a recorder's, renewing its lease) fed one tick at a time
  (100 VMs x 10 metrics = 1,000 rows, as the hub's intake does) and flushing on its own
  task, until everything is committed.
  Each tick's `SampleRow`s are made as it is fed, as the intake makes them from a
  snapshot: rows made in advance would sit in the oldest GC generation and hide what a
  growing buffer costs the garbage collector.
- raw-thread: the same rows through plain sqlite3 `executemany` in a thread, shaped like
  the writer's work (statements of `MAX_ROWS_PER_STATEMENT` rows, transactions of
  `MAX_ROWS_PER_FLUSH`): what moving the work off the loop costs the loop by itself (the
  GIL, a second busy thread), with none of our code on the loop.
- idle: nothing but the ticker, as long as the writer took: this machine's own noise.
A ticker on the loop (`asyncio.sleep(1 ms)` in a loop) records how late every wake-up
is, for the whole of each phase: that lateness is the stall any task would have seen.
Each late tick is then split: the time the loop thread waited runnable for a CPU (Linux
schedstat: other processes, our own threads), the time spent in full garbage
collections (they hold the GIL, whichever thread runs them), and the rest: the GIL held
by another thread, and the loop's own callbacks. Stall figures pool every tick of every
round; rates are medians of rounds, ratios per round against the same round's floor.
Also: the longest step of the writer's own tasks (loop-thread CPU), and what one full
collection costs with the writer's buffer empty and full.

`--curve` repeats the writer and raw-thread phases with other statement sizes (it sets
`store.MAX_ROWS_PER_STATEMENT` for the run) to show the throughput/stall trade-off.
Like virtwatch itself (the dashboard after its first paint, `virtwatch record` once it
has started), the bench freezes what is alive once the setup is done (`gc.freeze()`
after the round's store is open), so full collections skip the long-lived heap;
`--no-gc-freeze` shows what they cost without. Also the writer into PostgreSQL when
$VIRTWATCH_BENCH_PG is a URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, cast

from virtwatch.core.hub import Hub
from virtwatch.core.percentile import percentile
from virtwatch.storage import store as store_module
from virtwatch.storage.engine import db_url
from virtwatch.storage.lease import WriterRole
from virtwatch.storage.rows import SampleRow
from virtwatch.storage.store import Sample, Store
from virtwatch.storage.writer import DEFAULT_BUFFER_ROWS, MAX_ROWS_PER_FLUSH, StoreWriter

ROUNDS = 5
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
TICK_S = 0.001
STALL_TARGET_MS = 10.0
RATIO_TARGET = 0.5
SAMPLE_SQL = "INSERT INTO metric_sample (metric_id, ts_ms, value) VALUES (?, ?, ?)"
Catalogue = dict[tuple[str, str, str], int]

UUIDS = [f"00000000-0000-4000-8000-{v:012d}" for v in range(VMS)]
NAMES = [f"vm-{v}" for v in range(VMS)]


def tick_rows(t: int, rng: random.Random) -> list[SampleRow]:
    ts = T0_MS + 2000 * t
    return [
        SampleRow("hv1", UUIDS[v], NAMES[v], m, ts, round(rng.uniform(0, 100), 2))
        for v in range(VMS)
        for m in METRICS
    ]


async def fresh_db(directory: Path, name: str) -> tuple[str, Catalogue]:
    """A migrated database with the catalogue filled (as after the first tick)."""
    url = db_url(directory / name)
    async with Store(url) as store:
        first = tick_rows(0, random.Random(0))
        await store.write([r._replace(ts_ms=0) for r in first])
        ids = dict(store._metric_ids)
    return url, ids


def _path_of(url: str) -> str:
    return url.split(":///", 1)[1]


def raw_insert(path: str, params: list[tuple[int, int, float]], per_stmt: int, per_tx: int) -> None:
    """Plain sqlite3 with the store's PRAGMAs: `per_tx` rows a transaction, `per_stmt` a
    statement."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        for tx in range(0, len(params), per_tx):
            con.execute("BEGIN IMMEDIATE")
            rows = params[tx : tx + per_tx]
            for start in range(0, len(rows), per_stmt):
                con.executemany(SAMPLE_SQL, rows[start : start + per_stmt])
            con.execute("COMMIT")
    finally:
        con.close()


def params_of(data: list[list[Sample]], ids: Catalogue) -> list[tuple[int, int, float]]:
    return [(ids[(r[0], r[1], r[3])], r[4], r[5]) for t in data for r in t]


# ---- what the loop sees --------------------------------------------------------------


class GcClock:
    """Time spent in garbage collections while installed (the callbacks run on whichever
    thread allocates; a collection holds the GIL, so it stalls the loop either way)."""

    def __init__(self) -> None:
        self.full_ms = 0.0  # total time in full (oldest-generation) collections
        self.longest_full_ms = 0.0
        self.fulls = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif info["generation"] == 2:
            took = (time.perf_counter() - self._started) * 1000
            self.full_ms += took
            self.fulls += 1
            self.longest_full_ms = max(self.longest_full_ms, took)

    def reset(self) -> None:
        self.longest_full_ms, self.fulls = 0.0, 0

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


@dataclass
class Ticks:
    """Every wake-up of the ticker in one phase, ms: how late it was, how much of that the
    loop thread waited runnable for a CPU (schedstat; zeros where unreadable) and how
    much a full garbage collection took."""

    late: list[float] = field(default_factory=list)
    cpu_wait: list[float] = field(default_factory=list)
    full_gc: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(self.late) / 1000 + len(self.late) * TICK_S

    def rest(self) -> list[float]:
        """Lateness less CPU wait and full collections: the GIL and the loop's callbacks."""
        return [
            max(0.0, late - wait - gc_ms)
            for late, wait, gc_ms in zip(self.late, self.cpu_wait, self.full_gc, strict=True)
        ]


def _run_queue_reader() -> tuple[Callable[[], float], Callable[[], None]] | None:
    """(ms this thread has waited runnable for a CPU, close) from Linux schedstat."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return None

    def read() -> float:
        return int(os.pread(fd, 128, 0).split()[1]) / 1e6

    try:
        read()
    except (OSError, ValueError, IndexError):
        os.close(fd)
        return None
    return read, lambda: os.close(fd)


@contextlib.asynccontextmanager
async def ticking(clock: GcClock) -> AsyncIterator[Ticks]:
    """`async with ticking(clock) as ticks:` runs the 1 ms ticker on this loop meanwhile."""
    ticks = Ticks()
    stop = asyncio.Event()

    async def run() -> None:
        reader = _run_queue_reader()
        read = reader[0] if reader else (lambda: 0.0)
        try:
            while not stop.is_set():
                t, q, g = time.perf_counter(), read(), clock.full_ms
                await asyncio.sleep(TICK_S)
                ticks.late.append((time.perf_counter() - t - TICK_S) * 1000)
                ticks.cpu_wait.append(read() - q)
                ticks.full_gc.append(clock.full_ms - g)
        finally:
            if reader:
                reader[1]()

    task = asyncio.create_task(run(), name="bench-ticker")
    await asyncio.sleep(0)
    try:
        yield ticks
    finally:
        stop.set()
        await task


@dataclass(frozen=True)
class Stalls:
    n: int
    median: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Stalls:
        xs = sorted(values) or [0.0]
        return cls(len(values), statistics.median(xs), percentile(xs, 99), xs[-1])

    def __str__(self) -> str:
        return f"{self.median:6.2f} {self.p99:6.2f} {self.max:6.2f}"


def pooled(phases: list[Ticks], part: Callable[[Ticks], list[float]]) -> Stalls:
    return Stalls.of([x for p in phases for x in part(p)])


class TimedTask(asyncio.tasks._PyTask):  # type: ignore[name-defined,misc]
    """A task that records its longest step (CPU time of the loop thread) by coroutine."""

    worst: ClassVar[dict[str, float]] = {}

    def _Task__step(self, exc: BaseException | None = None) -> None:
        c = time.thread_time()
        super()._Task__step(exc)
        name = self.get_coro().__qualname__
        TimedTask.worst[name] = max(TimedTask.worst.get(name, 0.0), time.thread_time() - c)


def cpu_pressure() -> float | None:
    """Linux PSI: % of the last 10 s some runnable task waited for a CPU."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def full_collection_ms(repeat: int = 3) -> float:
    """What one full collection of this process's heap costs now (median), ms."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def buffer_gc_cost(data: list[list[Sample]], rows: int) -> tuple[float, float, float]:
    """A full collection with the writer's buffer empty, holding `rows` samples, and with
    the same rows held as `SampleRow`s instead (as the buffer held them before), ms."""
    writer = StoreWriter(Store("sqlite+aiosqlite://"), Hub(), buffer_rows=rows)
    empty = full_collection_ms()
    ticks = itertools.cycle(data)
    while writer.stats().buffered < rows:
        writer.add_samples([SampleRow._make(r) for r in next(ticks)])
    full = full_collection_ms()
    del writer
    every = itertools.chain.from_iterable(itertools.cycle(data))
    named = [SampleRow._make(r) for r in itertools.islice(every, rows)]
    as_rows = full_collection_ms()
    del named
    return empty, full, as_rows


# ---- the phases --------------------------------------------------------------------------


@dataclass
class WriterRun:
    rate: float
    ticks: Ticks
    own_step_ms: float  # longest step of the writer's tasks, loop thread CPU
    full_gcs: int  # full garbage collections meanwhile
    longest_full_gc_ms: float


async def _catalogue(store: Store) -> Catalogue:
    from sqlalchemy import select

    from virtwatch.storage.models import Metric

    async with store.engine.connect() as conn:
        result = await conn.execute(select(Metric.id, Metric.host, Metric.vm_uuid, Metric.name))
        return {(h, u, m): i for i, h, u, m in result}


async def through_writer(
    url: str, data: list[list[Sample]], clock: GcClock, freeze: bool
) -> WriterRun:
    """Rows/s and the loop's stalls, feeding one tick at a time as the hub's intake does."""
    loop = asyncio.get_running_loop()
    TimedTask.worst.clear()
    total = sum(len(t) for t in data)
    async with Store(url) as store:
        # the catalogue is cached the way a running writer has it after its first tick
        store._metric_ids.update(await _catalogue(store))
        gc.collect()
        if freeze:  # the store is open: what the app freezes once it has started
            gc.freeze()
        clock.reset()
        loop.set_task_factory(lambda lp, coro, **kw: TimedTask(coro, loop=lp, **kw))
        try:
            async with ticking(clock) as ticks:
                t0 = time.perf_counter()
                writer = StoreWriter(  # as `virtwatch record` writes: holding its lease
                    store,
                    Hub(),
                    maintenance=False,
                    buffer_rows=10_000_000,
                    role=WriterRole.RECORDER,
                )
                async with writer:
                    for tick in data:
                        writer.add_samples([SampleRow._make(r) for r in tick])
                        await asyncio.sleep(0)
                    while writer.samples_written < total:  # noqa: ASYNC110 (a counter)
                        await asyncio.sleep(0.001)
                elapsed = time.perf_counter() - t0
        finally:
            loop.set_task_factory(None)
    own = max((v for k, v in TimedTask.worst.items() if k.startswith("StoreWriter.")), default=0)
    run = WriterRun(total / elapsed, ticks, own * 1000, clock.fulls, clock.longest_full_ms)
    if freeze:  # the round's store is gone: refreeze what lives on
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    return run


async def raw_in_thread(
    url: str, params: list[tuple[int, int, float]], per_stmt: int, clock: GcClock
) -> tuple[float, Ticks]:
    async with ticking(clock) as ticks:
        t0 = time.perf_counter()
        await asyncio.to_thread(raw_insert, _path_of(url), params, per_stmt, MAX_ROWS_PER_FLUSH)
        elapsed = time.perf_counter() - t0
    return len(params) / elapsed, ticks


async def idle(seconds: float, clock: GcClock) -> Ticks:
    async with ticking(clock) as ticks:
        await asyncio.sleep(seconds)
    return ticks


# ---- the run -------------------------------------------------------------------------------


@dataclass
class Shape:
    """Results of one statement size over the rounds."""

    per_stmt: int
    writer: list[WriterRun] = field(default_factory=list)
    raw_rates: list[float] = field(default_factory=list)
    raw_ticks: list[Ticks] = field(default_factory=list)


@contextlib.contextmanager
def statement_size(rows: int) -> Iterator[None]:
    saved = store_module.MAX_ROWS_PER_STATEMENT
    store_module.MAX_ROWS_PER_STATEMENT = rows
    try:
        yield
    finally:
        store_module.MAX_ROWS_PER_STATEMENT = saved


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass
class Run:
    rows: int
    ticks_per_round: int
    rounds: int
    floor: list[float]
    idles: list[Ticks]
    shapes: list[Shape]
    pressure: list[float]
    frozen: bool
    heap_objects: int
    heap_gc_ms: float
    buffer_gc: tuple[float, float, float]


def _late(t: Ticks) -> list[float]:
    return t.late


def _cpu_wait(t: Ticks) -> list[float]:
    return t.cpu_wait


def _full_gc(t: Ticks) -> list[float]:
    return t.full_gc


def _rest(t: Ticks) -> list[float]:
    return t.rest()


def report(run: Run) -> None:
    med = statistics.median
    main = run.shapes[0]
    print(
        f"rows per round: {run.rows:,} (100 VMs x 10 metrics x {run.ticks_per_round} ticks), "
        f"{run.rounds} rounds"
    )
    if run.pressure:
        print(
            f"CPU pressure (PSI some avg10) at each round: "
            f"{' '.join(f'{p:.0f}' for p in run.pressure)} %"
        )
    print(
        f"this process: {run.heap_objects:,} objects tracked by the GC; a full collection "
        f"takes {run.heap_gc_ms:.1f} ms"
        + (" (the startup heap is frozen: gc.freeze())" if run.frozen else "")
    )
    print()
    print("ingest, rows/s (median of rounds; ratio to the same round's floor)")
    base = med(run.floor)
    print(f"  raw sqlite3 executemany, one transaction (floor) {base:>10,.0f}")
    for s in run.shapes:
        w = med(r.rate for r in s.writer)
        ratios = [r.rate / f for r, f in zip(s.writer, run.floor, strict=True)]
        print(
            f"  StoreWriter, {s.per_stmt:>5}-row statements          {w:>10,.0f} = "
            f"{med(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})"
        )
        print(f"  raw executemany in a thread, same shape       {med(s.raw_rates):>10,.0f}")
    print()
    phases: list[tuple[str, list[Ticks]]] = [("idle loop (as long as the ingest)", run.idles)]
    for s in run.shapes:
        phases.append((f"raw executemany in a thread ({s.per_stmt}/st)", s.raw_ticks))
        phases.append((f"StoreWriter ingest ({s.per_stmt}/st)", [r.ticks for r in s.writer]))
    print("event-loop stall: lateness of a 1 ms ticker, ms (every tick of every round)")
    print(f"  {'':42}{'ticks':>6} {'median':>6} {'p99':>6} {'max':>6}   max per round")
    for label, ts in phases:
        st = pooled(ts, _late)
        per_round = " ".join(f"{max(t.late, default=0):.1f}" for t in ts)
        print(f"  {label:42}{st.n:>6} {st}   {per_round}")
    print("where it went, ms (median p99 max of the same ticks)")
    print(f"  {'':42}{'waiting for a CPU':>20} {'in full GCs':>20} {'the rest':>20}")
    for label, ts in phases:
        print(f"  {label:42} {pooled(ts, _cpu_wait)} {pooled(ts, _full_gc)} {pooled(ts, _rest)}")
    print(
        "  (waiting for a CPU: the loop thread was runnable, per schedstat; the rest: the GIL\n"
        "  held by another thread, and the loop's own callbacks)"
    )
    print()
    own = [r.own_step_ms for r in main.writer]
    print(
        f"longest step of the writer's own tasks (loop CPU): {med(own):.1f} ms "
        f"(worst round {max(own):.1f})"
    )
    print(
        f"full GCs during the writer ingest: {sum(r.full_gcs for r in main.writer)} in "
        f"{run.rounds} rounds, longest {max(r.longest_full_gc_ms for r in main.writer):.1f} ms"
    )
    empty, full, as_rows = run.buffer_gc
    print(
        f"a full GC with the writer's buffer empty: {empty:.1f} ms; holding "
        f"{DEFAULT_BUFFER_ROWS:,} samples: {full:.1f} ms; the same rows as SampleRows "
        f"(the buffer before): {as_rows:.1f} ms"
    )
    ratio = med(r.rate / f for r, f in zip(main.writer, run.floor, strict=True))
    stall = pooled([r.ticks for r in main.writer], _late)
    rest = pooled([r.ticks for r in main.writer], _rest)
    print()
    print(f"target ingest >= {RATIO_TARGET}x raw: {ratio:.2f}x: {_verdict(ratio >= RATIO_TARGET)}")
    print(
        f"target stall < {STALL_TARGET_MS:.0f} ms: p99 {stall.p99:.1f} ms: "
        f"{_verdict(stall.p99 < STALL_TARGET_MS)}; max {stall.max:.1f} ms: "
        f"{_verdict(stall.max < STALL_TARGET_MS)} (raw-thread baseline max "
        f"{pooled(main.raw_ticks, _late).max:.1f}, idle max {pooled(run.idles, _late).max:.1f}); "
        f"less CPU wait and full GCs, max {rest.max:.1f} ms: {_verdict(rest.max < STALL_TARGET_MS)}"
    )


async def main(rows: int, rounds: int, sizes: list[int], freeze: bool) -> None:
    rng = random.Random(1)
    # plain tuples (untracked by the GC, like the params of the baselines)
    data = [
        cast(list[Sample], [tuple(r) for r in tick_rows(t, rng)])
        for t in range(rows // (VMS * len(METRICS)))
    ]
    n = sum(len(t) for t in data)
    buffer_gc = buffer_gc_cost(data, DEFAULT_BUFFER_ROWS)
    if freeze:  # what an app can do once it has started: full GCs skip the startup heap
        gc.collect()
        gc.freeze()
    heap_gc_ms = full_collection_ms()
    run = Run(n, len(data), rounds, [], [], [Shape(size) for size in sizes], [], freeze,
              len(gc.get_objects()), heap_gc_ms, buffer_gc)  # fmt: skip
    with GcClock() as clock, tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            if (p := cpu_pressure()) is not None:
                run.pressure.append(p)
            url, ids = await fresh_db(Path(tmp), f"floor-{r}.db")
            params = params_of(data, ids)
            t0 = time.perf_counter()
            raw_insert(_path_of(url), params, n, n)
            run.floor.append(n / (time.perf_counter() - t0))
            for s in run.shapes:
                with statement_size(s.per_stmt):
                    url, ids = await fresh_db(Path(tmp), f"writer-{r}-{s.per_stmt}.db")
                    s.writer.append(await through_writer(url, data, clock, run.frozen))
                    url, ids = await fresh_db(Path(tmp), f"thread-{r}-{s.per_stmt}.db")
                    params = params_of(data, ids)
                    rate, ticks = await raw_in_thread(url, params, s.per_stmt, clock)
                s.raw_rates.append(rate)
                s.raw_ticks.append(ticks)
            run.idles.append(await idle(run.shapes[0].writer[-1].ticks.seconds, clock))
        report(run)
        pg = os.environ.get("VIRTWATCH_BENCH_PG")
        if pg:
            from sqlalchemy import text

            async with Store(db_url(pg)) as store:
                async with store.engine.begin() as conn:
                    await conn.execute(text("TRUNCATE metric_sample"))
                await store.write([(h, u, name, m, 0, v) for h, u, name, m, _, v in data[0]])
            pg_run = await through_writer(db_url(pg), data, clock, run.frozen)
            print(
                f"StoreWriter into PostgreSQL (asyncpg): {pg_run.rate:,.0f} rows/s, longest "
                f"writer step {pg_run.own_step_ms:.1f} ms CPU, ticker lateness "
                f"median/p99/max {Stalls.of(pg_run.ticks.late)} ms"
            )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("rows", nargs="?", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument(
        "--curve",
        default=str(store_module.MAX_ROWS_PER_STATEMENT),
        help="statement sizes to compare, comma-separated (the first is the one judged)",
    )
    ap.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="no gc.freeze() after setup (virtwatch freezes once it has started)",
    )
    args = ap.parse_args()
    sizes = [int(x) for x in args.curve.split(",")]
    asyncio.run(main(args.rows, args.rounds, sizes, args.gc_freeze))
