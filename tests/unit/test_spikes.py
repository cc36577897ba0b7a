"""Spike detection as a pure function over minute rollup rows, and the recorder-side pass."""

from __future__ import annotations

import bisect
from collections.abc import Collection, Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtwatch.core.config import ConfigError
from virtwatch.core.percentile import percentile
from virtwatch.core.records import DomainEvent, EventKind
from virtwatch.core.triage.spike_watch import EdgeKey, MeanWindow, Series, SpikeWatch
from virtwatch.core.triage.spikes import (
    MINUTE_S,
    NOT_JUDGED,
    MinuteAggregate,
    Phase,
    SeriesJudge,
    SpikeEdge,
    SpikePolicy,
    SpikeRules,
    baseline_from,
    baseline_of,
    detect_spikes,
    format_value,
    spike_detail,
    spike_rules,
    spike_summary,
)

T0 = 1_795_000_000 - 1_795_000_000 % 60

# small windows keep hypothesis fast; the shape of the rules is the same as the defaults
POLICY = SpikePolicy(
    floor=5.0,
    margin=0.5,
    hold_s=3 * MINUTE_S,
    window_s=60 * MINUTE_S,
    min_baseline_s=20 * MINUTE_S,
    refresh_s=5 * MINUTE_S,
)


def row(ts: int, value: float, count: int = 30) -> MinuteAggregate:
    return MinuteAggregate(ts, count, value * count, value, value, value)


def series_of(values: Sequence[float], *, start: int = T0) -> list[MinuteAggregate]:
    return [row(start + i * MINUTE_S, v) for i, v in enumerate(values)]


# a series: (gap in minutes before this row, mean value, samples in the minute)
steps = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 0, 0, 0, 1, 3, 90]),
        st.floats(min_value=0, max_value=100, allow_nan=False),
        st.integers(min_value=1, max_value=30),
    ),
    max_size=260,
)


def build(spec: Sequence[tuple[int, float, int]]) -> list[MinuteAggregate]:
    rows, ts = [], T0
    for gap, value, count in spec:
        ts += gap * MINUTE_S
        rows.append(MinuteAggregate(ts, count, value * count, value, value, value))
        ts += MINUTE_S
    return rows


# -- the pure function ----------------------------------------------------------------------


@given(
    value=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    spec=st.lists(st.tuples(st.sampled_from([0, 0, 0, 2, 200]), st.integers(1, 30)), max_size=300),
)
def test_a_flat_series_never_spikes(value: float, spec: list[tuple[int, int]]) -> None:
    rows = build([(gap, value, count) for gap, count in spec])
    assert detect_spikes(rows, POLICY) == []


@given(values=st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=19))
def test_a_vm_younger_than_the_minimum_baseline_is_not_judged(values: list[float]) -> None:
    # 19 minutes of history < 20 minutes required: whatever it does, nothing is a spike yet
    assert detect_spikes(series_of(values), POLICY) == []


@settings(max_examples=300)
@given(spec=steps)
def test_every_reported_spike_is_justified(spec: list[tuple[int, float, int]]) -> None:
    rows = build(spec)
    by_ts = {r.ts: r for r in rows}
    edges = detect_spikes(rows, POLICY)
    for edge in edges:
        b = edge.baseline
        # the baseline: enough history, from before the run, at most one refresh old
        assert b.minutes * MINUTE_S >= POLICY.min_baseline_s
        assert edge.start - POLICY.refresh_s < b.computed_at <= edge.start
        window = [r.mean for r in rows if b.computed_at - POLICY.window_s <= r.ts < b.computed_at]
        assert len(window) == b.minutes
        assert b.p95 == percentile(window, 95)
        assert b.threshold == POLICY.threshold(b.p95)
        # the run: consecutive minutes (never across a gap), each one hot, held long enough
        assert edge.duration_s >= POLICY.hold_s
        minutes = range(edge.start, edge.end, MINUTE_S)
        assert all(ts in by_ts for ts in minutes)
        assert all(by_ts[ts].mean > b.threshold for ts in minutes)
        assert edge.peak == max(by_ts[ts].mean for ts in minutes)
        assert edge.first == by_ts[edge.start].mean
        if edge.phase is Phase.END:  # it ended: the next minute is missing or not hot
            nxt = by_ts.get(edge.end)
            assert nxt is None or nxt.mean <= b.threshold


@settings(max_examples=200)
@given(spec=steps)
def test_edges_pair_up_start_then_end(spec: list[tuple[int, float, int]]) -> None:
    edges = detect_spikes(build(spec), POLICY)
    open_start: SpikeEdge | None = None
    last_end = float("-inf")
    for edge in edges:
        if edge.phase is Phase.START:
            assert open_start is None
            assert edge.start >= last_end  # runs never overlap
            assert edge.duration_s == POLICY.hold_s  # reported the minute it qualified
            open_start = edge
        else:
            assert open_start is not None
            assert edge.start == open_start.start
            assert edge.baseline == open_start.baseline  # judged against one baseline
            assert edge.end >= open_start.end
            last_end = edge.end
            open_start = None


@settings(max_examples=200)
@given(
    history=st.lists(
        st.floats(min_value=0, max_value=100, allow_nan=False), min_size=25, max_size=120
    ),
    held=st.integers(min_value=3, max_value=12),
    extra=st.floats(min_value=0.01, max_value=1000, allow_nan=False),
)
def test_an_injected_spike_is_found_at_the_minute_it_began(
    history: list[float], held: int, extra: float
) -> None:
    high = max(history) * (1 + POLICY.margin) + POLICY.floor + extra  # above any baseline
    low = min(history)
    # one ordinary minute first: the history's own last minutes may already be a run above
    # their baseline (24 zeros then a 6), and that run would rightly start the spike earlier
    rows = series_of([*history, low, *([high] * held), low])
    start = T0 + (len(history) + 1) * MINUTE_S
    edges = detect_spikes(rows, POLICY)
    starts = [e for e in edges if e.phase is Phase.START and e.start == start]
    ends = [e for e in edges if e.phase is Phase.END and e.start == start]
    assert len(starts) == 1
    assert starts[0].peak == pytest.approx(high)
    assert len(ends) == 1
    assert ends[0].end == start + held * MINUTE_S


@given(held=st.integers(min_value=1, max_value=2))
def test_a_blip_shorter_than_the_hold_is_not_a_spike(held: int) -> None:
    rows = series_of([10.0] * 30 + [90.0] * held + [10.0] * 5)
    assert detect_spikes(rows, POLICY) == []


def test_a_gap_in_the_middle_of_a_run_ends_it() -> None:
    hot = [90.0] * 3
    rows = series_of([10.0] * 30 + hot)
    after_gap = [row(rows[-1].ts + 10 * MINUTE_S + i * MINUTE_S, 90.0) for i in range(2)]
    edges = detect_spikes([*rows, *after_gap], POLICY)
    assert [e.phase for e in edges] == [Phase.START, Phase.END]
    assert edges[1].end == rows[-1].ts + MINUTE_S  # ended at the last minute before the gap


def test_a_long_spike_is_judged_against_the_baseline_it_began_under() -> None:
    # an hour-long plateau would become "normal" if the bar rose with it
    rows = series_of([10.0] * 30 + [90.0] * 80 + [10.0])
    edges = detect_spikes(rows, POLICY)
    assert [e.phase for e in edges] == [Phase.START, Phase.END]
    assert edges[1].duration_s == 80 * MINUTE_S


@settings(max_examples=150)
@given(spec=steps, cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_feeding_in_batches_like_the_recorder_gives_the_same_edges(
    spec: list[tuple[int, float, int]], cuts: list[int]
) -> None:
    rows = build(spec)
    judge = SeriesJudge(POLICY)
    got: list[SpikeEdge] = []
    i = 0
    for size in [*cuts, len(rows)]:
        batch = rows[i : i + size]
        if not batch:
            break
        # like SpikeWatch: history is read only when a refresh may fall in the batch
        history = rows[: i + len(batch)] if judge.due_within(batch[0].ts, batch[-1].ts) else None
        for r in batch:
            got.extend(judge.feed(r, history))
        i += len(batch)
    assert got == detect_spikes(rows, POLICY)


@settings(max_examples=150)
@given(spec=steps)
def test_baselines_installed_from_outside_give_the_same_edges(
    spec: list[tuple[int, float, int]],
) -> None:
    # like SpikeWatch with the store: the figures (minutes, p95) come from elsewhere
    rows = build(spec)
    judge = SeriesJudge(POLICY)
    got: list[SpikeEdge] = []
    for r in rows:
        if judge.due_at(r.ts):
            means = [x.mean for x in rows if r.ts - POLICY.window_s <= x.ts < r.ts and x.count]
            figures = (len(means), percentile(means, 95) if means else 0.0)
            judge.set_baseline(baseline_from(*figures, at=r.ts, policy=POLICY), r.ts)
        got.extend(judge.feed(r))
    assert got == detect_spikes(rows, POLICY)


def test_feeding_a_minute_twice_is_idempotent() -> None:
    rows = series_of([10.0] * 30 + [90.0] * 4)
    judge = SeriesJudge(POLICY)
    first = [e for r in rows for e in judge.feed(r, rows)]
    again = [e for r in rows for e in judge.feed(r, rows)]
    assert len(first) == 1
    assert again == []


def test_history_is_required_when_the_baseline_is_due() -> None:
    with pytest.raises(ValueError, match="history is needed"):
        SeriesJudge(POLICY).feed(row(T0, 1.0))


def test_baseline_counts_rows_not_span_and_ignores_the_future() -> None:
    rows = series_of([1.0] * 10, start=T0) + series_of([2.0] * 10, start=T0 + 40 * MINUTE_S)
    b = baseline_of(rows, at=T0 + 50 * MINUTE_S, policy=POLICY)
    assert b is not None
    assert b.minutes == 20  # 50 minutes of span, 20 rows: coverage is rows
    assert baseline_of(rows, at=T0 + 45 * MINUTE_S, policy=POLICY) is None  # only 15 rows


def test_threshold_has_an_absolute_floor_and_a_relative_margin() -> None:
    assert POLICY.threshold(0.0) == 5.0  # idle VM: not every flicker
    assert POLICY.threshold(4.0) == 9.0
    assert POLICY.threshold(40.0) == 60.0  # busy VM: half again above its own p95


# -- rules ----------------------------------------------------------------------------------


def test_rules_pick_a_policy_by_name_then_by_unit_suffix() -> None:
    rules = spike_rules({"floors": {"cpu_pct": 20, "_bps": 2048}, "hold_minutes": 5})
    cpu = rules.policy_for("cpu_pct")
    host_cpu = rules.policy_for("host.cpu_pct")
    assert cpu is not None
    assert host_cpu is not None
    assert (cpu.floor, cpu.hold_s) == (20.0, 300)
    assert host_cpu.floor == 10.0
    disk = rules.policy_for("disk_rd_bps")
    assert disk is not None
    assert disk.floor == 2048.0
    assert rules.policy_for("mystery") is None  # unknown unit: not judged
    for name in NOT_JUDGED:
        assert rules.policy_for(name) is None
    assert SpikeRules(enabled=False).policy_for("cpu_pct") is None
    assert spike_rules({"floors": {"cpu_pct": 0}}).policy_for("cpu_pct") is None


def test_rules_defaults_match_the_readme() -> None:
    rules = spike_rules({})
    policy = rules.policy_for("cpu_pct")
    assert policy is not None
    assert policy.margin == 0.5
    assert policy.hold_s == 120
    assert policy.window_s == 24 * 3600
    assert policy.min_baseline_s == 3600
    assert policy.refresh_s == 600
    assert policy.floor == 10.0


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"margin": -1.0}, "spikes.margin"),
        ({"hold_minutes": 0}, "spikes.hold_minutes"),
        ({"hold_minutes": 2.5}, "spikes.hold_minutes"),
        ({"floors": {"cpu_pct": "x"}}, "spikes.floors.cpu_pct"),
        ({"floors": 3}, "spikes.floors"),
        ({"enabled": "yes"}, "spikes.enabled"),
    ],
)
def test_bad_config_names_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        spike_rules(section)


def test_values_are_worded_in_their_unit() -> None:
    assert format_value("cpu_pct", 93.04) == "93.0 %"
    assert format_value("mem_used_kib", 512 * 1024) == "512 MiB"
    assert format_value("mem_used_kib", 3 * 1024 * 1024) == "3.00 GiB"
    assert format_value("net_rx_bps", 5 * 1024 * 1024) == "5.0 MiB/s"
    assert format_value("net_rx_bps", 100) == "100 B/s"
    assert format_value("disk_iops", 420.4) == "420/s"
    assert format_value("other", 1234567) == "1.235e+06"


def test_every_metric_the_collector_stores_has_a_rule_and_a_name() -> None:
    from virtwatch.core.triage.spikes import metric_label

    rules = SpikeRules()
    stored = [
        "cpu_pct",
        "vcpu_delay_pct",
        "mem_used_kib",
        "disk_rd_bps",
        "disk_wr_bps",
        "disk_rd_iops",
        "disk_wr_iops",
        "net_rx_bps",
        "net_tx_bps",
        "host.cpu_pct",
        "host.mem_used_kib",
        "host.swap_used_kib",
        "host.disk_read_bps",
        "host.disk_write_bps",
        "host.net_rx_bps",
        "host.net_tx_bps",
    ]
    for metric in stored:
        assert rules.policy_for(metric) is not None, metric
        assert metric_label(metric) != metric, metric
    assert rules.policy_for("mem_alloc_kib") is None


def test_summary_and_detail_say_what_was_judged() -> None:
    rows = series_of([10.0] * 30 + [90.0] * 3)
    (edge,) = detect_spikes(rows, POLICY)
    text = spike_summary("cpu_pct", edge)
    assert text == "CPU spike: 90.0 % against its usual 10.0 % (1 h p95), held 3 min"
    detail = spike_detail("cpu_pct", edge)
    assert detail["phase"] == "start"
    assert float(detail["baseline_p95"]) == 10.0
    assert float(detail["threshold"]) == 15.0
    assert detail["baseline_minutes"] == "30"
    assert all(isinstance(v, str) for v in detail.values())


# -- the recorder-side pass over a reader ---------------------------------------------------


class MemoryReader:
    """An in-memory RollupReader (the storage one is tested against SQLite elsewhere)."""

    def __init__(self, data: Mapping[Series, list[MinuteAggregate]]) -> None:
        self.data = data
        self.watermarks: dict[str, int] = {}
        self.stored: set[EdgeKey] = set()
        self.reads: list[tuple[int, int, int]] = []

    async def minute_watermarks(self) -> Mapping[str, int]:
        return self.watermarks

    async def series(self, host: str) -> Sequence[Series]:
        return [s for s in self.data if s.host == host]

    async def minute_rows(
        self, since: int, until: int, series: Collection[Series]
    ) -> Mapping[Series, Sequence[MinuteAggregate]]:
        self.reads.append((since, until, len(series)))
        out = {}
        for s in series:
            rows = self.data[s]
            ts = [r.ts for r in rows]
            picked = rows[bisect.bisect_left(ts, since) : bisect.bisect_left(ts, until)]
            if picked:
                out[s] = picked
        return out

    async def minute_means(
        self, since: int, until: int, series: Collection[Series]
    ) -> Mapping[Series, tuple[Sequence[int], Sequence[float]]]:
        rows = await self.minute_rows(since, until, series)
        return {s: ([r.ts for r in rs], [r.mean for r in rs]) for s, rs in rows.items()}

    async def stored_spikes(self, host: str, since: int, until: int) -> Collection[EdgeKey]:
        return {k for k in self.stored if k[0] == host and since <= k[4] < until}


def store_events(reader: MemoryReader, events: Sequence[DomainEvent]) -> None:
    """What the store writer does with published events, as far as the reader sees it."""
    for e in events:
        d = e.detail
        reader.stored.add((e.host, e.vm_uuid, d["metric"], d["phase"], int(d["start"])))


async def test_the_watch_judges_minutes_as_they_become_final() -> None:
    cpu = Series("hv1", "u-1", "cpu_pct", "web-01")
    alloc = Series("hv1", "u-1", "mem_alloc_kib", "web-01")  # not judged
    values = [10.0] * 90 + [95.0] * 5 + [10.0] * 5
    reader = MemoryReader({cpu: series_of(values), alloc: series_of([1.0] * 100)})
    published: list[object] = []
    rules = SpikeRules(hold_s=180, min_baseline_s=1800)
    watch = SpikeWatch(reader, published.append, rules, catch_up_s=0)
    reader.watermarks["hv1"] = T0 + 80 * MINUTE_S
    assert await watch.judge_new() == []  # nothing to catch up: judges from now on
    found: list[DomainEvent] = []
    for minute in range(81, 101):  # the rollup lands one minute at a time
        reader.watermarks["hv1"] = T0 + minute * MINUTE_S
        found += await watch.judge_new()
    assert [e.detail["phase"] for e in found] == ["start", "end"]
    start, end = found
    assert start.kind is EventKind.SPIKE
    assert (start.host, start.vm_uuid, start.vm_name) == ("hv1", "u-1", "web-01")
    assert start.at == T0 + 90 * MINUTE_S  # when it began, not when it was noticed
    assert end.at == T0 + 95 * MINUTE_S
    assert published == found
    assert watch.minutes_judged == 20
    assert watch.judged_until == {"hv1": T0 + 100 * MINUTE_S}
    # only the judged series is read: its 24 h of history once, at first sight (then its
    # window of means is kept in memory), and each new minute as it lands
    history_reads = [r for r in reader.reads if r[0] < T0]
    assert history_reads == [(T0 + 80 * MINUTE_S - 86400, T0 + 80 * MINUTE_S, 1)]
    assert all(n == 1 for _, _, n in reader.reads)


@settings(max_examples=150)
@given(spec=steps, probes=st.lists(st.integers(min_value=0, max_value=400), max_size=20))
def test_a_window_of_means_gives_the_baseline_of_the_pure_function(
    spec: list[tuple[int, float, int]], probes: list[int]
) -> None:
    rows = build(spec)
    window = MeanWindow()
    fed = 0
    for minute in sorted(probes):  # baselines only move forward, as the watch asks them
        at = T0 + minute * MINUTE_S
        while fed < len(rows) and rows[fed].ts < at:
            window.add(rows[fed])
            fed += 1
        minutes, p95 = window.figures(at - POLICY.window_s, at)
        expected = baseline_of(rows, at=at, policy=POLICY)
        got = baseline_from(minutes, p95, at=at, policy=POLICY)
        assert got == expected


def test_a_window_of_means_stays_bounded_and_exact_over_days() -> None:
    rows = series_of([float(i % 97) for i in range(3 * 1440)])  # three days of minutes
    window = MeanWindow([r.ts for r in rows[:1440]], [r.mean for r in rows[:1440]])
    for i, row in enumerate(rows[1440:], start=1440):
        if i % 60 == 0:
            minutes, p95 = window.figures(row.ts - 86400, row.ts)
            assert (minutes, p95) == (1440, percentile([r.mean for r in rows[i - 1440 : i]], 95))
        window.add(row)
    assert len(window) <= 1440 + 60  # what fell out of the window was dropped


async def test_the_watch_catches_up_after_a_restart_without_repeating() -> None:
    cpu = Series("hv1", "", "host.cpu_pct")
    other = Series("hv2", "u-9", "cpu_pct", "db")
    values = [10.0] * 90 + [95.0] * 5 + [10.0] * 5
    reader = MemoryReader({cpu: series_of(values), other: series_of([5.0] * 100)})
    rules = SpikeRules(hold_s=180, min_baseline_s=1800)
    reader.watermarks = {"hv1": T0 + 93 * MINUTE_S, "hv2": T0 + 93 * MINUTE_S}
    first: list[object] = []
    events = await SpikeWatch(reader, first.append, rules).judge_new()
    assert [e.detail["phase"] for e in events] == ["start"]
    assert events[0].vm_uuid == ""  # the host's own series
    store_events(reader, events)
    # a restart: the new watch re-judges the last 2 h, publishes only what is new
    reader.watermarks = {"hv1": T0 + 100 * MINUTE_S, "hv2": T0 + 100 * MINUTE_S}
    again: list[object] = []
    events = await SpikeWatch(reader, again.append, rules).judge_new()
    assert [e.detail["phase"] for e in events] == ["end"]
    assert again == events


async def test_a_watch_judges_only_its_own_hosts() -> None:
    values = [10.0] * 90 + [95.0] * 5 + [10.0] * 5
    mine, theirs = Series("hv1", "u-1", "cpu_pct"), Series("hv2", "u-2", "cpu_pct")
    reader = MemoryReader({mine: series_of(values), theirs: series_of(values)})
    reader.watermarks = {"hv1": T0 + 100 * MINUTE_S, "hv2": T0 + 100 * MINUTE_S}
    rules = SpikeRules(hold_s=180, min_baseline_s=1800)
    events = await SpikeWatch(reader, lambda _e: None, rules, hosts={"hv1"}).judge_new()
    assert {e.host for e in events} == {"hv1"}
    assert len(events) == 2


async def test_disabled_rules_judge_nothing() -> None:
    reader = MemoryReader({Series("hv1", "u", "cpu_pct"): series_of([1.0] * 10)})
    reader.watermarks["hv1"] = T0 + 600
    watch = SpikeWatch(reader, lambda _e: None, SpikeRules(enabled=False))
    assert await watch.judge_new() == []
    assert reader.reads == []


async def test_a_failing_store_is_reported_once_and_the_watch_keeps_going() -> None:
    import asyncio

    from virtwatch.core.incidents import ErrorReport

    class Broken(MemoryReader):
        async def minute_watermarks(self) -> Mapping[str, int]:
            self.reads.append((0, 0, 0))
            raise OSError("disk I/O error")

    published: list[object] = []
    reader = Broken({})
    watch = SpikeWatch(reader, published.append, SpikeRules(), poll_s=0.01)
    task = asyncio.create_task(watch.run())
    for _ in range(200):
        if len(reader.reads) >= 3:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(reader.reads) >= 3  # it kept trying
    assert len(published) == 1  # and said so once
    report = published[0]
    assert isinstance(report, ErrorReport)
    assert "disk I/O error" in report.error.message
