"""Parsing libvirt's bulk stats records (getAllDomainStats) into typed values. Pure.

Records are flat dicts keyed like 'cpu.time' or 'block.0.rd.bytes'; any key may be
missing (inactive VMs, old daemons, drivers that report only some groups).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# virDomainStatsTypes bits (libvirt.VIR_DOMAIN_STATS_*), kept here so this module stays pure
STATS_STATE = 1
STATS_CPU_TOTAL = 2
STATS_BALLOON = 4
STATS_VCPU = 8
STATS_INTERFACE = 16
STATS_BLOCK = 32
STATS_PERF = 64
STATS_IOTHREAD = 128
STATS_MEMORY = 256
STATS_DIRTYRATE = 512
STATS_VM = 1024

GROUP_NAMES: dict[int, str] = {
    STATS_STATE: "state",
    STATS_CPU_TOTAL: "cpu_total",
    STATS_BALLOON: "balloon",
    STATS_VCPU: "vcpu",
    STATS_INTERFACE: "interface",
    STATS_BLOCK: "block",
    STATS_PERF: "perf",
    STATS_IOTHREAD: "iothread",
    STATS_MEMORY: "memory",
    STATS_DIRTYRATE: "dirtyrate",
    STATS_VM: "vm",
}
_GROUP_BITS = {name: bit for bit, name in GROUP_NAMES.items()}
# a record claiming more devices than this is garbage, not a reason to loop for minutes
MAX_DEVICES = 4096
MAX_VCPUS = 16384
_REJECTED_BITS = re.compile(r"bits 0x([0-9a-fA-F]+)")


def group_names(bits: int) -> tuple[str, ...]:
    """STATS_STATE | STATS_BLOCK -> ('state', 'block'); unknown bits as hex."""
    names = [name for bit, name in GROUP_NAMES.items() if bits & bit]
    rest = bits & ~sum(GROUP_NAMES)
    if rest:
        names.append(hex(rest))
    return tuple(names)


def group_bits(names: Iterable[str]) -> int:
    """('state', 'block') -> STATS_STATE | STATS_BLOCK; an unknown name raises ValueError."""
    bits = 0
    for name in names:
        try:
            bits |= _GROUP_BITS[name]
        except KeyError:
            known = ", ".join(sorted(_GROUP_BITS))
            raise ValueError(f"unknown stats group {name!r} (known: {known})") from None
    return bits


def rejected_groups(message: str) -> int:
    """The group bits a daemon named when it refused them with ENFORCE_STATS, else 0.

    libvirt says: "argument unsupported: Stats types bits 0x3e are not supported by this daemon".
    """
    m = _REJECTED_BITS.search(message)
    return int(m.group(1), 16) if m else 0


@dataclass(frozen=True, slots=True)
class BlockCounters:
    """One disk's cumulative counters ('block.N.*'). Missing keys are None."""

    name: str
    path: str | None
    rd_bytes: int | None
    rd_reqs: int | None
    wr_bytes: int | None
    wr_reqs: int | None
    allocation: int | None
    capacity: int | None
    physical: int | None


@dataclass(frozen=True, slots=True)
class NetCounters:
    """One interface's cumulative counters ('net.N.*'), as the host's tap device sees them."""

    name: str
    rx_bytes: int | None
    rx_pkts: int | None
    rx_errs: int | None
    rx_drop: int | None
    tx_bytes: int | None
    tx_pkts: int | None
    tx_errs: int | None
    tx_drop: int | None


@dataclass(frozen=True, slots=True)
class DomainStats:
    state: int
    reason: int
    cpu_time_ns: int | None
    vcpus: int | None
    balloon_current_kib: int | None
    balloon_maximum_kib: int | None
    rss_kib: int | None
    available_kib: int | None
    usable_kib: int | None
    vcpu_maximum: int | None = None
    vcpu_delay_ns: int | None = None  # sum of vcpu.N.delay: time runnable but not running (steal)
    vcpu_wait_ns: int | None = None  # sum of vcpu.N.wait: time waiting on I/O
    blocks: tuple[BlockCounters, ...] | None = None  # None: the BLOCK group was not in the record
    nets: tuple[NetCounters, ...] | None = None  # None: the INTERFACE group was not in the record


def _int(rec: Mapping[str, Any], key: str) -> int | None:
    value = rec.get(key)
    if type(value) is int:  # bool is not a counter; libvirt gives int for every counter
        return value
    return None


def _str(rec: Mapping[str, Any], key: str) -> str | None:
    value = rec.get(key)
    return value if isinstance(value, str) else None


def _vcpu_sums(rec: Mapping[str, Any], count: int) -> tuple[int | None, int | None]:
    delay = wait = None
    for i in range(max(0, min(count, MAX_VCPUS))):
        d = rec.get(f"vcpu.{i}.delay")
        if type(d) is int:
            delay = (delay or 0) + d
        w = rec.get(f"vcpu.{i}.wait")
        if type(w) is int:
            wait = (wait or 0) + w
    return delay, wait


def parse_blocks(rec: Mapping[str, Any]) -> tuple[BlockCounters, ...] | None:
    """The 'block.N.*' entries, or None when the record has no BLOCK group."""
    count = _int(rec, "block.count")
    if count is None:
        return None
    out = []
    for i in range(max(0, min(count, MAX_DEVICES))):
        p = f"block.{i}."
        out.append(
            BlockCounters(
                name=_str(rec, p + "name") or f"#{i}",
                path=_str(rec, p + "path"),
                rd_bytes=_int(rec, p + "rd.bytes"),
                rd_reqs=_int(rec, p + "rd.reqs"),
                wr_bytes=_int(rec, p + "wr.bytes"),
                wr_reqs=_int(rec, p + "wr.reqs"),
                allocation=_int(rec, p + "allocation"),
                capacity=_int(rec, p + "capacity"),
                physical=_int(rec, p + "physical"),
            )
        )
    return tuple(out)


def parse_nets(rec: Mapping[str, Any]) -> tuple[NetCounters, ...] | None:
    """The 'net.N.*' entries, or None when the record has no INTERFACE group."""
    count = _int(rec, "net.count")
    if count is None:
        return None
    out = []
    for i in range(max(0, min(count, MAX_DEVICES))):
        p = f"net.{i}."
        out.append(
            NetCounters(
                name=_str(rec, p + "name") or f"#{i}",
                rx_bytes=_int(rec, p + "rx.bytes"),
                rx_pkts=_int(rec, p + "rx.pkts"),
                rx_errs=_int(rec, p + "rx.errs"),
                rx_drop=_int(rec, p + "rx.drop"),
                tx_bytes=_int(rec, p + "tx.bytes"),
                tx_pkts=_int(rec, p + "tx.pkts"),
                tx_errs=_int(rec, p + "tx.errs"),
                tx_drop=_int(rec, p + "tx.drop"),
            )
        )
    return tuple(out)


def parse_record(rec: Mapping[str, Any]) -> DomainStats:
    """One getAllDomainStats record -> DomainStats. Missing keys become None."""
    vcpus = _int(rec, "vcpu.current")
    vmax = _int(rec, "vcpu.maximum")
    delay = wait = None
    if vcpus is not None or vmax is not None:
        delay, wait = _vcpu_sums(rec, max(vcpus or 0, vmax or 0))
    return DomainStats(
        state=_int(rec, "state.state") or 0,
        reason=_int(rec, "state.reason") or 0,
        cpu_time_ns=_int(rec, "cpu.time"),
        vcpus=vcpus,
        balloon_current_kib=_int(rec, "balloon.current"),
        balloon_maximum_kib=_int(rec, "balloon.maximum"),
        rss_kib=_int(rec, "balloon.rss"),
        available_kib=_int(rec, "balloon.available"),
        usable_kib=_int(rec, "balloon.usable"),
        vcpu_maximum=vmax,
        vcpu_delay_ns=delay,
        vcpu_wait_ns=wait,
        blocks=parse_blocks(rec),
        nets=parse_nets(rec),
    )


def has_balloon(rec: Mapping[str, Any]) -> bool:
    """True when the record carries the BALLOON group (for an active or inactive VM)."""
    return "balloon.maximum" in rec or "balloon.current" in rec or "balloon.rss" in rec


def memory_used(stats: DomainStats) -> tuple[int | None, str]:
    """(used KiB, source): the guest's own view when its balloon driver reports it, else RSS."""
    if stats.available_kib is not None and stats.usable_kib is not None:
        return max(0, stats.available_kib - stats.usable_kib), "guest"
    if stats.rss_kib is not None:
        return stats.rss_kib, "rss"
    return None, "unknown"


def version_text(packed: int) -> str:
    """libvirt's packed version 9000000 -> '9.0.0'."""
    if packed <= 0:
        return "?"
    return f"{packed // 1_000_000}.{packed // 1000 % 1000}.{packed % 1000}"
