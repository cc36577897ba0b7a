"""The values the collector publishes: fast construction, JSON view, staleness."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.canned import FACTS, NOW, domain, fleet_snapshot
from virtwatch.core.model import (
    DOMAIN_SAMPLE_FIELDS,
    DiskIo,
    DomainSample,
    HostSample,
    MountUsage,
    NetIo,
    Pressure,
    Snapshot,
    domain_sample_of,
    snapshot_to_dict,
)

SCHEMA_1_KEYS = {
    "schema",
    "host",
    "uri",
    "hostname",
    "driver",
    "libvirt_version",
    "hypervisor_version",
    "host_cpus",
    "host_memory_kib",
    "host_sample",
    "taken_at",
    "notice",
    "domains",
}
DOMAIN_KEYS_1 = {
    "uuid",
    "name",
    "state",
    "reason",
    "state_text",
    "id",
    "vcpus",
    "cpu_time_ns",
    "cpu_pct",
    "cpu_host_pct",
    "mem_alloc_kib",
    "mem_used_kib",
    "mem_source",
    "started_at",
    "uptime_s",
    "measured_at",
}


def full_domain() -> DomainSample:
    disk = DiskIo(("vda",), 1, 2, 3, 4, 1.5, 2.5, 0.5, 0.25, 100, 50, NOW - 3)
    net = NetIo(("vnet0",), 1, 2, 3, 4, 0, 0, 1, 0, 10.0, 20.0, 1.0, 2.0, 0.0, 0.5, NOW - 3)
    return domain("web-01")._replace(
        vcpu_delay_pct=3.25,
        mem_current_kib=2048,
        mem_measured_at=NOW - 3,
        disk=disk,
        net=net,
    )


def test_the_hot_path_maker_builds_what_the_constructor_builds() -> None:
    d = full_domain()
    values = [getattr(d, f) for f in DOMAIN_SAMPLE_FIELDS]
    made = domain_sample_of(values)
    assert made == d
    assert type(made) is DomainSample
    assert hash(made) == hash(d)
    assert made.measured_at == d.measured_at
    assert made._replace(name="y").name == "y"
    with pytest.raises(AttributeError):
        made.name = "x"  # type: ignore[misc]


def test_the_json_view_only_adds_keys() -> None:
    doc = snapshot_to_dict(fleet_snapshot())
    assert set(doc) >= SCHEMA_1_KEYS
    assert doc["schema"] == 1
    domains = doc["domains"]
    assert isinstance(domains, list)
    assert set(domains[0]) >= DOMAIN_KEYS_1


def test_the_json_view_carries_io_and_its_times() -> None:
    snap = dataclasses.replace(fleet_snapshot(), domains=(full_domain(),))
    doc = snapshot_to_dict(snap)
    domains = doc["domains"]
    assert isinstance(domains, list)
    d: Any = domains[0]
    assert len(domains) == 1
    assert d["disk"]["rd_bps"] == 1.5
    assert d["disk"]["measured_at"] == NOW - 3
    assert d["net"]["drops_ps"] == 0.5
    assert d["vcpu_delay_pct"] == 3.25
    assert d["mem_measured_at"] == NOW - 3


def test_a_host_sample_says_what_it_knows() -> None:
    hs = HostSample(
        cpu_pct=12.345,
        mem_total_kib=100,
        mem_used_kib=50,
        source="psutil",
        measured_at=NOW,
        cpus=2,
        cpu_per_core_pct=(10.0, None),
        load1=0.5,
        load5=0.25,
        load15=0.1,
        mounts=(MountUsage("/", "/dev/vda", "ext4", 1000, 250, 750, 25.0),),
        psi=(Pressure("io", 1.0, 2.0, 3.0, 4, 0.5, 0.6, 0.7, 8),),
    )
    snap = dataclasses.replace(fleet_snapshot(), host_sample=hs)
    doc: Any = snapshot_to_dict(snap)["host_sample"]
    assert isinstance(doc, dict)
    assert doc["cpu_pct"] == 12.35
    assert doc["cpu_per_core_pct"] == [10.0, None]
    assert doc["load"] == [0.5, 0.25, 0.1]
    assert doc["mounts"][0]["mount"] == "/"
    assert doc["psi"]["io"]["full_avg60"] == 0.6
    assert hs.pressure("io") is not None
    assert hs.pressure("cpu") is None


def test_a_stale_snapshot_says_so_and_how_old_it_is() -> None:
    snap = Snapshot(
        host="h",
        facts=FACTS,
        host_sample=None,
        domains=(),
        taken_at=NOW,
        tick=3,
        duration_s=0.1,
        stale=True,
        error="h did not answer within 30 s",
        failed_since=NOW + 2,
        next_try_at=NOW + 4,
    )
    assert snap.age_s(NOW + 10) == 10
    assert snap.age_s(NOW - 1) == 0  # a clock step back never gives a negative age
    doc = snapshot_to_dict(snap)
    assert doc["stale"] is True
    assert doc["error"] == "h did not answer within 30 s"
    assert doc["failed_since"] == NOW + 2
