"""The libvirt-sourced host sample (what a remote URI gets), against the test driver,
which lacks getMemoryStats: the sampler falls back to getFreeMemory and remembers."""

from __future__ import annotations

import libvirt
import pytest

from tests.conftest import FleetFactory
from virtwatch.core.collect.collector import Collector
from virtwatch.core.collect.hostsample import RemoteHostSampler
from virtwatch.core.libvirt.connection import SingleConnection

pytestmark = pytest.mark.libvirt


async def test_a_libvirt_host_sample_with_the_memory_fallback(
    make_fleet: FleetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"memstats": 0, "free": 0}
    real_mem = libvirt.virConnect.getMemoryStats
    real_free = libvirt.virConnect.getFreeMemory

    def memstats(self: libvirt.virConnect, *a: int) -> object:
        calls["memstats"] += 1
        return real_mem(self, *a)

    def free(self: libvirt.virConnect) -> object:
        calls["free"] += 1
        return real_free(self)

    monkeypatch.setattr(libvirt.virConnect, "getMemoryStats", memstats)
    monkeypatch.setattr(libvirt.virConnect, "getFreeMemory", free)
    source = SingleConnection(make_fleet(3))
    try:
        collector = Collector(source, lambda _x: None, host_sampler=RemoteHostSampler())
        first = await collector.tick()
        second = await collector.tick()
    finally:
        await source.close()
    for snap in (first, second):
        hs = snap.host_sample
        assert hs is not None
        assert hs.source == "libvirt"
        assert hs.cpus == 8  # the fleet's <cpu><active>8</active>
        assert hs.mem_total_kib == 32 * 1024 * 1024
        assert hs.mem_used_kib is not None
        assert 0 <= hs.mem_used_kib <= hs.mem_total_kib
        assert hs.load1 is None  # libvirt does not say: unknown, not zero
        assert hs.swap_total_kib is None
        assert hs.mounts == ()
    assert calls["memstats"] == 1  # refused once, never asked again
    assert calls["free"] == 2
    assert first.host_sample is not None
    assert first.host_sample.cpu_pct is None  # no previous reading yet
