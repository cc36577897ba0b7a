"""Writer leases: processes sharing one database (a recorder and a dashboard, two
dashboards) store one copy of each host's history. Real databases, injected clocks."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.waiting import until
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.health.checks import store_readings
from virtwatch.core.health.monitor import Thresholds
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.records import (
    AuditRecord,
    ConnectionState,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthResult,
    HealthState,
    HostConnection,
    Outcome,
    TaskState,
    TaskUpdate,
)
from virtwatch.storage.lease import (
    RENEW_EVERY_S,
    TTL_S,
    Claim,
    WriterRole,
    decide,
    process_namespace,
)
from virtwatch.storage.models import (
    Audit,
    DomainEventRow,
    ErrorLog,
    HealthAlertRow,
    HealthResultRow,
    HostConnectionRow,
    Metric,
    MetricHour,
    MetricMinute,
    MetricSample,
    TaskLog,
    WriterClaim,
)
from virtwatch.storage.queries import Queries
from virtwatch.storage.rows import SampleRow
from virtwatch.storage.store import Store
from virtwatch.storage.writer import StoreWriter

HOST = "h"
T = 1_795_000_000.0 - 1_795_000_000.0 % 86_400 + 12 * 3600  # a UTC midday
ME = f"pid {os.getpid()} on {platform.node()}"


class Clock:
    """Both processes' wall clock, moved by the test."""

    def __init__(self, now: float = T) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(n: int, *, start: float, host: str = HOST) -> list[SampleRow]:
    """`n` samples 2 s apart from `start` (epoch seconds)."""
    t0 = round(start * 1000)
    return [SampleRow(host, "u1", "vm1", "cpu_pct", t0 + 2000 * i, float(i)) for i in range(n)]


def event(at: float, host: str = HOST) -> DomainEvent:
    return DomainEvent(host, "u1", "vm1", EventKind.LIFECYCLE, "started: booted", at)


def writer(
    store: Store, role: WriterRole, clock: Callable[[], float], *, maintenance: bool = False
) -> StoreWriter:
    return StoreWriter(store, Hub(), role=role, clock=clock, maintenance=maintenance)


async def count(store: Store, model: type) -> int:
    async with store.reader.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())


async def rolled_up(store: Store, model: type[MetricMinute] | type[MetricHour]) -> int:
    async with store.reader.connect() as conn:
        total = select(func.coalesce(func.sum(model.count), 0))
        return int((await conn.execute(total)).scalar_one())


async def add_claim(store: Store, **fields: object) -> None:
    row: dict[str, object] = {
        "host": HOST,
        "holder": "node7:1234:0:abcdef",
        "role": "recorder",
        "pid": 1234,
        "nodename": "node7",
        "started_ms": round((T - 3600) * 1000),
        "heartbeat_ms": round(T * 1000),
        "writing": True,
        "process_ns": "another machine",
    }
    row.update(fields)
    async with store.engine.begin() as conn:
        await conn.execute(store.insert(WriterClaim), [row])


# ---- the rule, as a pure function ------------------------------------------------------


def claim(holder: str, role: str = "dashboard", started: int = 0, **kw: object) -> Claim:
    beat = int(kw.get("heartbeat_ms", 1_000_000))  # type: ignore[call-overload]
    return Claim(HOST, holder, role, 1, "n", started, beat, bool(kw.get("writing", False)))


NOW_MS = 1_000_000


def test_a_recorder_beats_a_dashboard_started_earlier() -> None:
    dash, rec = claim("d", started=1), claim("r", "recorder", started=2)
    assert decide(rec, [dash], NOW_MS) == (True, None)
    assert decide(dash, [rec], NOW_MS) == (False, rec)


def test_among_equals_the_earliest_started_leads_then_the_holder_id() -> None:
    first, second = claim("b", started=1), claim("a", started=2)
    assert decide(first, [second], NOW_MS) == (True, None)
    assert decide(second, [first], NOW_MS) == (False, first)
    tie_a, tie_b = claim("a", started=5), claim("b", started=5)
    assert decide(tie_a, [tie_b], NOW_MS)[0]
    assert not decide(tie_b, [tie_a], NOW_MS)[0]


def test_a_better_newcomer_waits_for_the_writer_in_place_to_step_down() -> None:
    writing = claim("d", started=1, writing=True)
    rec = claim("r", "recorder", started=9)
    assert decide(rec, [writing], NOW_MS) == (False, writing)  # it still writes
    assert decide(writing, [rec], NOW_MS) == (False, rec)  # it steps down at its renew
    stepped_down = claim("d", started=1)
    assert decide(rec, [stepped_down], NOW_MS) == (True, None)


def test_an_expired_claim_counts_for_nothing() -> None:
    dead = claim("r", "recorder", writing=True, heartbeat_ms=NOW_MS - int(TTL_S * 1000))
    assert decide(claim("d", started=5), [dead], NOW_MS) == (True, None)
    alive = claim("r", "recorder", writing=True, heartbeat_ms=NOW_MS - int(TTL_S * 1000) + 1)
    assert decide(claim("d", started=5), [alive], NOW_MS) == (False, alive)


def test_an_unknown_role_ranks_last_and_is_named() -> None:
    newer = claim("x", "collector", started=0)
    assert decide(claim("d", started=5), [newer], NOW_MS) == (True, None)
    assert newer.describe() == "virtwatch (collector) (pid 1 on n)"


CLAIMS = st.lists(
    st.builds(
        claim,
        st.text("abcdef", min_size=1, max_size=3),
        st.sampled_from(["recorder", "dashboard"]),
        st.integers(0, 5),
        heartbeat_ms=st.sampled_from([NOW_MS, NOW_MS - 10_000, NOW_MS - 40_000]),
        writing=st.booleans(),
    ),
    max_size=6,
    unique_by=lambda c: c.holder,
)


@given(CLAIMS)
def test_at_most_one_leads_and_one_does_when_nobody_writes(claims: list[Claim]) -> None:
    live = [c for c in claims if c.live(NOW_MS)]  # a deciding holder has just renewed
    leaders = [c for c in live if decide(c, claims, NOW_MS)[0]]
    assert len(leaders) <= 1
    if live and not any(c.writing for c in live):
        assert leaders == [min(live, key=lambda c: c.rank)]
    writing = [c for c in live if c.writing]
    if len(writing) == 1:  # whoever writes keeps the others waiting until it steps down
        assert leaders in ([], writing)


# ---- on the databases ------------------------------------------------------------------


async def test_only_the_recorder_writes_a_host_a_dashboard_also_watches(store_url: str) -> None:
    """Both fed samples and events of host h (at other times, as two collectors sample):
    the recorder's land; the dashboard's are left to it, and it rolls nothing up."""
    clock = Clock()
    recorded = samples(600, start=T - 80 * 60)  # 20 minutes of a past hour: rolled up at once
    seen = samples(600, start=T - 80 * 60 + 1)
    events = [event(T - 70 * 60), event(T - 65 * 60)]
    async with Store(store_url) as rs, Store(store_url) as ds:
        recorder = writer(rs, WriterRole.RECORDER, clock, maintenance=True)
        dashboard = writer(ds, WriterRole.DASHBOARD, clock, maintenance=True)
        async with recorder:
            recorder.add_samples(recorded)
            for e in events:
                recorder.add_record(e)
            await until(lambda: recorder.samples_written == len(recorded), what="recorded")
            async with dashboard:
                dashboard.add_samples(seen)
                for e in events:
                    dashboard.add_record(e)
                await until(
                    lambda: (
                        dashboard.stats().not_written_samples == len(seen)
                        and dashboard.stats().not_written_records == len(events)
                    ),
                    what="the dashboard leaves h to the recorder",
                )
                stats = dashboard.stats()
                assert (stats.role, stats.leads) == ("dashboard", ())
                said = f"h is recorded by virtwatch record ({ME})"
                assert stats.recorded_elsewhere == (said,)
                [reading] = store_readings("database", stats, Thresholds(10, 60), clock.now)
                assert reading.state is None  # an ok check, judged by its lag alone
                assert reading.message.endswith(f"s behind; {said}")
                assert (stats.dropped_samples, stats.dropped_records) == (0, 0)  # not a loss
                assert recorder.stats().leads == (HOST,)
                assert recorder.stats().others == ()

                async def rolled() -> bool:
                    tiers = [await rolled_up(rs, tier) for tier in (MetricMinute, MetricHour)]
                    return tiers == [len(recorded)] * 2

                await until(rolled, what="the recorder's rollups")
            assert dashboard.samples_written == dashboard.records_written == 0
            assert dashboard.rollup_steps == 0
        assert await count(rs, MetricSample) == len(recorded)
        assert await count(rs, DomainEventRow) == len(events)
        assert await rolled_up(rs, MetricMinute) == len(recorded)
        assert await rolled_up(rs, MetricHour) == len(recorded)
        assert await count(rs, WriterClaim) == 0  # both closed cleanly: nothing left


async def test_the_dashboard_takes_over_from_its_next_renew_when_the_recorder_closes(
    store_url: str,
) -> None:
    clock = Clock()
    async with Store(store_url) as rs, Store(store_url) as ds:
        recorder = writer(rs, WriterRole.RECORDER, clock)
        dashboard = writer(ds, WriterRole.DASHBOARD, clock)
        recorder.add_samples(samples(5, start=T))
        assert await recorder.flush() == 5
        dashboard.add_samples(samples(5, start=T + 1))
        assert await dashboard.flush() == 0
        await recorder.close()
        assert await count(ds, WriterClaim) == 1  # the dashboard's own
        clock.now += 2
        dashboard.add_samples(samples(1, start=T + 11))
        assert await dashboard.flush() == 0  # decided at its last renew: still left
        clock.now = T + RENEW_EVERY_S + 10
        later = samples(3, start=clock.now)
        dashboard.add_samples(later)
        dashboard.add_record(event(clock.now))
        assert await dashboard.flush() == len(later) + 1
        assert dashboard.stats().leads == (HOST,)
        assert dashboard.stats().recorded_elsewhere == ()
        assert await count(ds, MetricSample) == 5 + len(later)
        await dashboard.close()


async def test_a_recorder_starting_later_waits_for_the_dashboard_to_step_down(
    store_url: str,
) -> None:
    """No moment is written twice at a handover: the better newcomer writes only once the
    writer in place has said (at its own renew) that it stopped."""
    clock = Clock()
    async with Store(store_url) as ds, Store(store_url) as rs:
        dashboard = writer(ds, WriterRole.DASHBOARD, clock)
        dashboard.add_samples(samples(5, start=T))
        assert await dashboard.flush() == 5
        recorder = writer(rs, WriterRole.RECORDER, clock)
        recorder.add_samples(samples(5, start=T + 1))
        assert await recorder.flush() == 0  # the dashboard still writes h
        [other] = recorder.stats().others
        assert (other.role, other.writing) == ("dashboard", True)
        assert recorder.stats().recorded_elsewhere == (
            f"h is recorded by the virtwatch dashboard ({ME})",
        )
        dashboard.add_samples(samples(1, start=T + 3))
        assert await dashboard.flush() == 1  # until its next renew
        clock.now += RENEW_EVERY_S
        dashboard.add_samples(samples(1, start=clock.now))
        assert await dashboard.flush() == 0  # it renews, sees the recorder, steps down
        recorder.add_samples(samples(1, start=clock.now - 1))  # a moment the dashboard had
        recorder.add_samples(samples(2, start=clock.now + 11))
        assert await recorder.flush() == 2  # its renew sees nobody writing h any more
        assert recorder.stats().not_written_samples == 5 + 1
        assert (recorder.stats().leads, dashboard.stats().leads) == ((HOST,), ())
        assert await count(rs, MetricSample) == 5 + 1 + 2
        await recorder.close()
        await dashboard.close()


async def test_a_stale_claim_does_not_block_the_dashboard(store_url: str) -> None:
    """A recorder killed with SIGKILL on another machine leaves a claim nobody renews."""
    clock = Clock()
    async with Store(store_url) as ds:
        await add_claim(ds, heartbeat_ms=round((T - TTL_S) * 1000) - 1)
        dashboard = writer(ds, WriterRole.DASHBOARD, clock)
        dashboard.add_samples(samples(4, start=T))
        assert await dashboard.flush() == 4
        assert dashboard.stats().leads == (HOST,)
        await dashboard.close()


async def test_a_live_claim_blocks_until_it_expires_and_db_stats_lists_it(store_url: str) -> None:
    clock = Clock()
    async with Store(store_url) as ds:
        await add_claim(ds)
        dashboard = writer(ds, WriterRole.DASHBOARD, clock)
        dashboard.add_samples(samples(4, start=T))
        dashboard.add_record(event(T))
        assert await dashboard.flush() == 0
        said = "h is recorded by virtwatch record (pid 1234 on node7)"
        assert dashboard.stats().recorded_elsewhere == (said,)
        stats = await Queries(ds).stats(now=clock.now)
        assert [(c.host, c.role, c.pid, c.writing) for c in stats.claims] == [
            (HOST, "recorder", 1234, True),
            (HOST, "dashboard", os.getpid(), False),
        ]
        text = "\n".join(stats.lines())
        assert "virtwatch record (pid 1234 on node7) writes h" in text
        assert f"the virtwatch dashboard ({ME}) stands by for h" in text
        assert stats.as_dict()["writer_claims"][0]["nodename"] == "node7"  # type: ignore[index]
        clock.now = T + TTL_S  # nobody renewed it: the recorder is gone
        dashboard.add_samples(samples(2, start=clock.now))
        assert await dashboard.flush() == 2
        assert dashboard.stats().recorded_elsewhere == ()
        await dashboard.close()


async def test_a_gone_process_of_this_machine_is_not_waited_for(store_url: str) -> None:
    """A recorder that crashed here (systemd restarts it): its pid is not running, so its
    claim is dead at once, and deleted, without waiting for the TTL."""
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    assert await gone.wait() == 0
    clock = Clock()
    async with Store(store_url) as rs:
        await add_claim(rs, pid=gone.pid, process_ns=process_namespace(), holder="here:gone")
        recorder = writer(rs, WriterRole.RECORDER, clock)
        recorder.add_samples(samples(3, start=T))
        assert await recorder.flush() == 3
        async with rs.reader.connect() as conn:
            holders = (await conn.execute(select(WriterClaim.holder))).scalars().all()
        assert "here:gone" not in holders
        await recorder.close()


async def test_of_two_dashboards_the_earlier_started_leads(store_url: str) -> None:
    clock = Clock()
    async with Store(store_url) as s1, Store(store_url) as s2:
        first = writer(s1, WriterRole.DASHBOARD, clock)
        clock.now += 1
        second = writer(s2, WriterRole.DASHBOARD, clock)
        first.add_samples(samples(3, start=T))
        second.add_samples(samples(3, start=T + 1))
        assert await first.flush() == 3
        assert await second.flush() == 0
        assert second.stats().recorded_elsewhere == (
            f"h is recorded by the virtwatch dashboard ({ME})",
        )
        await first.close()
        await second.close()

        # the later one flushed first: it writes until the earlier one takes over
        clock.now += RENEW_EVERY_S
        first = writer(s1, WriterRole.DASHBOARD, clock)
        clock.now += 1
        second = writer(s2, WriterRole.DASHBOARD, clock)
        second.add_samples(samples(2, start=clock.now))
        assert await second.flush() == 2
        first.add_samples(samples(2, start=clock.now + 1))
        assert await first.flush() == 0
        clock.now += RENEW_EVERY_S
        second.add_samples(samples(1, start=clock.now))
        assert await second.flush() == 0
        first.add_samples(samples(1, start=clock.now + 1))
        assert await first.flush() == 1
        assert (first.stats().leads, second.stats().leads) == ((HOST,), ())
        await first.close()
        await second.close()
        assert await count(s1, MetricSample) == 3 + 2 + 1


async def test_a_non_leader_still_writes_its_errors_tasks_audit_and_own_health(
    store_url: str,
) -> None:
    """What the dashboard's user does is audited, its errors and tasks are its own; the
    host's connection states and health are the leader's. Nothing is reported."""
    clock = Clock()
    hub = Hub()
    reports = hub.subscribe(ErrorReport)
    async with Store(store_url) as rs, Store(store_url) as ds:
        recorder = writer(rs, WriterRole.RECORDER, clock)
        recorder.add_samples(samples(1, start=T))
        assert await recorder.flush() == 1
        own: list[object] = [
            ErrorReport(AppError(ErrorCode.TIMEOUT, "slow", "wait"), HOST, "vm1", T),
            TaskUpdate(
                "t1", "shutdown vm1", "action.shutdown", TaskState.RUNNING, 1, 3, T, host=HOST
            ),
            AuditRecord(HOST, "u1", "vm1", "shutdown", "alice", None, Outcome.VERIFIED, T, 1.5),
            HealthResult(  # the process's own check: no host
                "store.writable", "database", HealthState.OK, HealthState.OK, 0.1, "s", 9, 60, "", T
            ),
        ]
        left: list[object] = [
            event(T),
            HostConnection(HOST, "qemu:///system", ConnectionState.CONNECTED, T, T),
            HealthResult(
                "host.cpu", HOST, HealthState.OK, HealthState.OK, 5.0, "%", 85, 95, "", T, HOST
            ),
            HealthAlert("host.cpu", HOST, HealthState.WARN, HealthState.OK, "", T, HOST),
        ]
        async with StoreWriter(
            ds, hub, role=WriterRole.DASHBOARD, clock=clock, maintenance=False
        ) as dashboard:
            for item in own + left:
                hub.publish(item)
            dashboard.add_samples(samples(3, start=T + 1))
            await until(
                lambda: dashboard.stats().buffered == 0 and dashboard.records_written == len(own),
                what="the dashboard's flush",
            )
            stats = dashboard.stats()
            assert (stats.not_written_samples, stats.not_written_records) == (3, len(left))
            assert stats.dropped_samples == stats.dropped_records == 0
        for model in (ErrorLog, TaskLog, Audit, HealthResultRow):
            assert await count(ds, model) == 1, model
        for left_model in (DomainEventRow, HostConnectionRow, HealthAlertRow):
            assert await count(ds, left_model) == 0, left_model
        assert await count(ds, MetricSample) == 1
        published = []
        while (report := reports.get_nowait()) is not None:
            published.append(report.error.code)
        assert published == [ErrorCode.TIMEOUT]  # its own only: nothing reported about h
        await recorder.close()


def down(at: float, host: str = HOST) -> HostConnection:
    return HostConnection(host, "qemu+tcp://h/system", ConnectionState.RECONNECTING, at, at)


async def test_a_recorder_that_cannot_reach_a_host_does_not_keep_it_from_the_dashboard(
    store_url: str,
) -> None:
    """A process claims only the hosts it has recent samples of: a recorder that never
    reached h, or lost it longer than a claim lives, leaves h to a dashboard that has it."""
    clock = Clock()
    async with Store(store_url) as rs, Store(store_url) as ds:
        recorder = writer(rs, WriterRole.RECORDER, clock)
        dashboard = writer(ds, WriterRole.DASHBOARD, clock)
        recorder.add_record(down(T))  # it never had a sample of h
        assert await recorder.flush() == 1  # nobody writes h: its outage is stored
        assert recorder.stats().leads == ()
        dashboard.add_samples(samples(5, start=T))
        assert await dashboard.flush() == 5
        assert dashboard.stats().leads == (HOST,)
        clock.now += RENEW_EVERY_S  # the recorder's next renew sees the dashboard's claim
        recorder.add_record(down(clock.now))
        assert await recorder.flush() == 0  # now the dashboard writes h: its view stands
        assert recorder.stats().recorded_elsewhere == (
            f"h is recorded by the virtwatch dashboard ({ME})",
        )

        # the other way round: the recorder had h, then lost it for longer than a claim
        other = "h2"
        recorder.add_samples(samples(3, start=clock.now, host=other))
        assert await recorder.flush() == 3
        dashboard.add_samples(samples(3, start=clock.now + 1, host=other))
        assert await dashboard.flush() == 0  # the recorder writes h2
        lost_at = clock.now  # the recorder's last sample of h2; both keep renewing
        written = []
        while clock.now - lost_at < TTL_S + 2 * RENEW_EVERY_S:
            clock.now += RENEW_EVERY_S
            recorder.add_record(down(clock.now, other))
            await recorder.flush()
            dashboard.add_samples(samples(1, start=clock.now, host=other))
            written.append(await dashboard.flush())
            still = clock.now - lost_at < TTL_S
            assert (other in recorder.stats().leads) is still
        assert recorder.stats().leads == ()  # its claim on h2 deleted, not left to expire
        assert dashboard.stats().leads == (other,)  # (no sample of h for as long either)
        assert written[0] == 0  # the recorder still had h2
        assert written[-1] == 1  # the dashboard writes it now
        await recorder.close()
        await dashboard.close()


async def test_rows_of_a_host_first_seen_during_a_renew_wait_for_its_decision(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose first rows arrive while the lease is being renewed is decided at the
    next renew, before any of its rows is written: a recorder leading it keeps it."""
    clock = Clock()
    async with Store(store_url) as rs, Store(store_url) as ds:
        recorder = writer(rs, WriterRole.RECORDER, clock)
        recorder.add_samples(samples(2, start=T, host="h2"))
        assert await recorder.flush() == 2
        dashboard = writer(ds, WriterRole.DASHBOARD, clock)
        lease = dashboard._lease
        assert lease is not None
        renew = lease.renew
        arrivals = [samples(1, start=T + 1, host="h2")]

        async def renew_while_rows_arrive(
            hosts: Iterable[str], now: float, watch: Iterable[str] = ()
        ) -> None:
            await renew(hosts, now, watch)
            if arrivals:  # h2's first rows come in while the renew waited on the database
                dashboard.add_samples(arrivals.pop())
                dashboard.add_record(event(T + 1, "h2"))

        monkeypatch.setattr(lease, "renew", renew_while_rows_arrive)
        dashboard.add_samples(samples(2, start=T))  # host h: nobody else has it
        assert await dashboard.flush() == 2  # h's rows; h2's went back, then were left
        assert dashboard.stats().not_written_samples == 1
        assert dashboard.stats().not_written_records == 1
        assert set(dashboard.stats().leads) == {HOST}
        async with rs.reader.connect() as conn:
            h2 = await conn.execute(
                select(MetricSample.ts_ms).join(Metric).where(Metric.host == "h2")
            )
            assert sorted(t for (t,) in h2) == [round(T * 1000), round(T * 1000) + 2000]
        assert await count(rs, DomainEventRow) == 0
        await recorder.close()
        await dashboard.close()
