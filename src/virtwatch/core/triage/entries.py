"""A timeline's entries: what happened, where, how bad, in words; and their JSON form."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from virtwatch.core.errors import Severity
from virtwatch.core.triage.when import iso_utc


class EntryKind(enum.StrEnum):
    EVENT = "event"  # libvirt said so: lifecycle with its reason, I/O error, watchdog, devices
    ERROR = "error"  # the error log (code, severity, count)
    HEALTH = "health"  # a health check changed state
    ACTION = "action"  # an admin acted, with the verified outcome and who
    SPIKE = "spike"  # a metric far outside its own recent behaviour
    CONFIG = "config"  # the VM's definition changed


# at one instant, causes sort before effects: the action, then what libvirt said, ...
_KIND_ORDER = {k: i for i, k in enumerate(EntryKind.__members__.values())}


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of the timeline. Text fields are untrusted: render them as plain text."""

    at: float  # epoch seconds
    kind: EntryKind
    severity: Severity
    title: str
    host: str | None = None
    vm_uuid: str | None = None  # None (or "") for host-level entries
    vm_name: str | None = None
    key: str = ""  # where it came from: "event:17", "error:3", ... unique in one store
    until: float | None = None  # end of a span: an error's last sighting, a spike's end
    detail: Mapping[str, str] = field(default_factory=dict)
    hint: str = ""  # a likely cause joined from other entries at that moment

    @property
    def sort_key(self) -> tuple[float, int, str]:
        return (self.at, _KIND_ORDER[self.kind], self.key)

    @property
    def is_host_level(self) -> bool:
        return not self.vm_uuid


TIMELINE_SCHEMA_VERSION = 1


def entry_to_dict(e: TimelineEntry) -> dict[str, object]:
    return {
        "at": e.at,
        "at_iso": iso_utc(e.at),
        "kind": e.kind.value,
        "severity": e.severity.label,
        "title": e.title,
        "host": e.host,
        "vm_uuid": e.vm_uuid or None,
        "vm_name": e.vm_name or None,
        "key": e.key,
        "until": e.until,
        "hint": e.hint or None,
        "detail": dict(e.detail),
    }


def ordered(entries: Iterable[TimelineEntry]) -> list[TimelineEntry]:
    """Oldest first; at one instant causes (actions) before effects; ties by key."""
    return sorted(entries, key=lambda e: e.sort_key)
