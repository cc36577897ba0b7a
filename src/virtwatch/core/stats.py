"""Parsing libvirt's bulk stats records (getAllDomainStats) into typed values. Pure.

Records are flat dicts keyed like 'cpu.time' or 'vcpu.current'; any key may be
missing (inactive VMs, old daemons, drivers that report only some groups).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# virDomainStatsTypes bits (libvirt.VIR_DOMAIN_STATS_*), kept here so this module stays pure
STATS_STATE = 1
STATS_CPU_TOTAL = 2
STATS_BALLOON = 4
STATS_VCPU = 8
STATS_INTERFACE = 16
STATS_BLOCK = 32


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


def _int(rec: Mapping[str, Any], key: str) -> int | None:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def parse_record(rec: Mapping[str, Any]) -> DomainStats:
    """One getAllDomainStats record -> DomainStats. Missing keys become None."""
    return DomainStats(
        state=_int(rec, "state.state") or 0,
        reason=_int(rec, "state.reason") or 0,
        cpu_time_ns=_int(rec, "cpu.time"),
        vcpus=_int(rec, "vcpu.current"),
        balloon_current_kib=_int(rec, "balloon.current"),
        balloon_maximum_kib=_int(rec, "balloon.maximum"),
        rss_kib=_int(rec, "balloon.rss"),
        available_kib=_int(rec, "balloon.available"),
        usable_kib=_int(rec, "balloon.usable"),
    )


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
