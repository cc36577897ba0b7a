from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.libvirt.stats import (
    STATS_BLOCK,
    STATS_STATE,
    group_bits,
    group_names,
    has_balloon,
    memory_used,
    parse_record,
    rejected_groups,
    version_text,
)


def test_full_record() -> None:
    s = parse_record(
        {
            "state.state": 1,
            "state.reason": 1,
            "cpu.time": 5_000_000,
            "vcpu.current": 2,
            "balloon.current": 2048,
            "balloon.maximum": 4096,
            "balloon.rss": 1500,
        }
    )
    assert (s.state, s.reason, s.cpu_time_ns, s.vcpus) == (1, 1, 5_000_000, 2)
    assert memory_used(s) == (1500, "rss")


def test_missing_keys_are_none_not_zero() -> None:
    s = parse_record({"state.state": 5, "state.reason": 2})
    assert s.cpu_time_ns is None
    assert s.vcpus is None
    assert s.rss_kib is None
    assert memory_used(s) == (None, "unknown")


def test_guest_view_preferred_when_the_balloon_reports_it() -> None:
    s = parse_record({"balloon.available": 4000, "balloon.usable": 3000, "balloon.rss": 9})
    assert memory_used(s) == (1000, "guest")


def test_wrongly_typed_values_are_ignored() -> None:
    s = parse_record({"state.state": 1, "cpu.time": "oops", "vcpu.current": True})
    assert s.cpu_time_ns is None
    assert s.vcpus is None


def test_version_text() -> None:
    assert version_text(9000000) == "9.0.0"
    assert version_text(7002022) == "7.2.22"
    assert version_text(0) == "?"


# a record as QEMU gave it for a running VM with one disk and one NIC (trimmed)
QEMU_RECORD = {
    "state.state": 1,
    "state.reason": 1,
    "cpu.time": 3_350_000_000,
    "balloon.current": 65536,
    "balloon.maximum": 65536,
    "balloon.rss": 45192,
    "vcpu.current": 2,
    "vcpu.maximum": 2,
    "vcpu.0.state": 1,
    "vcpu.0.time": 3_350_000_000,
    "vcpu.0.wait": 0,
    "vcpu.0.delay": 149_434_378,
    "vcpu.1.state": 1,
    "vcpu.1.time": 1_000,
    "vcpu.1.wait": 5,
    "vcpu.1.delay": 1_000,
    "net.count": 1,
    "net.0.name": "vnet0",
    "net.0.rx.bytes": 2432,
    "net.0.rx.pkts": 30,
    "net.0.rx.errs": 0,
    "net.0.rx.drop": 1,
    "net.0.tx.bytes": 2286,
    "net.0.tx.pkts": 12,
    "net.0.tx.errs": 0,
    "net.0.tx.drop": 0,
    "block.count": 1,
    "block.0.name": "vda",
    "block.0.path": "/var/lib/libvirt/images/x.qcow2",
    "block.0.rd.reqs": 1,
    "block.0.rd.bytes": 512,
    "block.0.wr.reqs": 0,
    "block.0.wr.bytes": 0,
    "block.0.allocation": 0,
    "block.0.capacity": 16777216,
    "block.0.physical": 204800,
}


def test_vcpu_delay_and_wait_are_summed_over_vcpus() -> None:
    s = parse_record(QEMU_RECORD)
    assert s.vcpus == 2
    assert s.vcpu_maximum == 2
    assert s.vcpu_delay_ns == 149_434_378 + 1_000
    assert s.vcpu_wait_ns == 5


def test_block_and_net_devices_are_parsed() -> None:
    s = parse_record(QEMU_RECORD)
    assert s.blocks is not None
    assert s.nets is not None
    (disk,) = s.blocks
    assert (disk.name, disk.rd_bytes, disk.rd_reqs, disk.capacity) == ("vda", 512, 1, 16777216)
    assert disk.path == "/var/lib/libvirt/images/x.qcow2"
    (nic,) = s.nets
    assert (nic.name, nic.rx_bytes, nic.tx_pkts, nic.rx_drop) == ("vnet0", 2432, 12, 1)


def test_a_group_absent_from_the_record_is_none_not_empty() -> None:
    s = parse_record({"state.state": 1})
    assert s.blocks is None
    assert s.nets is None
    assert s.vcpu_delay_ns is None
    assert parse_record({"block.count": 0}).blocks == ()


def test_a_user_mode_nic_has_no_counters() -> None:
    """QEMU's user-mode networking has no host device: libvirt reports the NIC, no stats."""
    s = parse_record({"net.count": 1})
    assert s.nets is not None
    (nic,) = s.nets
    assert nic.name == "#0"
    assert nic.rx_bytes is None


def test_has_balloon() -> None:
    assert has_balloon(QEMU_RECORD)
    assert has_balloon({"balloon.maximum": 1})
    assert not has_balloon({"state.state": 1, "cpu.time": 5})


def test_group_names_and_bits_round_trip() -> None:
    assert group_names(STATS_STATE | STATS_BLOCK) == ("state", "block")
    assert group_bits(["state", "block"]) == STATS_STATE | STATS_BLOCK
    assert group_names(1 << 20) == ("0x100000",)
    with pytest.raises(ValueError, match="unknown stats group 'disk'"):
        group_bits(["disk"])


@given(st.integers(min_value=0, max_value=2047))
def test_every_known_bit_pattern_round_trips(bits: int) -> None:
    assert group_bits(group_names(bits)) == bits


def test_rejected_groups_are_read_from_libvirts_message() -> None:
    msg = "argument unsupported: Stats types bits 0x3e are not supported by this daemon"
    assert rejected_groups(msg) == 0x3E
    assert rejected_groups("unsupported flags (0x100000) in function x") == 0


record_keys = st.one_of(
    st.text(max_size=20),
    st.sampled_from([*sorted(QEMU_RECORD), "block.count", "net.count", "vcpu.maximum"]),
)


@given(st.dictionaries(record_keys, st.one_of(st.integers(), st.text(), st.none(), st.booleans())))
def test_any_record_parses_without_raising(rec: dict[str, object]) -> None:
    s = parse_record(rec)
    assert s.cpu_time_ns is None or type(s.cpu_time_ns) is int
    assert s.blocks is None or len(s.blocks) <= 4096
