"""Domain events from real QEMU VMs under libvirtd: decoded, and still arriving after the
connection was replaced."""

from __future__ import annotations

import asyncio
import threading

import libvirt
import pytest

from tests.integration.test_events import outlive_deadline
from tests.vms import QEMU_URI, VmFactory
from tests.waiting import WAIT_S, until
from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.libvirt.events import DomainEventStream
from virtwatch.core.records import DomainEvent, EventKind

pytestmark = pytest.mark.qemu


async def event_for(
    sub: Subscription[DomainEvent], uuid: str, summary: str | None = None
) -> DomainEvent:
    """The next event of VM `uuid` (other tests' VMs share this daemon), optionally the
    next one with this summary."""
    async with asyncio.timeout(WAIT_S):
        while True:
            event = await sub.get()
            if event.vm_uuid == uuid and (summary is None or event.summary == summary):
                return event


async def summaries_until(sub: Subscription[DomainEvent], uuid: str, last: str) -> list[str]:
    seen: list[str] = []
    while not seen or seen[-1] != last:
        seen.append((await event_for(sub, uuid)).summary)
    return seen


async def test_start_pause_resume_destroy_arrive_decoded(transient_vm: VmFactory) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    forced: list[DomainEvent] = []
    source = SingleConnection(QEMU_URI)
    try:
        async with DomainEventStream(source, hub.publish, host="qemu", on_event=forced.append):
            dom = await transient_vm()
            uuid = dom.UUIDString()
            started = await summaries_until(sub, uuid, "started: booted")
            await asyncio.to_thread(dom.suspend)
            paused = await event_for(sub, uuid)
            await asyncio.to_thread(dom.resume)
            resumed = await event_for(sub, uuid)
            await asyncio.to_thread(dom.destroy)
            stopped = await summaries_until(sub, uuid, "stopped: destroyed")
    finally:
        await source.close()
    assert started[-1] == "started: booted"
    assert paused.summary == "suspended: by admin"
    assert resumed.summary == "resumed: unpaused"
    assert stopped[-1] == "stopped: destroyed"
    assert paused.kind is EventKind.LIFECYCLE
    assert paused.vm_name == dom.name()
    assert paused.host == "qemu"
    assert paused.detail == {"event": "3", "detail": "0", "name": "suspended"}
    assert paused in forced
    assert stopped[-1] in [e.summary for e in forced]


async def test_device_and_metadata_events(transient_vm: VmFactory) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    source = SingleConnection(QEMU_URI)
    tablet = "<input type='tablet' bus='usb'><alias name='ua-vwtablet'/></input>"
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    try:
        async with DomainEventStream(source, hub.publish, host="qemu"):
            dom = await transient_vm()
            uuid = dom.UUIDString()
            await asyncio.to_thread(dom.attachDeviceFlags, tablet, live)
            added = await event_for(sub, uuid, "device added: ua-vwtablet")
            await asyncio.to_thread(dom.detachDeviceFlags, tablet, live)
            removed = await event_for(sub, uuid, "device removed: ua-vwtablet")
            await asyncio.to_thread(
                dom.setMetadata, libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, "db", None, None, live
            )
            meta = await event_for(sub, uuid, "metadata changed: description")
    finally:
        await source.close()
    assert added.kind is EventKind.DEVICE_ADDED
    assert added.detail == {"dev_alias": "ua-vwtablet"}
    assert removed.kind is EventKind.DEVICE_REMOVED
    assert meta.kind is EventKind.METADATA_CHANGE


async def test_a_reset_is_a_reboot_event(transient_vm: VmFactory) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    source = SingleConnection(QEMU_URI)
    try:
        async with DomainEventStream(source, hub.publish, host="qemu"):
            dom = await transient_vm()
            await asyncio.to_thread(dom.reset, 0)
            event = await event_for(sub, dom.UUIDString(), "rebooted (guest reset)")
    finally:
        await source.close()
    assert event.kind is EventKind.REBOOT


async def test_events_still_arrive_after_the_connection_is_replaced(
    transient_vm: VmFactory,
) -> None:
    hub = Hub()
    sub = hub.subscribe(DomainEvent)
    source = SingleConnection(QEMU_URI)
    release = threading.Event()
    try:
        async with DomainEventStream(
            source, hub.publish, host="qemu", check_interval_s=0.1
        ) as stream:
            dom = await transient_vm()
            uuid = dom.UUIDString()
            await summaries_until(sub, uuid, "started: booted")
            try:
                async with source.connection() as first:
                    # libvirtd is slow to answer: the connection is given up and replaced
                    # while the daemon, alive, keeps talking on it (see outlive_deadline)
                    await outlive_deadline(first, release)
            finally:
                release.set()  # its call returns: the old connection closes behind it
            await until(lambda: stream.stats.registrations == 2, "the stream to register again")
            async with source.connection() as second:
                assert second.connection_id != first.connection_id
                registered = await second.call(lambda conn: len(conn.domainEventCallbackID))
                assert registered == stream.registered == 8
            await asyncio.to_thread(dom.suspend)
            paused = await event_for(sub, uuid)
            await asyncio.to_thread(dom.resume)
            resumed = await event_for(sub, uuid)  # the very next one: no duplicate between
    finally:
        await source.close()
    assert paused.summary == "suspended: by admin"
    assert resumed.summary == "resumed: unpaused"
    # the closed connection stays alive in libvirt (the stream's callbacks, never
    # deregistered from it, hold it) and still talks: dropped, not doubled
    assert stream.stats.stale_dropped >= 1
