"""Per-vCPU, per-disk and per-NIC figures from two readings of a VM's counters (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from virtwatch.core.collect.details import ExtraStats, device_figures, parse_extra


def reading(at: float, scale: int, **extra: Any) -> ExtraStats:
    rec: dict[str, Any] = {
        "state.state": 1,
        "vcpu.current": 2,
        "vcpu.maximum": 2,
        "vcpu.0.state": 1,
        "vcpu.0.time": scale * 500_000_000,  # half a CPU per unit of `scale`
        "vcpu.1.state": 2,
        "vcpu.1.time": 0,
        "block.count": 1,
        "block.0.name": "vda",
        "block.0.path": "/var/lib/libvirt/images/a.qcow2",
        "block.0.rd.bytes": scale * 1_000_000,
        "block.0.rd.reqs": scale * 100,
        "block.0.wr.bytes": scale * 2_000_000,
        "block.0.wr.reqs": scale * 50,
        "block.0.capacity": 10 * 2**30,
        "net.count": 1,
        "net.0.name": "vnet0",
        "net.0.rx.bytes": scale * 4_000,
        "net.0.rx.pkts": scale * 4,
        "net.0.tx.bytes": scale * 8_000,
        "net.0.tx.pkts": scale * 8,
        "net.0.rx.errs": 1,
        "net.0.tx.drop": 2,
    }
    rec.update(extra)
    return parse_extra("u-1", rec, at)


def test_rates_between_two_readings() -> None:
    figs = device_figures(reading(100.0, 1), reading(102.0, 3))
    assert [(v.index, v.state) for v in figs.vcpus] == [(0, 1), (1, 2)]
    assert figs.vcpus[0].busy_pct == pytest.approx(50.0)  # 1e9 ns over 2 s
    assert figs.vcpus[1].busy_pct == 0.0
    (disk,) = figs.disks
    assert (disk.name, disk.rd_bps, disk.wr_bps) == ("vda", 1_000_000, 2_000_000)
    assert (disk.rd_iops, disk.wr_iops, disk.capacity) == (100, 50, 10 * 2**30)
    (nic,) = figs.nics
    assert (nic.name, nic.rx_bps, nic.tx_bps, nic.rx_pps) == ("vnet0", 4_000, 8_000, 4)
    assert (nic.errors, nic.drops) == (1, 2)


def test_the_first_reading_and_a_reset_give_no_rate() -> None:
    first = device_figures(None, reading(100.0, 5))
    assert first.vcpus[0].busy_pct is None
    assert first.disks[0].rd_bps is None
    assert first.nics[0].rx_bps is None
    assert first.disks[0].capacity == 10 * 2**30  # what is not a rate is there at once
    reset = device_figures(reading(100.0, 5), reading(102.0, 1))  # the VM restarted
    assert reset.disks[0].rd_bps is None
    assert reset.vcpus[0].busy_pct is None


def test_a_device_that_appeared_has_no_rate_yet() -> None:
    before = reading(100.0, 1, **{"net.count": 0})
    figs = device_figures(before, reading(102.0, 2))
    assert figs.nics[0].rx_bps is None
    assert figs.disks[0].rd_bps == 500_000
