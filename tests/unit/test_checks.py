"""The standard checks' readings, as pure functions of what they read."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import pytest

from tests.canned import NOW, domain, fleet_snapshot
from virtwatch.core.health.checks import (
    CATALOGUE,
    CATALOGUE_BY_NAME,
    HOST_CHECKS,
    SharedSample,
    event_readings,
    host_readings,
    pool_readings,
    store_readings,
    vm_stale_readings,
    vm_steal_readings,
)
from virtwatch.core.health.monitor import Thresholds
from virtwatch.core.model import DiskIo, DomainState, HostSample, MountUsage, Pressure
from virtwatch.core.records import HealthState

OK, WARN, CRIT, UNKNOWN = HealthState.OK, HealthState.WARN, HealthState.CRIT, HealthState.UNKNOWN


def test_the_catalogue_is_consistent() -> None:
    names = [c.name for c in CATALOGUE]
    assert len(names) == len(set(names))
    assert set(HOST_CHECKS) <= set(names)
    for c in CATALOGUE:
        t = c.thresholds
        if t.warn is not None and t.crit is not None:
            assert t.warn <= t.crit, c.name
        assert c.timeout_s > 0
        assert c.interval_s >= 1
    assert {c.name for c in CATALOGUE if c.per_vm} == {"vm.stale", "vm.steal"}


SAMPLE = HostSample(
    cpu_pct=42.0,
    mem_total_kib=1000,
    mem_used_kib=930,
    source="psutil",
    measured_at=NOW,
    cpus=4,
    swap_total_kib=200,
    swap_used_kib=50,
    load1=9.0,
    load5=6.0,
    load15=1.0,
    mounts=(
        MountUsage("/", "/dev/vda", "ext4", 100, 50, 50, 50.0),
        MountUsage("/var/lib/libvirt", "/dev/vdb", "xfs", 100, 97, 3, 97.0),
    ),
    psi=(
        Pressure("cpu", 1.0, 30.0, 3.0, 10, 0.0, 0.0, 0.0, 0),
        Pressure("memory", 1.0, 2.0, 3.0, 10, 0.5, 7.5, 1.0, 5),
    ),
)


def values(name: str, hs: HostSample | None = SAMPLE) -> list[tuple[str, float | None]]:
    return [(r.subject, r.value) for r in host_readings(name, "hv1", hs)]


def test_host_readings() -> None:
    assert values("host.cpu") == [("hv1", 42.0)]
    assert values("host.memory") == [("hv1", 93.0)]
    assert values("host.swap") == [("hv1", 25.0)]
    assert values("host.disk") == [("/", 50.0), ("/var/lib/libvirt", 97.0)]
    assert values("host.load") == [("hv1", 1.5)]  # 5-minute load per CPU
    assert values("host.psi.cpu") == [("hv1", 30.0)]  # some avg60
    assert values("host.psi.memory") == [("hv1", 7.5)]  # full avg60
    assert values("host.psi.io") == []  # this kernel has no io pressure: nothing, not 0


def test_what_a_remote_sample_cannot_say_gives_no_reading() -> None:
    remote = HostSample(10.0, 1000, 100, "libvirt", NOW, cpus=8)
    for name in ("host.swap", "host.disk", "host.load", "host.psi.cpu", "host.psi.io"):
        assert values(name, remote) == []
    assert values("host.cpu", remote) == [("hv1", 10.0)]


def test_no_sample_or_no_rate_yet_is_unknown() -> None:
    (r,) = host_readings("host.cpu", "hv1", None)
    assert r.state is UNKNOWN
    first = dataclasses.replace(SAMPLE, cpu_pct=None)
    (r,) = host_readings("host.cpu", "hv1", first)
    assert r.state is UNKNOWN


def test_no_swap_configured_is_fine() -> None:
    (r,) = host_readings("host.swap", "hv1", dataclasses.replace(SAMPLE, swap_total_kib=0))
    assert (r.state, r.value, r.message) == (OK, None, "no swap configured")


def test_an_unknown_host_check_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not a host check"):
        host_readings("host.fans", "hv1", SAMPLE)


@dataclass
class Pool:
    in_use: int = 0
    waiters: int = 0
    max_size: int = 10
    dedicated: int = 2
    timeouts: int = 0


def test_pool_saturation_counts_waiters_against_shared_capacity() -> None:
    (r,) = pool_readings("hv1", Pool(in_use=6, waiters=2, timeouts=3))
    assert r.value == 100.0
    assert "6 of 8 shared connections in use, 2 waiting" in r.message
    assert "3 borrows timed out" in r.message


@dataclass
class Stream:
    state: str = "open"
    registered: int = 8


def test_event_stream_liveness() -> None:
    assert event_readings("hv1", Stream(), True)[0].state is OK
    assert event_readings("hv1", Stream(state="closed"), True)[0].state is CRIT
    assert event_readings("hv1", Stream(), False)[0].state is CRIT
    assert event_readings("hv1", Stream(registered=0), True)[0].state is CRIT


@dataclass
class Writer:
    state: str = "running"
    lag_s: float = 0.5
    last_error: str | None = None
    failing_since: float | None = None
    dropped_samples: int = 0
    dropped_records: int = 0
    recorded_elsewhere: tuple[str, ...] = ()


LAG = Thresholds(10.0, 60.0)


def test_store_readings() -> None:
    (ok,) = store_readings("db", Writer(), LAG, NOW)
    assert (ok.value, ok.state) == (0.5, None)  # judged by the thresholds
    (failing,) = store_readings(
        "db", Writer(state="failing", last_error="disk full", failing_since=NOW - 30), LAG, NOW
    )
    assert failing.state is CRIT
    assert "refuses writes since 30 s: disk full" in failing.message
    (closed,) = store_readings("db", Writer(state="closed"), LAG, NOW)
    assert closed.state is UNKNOWN
    (dropping,) = store_readings("db", Writer(dropped_samples=5), LAG, NOW)
    assert dropping.state is WARN
    (late_and_dropping,) = store_readings("db", Writer(lag_s=90, dropped_records=1), LAG, NOW)
    assert late_and_dropping.state is CRIT


def test_store_readings_name_the_process_that_records_a_host() -> None:
    """Hosts another process records are said plainly, and are not a fault."""
    one = ("hv1 is recorded by virtwatch record (pid 1234 on node7)",)
    (shared,) = store_readings("db", Writer(recorded_elsewhere=one), LAG, NOW)
    assert shared.state is None  # judged by the lag alone: ok
    assert shared.message == f"writable, 0.5 s behind; {one[0]}"
    many = tuple(f"hv{i} is recorded by virtwatch record (pid {i} on n)" for i in range(5))
    (crowded,) = store_readings("db", Writer(recorded_elsewhere=many), LAG, NOW)
    assert "hv2 is recorded" in crowded.message
    assert "hv3" not in crowded.message
    assert crowded.message.endswith("; and 2 more hosts recorded elsewhere")


def test_vm_staleness_from_each_running_vms_oldest_value() -> None:
    fresh = domain("a", uuid="u-a")
    slow_disk = domain("b", uuid="u-b")._replace(
        disk=DiskIo((), None, None, None, None, None, None, None, None, None, None, NOW - 400),
    )
    off = domain("c", state=5, reason=1, uuid="u-c")
    snap = dataclasses.replace(fleet_snapshot(), domains=(fresh, slow_disk, off))
    readings = {r.subject: r for r in vm_stale_readings("hv1", snap, NOW + 5)}
    assert set(readings) == {"a", "b"}  # a shut-off VM is not stale, it is off
    assert readings["a"].value == 5.0
    assert readings["b"].value == 405.0
    assert readings["b"].vm == "b"


def test_a_stale_host_is_one_reading_not_one_per_vm() -> None:
    snap = dataclasses.replace(fleet_snapshot(), stale=True, error="hv1 did not answer")
    (r,) = vm_stale_readings("hv1", snap, NOW + 90)
    assert (r.subject, r.value, r.vm) == ("hv1", 90.0, None)
    assert "hv1 did not answer" in r.message
    assert vm_stale_readings("hv1", None, NOW)[0].state is UNKNOWN


def test_vm_steal_of_running_vms_with_a_rate() -> None:
    busy = domain("a")._replace(vcpu_delay_pct=12.0)
    paused = domain("b", state=3, reason=1)._replace(vcpu_delay_pct=50.0)
    snap = dataclasses.replace(fleet_snapshot(), domains=(busy, paused, domain("c")))
    (r,) = vm_steal_readings(snap)
    assert (r.subject, r.value, r.vm) == ("a", 12.0, "a")
    assert paused.state is DomainState.PAUSED
    assert vm_steal_readings(dataclasses.replace(snap, stale=True)) == []


async def test_a_shared_sample_is_fetched_once_for_checks_running_together() -> None:
    fetches = 0

    async def fetch() -> HostSample:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(0.01)
        return SAMPLE

    shared = SharedSample(fetch, max_age_s=60)
    got = await asyncio.gather(*(shared() for _ in range(8)))
    assert all(g is SAMPLE for g in got)
    assert await shared() is SAMPLE
    assert fetches == 1
    assert CATALOGUE_BY_NAME["host.cpu"].unit == "%"
