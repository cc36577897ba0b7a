"""The VM detail screen shows live per-vCPU, per-disk and per-NIC figures, read through
the core's extra-stats loader (one bulk stats call per tick), and says when it cannot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.canned import HOST, fleet_snapshot
from tests.conftest import FleetFactory
from tests.tui.conftest import AppFactory, settle
from virtwatch.core.collect.details import DomainDetails, ExtraStats, parse_extra
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.hub import Hub
from virtwatch.core.runtime import HostConfig, Runtime
from virtwatch.tui.bindings import DetailsService
from virtwatch.tui.detail import VmDetailScreen
from virtwatch.tui.ports import ExtraStatsSource


class CountingDevices:
    """A DetailsSource that can also give extra stats: counters that grow each reading."""

    def __init__(self, *, fail: bool = False) -> None:
        self.reads = 0
        self.fail = fail

    async def details(self, host: str, vm_uuid: str) -> DomainDetails:
        raise AppError(ErrorCode.MACHINE_NOT_FOUND, "no definition in this test")

    async def extra_stats(self, host: str, vm_uuid: str) -> ExtraStats:
        if self.fail:
            raise AppError(ErrorCode.LIBVIRT_CONNECTION_LOST, "the host went away")
        self.reads += 1
        n = self.reads
        rec: dict[str, Any] = {
            "state.state": 1,
            "vcpu.current": 1,
            "vcpu.maximum": 1,
            "vcpu.0.state": 1,
            "vcpu.0.time": n * 250_000_000,
            "block.count": 1,
            "block.0.name": "vda",
            "block.0.rd.bytes": n * 3_000_000,
            "block.0.wr.bytes": n * 1_000_000,
            "net.count": 1,
            "net.0.name": "vnet7",
            "net.0.rx.bytes": n * 5_000,
            "net.0.tx.bytes": n * 7_000,
        }
        return parse_extra(vm_uuid, rec, 1000.0 + n)  # one second apart


async def test_the_detail_shows_per_vcpu_disk_and_nic_figures(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(VmDetailScreen, "DEVICE_POLL_S", 0.05)
    source = CountingDevices()
    assert isinstance(source, ExtraStatsSource)
    app, hub = make_app(details=source)
    async with app.run_test(size=(160, 48)) as pilot:
        snap = fleet_snapshot()
        hub.publish(snap)
        await settle(pilot)
        vm = snap.domains[0]
        screen = app.open_detail(HOST, vm.uuid)
        assert screen is not None
        for _ in range(100):
            await pilot.pause(0.02)
            if screen.devices is not None and screen.devices.disks[0].rd_bps is not None:
                break
        text = str(screen.query_one("#detail-devices").render())
        assert "vcpu0 25.0%" in text or "vcpu0 25%" in text, text
        assert "disk vda read 3.0 MB/s, write 1.0 MB/s" in text
        assert "nic vnet7 rx 5.0 KB/s, tx 7.0 KB/s" in text
        app.pop_screen()
        await settle(pilot)
        stopped_at = source.reads  # a loaded machine may read once or twice more until here
        await asyncio.sleep(0.3)  # six poll intervals
        assert source.reads <= stopped_at + 1  # the worker ended with the screen


async def test_the_detail_says_why_there_are_no_device_figures(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(VmDetailScreen, "DEVICE_POLL_S", 0.05)
    app, hub = make_app(details=CountingDevices(fail=True))
    async with app.run_test(size=(160, 48)) as pilot:
        snap = fleet_snapshot()
        hub.publish(snap)
        await settle(pilot)
        screen = app.open_detail(HOST, snap.domains[0].uuid)
        assert screen is not None
        await settle(pilot, 10)
        await pilot.pause(0.1)
        text = str(screen.query_one("#detail-devices").render())
        assert "devices: the host went away" in text


@pytest.mark.libvirt
async def test_details_service_reads_live_device_stats(make_fleet: FleetFactory) -> None:
    hub = Hub()
    uri = make_fleet(2, states=(1,))
    async with (
        Runtime([HostConfig(uri, name="lab", interval_s=0.1)], hub=hub) as rt,
        DetailsService(rt.pools, hub) as details,
    ):
        for _ in range(100):
            if rt.collectors[0].last is not None:
                break
            await asyncio.sleep(0.05)
        snap = rt.collectors[0].last
        assert snap is not None
        running = next(d for d in snap.domains if d.state == 1)
        stats = await details.extra_stats("lab", running.uuid)
        assert stats.uuid == running.uuid
        assert stats.stats.state == 1  # the test driver gives state only; QEMU gives the rest
        with pytest.raises(AppError, match="no details loader for host nowhere"):
            await details.extra_stats("nowhere", running.uuid)
