"""Host samples: PSI parsing, CPU split, NIC choice, mounts (pure), and a real local sample."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.collect.hostsample import (
    PSI_ROOT,
    LocalHostSampler,
    cpu_split,
    host_nics,
    libvirt_cpu_split,
    mount_usage,
    parse_psi,
)

PSI_CPU = """some avg10=0.03 avg60=0.16 avg300=0.25 total=11427830
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""


def test_psi_with_some_and_full() -> None:
    p = parse_psi("cpu", PSI_CPU)
    assert p is not None
    assert (p.some_avg10, p.some_avg60, p.some_avg300, p.some_total_us) == (
        0.03,
        0.16,
        0.25,
        11427830,
    )
    assert p.full_avg60 == 0.0
    assert p.full_total_us == 0


def test_psi_of_an_older_kernel_has_no_full_line_for_cpu() -> None:
    p = parse_psi("cpu", PSI_CPU.splitlines()[0])
    assert p is not None
    assert p.full_avg10 is None


def test_garbage_is_no_pressure() -> None:
    assert parse_psi("io", "") is None
    assert parse_psi("io", "some avg10=x avg60=1 avg300=1 total=1") is None
    assert parse_psi("io", "some avg10=1") is None


@given(st.text())
def test_psi_parsing_never_raises(text: str) -> None:
    parse_psi("memory", text)


def test_cpu_split_leaves_guest_time_out_of_the_total() -> None:
    t = {"user": 50.0, "nice": 0.0, "system": 10.0, "idle": 30.0, "iowait": 10.0, "guest": 40.0}
    assert cpu_split(t) == (60.0, 100.0)


def test_libvirt_cpu_split() -> None:
    stats = {"kernel": 20, "user": 30, "idle": 40, "iowait": 10}
    assert libvirt_cpu_split(stats) == (50.0, 100.0)


def test_physical_nics_win_over_everything_else() -> None:
    names = ["lo", "eth0", "br0", "vnet3", "virbr0", "eno1"]
    assert host_nics(names, {"eth0", "eno1"}) == ["eth0", "eno1"]


def test_without_physical_nics_libvirts_devices_and_loopback_are_left_out() -> None:
    names = ["lo", "eth0", "vnet3", "virbr0", "tap1", "macvtap0", "ifb0", "veth9", "docker0"]
    assert host_nics(names, set()) == ["eth0"]


def test_mounts_skip_images_that_are_full_by_design_and_duplicates() -> None:
    parts = [
        ("/dev/vda", "/", "ext4"),
        ("/dev/loop3", "/snap/core/1", "squashfs"),
        ("/dev/vda", "/", "ext4"),
        ("/dev/vdb", "/var/lib/libvirt", "xfs"),
    ]
    usage = {"/": (1000, 900, 50), "/snap/core/1": (10, 10, 0), "/var/lib/libvirt": (100, 10, 90)}
    mounts = mount_usage(parts, usage)
    assert [m.mount for m in mounts] == ["/", "/var/lib/libvirt"]
    assert mounts[0].used_pct == pytest.approx(100 * 900 / 950)  # df's rule: used/(used+avail)


def test_a_real_local_sample(tmp_path: Path) -> None:
    """psutil on this machine: the first sample has no rates, the second has them all."""
    sampler = LocalHostSampler()
    first = sampler.sample()
    assert first.source == "psutil"
    assert first.cpu_pct is None  # nothing to compare with yet: unknown, not zero
    assert first.mem_total_kib is not None
    assert first.mem_total_kib > 0
    assert first.cpus is not None
    assert first.cpus >= 1
    assert first.load1 is not None
    assert first.mounts
    time.sleep(0.2)
    second = sampler.sample()
    assert second.cpu_pct is not None
    assert 0.0 <= second.cpu_pct <= 100.0
    assert len(second.cpu_per_core_pct) == second.cpus
    assert all(c is None or 0 <= c <= 100 for c in second.cpu_per_core_pct)
    for rate in (second.disk_read_bps, second.disk_write_bps, second.net_rx_bps):
        assert rate is None or rate >= 0
    assert second.measured_at > first.measured_at
    # PSI where the kernel offers it, and nothing (not zeros) where it does not
    assert bool(second.psi) == (PSI_ROOT / "cpu").exists()
    assert LocalHostSampler(psi_root=tmp_path).sample().psi == ()
