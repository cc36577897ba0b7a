"""Canned snapshots for UI tests and the screenshot script (fixed data, fixed clock)."""

from __future__ import annotations

from uuid import NAMESPACE_DNS, uuid5

from virtwatch.core.model import (
    DomainSample,
    DomainState,
    HostFacts,
    HostSample,
    MemorySource,
    Snapshot,
)
from virtwatch.core.states import decode_state

NOW = 1_795_000_000.0  # frozen clock for screens


def domain(
    name: str,
    state: int = 1,
    reason: int = 1,
    *,
    vcpus: int = 2,
    cpu: float | None = 12.5,
    used_mib: int | None = 900,
    alloc_mib: int = 2048,
    up_s: float | None = 3 * 3600 + 12 * 60,
    uuid: str | None = None,
) -> DomainSample:
    st, text = decode_state(state, reason)
    active = st.is_active
    return DomainSample(
        uuid=uuid or str(uuid5(NAMESPACE_DNS, name)),
        name=name,
        state=st,
        reason=reason,
        state_text=text,
        domain_id=7 if active else None,
        vcpus=vcpus,
        cpu_time_ns=123_000_000_000 if active else None,
        cpu_pct=cpu if active else None,
        cpu_host_pct=cpu / 8 if (cpu is not None and active) else None,
        mem_alloc_kib=alloc_mib * 1024,
        mem_used_kib=used_mib * 1024 if (used_mib is not None and active) else None,
        mem_source=MemorySource.RSS if active else MemorySource.UNKNOWN,
        started_at=(NOW - up_s) if (up_s is not None and st is DomainState.RUNNING) else None,
        measured_at=NOW,
    )


FACTS = HostFacts(
    uri="qemu:///system",
    hostname="hv-07.example.net",
    driver="QEMU",
    libvirt_version="9.0.0",
    hypervisor_version="7.2.22",
    cpus=16,
    memory_kib=64 * 1024 * 1024,
)


def fleet_snapshot(*, tick: int = 1, notice: str | None = None, taken_at: float = NOW) -> Snapshot:
    """A dozen VMs in mixed states, one with a hostile name."""
    doms = (
        domain("web-01", cpu=23.4, uuid="10000000-0000-4000-8000-000000000001"),
        domain("web-02", cpu=19.0, uuid="10000000-0000-4000-8000-000000000002"),
        domain(
            "db-primary",
            vcpus=8,
            cpu=61.2,
            used_mib=14000,
            alloc_mib=16384,
            uuid="10000000-0000-4000-8000-000000000003",
        ),
        domain(
            "db-replica",
            vcpus=8,
            cpu=8.3,
            used_mib=12100,
            alloc_mib=16384,
            uuid="10000000-0000-4000-8000-000000000004",
        ),
        domain(
            "cache-01",
            cpu=2.1,
            used_mib=3900,
            alloc_mib=4096,
            uuid="10000000-0000-4000-8000-000000000005",
        ),
        domain(
            "build-runner", vcpus=4, cpu=97.9, up_s=340, uuid="10000000-0000-4000-8000-000000000006"
        ),
        domain(
            "staging-api", state=3, reason=5, cpu=0.0, uuid="10000000-0000-4000-8000-000000000007"
        ),
        domain("backup", state=5, reason=1, uuid="10000000-0000-4000-8000-000000000008"),
        domain(
            "legacy-crm",
            state=5,
            reason=3,
            vcpus=1,
            alloc_mib=1024,
            uuid="10000000-0000-4000-8000-000000000009",
        ),
        domain(
            "[bold red]x[/]",
            cpu=0.4,
            used_mib=60,
            alloc_mib=64,
            vcpus=1,
            uuid="10000000-0000-4000-8000-000000000010",
        ),
        domain(
            "win2022-rdp", vcpus=4, cpu=None, up_s=None, uuid="10000000-0000-4000-8000-000000000011"
        ),
        domain(
            "laptop-image",
            state=7,
            reason=0,
            cpu=None,
            used_mib=None,
            uuid="10000000-0000-4000-8000-000000000012",
        ),
    )
    return Snapshot(
        host="qemu:///system",
        facts=FACTS,
        host_sample=HostSample(
            cpu_pct=31.5,
            mem_total_kib=64 * 1024 * 1024,
            mem_used_kib=41 * 1024 * 1024,
            source="psutil",
            measured_at=NOW,
        ),
        domains=tuple(sorted(doms, key=lambda d: d.name)),
        taken_at=taken_at,
        tick=tick,
        duration_s=0.004,
        notice=notice,
    )
