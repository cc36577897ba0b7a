"""Immutable values that flow from the collector to the UI and the store.

Every measured value carries the wall-clock time (epoch seconds) it was taken at.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DomainState(enum.IntEnum):
    """libvirt's virDomainState."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7

    @property
    def label(self) -> str:
        return _STATE_LABELS[self]

    @property
    def is_active(self) -> bool:
        return self not in (DomainState.SHUTOFF, DomainState.NOSTATE)


_STATE_LABELS = {
    DomainState.NOSTATE: "no state",
    DomainState.RUNNING: "running",
    DomainState.BLOCKED: "blocked",
    DomainState.PAUSED: "paused",
    DomainState.SHUTDOWN: "shutting down",
    DomainState.SHUTOFF: "shut off",
    DomainState.CRASHED: "crashed",
    DomainState.PMSUSPENDED: "suspended (PM)",
}


class MemorySource(enum.StrEnum):
    """Where a VM's 'used memory' figure comes from."""

    GUEST = "guest"  # balloon driver: available - usable, as the guest sees it
    RSS = "rss"  # resident set of the QEMU process, as the host sees it
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DomainSample:
    """One VM as seen in one tick."""

    uuid: str
    name: str
    state: DomainState
    reason: int
    state_text: str
    domain_id: int | None
    vcpus: int | None
    cpu_time_ns: int | None
    cpu_pct: float | None  # of the VM's own vCPUs: 100 = every vCPU busy
    cpu_host_pct: float | None  # of the whole host: 100 = every host CPU busy
    mem_alloc_kib: int | None
    mem_used_kib: int | None
    mem_source: MemorySource
    started_at: float | None  # epoch seconds the VM's QEMU process started, when known
    measured_at: float


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What does not change while a connection lives."""

    uri: str  # redacted
    hostname: str
    driver: str
    libvirt_version: str
    hypervisor_version: str
    cpus: int
    memory_kib: int


@dataclass(frozen=True, slots=True)
class HostSample:
    """The hypervisor host's own load, from psutil (local) or libvirt (remote)."""

    cpu_pct: float | None
    mem_total_kib: int | None
    mem_used_kib: int | None
    source: str  # "psutil", "libvirt"
    measured_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one host's tick learned. Replaced, never mutated."""

    host: str  # display name of the host (its redacted URI unless configured)
    facts: HostFacts
    host_sample: HostSample | None
    domains: tuple[DomainSample, ...]
    taken_at: float
    tick: int
    duration_s: float
    stats_calls: int = 1
    notice: str | None = None  # e.g. why a demo host is shown
    extra: dict[str, str] = field(default_factory=dict)

    def by_uuid(self) -> dict[str, DomainSample]:
        return {d.uuid: d for d in self.domains}


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value if not isinstance(value, DomainState) else value.name.lower()
    return value


def domain_to_dict(d: DomainSample) -> dict[str, object]:
    return {
        "uuid": d.uuid,
        "name": d.name,
        "state": d.state.name.lower(),
        "reason": d.reason,
        "state_text": d.state_text,
        "id": d.domain_id,
        "vcpus": d.vcpus,
        "cpu_time_ns": d.cpu_time_ns,
        "cpu_pct": _round(d.cpu_pct),
        "cpu_host_pct": _round(d.cpu_host_pct),
        "mem_alloc_kib": d.mem_alloc_kib,
        "mem_used_kib": d.mem_used_kib,
        "mem_source": _plain(d.mem_source),
        "started_at": d.started_at,
        "uptime_s": _round(d.measured_at - d.started_at) if d.started_at else None,
        "measured_at": d.measured_at,
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def snapshot_to_dict(snap: Snapshot) -> dict[str, object]:
    """A JSON-ready view of a snapshot (schema 1: keys are only ever added)."""
    f = snap.facts
    hs = snap.host_sample
    return {
        "schema": 1,
        "host": snap.host,
        "uri": f.uri,
        "hostname": f.hostname,
        "driver": f.driver,
        "libvirt_version": f.libvirt_version,
        "hypervisor_version": f.hypervisor_version,
        "host_cpus": f.cpus,
        "host_memory_kib": f.memory_kib,
        "host_sample": None
        if hs is None
        else {
            "cpu_pct": _round(hs.cpu_pct),
            "mem_total_kib": hs.mem_total_kib,
            "mem_used_kib": hs.mem_used_kib,
            "source": hs.source,
            "measured_at": hs.measured_at,
        },
        "taken_at": snap.taken_at,
        "notice": snap.notice,
        "domains": [domain_to_dict(d) for d in snap.domains],
    }
