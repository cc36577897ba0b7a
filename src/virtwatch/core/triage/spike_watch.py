"""The recorder-side spike detector: judges each new minute aggregate as the rollup lands it
and publishes DomainEvent(kind=SPIKE), so spikes are stored once and a past window's
timeline never recomputes history.

It reads the store through `RollupReader`, a port the storage layer implements; each
series' last 24 h of minute means is read once and then kept up to date in memory
(`MeanWindow`); the judging itself is `spikes.SeriesJudge`, the same pure state machine
the tests drive.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from array import array
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.percentile import percentile
from virtwatch.core.records import DomainEvent, EventKind
from virtwatch.core.triage.spikes import (
    MinuteAggregate,
    SeriesJudge,
    SpikeEdge,
    SpikeRules,
    baseline_from,
    spike_detail,
    spike_summary,
)

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 15.0
RESTART_CATCH_UP_S = 2 * 3600  # on (re)start, re-judge this much (stored spikes are skipped)
HISTORY_CHUNK = 100  # series per history read at first sight (the database writes JSON)


@dataclass(frozen=True, slots=True)
class Series:
    """One stored metric series. Identity is (host, vm_uuid, metric); "" uuid = the host."""

    host: str
    vm_uuid: str
    metric: str
    vm_name: str = field(default="", compare=False)


# what identifies a spike edge already stored: (host, vm_uuid, metric, phase, start)
EdgeKey = tuple[str, str, str, str, int]


class RollupReader(Protocol):
    """What the detector needs from the store (storage/timeline_queries.py implements it)."""

    async def minute_watermarks(self) -> Mapping[str, int]:
        """Per host: minutes starting before this (epoch s) are rolled up and final."""
        ...

    async def series(self, host: str) -> Sequence[Series]:
        """The metric catalogue of one host."""
        ...

    async def minute_rows(
        self, since: int, until: int, series: Collection[Series]
    ) -> Mapping[Series, Sequence[MinuteAggregate]]:
        """Minute aggregates of `series` with since <= ts < until, each sorted by ts."""
        ...

    async def minute_means(
        self, since: int, until: int, series: Collection[Series]
    ) -> Mapping[Series, tuple[Sequence[int], Sequence[float]]]:
        """Per series: the start (epoch s) and mean (sum / count) of every minute with
        samples in since <= ts < until, oldest first — the baseline's history, in bulk."""
        ...

    async def stored_spikes(self, host: str, since: int, until: int) -> Collection[EdgeKey]:
        """Spike edges already stored for `host` whose minute lies in [since, until)."""
        ...


class MeanWindow:
    """One series' minute means, oldest first, for its baseline: loaded once from the
    store, then appended as minutes are judged; what falls out of the window is dropped.
    (~12 bytes a minute: 100 VMs x 10 metrics x 24 h is ~17 MB.)"""

    __slots__ = ("_means", "_start", "_ts")

    def __init__(self, ts: Sequence[int] = (), means: Sequence[float] = ()) -> None:
        """Start from the store's history: minute starts (ascending) and their means."""
        self._ts: array[int] = array("q", ts)
        self._means: array[float] = array("d", means)
        self._start = 0
        if len(self._ts) != len(self._means):
            raise ValueError("a window needs one mean per minute")

    def __len__(self) -> int:
        return len(self._ts) - self._start

    def add(self, row: MinuteAggregate) -> None:
        if row.count > 0 and (not self._ts or row.ts > self._ts[-1]):
            self._ts.append(row.ts)
            self._means.append(row.mean)

    def figures(self, since: int, until: int) -> tuple[int, float]:
        """(minutes, nearest-rank p95 of their means) in [since, until); drops what is
        older than `since` (baselines only move forward)."""
        lo = bisect.bisect_left(self._ts, since, self._start)
        hi = bisect.bisect_left(self._ts, until, lo)
        self._start = lo
        if lo > 4096 and lo > len(self._ts) // 2:  # compact now and then
            del self._ts[:lo]
            del self._means[:lo]
            self._start, hi = 0, hi - lo
        values = self._means[self._start : hi]
        return (len(values), percentile(values, 95)) if values else (0, 0.0)


def edge_key(series: Series, edge: SpikeEdge) -> EdgeKey:
    return (series.host, series.vm_uuid, series.metric, edge.phase.value, edge.start)


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
    """Judges minutes as they become final. `judge_new()` is one pass; `run()` loops.

    Nothing is persisted besides the events: on (re)start each host's last
    `catch_up_s` is judged again and edges already stored are not published twice.
    """

    def __init__(
        self,
        reader: RollupReader,
        publish: Callable[[object], None],
        rules: SpikeRules,
        *,
        poll_s: float = DEFAULT_POLL_S,
        catch_up_s: int = RESTART_CATCH_UP_S,
        hosts: Collection[str] | None = None,
    ) -> None:
        """`hosts`: judge only these (a recorder's own, when several share a database);
        None: every host the store has rollups of."""
        self._hosts = None if hosts is None else frozenset(hosts)
        self._reader = reader
        self._publish = publish
        self._rules = rules
        self._poll_s = poll_s
        self._catch_up_s = catch_up_s
        self._judges: dict[Series, SeriesJudge] = {}
        self._windows: dict[Series, MeanWindow] = {}
        self._judged_until: dict[str, int] = {}
        self.passes = 0
        self.minutes_judged = 0
        self.events_published = 0

    @property
    def judged_until(self) -> Mapping[str, int]:
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
        events: list[DomainEvent] = []
        if not self._rules.enabled:
            return events
        for host, watermark in sorted((await self._reader.minute_watermarks()).items()):
            if self._hosts is None or host in self._hosts:
                events += await self._judge_host(host, watermark)
        for event in events:
            self._publish(event)
        self.events_published += len(events)
        self.passes += 1
        return events

    async def _judge_host(self, host: str, watermark: int) -> list[DomainEvent]:
        first_pass = host not in self._judged_until
        start = self._judged_until.get(host, watermark - self._catch_up_s)
        if watermark <= start:
            self._judged_until[host] = start
            return []
        judged = [s for s in await self._reader.series(host) if self._judge(s) is not None]
        fresh = await self._reader.minute_rows(start, watermark, judged) if judged else {}
        work: list[tuple[Series, SeriesJudge, Sequence[MinuteAggregate]]] = []
        for series, rows in fresh.items():
            judge = self._judge(series)
            if judge is not None and rows:
                work.append((series, judge, rows))
        # first sight of a series: its window of minute means, read once from the store
        fresh_series = [s for s, _j, _rows in work if s not in self._windows]
        for i in range(0, len(fresh_series), HISTORY_CHUNK):
            chunk = fresh_series[i : i + HISTORY_CHUNK]
            window = max(self._judges[s].policy.window_s for s in chunk)
            history = await self._reader.minute_means(start - window, start, chunk)
            for s in chunk:
                self._windows[s] = MeanWindow(*history.get(s, ((), ())))
            await asyncio.sleep(0)  # let the UI breathe between chunks
        # then minute by minute across series, each baseline from its window
        at_ts: dict[int, list[tuple[Series, SeriesJudge, MinuteAggregate]]] = {}
        for series, judge, rows in work:
            for row in rows:
                at_ts.setdefault(row.ts, []).append((series, judge, row))
            self.minutes_judged += len(rows)
        found: list[tuple[EdgeKey, DomainEvent]] = []
        for ts in sorted(at_ts):
            for series, judge, row in at_ts[ts]:
                means = self._windows[series]
                if judge.due_at(ts):
                    minutes, p95 = means.figures(ts - judge.policy.window_s, ts)
                    judge.set_baseline(baseline_from(minutes, p95, at=ts, policy=judge.policy), ts)
                for edge in judge.feed(row):
                    found.append((edge_key(series, edge), edge_event(series, edge)))
                means.add(row)
        if first_pass and found:  # re-judged after a restart: skip what is already stored
            stored = set(await self._reader.stored_spikes(host, start, watermark))
            found = [(k, e) for k, e in found if k not in stored]
        self._forget_stale(host, watermark)
        self._judged_until[host] = watermark
        return [e for _, e in found]

    def _forget_stale(self, host: str, now: int) -> None:
        """Drop judges of series silent for longer than their window (VMs that are gone)."""
        for series, judge in list(self._judges.items()):
            if series.host != host or judge.last_ts is None:
                continue
            if now - judge.last_ts > judge.policy.window_s:
                del self._judges[series]
                self._windows.pop(series, None)

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
