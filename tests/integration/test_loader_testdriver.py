"""Batched lookups against libvirt's test driver: N loads in one loop tick are one
backend round, and a VM's cached details are cleared by its own events only."""

from __future__ import annotations

import asyncio
from typing import Any

import libvirt
import pytest

from tests.conftest import FleetFactory
from virtwatch.core.collect.details import (
    TAGS_NS,
    clear_details_on_events,
    details_loader,
    extra_stats_loader,
)
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.records import DomainEvent, EventKind

pytestmark = pytest.mark.libvirt


def count_calls(monkeypatch: pytest.MonkeyPatch, cls: Any, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(cls, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


async def uuids_of(source: SingleConnection, names: list[str]) -> list[str]:
    async with source.connection() as b:
        return await b.call(lambda conn: [conn.lookupByName(n).UUIDString() for n in names])


async def test_twenty_detail_loads_in_one_tick_are_one_listing(
    make_fleet: FleetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = SingleConnection(make_fleet(50))
    try:
        uuids = await uuids_of(source, [f"vm-{i:04d}" for i in range(20)])
        listings = count_calls(monkeypatch, libvirt.virConnect, "listAllDomains")
        xmls = count_calls(monkeypatch, libvirt.virDomain, "XMLDesc")
        loader = details_loader(source)
        details = await asyncio.gather(*(loader.load(u) for u in uuids + uuids[:5]))
        assert len(listings) == 1  # one batch ...
        assert len(xmls) == 20  # ... one definition per distinct VM (libvirt has no bulk XML)
        assert loader.stats().batches == 1
        again = await loader.load(uuids[3])
        assert len(xmls) == 20  # cached
    finally:
        await source.close()
    assert [d.name for d in details[:20]] == [f"vm-{i:04d}" for i in range(20)]
    assert details[3] is again
    assert details[2].vcpus == 3
    assert details[2].memory_kib == 768 * 1024


async def test_an_unknown_vm_fails_alone(make_fleet: FleetFactory) -> None:
    source = SingleConnection(make_fleet(3))
    try:
        (known,) = await uuids_of(source, ["vm-0001"])
        loader = details_loader(source)
        results = await asyncio.gather(
            loader.load(known),
            loader.load("00000000-0000-4000-8000-00000000dead"),
            return_exceptions=True,
        )
    finally:
        await source.close()
    assert not isinstance(results[0], BaseException)
    assert results[0].name == "vm-0001"
    assert isinstance(results[1], AppError)
    assert results[1].code is ErrorCode.MACHINE_NOT_FOUND


async def test_a_metadata_event_clears_that_vm_and_the_next_load_sees_the_change(
    make_fleet: FleetFactory,
) -> None:
    source = SingleConnection(make_fleet(3))
    hub = Hub()
    try:
        a, b = await uuids_of(source, ["vm-0000", "vm-0001"])
        loader = details_loader(source)
        watcher = asyncio.create_task(
            clear_details_on_events(hub.subscribe(DomainEvent), {"hv": loader})
        )
        before_a, before_b = await loader.load_many([a, b])

        def tag(conn: libvirt.virConnect) -> None:
            for name in ("vm-0000", "vm-0001"):
                conn.lookupByName(name).setMetadata(
                    libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<tags>web, prod</tags>", "vw", TAGS_NS, 0
                )

        async with source.connection() as borrowed:
            await borrowed.call(tag)
        stale_a = await loader.load(a)  # no event yet: the cache still holds the old one
        hub.publish(DomainEvent("hv", a, "vm-0000", EventKind.METADATA_CHANGE, "metadata", 1.0))
        await asyncio.sleep(0.01)
        after_a, after_b = await loader.load_many([a, b])
        hub.close()
        await watcher
    finally:
        await source.close()
    assert before_a.tags == stale_a.tags == ()
    assert after_a.tags == ("web", "prod")
    assert after_b is before_b  # its own event never came: still cached
    assert after_b.tags == ()


async def test_extra_stats_for_a_detail_view_are_one_bulk_call(
    make_fleet: FleetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = SingleConnection(make_fleet(40))
    try:
        uuids = await uuids_of(source, [f"vm-{i:04d}" for i in range(0, 40, 4)])
        bulk = count_calls(monkeypatch, libvirt.virConnect, "domainListGetStats")
        loader = extra_stats_loader(source)
        stats = await asyncio.gather(*(loader.load(u) for u in uuids))
        assert len(bulk) == 1
        await loader.load(uuids[0])
        assert len(bulk) == 2  # live values are never cached
    finally:
        await source.close()
    assert [s.uuid for s in stats] == uuids
    # the fleet cycles running, running, running, paused, shut off
    assert [s.stats.state for s in stats] == [(1, 1, 1, 3, 5)[i % 5] for i in range(0, 40, 4)]
    assert all(s.measured_at > 0 for s in stats)
