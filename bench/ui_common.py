"""Synthetic fleets for the UI benchmarks: every value of every VM changes each tick."""

from __future__ import annotations

import resource

from virtwatch.core.model import (
    DiskIo,
    DomainSample,
    DomainState,
    HostFacts,
    HostSample,
    MemorySource,
    NetIo,
    Snapshot,
)

FACTS = HostFacts("qemu:///system", "bench", "QEMU", "9.0.0", "7.2.22", 64, 256 * 1024 * 1024)


def _disk(k: int, tick: int, t: float) -> DiskIo:
    r = float((k * 31 + tick * 17) % 5000) * 1000
    return DiskIo(("vda",), None, None, None, None, r, r / 2, r / 4096, r / 8192, None, None, t)


def _net(k: int, tick: int, t: float) -> NetIo:
    r = float((k * 11 + tick * 23) % 9000) * 100
    return NetIo(
        ("vnet0",), None, None, None, None, None, None, None, None, r, r / 3, r / 1500, r / 4500,
        0.0, 0.0, t,
    )  # fmt: skip


def fleet(
    n: int,
    tick: int,
    *,
    t0: float = 1_795_000_000.0,
    step_s: float = 1.0,
    static: bool = False,
) -> Snapshot:
    """`n` running VMs at tick `tick`: CPU, memory, disk and network all differ from the
    previous tick for every VM — or, with `static`, are the same at every (fresh) tick."""
    t = t0 + tick * step_s
    if static:
        tick = 0
    doms = []
    for k in range(n):
        doms.append(
            DomainSample(
                uuid=f"00000000-0000-4000-8000-{k:012d}",
                name=f"vm-{k:04d}",
                state=DomainState.RUNNING,
                reason=1,
                state_text="running: booted",
                domain_id=k + 1,
                vcpus=1 + k % 8,
                cpu_time_ns=tick * 1_000_000_000,
                cpu_pct=((tick * 7 + k * 13) % 997) / 10.0 + 0.05,
                cpu_host_pct=((tick * 7 + k * 13) % 997) / 80.0,
                mem_alloc_kib=(1 + k % 16) * 1024 * 1024,
                mem_used_kib=(1 + k % 16) * 512 * 1024 + (tick * 4099 + k) % 300_000,
                mem_source=MemorySource.RSS,
                started_at=t0 - 3600 - k,
                measured_at=t,
                disk=_disk(k, tick, t),
                net=_net(k, tick, t),
            )
        )
    return Snapshot(
        host="qemu:///system",
        facts=FACTS,
        host_sample=HostSample(
            float(tick % 100), 256 * 1024 * 1024, (100 + tick % 50) * 1024 * 1024, "psutil", t
        ),
        domains=tuple(doms),
        taken_at=t,
        tick=tick,
        duration_s=0.01,
    )


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
