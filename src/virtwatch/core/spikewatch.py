"""The recorder-side spike detector: judges each new minute aggregate as the rollup lands it
and publishes DomainEvent(kind=SPIKE), so spikes are stored once and a past window's
timeline never recomputes history.

It reads the store through `RollupReader`, a port the storage layer implements; the
judging itself is `spikes.SeriesJudge`, the same pure state machine the tests drive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.records import DomainEvent, EventKind
from virtwatch.core.reports import ErrorReport
from virtwatch.core.spikes import (
    MinuteAggregate,
    SeriesJudge,
    SpikeEdge,
    SpikeRules,
    spike_detail,
    spike_summary,
)

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 15.0
MAX_CATCH_UP_S = 24 * 3600  # after a long outage, judge at most the last day
HISTORY_CHUNK = 25  # series per history read: keeps each read (and loop stall) small


@dataclass(frozen=True, slots=True)
class Series:
    """One stored metric series. Identity is (host, vm_uuid, metric); "" uuid = the host."""

    host: str
    vm_uuid: str
    metric: str
    vm_name: str = field(default="", compare=False)


class RollupReader(Protocol):
    """What the detector needs from the store (storage/timeline.py implements it)."""

    async def minute_watermark(self) -> int | None:
        """Minutes starting before this (epoch s) are rolled up and final; None: nothing yet."""
        ...

    async def minute_rows(
        self, since: int, until: int, series: Collection[Series] | None = None
    ) -> Mapping[Series, Sequence[MinuteAggregate]]:
        """Minute aggregates with since <= ts < until (all series, or only `series`), sorted."""
        ...

    async def spike_watermark(self) -> int | None:
        """Minutes before this were judged (persisted across restarts); None: never."""
        ...

    async def save_spike_watermark(self, until: int) -> None: ...


def edge_event(series: Series, edge: SpikeEdge) -> DomainEvent:
    return DomainEvent(
        host=series.host,
        vm_uuid=series.vm_uuid,
        vm_name=series.vm_name,
        kind=EventKind.SPIKE,
        summary=spike_summary(series.metric, edge),
        at=float(edge.at),
        detail=spike_detail(series.metric, edge),
    )


class SpikeWatch:
    """Judges minutes as they become final. `judge_new()` is one pass; `run()` loops."""

    def __init__(
        self,
        reader: RollupReader,
        publish: Callable[[object], None],
        rules: SpikeRules,
        *,
        poll_s: float = DEFAULT_POLL_S,
        max_catch_up_s: int = MAX_CATCH_UP_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reader = reader
        self._publish = publish
        self._rules = rules
        self._poll_s = poll_s
        self._max_catch_up_s = max_catch_up_s
        self._clock = clock
        self._judges: dict[Series, SeriesJudge] = {}
        self._judged_until: int | None = None
        self.passes = 0
        self.minutes_judged = 0
        self.events_published = 0

    @property
    def judged_until(self) -> int | None:
        return self._judged_until

    def _judge(self, series: Series) -> SeriesJudge | None:
        judge = self._judges.get(series)
        if judge is None:
            policy = self._rules.policy_for(series.metric)
            if policy is None:
                return None
            judge = self._judges[series] = SeriesJudge(policy)
        return judge

    async def judge_new(self) -> list[DomainEvent]:
        """Judge every minute that became final since the last pass; publish and return the
        spike events found. Raises what the reader raises (the loop reports it)."""
        watermark = await self._reader.minute_watermark()
        if watermark is None:
            return []
        start = self._judged_until
        if start is None:
            start = await self._reader.spike_watermark()
            if start is None:  # first run on this store: judge from now on
                await self._reader.save_spike_watermark(watermark)
                start = watermark
        start = max(start, watermark - self._max_catch_up_s)
        if watermark <= start:
            self._judged_until = start
            return []
        fresh = await self._reader.minute_rows(start, watermark)
        work: list[tuple[Series, SeriesJudge, Sequence[MinuteAggregate]]] = []
        for series, rows in fresh.items():
            judge = self._judge(series)
            if judge is not None and rows:
                work.append((series, judge, rows))
        due = [s for s, j, rows in work if j.due_within(rows[0].ts, rows[-1].ts)]
        history: dict[Series, Sequence[MinuteAggregate]] = {}
        for i in range(0, len(due), HISTORY_CHUNK):
            chunk = due[i : i + HISTORY_CHUNK]
            window = max(j.policy.window_s for s in chunk if (j := self._judges.get(s)))
            history.update(await self._reader.minute_rows(start - window, start, chunk))
            await asyncio.sleep(0)  # let the UI breathe between chunks
        events: list[DomainEvent] = []
        for series, judge, rows in work:
            known = [*history.get(series, ()), *rows] if series in history else None
            for row in rows:
                for edge in judge.feed(row, known):
                    events.append(edge_event(series, edge))
            self.minutes_judged += len(rows)
        self._forget_stale(watermark)
        self._judged_until = watermark
        await self._reader.save_spike_watermark(watermark)
        for event in events:
            self._publish(event)
        self.events_published += len(events)
        self.passes += 1
        return events

    def _forget_stale(self, now: int) -> None:
        """Drop judges of series silent for longer than their window (VMs that are gone)."""
        for series, judge in list(self._judges.items()):
            if judge.last_ts is not None and now - judge.last_ts > judge.policy.window_s:
                del self._judges[series]

    async def run(self) -> None:
        """Judge every `poll_s` until cancelled; a failing pass is reported, not fatal."""
        failing = False
        while True:
            try:
                await self.judge_new()
                failing = False
            except AppError as err:
                if not failing:
                    self._publish(ErrorReport.of(err))
                failing = True
            except Exception as err:  # the store refused: keep running, say so once
                log.warning("spike detection pass failed: %r", err)
                if not failing:
                    self._publish(
                        ErrorReport.of(
                            AppError(
                                ErrorCode.DATABASE_ERROR,
                                f"spike detection could not read the rollups: "
                                f"{err.__class__.__name__}: {err}",
                                "spikes resume when the database answers again",
                                Severity.WARNING,
                                transient=True,
                            )
                        )
                    )
                failing = True
            await asyncio.sleep(self._poll_s)
