"""What the store keeps of the collector's snapshots: nothing from a stale republish, and
the slow-cadence values (memory, disk, network) only on the tick that measured them."""

from __future__ import annotations

import dataclasses

import pytest

from tests.canned import NOW, fleet_snapshot, full_host_sample, stale_snapshot, with_io
from tests.conftest import FleetFactory
from virtwatch.core.collect.collector import Collector
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.storage.rows import rows_from_snapshot


def test_a_stale_republish_stores_nothing() -> None:
    assert rows_from_snapshot(fleet_snapshot())
    assert rows_from_snapshot(stale_snapshot()) == []


def test_slow_values_are_stored_on_the_tick_that_measured_them() -> None:
    base = fleet_snapshot()
    web = {d.name: d for d in base.domains}
    io = with_io(web["web-01"])
    assert io.disk is not None
    assert io.net is not None
    fresh = io._replace(
        mem_measured_at=NOW,
        disk=dataclasses.replace(io.disk, measured_at=NOW),
        net=dataclasses.replace(io.net, measured_at=NOW),
    )
    carried = with_io(web["web-02"])  # its slow groups were measured 4 s before this tick
    snap = dataclasses.replace(base, domains=(fresh, carried), host_sample=full_host_sample())
    rows = rows_from_snapshot(snap)
    fresh_metrics = {r.metric for r in rows if r.vm_uuid == fresh.uuid}
    carried_metrics = {r.metric for r in rows if r.vm_uuid == carried.uuid}
    assert {"disk_rd_bps", "net_tx_bps", "mem_used_kib", "vcpu_delay_pct"} <= fresh_metrics
    assert carried_metrics == {"cpu_pct", "vcpu_delay_pct"}
    host = {r.metric for r in rows if r.vm_uuid == ""}
    assert {"host.load1", "host.swap_used_kib", "host.psi_io_some", "host.net_rx_bps"} <= host


@pytest.mark.libvirt
async def test_a_test_driver_fleet_gives_rows_for_what_it_knows(make_fleet: FleetFactory) -> None:
    source = SingleConnection(make_fleet(10))
    try:
        snap = await Collector(source, lambda _x: None).tick()
    finally:
        await source.close()
    rows = rows_from_snapshot(snap)
    assert {r.metric for r in rows} == {"mem_alloc_kib"}  # STATE only: no rates, no guesses
    assert len(rows) == 10
