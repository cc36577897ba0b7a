"""The collector against libvirt's test driver: private fleets, no daemon."""

from __future__ import annotations

import asyncio

import libvirt
import pytest

from tests.conftest import FleetFactory
from virtwatch.core.collector import Collector
from virtwatch.core.connection import SingleConnection
from virtwatch.core.demo import demo_uri
from virtwatch.core.hub import Hub
from virtwatch.core.model import DomainState, Snapshot

pytestmark = pytest.mark.libvirt


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
    assert snap.stats_calls == 1
    assert snap.facts.driver == "TEST"


async def test_one_bulk_call_per_tick_whatever_the_fleet_size(
    make_fleet: FleetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first tick (definitions cached), a tick is one getAllDomainStats call."""
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
    source = SingleConnection(make_fleet(300))
    try:
        collector = Collector(source, lambda _x: None)
        await collector.tick()
        first_info = calls["info"]
        for _ in range(3):
            await collector.tick()
    finally:
        await source.close()
    assert calls["bulk"] == 4
    assert first_info == 300  # definitions read once ...
    assert calls["info"] == 300  # ... and not again while states hold


async def test_a_state_change_is_seen_on_the_next_tick(make_fleet: FleetFactory) -> None:
    uri = make_fleet(3, states=(1,))
    source = SingleConnection(uri)
    try:
        collector = Collector(source, lambda _x: None)
        before = (await collector.tick()).by_uuid()
        async with source.connection() as conn:
            dom = conn.lookupByName("vm-0001")
            await asyncio.to_thread(dom.suspend)
        after = (await collector.tick()).by_uuid()
    finally:
        await source.close()
    uuid = dom.UUIDString()
    assert before[uuid].state is DomainState.RUNNING
    assert after[uuid].state is DomainState.PAUSED
    assert after[uuid].state_text == "paused: by admin"


async def test_a_destroyed_domain_leaves_the_snapshot(make_fleet: FleetFactory) -> None:
    source = SingleConnection(make_fleet(4, states=(1,)))
    try:
        collector = Collector(source, lambda _x: None)
        await collector.tick()
        async with source.connection() as conn:
            dom = conn.lookupByName("vm-0002")
            await asyncio.to_thread(dom.destroy)
            await asyncio.to_thread(dom.undefine)
        snap = await collector.tick()
    finally:
        await source.close()
    assert [d.name for d in snap.domains] == ["vm-0000", "vm-0001", "vm-0003"]


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
