"""The store writer: hub records -> a bounded in-memory buffer -> batched transactions.

Producers never await the disk: the hub hands items over without blocking, and small
intake tasks move them into one bounded buffer. One writer task commits the buffer at
least every `flush_interval_s` (and at once when a statement's worth is waiting), then
runs the rollups and retention when they are due. When the database refuses writes
(disk full, locked for long, server down) the app keeps running: the rows stay in the
buffer, the oldest raw samples are dropped first when it is full (errors, health and
events are kept in preference), every drop is counted and reported, and the writer
retries until the database takes rows again.

With a role (recorder or dashboard) the writer holds a lease on the hosts it has rows
for (storage/lease.py): when another process leads a host (a recorder, an earlier
dashboard), this one leaves that host's samples, events, connection states, health and
rollups to it, so the database holds one copy of each host's history; its own errors,
tasks and audit are written whatever it leads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.uri import redact_text
from virtwatch.core.model import Snapshot
from virtwatch.core.records import DomainEvent, HealthAlert, HealthResult, HostConnection
from virtwatch.storage import retention, rollup
from virtwatch.storage.backlog import SampleBacklog
from virtwatch.storage.intake import store_intake
from virtwatch.storage.lease import TTL_S, Claim, Holder, Lease, WriterRole
from virtwatch.storage.retention import Retention
from virtwatch.storage.rows import Record, ms, rows_from_snapshot
from virtwatch.storage.store import MAX_ROWS_PER_STATEMENT, Sample, Store

log = logging.getLogger(__name__)

DEFAULT_BUFFER_ROWS = 200_000  # ~20 MB; 100 VMs x 10 metrics at 2 s: ~13 minutes of outage
DEFAULT_FLUSH_INTERVAL_S = 1.0
MAX_ROWS_PER_FLUSH = 20_000  # one transaction; the rest goes in the next one at once
ROLLUP_EVERY_S = 60.0
RETENTION_EVERY_S = 600.0
MAINTENANCE_BUDGET_S = 2.0  # retention work per round, then the buffer is flushed again
IDLE_HOST_S = 3600.0  # a host with no new sample for this long is nobody's any more
MAX_ROLLUP_STEPS_PER_ROUND = 4  # then flush again: catching up never delays new rows long
# "database is locked" for up to this long is normal contention, not worth a report
BUSY_GRACE_S = 30.0
REPORT_EVERY_S = 60.0
RETRY_MIN_S = 1.0
RETRY_MAX_S = 10.0

Reporter = Callable[[AppError], None]
_host_of = operator.itemgetter(0)  # SampleRow.host
_ts_of = operator.itemgetter(4)  # SampleRow.ts_ms
# the records of a host that only the host's leading writer stores (spikes and drift are
# DomainEvents); errors, task updates and audit are every process's own
HOST_RECORDS = (DomainEvent, HostConnection, HealthResult, HealthAlert)


class WriterState(enum.StrEnum):
    UNSTARTED = "unstarted"
    RUNNING = "running"
    FAILING = "failing"  # the database refuses writes; rows are held in memory
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What the `store.writable` health check (core/health/checks.py `store_check`, which takes
    the writer itself) needs to judge the writer."""

    state: WriterState
    buffered_samples: int
    buffered_records: int
    dropped_samples: int  # oldest raw samples dropped because the buffer was full
    dropped_records: int  # records dropped (only when no sample was left to drop)
    rows_written: int
    flushes: int
    failed_flushes: int
    last_flush_at: float | None  # wall time of the last successful commit
    failing_since: float | None
    last_error: str | None
    lag_s: float  # age of the oldest row still waiting for the disk (0 when none)
    role: str | None = None  # a WriterRole, None for a writer without a lease
    leads: tuple[str, ...] = ()  # hosts whose history this writer writes
    others: tuple[Claim, ...] = ()  # per host it does not lead: who writes it (or will)
    # rows of hosts another process writes, left to it (not a loss: never reported)
    not_written_samples: int = 0
    not_written_records: int = 0

    @property
    def buffered(self) -> int:
        return self.buffered_samples + self.buffered_records

    @property
    def recorded_elsewhere(self) -> tuple[str, ...]:
        """'hv1 is recorded by virtwatch record (pid 1234 on node7)', per host not led."""
        return tuple(f"{c.host} is recorded by {c.describe()}" for c in self.others)


def is_busy(err: BaseException) -> bool:
    """SQLite's "database is locked/busy": another process holds the write lock."""
    text = str(err).lower()
    return "database is locked" in text or "database is busy" in text


class StoreWriter:
    """`async with StoreWriter(store, hub):` writes everything the hub carries for the
    store until the block exits, then flushes. Or run `run()` as a task and cancel it."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        *,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        retention_policy: Retention | None = None,
        maintenance: bool = True,
        report: Reporter | None = None,
        clock: Callable[[], float] = time.time,
        intake: Iterable[Subscription[Any]] | None = None,
        role: WriterRole | None = None,
    ) -> None:
        if buffer_rows < 1:
            raise ValueError(f"buffer_rows must be at least 1, got {buffer_rows}")
        self._store = store
        self._hub = hub
        self._buffer_rows = buffer_rows
        self._flush_interval_s = flush_interval_s
        self._retention = retention_policy or Retention()
        self._maintenance = maintenance
        self._report = report or (lambda err: hub.publish(ErrorReport.of(err)))
        self._clock = clock
        # samples as chunks of plain tuples the garbage collector stops tracking, so a
        # full buffer does not lengthen every full collection (a stall of the whole loop)
        self._samples = SampleBacklog()
        self._records: collections.deque[Record] = collections.deque()
        self._inflight_samples: tuple[Sample, ...] = ()
        self._inflight_records: list[Record] = []
        self._pending_since: float | None = None
        self._wakeup = asyncio.Event()
        # one flush at a time: `flush()` may be called while the writer's task flushes
        self._flushing = asyncio.Lock()
        # made here, or before the writer by `store_intake(hub)` (`intake`): either way
        # before anything the store keeps is published
        self._subs: list[Subscription[Any]] = (
            list(intake) if intake is not None else store_intake(hub)
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self.state = WriterState.UNSTARTED
        self.dropped_samples = 0
        self.dropped_records = 0
        self._reported_drops = 0
        self.rows_written = 0
        self.samples_written = 0
        self.records_written = 0
        self.flushes = 0
        self.failed_flushes = 0
        self.last_flush_at: float | None = None
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._last_report_at: float | None = None
        self._record_hosts: set[str] = set()  # hosts of the HOST_RECORDS it was given
        # without a role: a plain batch writer that writes every host (tests, tools)
        self._lease = (
            None
            if role is None
            else Lease(store, Holder.of_this_process(role, round(clock() * 1000)))
        )
        # host -> when its last sample came (its keys: every host it has samples of)
        self._sample_seen: dict[str, float] = {}
        self.not_written_samples = 0
        self.not_written_records = 0
        self._next_rollup_at = 0.0
        self._next_retention_at = 0.0
        self.rollup_steps = 0
        self.retention_runs = 0

    # ---- intake (never awaits the disk) ----------------------------------------------

    def _buffered(self) -> int:
        return (
            len(self._samples)
            + len(self._records)
            + len(self._inflight_samples)
            + len(self._inflight_records)
        )

    def _mark_pending(self) -> None:
        if self._pending_since is None:
            self._pending_since = self._clock()
        if len(self._samples) + len(self._records) >= MAX_ROWS_PER_STATEMENT:
            self._wakeup.set()

    def add_samples(self, samples: Iterable[Sample]) -> None:
        """Queue raw samples (SampleRows or plain tuples of their fields); when the buffer
        is full the oldest samples make room. A sample never displaces a record (errors,
        health, events are kept first)."""
        rows = cast(tuple[Sample, ...], tuple(map(tuple, samples)))
        if not rows:
            return
        overflow = self._buffered() + len(rows) - self._buffer_rows
        if overflow > 0:
            older = self._samples.drop_oldest(overflow)
            self.dropped_samples += overflow
            if overflow > older:  # only records and rows in flight held: the oldest new go
                rows = rows[overflow - older :]
        self._samples.append(rows)
        self._sample_seen.update(dict.fromkeys(map(_host_of, rows), self._clock()))
        self._mark_pending()

    def add_record(self, record: Record) -> None:
        """Queue an error, health result, event, task update, audit or connection row;
        when the buffer is full the oldest raw sample makes room, else the oldest record."""
        if self._buffered() >= self._buffer_rows:
            if self._samples:
                self._samples.drop_oldest(1)
                self.dropped_samples += 1
            elif self._records:
                self._records.popleft()
                self.dropped_records += 1
            else:
                self.dropped_records += 1  # everything held is in flight
                return
        if isinstance(record, HOST_RECORDS) and record.host:
            self._record_hosts.add(record.host)
        self._records.append(record)
        self._mark_pending()

    async def _intake(self, sub: Subscription[Any]) -> None:
        async for item in sub:
            if isinstance(item, Snapshot):
                self.add_samples(rows_from_snapshot(item))
            else:
                self.add_record(item)

    # ---- stats -------------------------------------------------------------------------

    def stats(self) -> WriterStats:
        now = self._clock()
        return WriterStats(
            state=self.state,
            buffered_samples=len(self._samples) + len(self._inflight_samples),
            buffered_records=len(self._records) + len(self._inflight_records),
            dropped_samples=self.dropped_samples
            + sum(s.dropped for s in self._subs if s.kind is Snapshot),
            dropped_records=self.dropped_records
            + sum(s.dropped for s in self._subs if s.kind is not Snapshot),
            rows_written=self.rows_written,
            flushes=self.flushes,
            failed_flushes=self.failed_flushes,
            last_flush_at=self.last_flush_at,
            failing_since=self.failing_since,
            last_error=self.last_error,
            lag_s=0.0 if self._pending_since is None else max(0.0, now - self._pending_since),
            role=None if self._lease is None else self._lease.holder.role.value,
            leads=tuple(
                sorted(self._sample_seen.keys() | self._record_hosts)
                if self._lease is None
                else sorted(self._lease.led)
            ),
            others=()
            if self._lease is None
            else tuple(self._lease.writers[h] for h in sorted(self._lease.writers)),
            not_written_samples=self.not_written_samples,
            not_written_records=self.not_written_records,
        )

    def oldest_pending_ms(self) -> int | None:
        """The earliest sample time not yet committed (rollups stop short of it)."""
        oldest: int | None = min(map(_ts_of, self._inflight_samples), default=None)
        first = self._samples.oldest_ts_ms()
        if first is not None:
            oldest = first if oldest is None else min(oldest, first)
        return oldest

    # ---- flushing ------------------------------------------------------------------------

    async def flush(self) -> int:
        """Commit what is buffered now (in transactions of at most MAX_ROWS_PER_FLUSH rows).

        Returns the rows committed; raises the database's error when it refuses, with
        the rows kept for the next try.
        """
        total = 0
        while self._samples or self._records:
            total += await self._flush_some()
        return total

    async def _renew_if_due(self) -> None:
        """Renew the lease every RENEW_EVERY_S, and at once when the hosts it has recent
        samples of, or records of, changed: rows of a host not yet decided wait for it.
        Only a host with a sample in the last TTL_S is claimed: a process that cannot
        reach a host must not keep the one that can from writing it."""
        lease = self._lease
        if lease is None:
            return
        now = self._clock()
        claim = frozenset(h for h, at in self._sample_seen.items() if now - at < TTL_S)
        watch = frozenset(self._record_hosts) - claim
        if lease.due(now) or claim != lease.claimed or watch != lease.watched:
            await lease.renew(claim, now, watch)

    async def _leave_to_others(self, lease: Lease) -> None:
        """Sort the flush in flight by the lease's decisions: rows of hosts another
        process writes go (counted as not written); of a host just taken over, the rows
        taken before (the other process wrote them) go too; rows of a host not decided
        yet (first seen while the lease renewed) go back to the buffer for the next
        flush, which renews first. Errors, task updates and audit are always written."""
        led, cuts, decided = lease.led, lease.cuts, lease.claimed
        taken = self._inflight_samples
        if taken and (cuts or not set(map(_host_of, taken)) <= led):
            kept: list[Sample] = []
            held: list[Sample] = []
            for start in range(0, len(taken), MAX_ROWS_PER_STATEMENT):
                if start:
                    await asyncio.sleep(0)  # a big backlog never holds the loop for long
                for r in taken[start : start + MAX_ROWS_PER_STATEMENT]:
                    host = r[0]
                    if host in led:
                        if r[4] >= cuts.get(host, 0):
                            kept.append(r)
                    elif host not in decided:
                        held.append(r)
            self.not_written_samples += len(taken) - len(kept) - len(held)
            self._inflight_samples = tuple(kept)
            self._samples.put_back(tuple(held))
        records = self._inflight_records
        mine: list[Record] = []
        back: list[Record] = []
        for rec in records:
            if not isinstance(rec, HOST_RECORDS) or not rec.host:
                mine.append(rec)
            elif rec.host in led:
                if ms(rec.at) >= cuts.get(rec.host, 0):
                    mine.append(rec)
            elif rec.host in lease.unclaimed:  # records only, and nobody else writes it
                mine.append(rec)
            elif rec.host not in decided and rec.host not in lease.watched:
                back.append(rec)
        self.not_written_records += len(records) - len(mine) - len(back)
        self._inflight_records = mine
        self._records.extendleft(reversed(back))

    async def _flush_some(self) -> int:
        async with self._flushing:  # the rows in flight are this flush's alone
            return await self._flush_some_alone()

    async def _flush_some_alone(self) -> int:
        await self._renew_if_due()  # before anything is taken: a failure keeps it all
        n_rec = min(len(self._records), MAX_ROWS_PER_FLUSH)
        self._inflight_records = [self._records.popleft() for _ in range(n_rec)]
        n_smp = min(len(self._samples), MAX_ROWS_PER_FLUSH - n_rec)
        self._inflight_samples = self._samples.take(n_smp)
        try:
            if self._lease is not None:  # (it awaits: a cancel there keeps the rows too)
                await self._leave_to_others(self._lease)
            written = await self._store.write(self._inflight_samples, self._inflight_records)
        except BaseException:
            # back to the front, in order; then trim to the bound (oldest samples first)
            self._records.extendleft(reversed(self._inflight_records))
            self._samples.put_back(self._inflight_samples)
            self._inflight_records, self._inflight_samples = [], ()
            excess = self._buffered() - self._buffer_rows
            if excess > 0:
                self.dropped_samples += self._samples.drop_oldest(excess)
            raise
        self.samples_written += len(self._inflight_samples)
        self.records_written += len(self._inflight_records)
        self._inflight_records, self._inflight_samples = [], ()
        self.rows_written += written
        self.flushes += 1
        self.last_flush_at = self._clock()
        self._pending_since = self.last_flush_at if (self._samples or self._records) else None
        return written

    def _on_failure(self, err: Exception) -> None:
        now = self._clock()
        self.failed_flushes += 1
        self.last_error = redact_text(f"{err.__class__.__name__}: {err}")[:500]
        if self.failing_since is None:
            self.failing_since = now
        busy = is_busy(err)
        if busy and now - self.failing_since < BUSY_GRACE_S:
            self.state = WriterState.RUNNING  # ordinary contention: retried quietly
            return
        self.state = WriterState.FAILING
        if self._last_report_at is None or now - self._last_report_at >= REPORT_EVERY_S:
            self._last_report_at = now
            log.warning("the database refuses writes: %s", self.last_error)
            self._report(
                AppError(
                    ErrorCode.DATABASE_ERROR,
                    f"the database refuses writes: {self.last_error}; "
                    f"{self._buffered()} rows held in memory",
                    "free disk space (or release the lock / start the database server); "
                    "virtwatch keeps collecting and writes the held rows when it can",
                    Severity.CRITICAL,
                    {"database": redact_text(self._store.url)},
                    transient=True,
                    cause=err,
                )
            )

    def _on_success(self) -> None:
        if self.failing_since is not None:
            log.info(
                "the database takes writes again after %.0f s", self._clock() - self.failing_since
            )
        self.failing_since = None
        self._last_report_at = None
        self.last_error = None
        self.state = WriterState.RUNNING

    def _report_drops(self) -> None:
        dropped = self.stats().dropped_samples + self.stats().dropped_records
        if dropped > self._reported_drops:
            lost = dropped - self._reported_drops
            self._reported_drops = dropped
            self._report(
                AppError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"write buffer full: {lost} rows dropped ({dropped} since start), "
                    "oldest raw samples first",
                    "the database was too slow or refused writes for long; check the "
                    "store health and free disk space",
                    Severity.ERROR,
                    {"buffer_rows": str(self._buffer_rows)},
                )
            )

    async def _maintain(self) -> None:
        """Rollups every minute (a few chunks a round while catching up), retention
        every ten minutes. Failures are reported like write failures."""
        now = self._clock()
        lease = self._lease
        hosts = sorted(self._sample_seen if lease is None else self._sample_seen.keys() & lease.led)
        if now >= self._next_rollup_at and hosts:
            steps = await rollup.rollup(
                self._store,
                hosts,
                now_ms=int(now * 1000),
                oldest_pending_ms=self.oldest_pending_ms(),
                max_steps=MAX_ROLLUP_STEPS_PER_ROUND,
            )
            self.rollup_steps += len(steps)
            behind = len(steps) >= MAX_ROLLUP_STEPS_PER_ROUND
            self._next_rollup_at = now if behind else now + ROLLUP_EVERY_S
        if now >= self._next_retention_at:
            # hosts no recorder writes any more (removed from the config, recorder gone):
            # their last samples are rolled up here, so retention can retire them
            quiet = int((now - IDLE_HOST_S) * 1000)
            idle = await rollup.idle_hosts(self._store, quiet_since_ms=quiet)
            idle = [h for h in idle if h not in self._sample_seen]
            if idle:
                await rollup.rollup(self._store, idle, now_ms=int(now * 1000))
            report = await retention.apply(
                self._store, self._retention, now=now, budget_s=MAINTENANCE_BUDGET_S
            )
            self.retention_runs += 1
            # a big backlog (a shorter retention, a first run) goes in slices between flushes
            self._next_retention_at = now if not report.complete else now + RETENTION_EVERY_S

    async def _cycle(self) -> float:
        """One flush (+ maintenance); returns how long to wait before the next one."""
        try:
            if self._samples or self._records:
                await self._flush_some()  # renews the lease first when due
            else:
                await self._renew_if_due()  # idle: the claims stay live
            if not (self._samples or self._records) and self._maintenance:
                await self._maintain()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._on_failure(err)
            return min(RETRY_MAX_S, RETRY_MIN_S * float(2 ** min(self.failed_flushes, 4)))
        else:
            if self.failing_since is not None or self.state is not WriterState.RUNNING:
                self._on_success()
            self.failed_flushes = 0
        self._report_drops()
        if len(self._samples) + len(self._records) >= MAX_ROWS_PER_STATEMENT:
            return 0.0
        return self._flush_interval_s

    async def run(self) -> None:
        """Write until stopped (`close()`) or cancelled; then flush what is held, once.

        A cancel never lands inside a transaction: the cycle in flight finishes first
        (a transaction torn down mid-way could leave SQLite's write lock held).
        """
        self.state = WriterState.RUNNING
        self._tasks = [
            asyncio.create_task(self._intake(sub), name=f"store-intake:{sub.kind.__name__}")
            for sub in self._subs
        ]
        try:
            while not self._stopping:
                cycle = asyncio.ensure_future(self._cycle())
                try:
                    delay = await asyncio.shield(cycle)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await cycle
                    raise
                self._wakeup.clear()
                if delay > 0 and not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), delay)
            await self._final_flush()
        except asyncio.CancelledError:
            await asyncio.shield(self._final_flush())
            raise
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for sub in self._subs:
                sub.close()
            self.state = WriterState.CLOSED

    async def _final_flush(self) -> None:
        for sub in self._subs:  # whatever reached the hub before the stop
            while (item := sub.get_nowait()) is not None:
                if isinstance(item, Snapshot):
                    self.add_samples(rows_from_snapshot(item))
                else:
                    self.add_record(item)
        try:
            await self.flush()
        except Exception as err:
            self._on_failure(err)
            log.error("final flush failed: %d rows not written: %s", self._buffered(), err)
        await self._release()

    async def _release(self) -> None:
        """Hand this writer's hosts over: deleted claims are taken at the others' next
        renew (one that cannot be deleted now expires after the TTL)."""
        if self._lease is None:
            return
        try:
            await self._lease.release()
        except Exception as err:
            log.warning("the writer's claims stay until they expire: %s", redact_text(str(err)))

    # ---- as a context manager -------------------------------------------------------------

    async def __aenter__(self) -> StoreWriter:
        if self.state is not WriterState.UNSTARTED:
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"the store writer is {self.state}; it runs once",
                "this is a bug in virtwatch: build a new StoreWriter",
            )
        self._runner = asyncio.create_task(self.run(), name="store-writer")
        await asyncio.sleep(0)  # let it subscribe its intake tasks
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop, after a last flush of everything held (idempotent)."""
        self._stopping = True
        self._wakeup.set()
        runner = self._runner
        if runner is not None and not runner.done():
            await runner
        elif self.state is WriterState.UNSTARTED:
            await self._release()  # flushed by hand, never run: its claims go too
