"""Domain events against libvirt's test driver: decoded on the hub, re-registered after a
reconnect, and no callback left registered once the stream is closed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import libvirt
import pytest

from tests.conftest import FleetFactory
from tests.waiting import WAIT_S, until
from virtwatch.core.collect.collector import Collector
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.calls import Borrowed
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.libvirt.events import DomainEventStream, StreamState
from virtwatch.core.libvirt.pool import LibvirtPool
from virtwatch.core.model import DomainState, Snapshot
from virtwatch.core.records import DomainEvent, EventKind

pytestmark = pytest.mark.libvirt


async def next_event(sub: Subscription[DomainEvent]) -> DomainEvent:
    async with asyncio.timeout(WAIT_S):
        return await sub.get()


async def call(b: Borrowed, name: str, method: str) -> None:
    await b.call(lambda conn: getattr(conn.lookupByName(name), method)())


async def outlive_deadline(b: Borrowed, release: threading.Event) -> None:
    """A call on `b` that outlives its deadline, as one to a daemon that stopped answering
    would: the source gives the connection up (suspect, never lent again) and opens a new
    one on the next borrow. The old connection is closed once the call has returned
    (`release.set()`), with the stream's callbacks still registered on it: nothing is
    closed under a thread inside a call, which a close of our own could not promise (the
    stream's checks borrow the same connection)."""

    def stuck(conn: libvirt.virConnect) -> int:
        release.wait(WAIT_S)
        return int(conn.getLibVersion())

    with pytest.raises(AppError, match=r"did not answer within 0\.05 s") as info:
        await b.call(stuck, timeout_s=0.05, what="a call that hangs")
    assert info.value.transient
    assert b.suspect


@pytest.fixture
async def source(make_fleet: FleetFactory) -> AsyncIterator[SingleConnection]:
    src = SingleConnection(make_fleet(3, states=(1,)))
    try:
        yield src
    finally:
        await src.close()


async def test_lifecycle_events_arrive_decoded_and_force_a_tick(
    source: SingleConnection,
) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    forced: list[DomainEvent] = []
    async with DomainEventStream(source, hub.publish, host="lab", on_event=forced.append):
        async with source.connection() as b:
            uuid = await b.call(lambda conn: conn.lookupByName("vm-0001").UUIDString())
            for method in ("suspend", "resume", "destroy", "create"):
                await call(b, "vm-0001", method)
        events = [await next_event(sub) for _ in range(4)]
    assert [e.summary for e in events] == [
        "suspended: by admin",
        "resumed: unpaused",
        "stopped: destroyed",
        "started: booted",
    ]
    for e in events:
        assert e.kind is EventKind.LIFECYCLE
        assert e.host == "lab"
        assert e.vm_name == "vm-0001"
        assert e.vm_uuid == uuid
    assert [e.detail["name"] for e in events] == ["suspended", "resumed", "stopped", "started"]
    assert events[2].detail == {"event": "5", "detail": "1", "name": "stopped"}
    assert forced == events  # each event asks for an immediate collector tick


async def test_the_test_driver_emits_no_reboot_event(source: SingleConnection) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    async with DomainEventStream(source, hub.publish, host="lab"), source.connection() as b:
        await call(b, "vm-0000", "reboot")
        await call(b, "vm-0000", "suspend")  # events keep their order: this one is next
        first = await next_event(sub)
    assert first.summary == "suspended: by admin"


async def test_metadata_change_is_an_event(source: SingleConnection) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    async with DomainEventStream(source, hub.publish, host="lab"), source.connection() as b:
        await b.call(
            lambda conn: conn.lookupByName("vm-0002").setMetadata(
                libvirt.VIR_DOMAIN_METADATA_TITLE,
                "web front end",
                None,
                None,
                libvirt.VIR_DOMAIN_AFFECT_LIVE,
            )
        )
        event = await next_event(sub)
    assert event.kind is EventKind.METADATA_CHANGE
    assert event.summary == "metadata changed: title"
    assert event.vm_name == "vm-0002"


async def test_closing_leaves_no_callback_registered(source: SingleConnection) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    stream = DomainEventStream(source, hub.publish, host="lab")
    await stream.open()
    assert (
        stream.registered == 8
    )  # lifecycle, reboot, I/O error, watchdog, agent, 2x device, metadata
    async with source.connection() as b:
        assert await b.call(lambda conn: len(conn.domainEventCallbackID)) == stream.registered
        await stream.aclose()
        assert stream.state is StreamState.CLOSED
        assert stream.registered == 0
        # libvirt-python's own registry
        assert await b.call(lambda conn: dict(conn.domainEventCallbackID)) == {}
        # a probe registered after the stream sees the next event; the stream must not
        loop = asyncio.get_running_loop()
        probe: asyncio.Future[str] = loop.create_future()

        def on_lifecycle(_c: object, dom: libvirt.virDomain, *_rest: object) -> None:
            loop.call_soon_threadsafe(probe.set_result, dom.name())

        cid = await b.call(
            lambda conn: conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, None
            )
        )
        try:
            await call(b, "vm-0000", "suspend")
            async with asyncio.timeout(WAIT_S):
                assert await probe == "vm-0000"
            await asyncio.sleep(0)  # anything the stream had queued would now be delivered
        finally:
            await b.call(lambda conn: conn.domainEventDeregisterAny(cid))
    assert sub.pending() == 0
    assert stream.stats.received == 0
    await stream.aclose()  # closing twice is harmless


async def test_callbacks_come_back_after_the_connection_is_replaced(
    source: SingleConnection,
) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    release = threading.Event()
    async with DomainEventStream(source, hub.publish, host="lab", check_interval_s=0.05) as s:
        try:
            async with source.connection() as first:
                await outlive_deadline(first, release)  # the connection is given up
        finally:
            release.set()  # its call returns: the old connection closes behind it
        await until(lambda: s.stats.registrations == 2, "the watch to notice and reopen")
        async with source.connection() as second:
            assert second.connection_id != first.connection_id
            registered = await second.call(lambda conn: len(conn.domainEventCallbackID))
            assert registered == s.registered == 8
            await call(second, "vm-0001", "suspend")
            event = await next_event(sub)
    assert event.summary == "suspended: by admin"
    assert event.vm_name == "vm-0001"
    assert s.stats.stale_dropped == 0


async def test_a_source_already_open_gets_callbacks_on_its_connection(
    source: SingleConnection,
) -> None:
    async with source.connection():
        pass  # opened before the stream exists: no open listener will fire for it
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    async with DomainEventStream(source, hub.publish, host="lab") as stream:
        assert stream.registered == 8
        async with source.connection() as b:
            await call(b, "vm-0002", "suspend")
        assert (await next_event(sub)).vm_name == "vm-0002"


async def test_an_unreachable_host_is_reported_once_and_does_not_fail_the_open() -> None:
    hub = Hub()
    errors = hub.subscribe(ErrorReport)
    source = SingleConnection("qemu+unix:///system?socket=/nonexistent/virtwatch.sock")
    try:
        async with DomainEventStream(source, hub.publish, host="gone", check_interval_s=0.02) as s:
            await until(
                lambda: s.stats.registrations == 0 and errors.pending() >= 1, "the error report"
            )
            await asyncio.sleep(0.1)  # several more checks fail in this time
            assert s.registered == 0
    finally:
        await source.close()
    assert errors.pending() == 1  # once per outage, not once per check
    report = errors.get_nowait()
    assert report is not None
    assert report.host == "gone"
    assert report.error.code is ErrorCode.LIBVIRT_CONNECTION_FAILED


async def test_misuse_is_a_clear_error(source: SingleConnection) -> None:
    stream = DomainEventStream(source, lambda _x: None, host="lab")
    async with stream:
        with pytest.raises(AppError, match="cannot open it again") as info:
            await stream.open()
        assert info.value.code is ErrorCode.INTERNAL_ERROR
    with pytest.raises(AppError, match="closed"):
        await stream.open()


async def test_an_event_makes_the_collector_tick_now(source: SingleConnection) -> None:
    hub = Hub()
    snaps = hub.subscribe(Snapshot)
    collector = Collector(source, hub.publish, host="lab", interval_s=3600.0)
    run = asyncio.create_task(collector.run())
    try:
        async with asyncio.timeout(WAIT_S):
            first = await snaps.get()
        assert first.by_uuid()
        async with DomainEventStream(
            source, hub.publish, host="lab", on_event=lambda _e: collector.force_tick()
        ):
            async with source.connection() as b:
                await call(b, "vm-0000", "suspend")
            async with asyncio.timeout(WAIT_S):  # an hour before the next scheduled tick
                second = await snaps.get()
    finally:
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    states = {d.name: d.state for d in second.domains}
    assert states["vm-0000"] is DomainState.PAUSED


async def test_a_pools_dedicated_connection_carries_events_and_closes_clean(
    make_fleet: FleetFactory,
) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    async with LibvirtPool(make_fleet(2, states=(1,)), host="lab") as pool:
        events_source = pool.dedicated("events")
        stream = DomainEventStream(events_source, hub.publish, host="lab")
        await stream.open()
        async with events_source.connection() as b:
            await call(b, "vm-0001", "suspend")
            assert (await next_event(sub)).summary == "suspended: by admin"
            # libvirt-python's own registry of this connection: the dict itself, not a
            # copy, to look at again after the close (the borrow is over by then)
            registry: dict[int, object] = await b.call(lambda conn: conn.domainEventCallbackID)
            assert len(registry) == stream.registered == 8
        await events_source.close()  # the pool closes it on purpose: its close listener
        assert stream.registered == 0  # deregistered everything before the close
        assert registry == {}
        await stream.aclose()
