"""Spike detection: is a metric far outside its own recent behaviour? Pure, over minute rollups.

A minute is *hot* when its mean is above the series' own baseline — the 95th percentile
of its minute means over the previous 24 h — by a margin; a spike is a run of consecutive
hot minutes held for a minimum duration. `SeriesJudge` is the one state machine both the
recorder (spike_watch.py) and `detect_spikes` (tests, backfills) drive.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from virtwatch.core.config import validate
from virtwatch.core.config_schema import SpikesSection
from virtwatch.core.percentile import percentile

MINUTE_S = 60


@dataclass(frozen=True, slots=True)
class MinuteAggregate:
    """One minute of one series as the rollup stored it."""

    ts: int  # start of the minute, epoch seconds
    count: int
    total: float  # sum of the raw samples
    minimum: float
    maximum: float
    p95: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class SpikePolicy:
    """How far, and for how long, is "far outside its own behaviour" for one metric."""

    floor: float  # at least this far above the baseline, in the metric's unit
    margin: float = 0.5  # ... and at least this fraction of the baseline above it
    hold_s: int = 2 * MINUTE_S  # hot for at least this long
    window_s: int = 24 * 3600  # baseline window before the minute judged
    min_baseline_s: int = 3600  # minutes of history the baseline needs (younger: not judged)
    refresh_s: int = 10 * MINUTE_S  # baseline recomputed at most this often

    def threshold(self, p95: float) -> float:
        return p95 + max(self.margin * abs(p95), self.floor)


@dataclass(frozen=True, slots=True)
class Baseline:
    p95: float  # of the minute means in the window
    minutes: int  # minute rows it was computed from
    computed_at: int  # exclusive end of its window
    threshold: float
    window_s: int = 24 * 3600


def baseline_of(
    history: Sequence[MinuteAggregate], *, at: int, policy: SpikePolicy
) -> Baseline | None:
    """The baseline for minutes from `at` on: None when the window holds too little history.

    `history` is sorted by ts; only rows with at - window <= ts < at count (gaps are simply
    absent minutes: coverage is the number of rows, not the span).
    """
    keys = [r.ts for r in history]
    lo = bisect.bisect_left(keys, at - policy.window_s)
    hi = bisect.bisect_left(keys, at)
    means = [r.mean for r in history[lo:hi] if r.count > 0]
    return baseline_from(len(means), percentile(means, 95) if means else 0.0, at=at, policy=policy)


def baseline_from(minutes: int, p95: float, *, at: int, policy: SpikePolicy) -> Baseline | None:
    """A baseline from its figures (however computed: here, or by the database)."""
    if minutes < 1 or minutes * MINUTE_S < policy.min_baseline_s:
        return None
    return Baseline(p95, minutes, at, policy.threshold(p95), policy.window_s)


class Phase(enum.StrEnum):
    START = "start"  # held for the minimum duration: reported
    END = "end"  # back under the threshold (or the series stopped)


@dataclass(frozen=True, slots=True)
class SpikeEdge:
    """A spike began (reported once held) or ended. `end` is exclusive (last hot minute + 60)."""

    phase: Phase
    start: int
    end: int
    peak: float  # highest minute mean so far
    first: float  # the first hot minute's mean
    baseline: Baseline

    @property
    def duration_s(self) -> int:
        return self.end - self.start

    @property
    def at(self) -> int:
        return self.start if self.phase is Phase.START else self.end


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive hot minutes, judged against the baseline in force when the run began."""

    start: int
    last: int
    first: float
    peak: float
    baseline: Baseline
    reported: bool = False


@dataclass(slots=True)
class SeriesJudge:
    """One series' judging state. Feed minutes in time order; each may yield edges.

    The baseline is refreshed every `refresh_s` (not during a run: a run is judged against
    the baseline it began under, so a long spike does not raise its own bar).
    """

    policy: SpikePolicy
    run: Run | None = None
    baseline: Baseline | None = None
    checked_at: int | None = None  # when the baseline was last (re)computed, even if None
    last_ts: int | None = None

    def due_within(self, first: int, last: int) -> bool:
        """Would feeding minutes first..last need history (a baseline refresh)?"""
        return self.checked_at is None or last >= self.checked_at + self.policy.refresh_s

    def due_at(self, ts: int) -> bool:
        """Does judging the minute `ts` need a fresh baseline first? (Never in the middle
        of a run that `ts` continues.)"""
        run = self.run
        if run is not None and ts == run.last + MINUTE_S:
            return False
        return self.checked_at is None or ts >= self.checked_at + self.policy.refresh_s

    def set_baseline(self, baseline: Baseline | None, at: int) -> None:
        """Install a baseline computed elsewhere (the store) for minutes from `at` on."""
        self.baseline = baseline
        self.checked_at = at

    def feed(
        self, row: MinuteAggregate, history: Sequence[MinuteAggregate] | None = None
    ) -> list[SpikeEdge]:
        """Judge one minute. `history` (sorted, may include later rows) is read only when
        the baseline is due (`due_at`) and none was installed with `set_baseline`;
        passing None then is a bug in the caller."""
        if self.last_ts is not None and row.ts <= self.last_ts:
            return []  # already judged (a replay after catch-up): idempotent
        edges: list[SpikeEdge] = []
        run = self.run
        if run is not None and row.ts != run.last + MINUTE_S:  # a gap ends a run
            edges.extend(self._close(run))
            run = self.run = None
        if self.due_at(row.ts):
            if history is None:
                raise ValueError(f"baseline due at {row.ts}: history is needed")
            self.set_baseline(baseline_of(history, at=row.ts, policy=self.policy), row.ts)
        self.last_ts = row.ts
        judge_by = run.baseline if run is not None else self.baseline
        hot = judge_by is not None and row.count > 0 and row.mean > judge_by.threshold
        if not hot:
            if run is not None:
                edges.extend(self._close(run))
                self.run = None
            return edges
        assert judge_by is not None
        if run is None:
            run = Run(row.ts, row.ts, row.mean, row.mean, judge_by)
        else:
            run = replace(run, last=row.ts, peak=max(run.peak, row.mean))
        if not run.reported and run.last + MINUTE_S - run.start >= self.policy.hold_s:
            run = replace(run, reported=True)
            edges.append(self._edge(Phase.START, run))
        self.run = run
        return edges

    def _close(self, run: Run) -> list[SpikeEdge]:
        return [self._edge(Phase.END, run)] if run.reported else []

    @staticmethod
    def _edge(phase: Phase, run: Run) -> SpikeEdge:
        return SpikeEdge(phase, run.start, run.last + MINUTE_S, run.peak, run.first, run.baseline)


def detect_spikes(rows: Sequence[MinuteAggregate], policy: SpikePolicy) -> list[SpikeEdge]:
    """Every spike edge in one series' minute rows (sorted by ts, one row per minute)."""
    judge = SeriesJudge(policy)
    edges: list[SpikeEdge] = []
    for i, row in enumerate(rows):
        edges.extend(judge.feed(row, rows[:i]))
    return edges


# -- rules per metric ---------------------------------------------------------------------

# floors by metric name suffix (the unit): how far above its own p95 still counts as noise
DEFAULT_FLOORS: Mapping[str, float] = {
    "_pct": 10.0,  # percentage points
    "_kib": 256.0 * 1024,  # 256 MiB
    "_bps": 1024.0 * 1024,  # 1 MiB/s
    "_iops": 50.0,  # requests per second
    "_pps": 500.0,  # packets per second
}
# exact names never judged: configuration, not behaviour
NOT_JUDGED: frozenset[str] = frozenset({"mem_alloc_kib", "host.mem_total_kib", "vcpus"})


@dataclass(frozen=True, slots=True)
class SpikeRules:
    """The `[spikes]` config section: one policy per metric, from its name or unit suffix."""

    enabled: bool = True
    margin: float = 0.5
    hold_s: int = 2 * MINUTE_S
    window_s: int = 24 * 3600
    min_baseline_s: int = 3600
    refresh_s: int = 10 * MINUTE_S
    floors: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FLOORS))

    def policy_for(self, metric: str) -> SpikePolicy | None:
        """The policy for `metric`, or None when it is not judged (unknown unit, excluded)."""
        if not self.enabled or metric in NOT_JUDGED:
            return None
        floor = self.floors.get(metric)
        if floor is None:
            for suffix, value in self.floors.items():
                if suffix.startswith("_") and metric.endswith(suffix):
                    floor = value
                    break
        if floor is None or floor <= 0:
            return None
        return SpikePolicy(
            floor=floor,
            margin=self.margin,
            hold_s=self.hold_s,
            window_s=self.window_s,
            min_baseline_s=self.min_baseline_s,
            refresh_s=self.refresh_s,
        )


def spike_rules(section: Mapping[str, Any], path: Path | None = None) -> SpikeRules:
    """Parse `[spikes]` (the schema's `SpikesSection`: enabled, margin, hold_minutes,
    baseline_hours, min_baseline_minutes, refresh_minutes, and a `[spikes.floors]` table of
    metric name or `_suffix` -> floor)."""
    sec = validate(SpikesSection, section, prefix="spikes", path=path)
    return SpikeRules(
        enabled=sec.enabled,
        margin=sec.margin,
        hold_s=MINUTE_S * sec.hold_minutes,
        window_s=3600 * sec.baseline_hours,
        min_baseline_s=MINUTE_S * sec.min_baseline_minutes,
        refresh_s=MINUTE_S * sec.refresh_minutes,
        floors={**DEFAULT_FLOORS, **sec.floors},
    )


# -- words --------------------------------------------------------------------------------

_LABELS = {
    "cpu_pct": "CPU",
    "vcpu_delay_pct": "vCPU delay",
    "mem_used_kib": "memory used",
    "disk_rd_bps": "disk read",
    "disk_wr_bps": "disk write",
    "disk_rd_iops": "disk read IOPS",
    "disk_wr_iops": "disk write IOPS",
    "net_rx_bps": "network receive",
    "net_tx_bps": "network send",
    "host.cpu_pct": "host CPU",
    "host.mem_used_kib": "host memory used",
    "host.swap_used_kib": "host swap used",
    "host.disk_read_bps": "host disk read",
    "host.disk_write_bps": "host disk write",
    "host.net_rx_bps": "host network receive",
    "host.net_tx_bps": "host network send",
}


def metric_label(metric: str) -> str:
    return _LABELS.get(metric, metric)


def format_value(metric: str, value: float) -> str:
    """A value in its metric's unit, for a summary line."""
    if metric.endswith("_pct"):
        return f"{value:.1f} %"
    if metric.endswith("_kib"):
        mib = value / 1024
        return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"
    if metric.endswith("_bps"):
        for unit, size in (("GiB/s", 1024.0**3), ("MiB/s", 1024.0**2), ("KiB/s", 1024.0)):
            if value >= size:
                return f"{value / size:.1f} {unit}"
        return f"{value:.0f} B/s"
    if metric.endswith(("_iops", "_pps")):
        return f"{value:.0f}/s"
    return f"{value:.4g}"


def _minutes(seconds: int) -> str:
    m = seconds // MINUTE_S
    return f"{m} min" if m < 120 else f"{m / 60:.1f} h"


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:g} h"


def spike_summary(metric: str, edge: SpikeEdge) -> str:
    """Words for the timeline: what spiked, how far above its usual, for how long."""
    label = metric_label(metric)
    usual = format_value(metric, edge.baseline.p95)
    if edge.phase is Phase.START:
        return (
            f"{label} spike: {format_value(metric, edge.peak)} against its usual {usual} "
            f"({_hours(edge.baseline.window_s)} p95), held {_minutes(edge.duration_s)}"
        )
    return (
        f"{label} spike over after {_minutes(edge.duration_s)}: "
        f"peak {format_value(metric, edge.peak)}, usual {usual}"
    )


def spike_detail(metric: str, edge: SpikeEdge) -> dict[str, str]:
    """The stored event's detail: plain strings, enough to redraw the judgement."""
    b = edge.baseline
    return {
        "metric": metric,
        "phase": edge.phase.value,
        "start": str(edge.start),
        "end": str(edge.end),
        "peak": repr(edge.peak),
        "first": repr(edge.first),
        "baseline_p95": repr(b.p95),
        "threshold": repr(b.threshold),
        "baseline_minutes": str(b.minutes),
        "baseline_window_s": str(b.window_s),
    }
