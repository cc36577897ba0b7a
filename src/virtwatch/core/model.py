"""Immutable values that flow from the collector to the UI and the store.

Every measured value carries the wall-clock time (epoch seconds) it was taken at:
`DomainSample.measured_at` for state and CPU (every tick), `mem_measured_at`,
`disk.measured_at` and `net.measured_at` for the groups read on the slower cadence.
A snapshot with `stale=True` is the last good one, republished because the host
stopped answering: its values are as old as `taken_at` says.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple


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
class DiskIo:
    """A VM's block I/O summed over its disks, measured at `measured_at`.

    Totals are cumulative since the VM started (None when no disk reports the counter);
    rates are per second since the previous measurement, None when unknown (first
    sample, VM restarted, counter went down). A rate is summed over the disks present
    in both measurements, so a hot-unplugged disk never makes a negative rate.
    """

    devices: tuple[str, ...]  # target names: vda, sdb
    rd_bytes: int | None
    wr_bytes: int | None
    rd_reqs: int | None
    wr_reqs: int | None
    rd_bps: float | None
    wr_bps: float | None
    rd_iops: float | None
    wr_iops: float | None
    capacity_bytes: int | None  # what the guest sees
    allocation_bytes: int | None  # what the image uses on the host
    measured_at: float


@dataclass(frozen=True, slots=True)
class NetIo:
    """A VM's network traffic summed over its interfaces, measured at `measured_at`.

    rx/tx are from the guest's point of view (libvirt swaps a tap device's counters);
    totals and rates follow the same rules as DiskIo.
    """

    devices: tuple[str, ...]  # host-side device names: vnet3
    rx_bytes: int | None
    tx_bytes: int | None
    rx_pkts: int | None
    tx_pkts: int | None
    rx_errs: int | None
    tx_errs: int | None
    rx_drop: int | None
    tx_drop: int | None
    rx_bps: float | None
    tx_bps: float | None
    rx_pps: float | None
    tx_pps: float | None
    errs_ps: float | None  # rx + tx errors per second
    drops_ps: float | None  # rx + tx drops per second
    measured_at: float


class DomainSample(NamedTuple):
    """One VM as seen in one tick.

    Immutable like every value here, but a NamedTuple rather than a frozen dataclass: the
    collector builds one per VM per tick (a thousand every 2 s on a big host), and a tuple
    is built in a third of the time. `_replace` is its `dataclasses.replace`.
    """

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
    # added by the collector of issue 4; all optional so existing constructors keep working
    vcpu_delay_pct: float | None = None  # steal: % of vCPU time runnable but not running
    mem_current_kib: int | None = None  # balloon.current: what the guest has been given now
    mem_measured_at: float | None = None  # when mem_used/alloc/current were measured
    disk: DiskIo | None = None  # None: not measured yet, or the host gives no block stats
    net: NetIo | None = None  # None: not measured yet, or the host gives no interface stats


DOMAIN_SAMPLE_FIELDS: tuple[str, ...] = DomainSample._fields
_new_tuple = tuple.__new__


def domain_sample_of(values: Sequence[Any]) -> DomainSample:
    """DomainSample from every field's value in DOMAIN_SAMPLE_FIELDS order (the hot path:
    no defaults, no keyword matching; the caller keeps the list complete)."""
    return _new_tuple(DomainSample, values)


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
class MountUsage:
    """Space on one mounted filesystem of the host."""

    mount: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int
    free_bytes: int  # available to unprivileged users
    used_pct: float  # as df reports it: used / (used + free)


@dataclass(frozen=True, slots=True)
class Pressure:
    """Pressure stall information for one resource (/proc/pressure/cpu|memory|io).

    `some`: share of time at least one task stalled on it; `full`: all non-idle tasks
    stalled at once (None for cpu on older kernels). Averages in percent.
    """

    resource: str  # "cpu", "memory", "io"
    some_avg10: float
    some_avg60: float
    some_avg300: float
    some_total_us: int
    full_avg10: float | None = None
    full_avg60: float | None = None
    full_avg300: float | None = None
    full_total_us: int | None = None


@dataclass(frozen=True, slots=True)
class HostSample:
    """The hypervisor host's own load, from psutil (local) or libvirt (remote).

    Every value was measured at `measured_at`; None means "not known from this source"
    (libvirt gives no swap, load, mounts or PSI for a remote host), never zero.
    """

    cpu_pct: float | None
    mem_total_kib: int | None
    mem_used_kib: int | None
    source: str  # "psutil", "libvirt"
    measured_at: float
    cpus: int | None = None
    cpu_per_core_pct: tuple[float | None, ...] = ()
    mem_available_kib: int | None = None
    swap_total_kib: int | None = None
    swap_used_kib: int | None = None
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    mounts: tuple[MountUsage, ...] = ()
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None
    disk_read_iops: float | None = None
    disk_write_iops: float | None = None
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    net_errs_ps: float | None = None
    net_drops_ps: float | None = None
    psi: tuple[Pressure, ...] = ()

    def pressure(self, resource: str) -> Pressure | None:
        return next((p for p in self.psi if p.resource == resource), None)


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
    # staleness: the host stopped answering; this is its last good snapshot, republished
    stale: bool = False
    error: str | None = None  # why (one line, credentials redacted)
    failed_since: float | None = None  # first failed tick of this outage
    next_try_at: float | None = None  # when the collector tries again
    # what this tick asked libvirt for
    groups: tuple[str, ...] = ()  # stats groups collected, e.g. ('state', 'cpu_total', 'vcpu')
    unsupported_groups: tuple[str, ...] = ()  # groups this host refused (remembered)

    def by_uuid(self) -> dict[str, DomainSample]:
        return {d.uuid: d for d in self.domains}

    def age_s(self, now: float) -> float:
        """How old this snapshot's values are at `now` (grows while the host is stale)."""
        return max(0.0, now - self.taken_at)


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
        "vcpu_delay_pct": _round(d.vcpu_delay_pct),
        "mem_current_kib": d.mem_current_kib,
        "mem_measured_at": d.mem_measured_at,
        "disk": None if d.disk is None else _disk_dict(d.disk),
        "net": None if d.net is None else _net_dict(d.net),
    }


def _disk_dict(x: DiskIo) -> dict[str, object]:
    return {
        "devices": list(x.devices),
        "rd_bytes": x.rd_bytes,
        "wr_bytes": x.wr_bytes,
        "rd_reqs": x.rd_reqs,
        "wr_reqs": x.wr_reqs,
        "rd_bps": _round(x.rd_bps),
        "wr_bps": _round(x.wr_bps),
        "rd_iops": _round(x.rd_iops),
        "wr_iops": _round(x.wr_iops),
        "capacity_bytes": x.capacity_bytes,
        "allocation_bytes": x.allocation_bytes,
        "measured_at": x.measured_at,
    }


def _net_dict(x: NetIo) -> dict[str, object]:
    return {
        "devices": list(x.devices),
        "rx_bytes": x.rx_bytes,
        "tx_bytes": x.tx_bytes,
        "rx_pkts": x.rx_pkts,
        "tx_pkts": x.tx_pkts,
        "rx_errs": x.rx_errs,
        "tx_errs": x.tx_errs,
        "rx_drop": x.rx_drop,
        "tx_drop": x.tx_drop,
        "rx_bps": _round(x.rx_bps),
        "tx_bps": _round(x.tx_bps),
        "rx_pps": _round(x.rx_pps),
        "tx_pps": _round(x.tx_pps),
        "errs_ps": _round(x.errs_ps),
        "drops_ps": _round(x.drops_ps),
        "measured_at": x.measured_at,
    }


def host_sample_to_dict(hs: HostSample) -> dict[str, object]:
    return {
        "cpu_pct": _round(hs.cpu_pct),
        "mem_total_kib": hs.mem_total_kib,
        "mem_used_kib": hs.mem_used_kib,
        "source": hs.source,
        "measured_at": hs.measured_at,
        "cpus": hs.cpus,
        "cpu_per_core_pct": [_round(c) for c in hs.cpu_per_core_pct],
        "mem_available_kib": hs.mem_available_kib,
        "swap_total_kib": hs.swap_total_kib,
        "swap_used_kib": hs.swap_used_kib,
        "load": None if hs.load1 is None else [hs.load1, hs.load5, hs.load15],
        "mounts": [
            {
                "mount": m.mount,
                "device": m.device,
                "fstype": m.fstype,
                "total_bytes": m.total_bytes,
                "used_bytes": m.used_bytes,
                "free_bytes": m.free_bytes,
                "used_pct": _round(m.used_pct),
            }
            for m in hs.mounts
        ],
        "disk_read_bps": _round(hs.disk_read_bps),
        "disk_write_bps": _round(hs.disk_write_bps),
        "disk_read_iops": _round(hs.disk_read_iops),
        "disk_write_iops": _round(hs.disk_write_iops),
        "net_rx_bps": _round(hs.net_rx_bps),
        "net_tx_bps": _round(hs.net_tx_bps),
        "net_errs_ps": _round(hs.net_errs_ps),
        "net_drops_ps": _round(hs.net_drops_ps),
        "psi": {
            p.resource: {
                "some_avg10": p.some_avg10,
                "some_avg60": p.some_avg60,
                "some_avg300": p.some_avg300,
                "full_avg10": p.full_avg10,
                "full_avg60": p.full_avg60,
                "full_avg300": p.full_avg300,
            }
            for p in hs.psi
        },
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
        "host_sample": None if hs is None else host_sample_to_dict(hs),
        "taken_at": snap.taken_at,
        "notice": snap.notice,
        "domains": [domain_to_dict(d) for d in snap.domains],
        "tick": snap.tick,
        "duration_s": _round(snap.duration_s, 4),
        "stats_calls": snap.stats_calls,
        "groups": list(snap.groups),
        "unsupported_groups": list(snap.unsupported_groups),
        "stale": snap.stale,
        "error": snap.error,
        "failed_since": snap.failed_since,
        "next_try_at": snap.next_try_at,
    }
