"""The collector against libvirt's test driver: private fleets, no daemon.

The test driver's bulk call gives the STATE group only (libvirt 9.0) and refuses the
others under ENFORCE_STATS, which exercises the collector's group fallback for real.
Where a test needs a host that misbehaves (refuses NOWAIT, hangs), a thin proxy
around the real connection provokes it; every value still comes from libvirt.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import libvirt
import pytest

from tests.conftest import FleetFactory
from virtwatch.core.collect.collector import Collector, CollectorSettings
from virtwatch.core.errors import ErrorCode
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.calls import Borrowed
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.libvirt.demo import demo_uri
from virtwatch.core.libvirt.events import DomainEventStream
from virtwatch.core.libvirt.stats import STATS_BLOCK, STATS_CPU_TOTAL, STATS_STATE, STATS_VCPU
from virtwatch.core.model import DomainState, Snapshot

pytestmark = pytest.mark.libvirt

NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
ENFORCE = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ENFORCE_STATS
Bulk = Callable[[libvirt.virConnect, int, int], Any]
T = TypeVar("T")


class ProxyConnection:
    """The real connection, with getAllDomainStats routed through `bulk(conn, stats, flags)`."""

    def __init__(self, conn: libvirt.virConnect, bulk: Bulk) -> None:
        self._conn = conn
        self._bulk = bulk

    def getAllDomainStats(self, stats: int, flags: int) -> Any:
        return self._bulk(self._conn, stats, flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class ProxyBorrowed:
    """A `Borrowed` of the real SingleConnection whose calls see a ProxyConnection: the
    proxy runs inside the real handle's counted call, like any other libvirt work."""

    def __init__(self, inner: Borrowed, bulk: Bulk) -> None:
        self._inner = inner
        self._bulk = bulk

    @property
    def connection_id(self) -> int:
        return self._inner.connection_id

    @property
    def suspect(self) -> bool:
        return self._inner.suspect

    async def call(self, fn: Callable[[Any], T], **kw: Any) -> T:
        bulk = self._bulk
        return await self._inner.call(lambda c: fn(ProxyConnection(c, bulk)), **kw)


class ProxySource:
    """A ConnectionSource lending ProxyBorroweds around a real SingleConnection."""

    def __init__(self, uri: str, bulk: Bulk) -> None:
        self._inner = SingleConnection(uri)
        self._bulk = bulk

    @property
    def uri(self) -> str:
        return self._inner.uri

    @property
    def read_only(self) -> bool:
        return False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:  # Borrowed-like: ProxyBorrowed
        async with self._inner.connection() as b:
            yield ProxyBorrowed(b, self._bulk)

    async def close(self) -> None:
        await self._inner.close()


def counting(calls: list[tuple[int, int]]) -> Bulk:
    def bulk(conn: libvirt.virConnect, stats: int, flags: int) -> Any:
        calls.append((stats, flags))
        return conn.getAllDomainStats(stats, flags)

    return bulk


async def test_every_domain_appears_with_decoded_state(make_fleet: FleetFactory) -> None:
    uri = make_fleet(10)
    hub = Hub()
    sub = hub.subscribe(Snapshot)
    source = SingleConnection(uri)
    try:
        snap = await Collector(source, hub.publish).tick()
    finally:
        await source.close()
    assert len(snap.domains) == 10
    assert await sub.get() is snap
    states = {d.name: d.state for d in snap.domains}
    assert states["vm-0000"] is DomainState.RUNNING
    assert states["vm-0003"] is DomainState.PAUSED
    assert states["vm-0004"] is DomainState.SHUTOFF
    first = snap.domains[0]
    assert first.vcpus == 1
    assert first.mem_alloc_kib == 256 * 1024
    assert snap.facts.driver == "TEST"
    # the test driver refuses every group but STATE: said, not hidden
    assert snap.groups == ("state",)
    assert set(snap.unsupported_groups) == {"cpu_total", "balloon", "vcpu", "interface", "block"}
    assert snap.stats_calls == 2  # the first tick learns what the host refuses ...


async def test_one_bulk_call_per_tick_for_a_thousand_vms(
    make_fleet: FleetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first tick (refusals learned, definitions cached) a tick is exactly one
    getAllDomainStats call and nothing else, for 1,000 VMs active and inactive."""
    calls = {"bulk": 0, "info": 0}
    real_bulk = libvirt.virConnect.getAllDomainStats
    real_info = libvirt.virDomain.info

    def bulk(self: libvirt.virConnect, *a: int) -> object:
        calls["bulk"] += 1
        return real_bulk(self, *a)

    def info(self: libvirt.virDomain) -> object:
        calls["info"] += 1
        return real_info(self)

    monkeypatch.setattr(libvirt.virConnect, "getAllDomainStats", bulk)
    monkeypatch.setattr(libvirt.virDomain, "info", info)
    source = SingleConnection(make_fleet(1000))
    try:
        collector = Collector(source, lambda _x: None)
        first = await collector.tick()
        after_first = dict(calls)
        later = [await collector.tick() for _ in range(3)]
    finally:
        await source.close()
    assert first.stats_calls == after_first["bulk"] == 2
    assert after_first["info"] == 1000  # definitions read once ...
    assert calls["info"] == 1000  # ... and not again while states hold
    assert [s.stats_calls for s in later] == [1, 1, 1]
    assert calls["bulk"] == 2 + 3
    snap = later[-1]
    assert len(snap.domains) == 1000
    assert [d.name for d in snap.domains] == sorted(d.name for d in snap.domains)
    counts = {s: sum(1 for d in snap.domains if d.state is s) for s in DomainState}
    assert counts[DomainState.RUNNING] == 600
    assert counts[DomainState.PAUSED] == 200
    assert counts[DomainState.SHUTOFF] == 200
    # every value carries its time; a repeated record still gets this tick's time
    assert all(d.measured_at == snap.taken_at for d in snap.domains)
    assert all(d.mem_alloc_kib is not None and d.vcpus is not None for d in snap.domains)
    assert snap.by_uuid() == {d.uuid: d for d in later[-1].domains}
    running = next(d for d in snap.domains if d.state is DomainState.RUNNING)
    assert running.domain_id is not None
    shutoff = next(d for d in snap.domains if d.state is DomainState.SHUTOFF)
    assert shutoff.domain_id is None
    assert shutoff.mem_used_kib is None  # not running: unknown, never zero


async def test_a_host_that_refuses_nowait_is_polled_without_it(make_fleet: FleetFactory) -> None:
    """An old daemon rejects the NOWAIT flag: the collector retries without it and
    remembers. The rejection is libvirt's own (an unknown flag bit stands in for NOWAIT)."""
    calls: list[tuple[int, int]] = []

    def old_daemon(conn: libvirt.virConnect, stats: int, flags: int) -> Any:
        calls.append((stats, flags))
        if flags & NOWAIT:
            flags |= 1 << 20  # a bit libvirt does not know: it answers "unsupported flags"
        return conn.getAllDomainStats(stats, flags)

    source = ProxySource(make_fleet(5), old_daemon)
    try:
        collector = Collector(source, lambda _x: None)
        first = await collector.tick()
        second = await collector.tick()
    finally:
        await source.close()
    assert len(first.domains) == len(second.domains) == 5
    assert first.stats_calls >= 2
    assert second.stats_calls == 1
    assert not calls[-1][1] & NOWAIT  # remembered


async def test_slow_groups_come_on_their_own_cadence(make_fleet: FleetFactory) -> None:
    """Cheap groups every tick; expensive ones on the first tick and then at most every
    slow_interval (here: never again within the test, then: every tick)."""
    calls: list[tuple[int, int]] = []

    def lenient(conn: libvirt.virConnect, stats: int, flags: int) -> Any:
        calls.append((stats, flags))
        return conn.getAllDomainStats(stats, flags & ~ENFORCE)  # a daemon that skips silently

    source = ProxySource(make_fleet(3), lenient)
    try:
        rare = Collector(source, lambda _x: None, settings=CollectorSettings(slow_interval_s=3600))
        snaps = [await rare.tick() for _ in range(3)]
    finally:
        await source.close()
    asked = [stats for stats, _flags in calls]
    fast = STATS_STATE | STATS_CPU_TOTAL | STATS_VCPU
    assert asked[0] & STATS_BLOCK
    assert asked[1] == asked[2] == fast
    assert "block" in snaps[0].groups
    assert snaps[1].groups == ("state", "cpu_total", "vcpu")

    calls.clear()
    source = ProxySource(make_fleet(3), lenient)
    try:
        every = Collector(
            source, lambda _x: None, interval_s=0.1, settings=CollectorSettings(slow_interval_s=0.1)
        )
        for _ in range(3):
            await every.tick()
            await asyncio.sleep(0.1)
    finally:
        await source.close()
    assert all(stats & STATS_BLOCK for stats, _flags in calls)


async def test_a_state_change_is_seen_on_the_next_tick(make_fleet: FleetFactory) -> None:
    uri = make_fleet(3, states=(1,))
    source = SingleConnection(uri)
    try:
        collector = Collector(source, lambda _x: None)
        before = (await collector.tick()).by_uuid()
        async with source.connection() as b:
            uuid = await b.call(lambda conn: conn.lookupByName("vm-0001").UUIDString())
            await b.call(lambda conn: conn.lookupByName("vm-0001").suspend())
        after = (await collector.tick()).by_uuid()
    finally:
        await source.close()
    assert before[uuid].state is DomainState.RUNNING
    assert after[uuid].state is DomainState.PAUSED
    assert after[uuid].state_text == "paused: by admin"


async def test_a_restart_gives_a_new_id_and_no_stale_values(make_fleet: FleetFactory) -> None:
    source = SingleConnection(make_fleet(2, states=(1,)))
    try:
        collector = Collector(source, lambda _x: None)
        before = (await collector.tick()).by_uuid()
        async with source.connection() as b:
            uuid = await b.call(lambda conn: conn.lookupByName("vm-0000").UUIDString())
            await b.call(lambda conn: conn.lookupByName("vm-0000").destroy())
            mid = (await collector.tick()).by_uuid()
            await b.call(lambda conn: conn.lookupByName("vm-0000").create())
        after = (await collector.tick()).by_uuid()
    finally:
        await source.close()
    assert mid[uuid].state is DomainState.SHUTOFF
    assert mid[uuid].domain_id is None
    assert after[uuid].state is DomainState.RUNNING
    assert after[uuid].domain_id is not None
    assert after[uuid].domain_id != before[uuid].domain_id


async def test_a_destroyed_domain_leaves_the_snapshot(make_fleet: FleetFactory) -> None:
    source = SingleConnection(make_fleet(4, states=(1,)))
    try:
        collector = Collector(source, lambda _x: None)
        await collector.tick()

        def remove(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName("vm-0002")
            dom.destroy()
            dom.undefine()

        async with source.connection() as b:
            await b.call(remove)
        snap = await collector.tick()
    finally:
        await source.close()
    assert [d.name for d in snap.domains] == ["vm-0000", "vm-0001", "vm-0003"]


async def test_a_renamed_domain_is_renamed_and_resorted_on_the_tick_its_event_forces(
    make_fleet: FleetFactory,
) -> None:
    source = SingleConnection(make_fleet(3, states=(5,)))
    try:
        collector = Collector(source, lambda _x: None)
        await collector.tick()
        async with source.connection() as b:
            await b.call(lambda conn: conn.lookupByName("vm-0000").rename("zz-last", 0))
        collector.force_tick()  # what the runtime does on the rename's lifecycle event
        snap = await collector.tick()
    finally:
        await source.close()
    assert [d.name for d in snap.domains] == ["vm-0001", "vm-0002", "zz-last"]


async def test_without_its_event_a_rename_shows_on_the_next_slow_tick(
    make_fleet: FleetFactory,
) -> None:
    """A shut-off domain's record does not change when it is renamed: steady ticks reuse
    its sample (one UUID call, no name or ID round), the slow cadence re-reads names."""
    source = SingleConnection(make_fleet(3, states=(5,)))
    settings = CollectorSettings(interval_s=1.0, slow_interval_s=1.0)
    try:
        collector = Collector(source, lambda _x: None, settings=settings)
        await collector.tick()  # slow: reads every name
        async with source.connection() as b:
            await b.call(lambda conn: conn.lookupByName("vm-0000").rename("zz-last", 0))
        steady = await collector.tick()  # within the slow interval: the name it knew
        await asyncio.sleep(0.6)  # past slow_interval_s - interval_s / 2
        slow = await collector.tick()
    finally:
        await source.close()
    assert [d.name for d in steady.domains] == ["vm-0000", "vm-0001", "vm-0002"]
    assert [d.name for d in slow.domains] == ["vm-0001", "vm-0002", "zz-last"]


async def test_a_rename_reaches_the_screen_through_its_lifecycle_event(
    make_fleet: FleetFactory,
) -> None:
    """The runtime's wiring: DomainEventStream -> force_tick -> a full tick, long before
    the next scheduled or slow one."""
    source = SingleConnection(make_fleet(3, states=(5,)))
    hub = Hub()
    snaps = hub.subscribe(Snapshot)
    settings = CollectorSettings(interval_s=3600.0, slow_interval_s=7200.0)
    collector = Collector(source, hub.publish, host="lab", settings=settings)
    run = asyncio.create_task(collector.run())
    try:
        async with asyncio.timeout(10):
            await snaps.get()
        async with DomainEventStream(
            source, hub.publish, host="lab", on_event=lambda _e: collector.force_tick()
        ):
            async with source.connection() as b:
                await b.call(lambda conn: conn.lookupByName("vm-0000").rename("zz-last", 0))
            async with asyncio.timeout(10):  # an hour before the next scheduled tick
                while True:
                    snap = await snaps.get()
                    if "zz-last" in {d.name for d in snap.domains}:
                        break
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        await source.close()
    assert [d.name for d in snap.domains] == ["vm-0001", "vm-0002", "zz-last"]


async def test_the_bundled_demo_fleet_loads() -> None:
    source = SingleConnection(demo_uri())
    try:
        snap = await Collector(source, lambda _x: None, host="demo").tick()
    finally:
        await source.close()
    assert len(snap.domains) >= 12
    assert len({d.state for d in snap.domains}) >= 4  # mixed states
    assert snap.host_sample is None  # the test driver's host is fictional: no psutil figures


async def test_a_runtime_collects_on_its_interval(make_fleet: FleetFactory) -> None:
    from virtwatch.core.runtime import HostConfig, Runtime

    hub = Hub()
    sub = hub.subscribe(Snapshot)
    async with Runtime([HostConfig(make_fleet(5), name="t", interval_s=0.05)], hub=hub) as rt:
        ticks = [await asyncio.wait_for(sub.get(), 5) for _ in range(3)]
        assert [s.tick for s in ticks] == [1, 2, 3]
        assert rt.collectors[0].last is not None
    assert all(t.host == "t" for t in ticks)


async def next_of(sub: Any, want: Callable[[Any], bool], within_s: float = 10.0) -> Any:
    async with asyncio.timeout(within_s):
        while True:
            item = await sub.get()
            if want(item):
                return item


async def test_a_lost_connection_marks_the_host_stale_then_it_recovers(
    make_fleet: FleetFactory,
) -> None:
    """The host's connection dies: the last snapshot is republished stale, with the error
    and its age; the source drops the dead connection, reconnects, fresh snapshots follow.

    The failure is libvirt's own ("invalid connection", from a connection libvirt already
    closed); the live one is never closed under a call in flight (that would crash)."""
    uri = make_fleet(3)
    dead = libvirt.open(uri)
    dead.close()
    failing = threading.Event()

    def dies(conn: libvirt.virConnect, stats: int, flags: int) -> Any:
        if failing.is_set():
            return dead.getAllDomainStats(stats, flags)
        return conn.getAllDomainStats(stats, flags)

    hub = Hub()
    snaps = hub.subscribe(Snapshot)
    errors = hub.subscribe(ErrorReport)
    source = ProxySource(uri, dies)
    collector = Collector(source, hub.publish, host="h1", interval_s=0.05)
    task = asyncio.create_task(collector.run())
    try:
        good = await next_of(snaps, lambda s: not s.stale)
        failing.set()
        stale = await next_of(snaps, lambda s: s.stale)
        report = await next_of(errors, lambda _r: True)
        failing.clear()
        fresh = await next_of(snaps, lambda s: not s.stale and s.tick > good.tick)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.close()
    assert stale.error is not None
    assert "collecting stats" in stale.error
    assert stale.failed_since is not None
    assert stale.next_try_at is not None
    assert stale.taken_at <= stale.failed_since  # its values are as old as taken_at says
    assert stale.age_s(stale.failed_since + 5) >= 5
    assert stale.domains  # the last values stay
    assert report.host == "h1"
    assert report.error.code is ErrorCode.LIBVIRT_CONNECTION_LOST
    assert fresh.error is None
    assert fresh.failed_since is None
    assert collector.failures >= 1


async def test_a_hung_host_delays_no_other_and_is_marked_stale(make_fleet: FleetFactory) -> None:
    """One host's bulk call blocks: that host times out and goes stale, without a second
    call piling up behind the first; the other host keeps ticking meanwhile."""
    release = threading.Event()
    hung_calls: list[tuple[int, int]] = []

    def hang_after_first(conn: libvirt.virConnect, stats: int, flags: int) -> Any:
        hung_calls.append((stats, flags))
        if len(hung_calls) > 2:  # the first tick takes two calls (it learns the refusals)
            release.wait(30)
        return conn.getAllDomainStats(stats, flags)

    hub = Hub()
    snaps = hub.subscribe(Snapshot)
    errors = hub.subscribe(ErrorReport)
    hung_source = ProxySource(make_fleet(3), hang_after_first)
    ok_source = SingleConnection(make_fleet(3))
    hung = Collector(
        hung_source,
        hub.publish,
        host="hung",
        interval_s=0.05,
        # stale after 1 s without an answer; the hung call is given up (and a new one
        # started on a new connection) only after twice that: the count below is taken
        # well inside that window
        settings=CollectorSettings(tick_timeout_s=1.0),
    )
    ok = Collector(ok_source, hub.publish, host="ok", interval_s=0.05)
    tasks = []
    try:
        tasks.append(asyncio.create_task(hung.run()))
        await next_of(snaps, lambda s: s.host == "hung")
        tasks.append(asyncio.create_task(ok.run()))
        stale = await next_of(snaps, lambda s: s.host == "hung" and s.stale)
        timeout = await next_of(errors, lambda r: r.host == "hung")
        ok_ticks = 0
        while ok_ticks < 5:  # the healthy host ticks while the hung call is still blocked
            snap = await next_of(snaps, lambda s: s.host == "ok")
            ok_ticks += 1
        calls_while_hung = len(hung_calls)
        assert not release.is_set()
    finally:
        release.set()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await hung_source.close()
        await ok_source.close()
    assert timeout.error.code is ErrorCode.LIBVIRT_NOT_ANSWERING
    assert stale.error is not None
    assert "has not answered for 1 s" in stale.error
    assert snap.stale is False
    # the first tick learned the refusals (2 calls), then ONE call hung; no pile-up
    assert calls_while_hung == 3


async def test_stopping_waits_for_the_call_in_flight(make_fleet: FleetFactory) -> None:
    """Cancelling run() does not abandon a call inside libvirt (that would throw away the
    snapshot it is about to deliver, and give up its connection): it waits, for a
    bounded time, for the call to return."""
    entered = threading.Event()
    release = threading.Event()
    returned = threading.Event()
    calls = 0

    def slow(conn: libvirt.virConnect, stats: int, flags: int) -> Any:
        nonlocal calls
        calls += 1
        if calls > 2:  # after the first tick (two calls: it learns the refusals)
            entered.set()
            release.wait(30)
        out = conn.getAllDomainStats(stats, flags)
        if calls > 2:
            returned.set()
        return out

    source = ProxySource(make_fleet(3), slow)
    collector = Collector(source, lambda _x: None, interval_s=0.05)
    task = asyncio.create_task(collector.run())
    try:
        await asyncio.to_thread(entered.wait, 30)
        task.cancel()
        await asyncio.sleep(0.2)
        assert not task.done()  # still waiting for the call, not abandoning it
        release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert returned.is_set()
    finally:
        release.set()
        await source.close()
