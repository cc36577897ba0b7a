"""The incident timeline: one time-ordered stream of events, errors, health transitions,
actions, spikes and config changes, with filters and hints that join likely causes.

Pure over records: the store (storage/timeline_queries.py) and the hub hand records to the
`entry_from_*` builders; `build_timeline` orders, hints and filters them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.records import (
    AuditRecord,
    ConnectionState,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthState,
    HostConnection,
    Outcome,
)
from virtwatch.core.triage.causes import add_hints
from virtwatch.core.triage.entries import (
    _KIND_ORDER,
    EntryKind,
    TimelineEntry,
    ordered,
)
from virtwatch.core.triage.when import Window, _float

_KIND_ORDER[EntryKind.ACTION] = -1


"""`virtwatch timeline --json` (schema `virtwatch.timeline`): window, filter, truncated,
entries as `entry_to_dict` gives them. Versioned on its own, not with the export."""


# -- records -> entries ---------------------------------------------------------------------

_ERROR_WORDS = ("crashed", "panicked", "i/o error", "failed", "io error")
_WARNING_WORDS = ("watchdog", "destroyed", "daemon down", "api error", "post-copy failed")


def event_severity(event: DomainEvent) -> Severity:
    """How bad a libvirt event is, from its kind and its decoded words."""
    if event.kind is EventKind.IO_ERROR:
        return Severity.ERROR
    if event.kind is EventKind.WATCHDOG:
        return Severity.WARNING
    if event.kind is EventKind.SPIKE:
        return Severity.INFO if event.detail.get("phase") == "end" else Severity.WARNING
    if event.kind is EventKind.CONFIG_CHANGE:
        return Severity.INFO
    words = event.summary.lower()
    if any(w in words for w in _ERROR_WORDS):
        return Severity.ERROR
    if any(w in words for w in _WARNING_WORDS):
        return Severity.WARNING
    return Severity.INFO


def entry_from_event(event: DomainEvent, *, key: str = "") -> TimelineEntry:
    if event.kind is EventKind.SPIKE:
        kind = EntryKind.SPIKE
    elif event.kind is EventKind.CONFIG_CHANGE:
        kind = EntryKind.CONFIG
    else:
        kind = EntryKind.EVENT
    detail = dict(event.detail)
    detail.setdefault("event_kind", event.kind.value)
    until: float | None = None
    if kind is EntryKind.SPIKE and detail.get("phase") == "start":
        until = _float(detail.get("end"))
    return TimelineEntry(
        at=event.at,
        kind=kind,
        severity=event_severity(event),
        title=event.summary,
        host=event.host,
        vm_uuid=event.vm_uuid or None,
        vm_name=event.vm_name or None,
        key=key,
        until=until,
        detail=detail,
    )


def entry_from_error(
    report: ErrorReport, *, key: str = "", vm_uuid: str | None = None
) -> TimelineEntry:
    err = report.error
    first = report.first_at if report.first_at is not None else report.at
    return error_entry(
        code=err.code.value,
        severity=err.severity,
        message=err.message,
        hint=err.hint,
        context=err.context,
        host=report.host,
        vm_name=report.vm,
        count=report.count,
        first_at=first,
        last_at=report.at,
        key=key,
        vm_uuid=vm_uuid,
    )


def error_entry(
    *,
    code: str,
    severity: Severity,
    message: str,
    hint: str,
    context: Mapping[str, str],
    host: str | None,
    vm_name: str | None,
    count: int,
    first_at: float,
    last_at: float,
    key: str = "",
    vm_uuid: str | None = None,
) -> TimelineEntry:
    """An error-log incident: placed at its first sighting, spanning to its last."""
    times = f" x{count}" if count > 1 else ""
    detail = {"code": code, "count": str(count)}
    if hint:
        detail["hint"] = hint
    detail.update({f"context.{k}": str(v) for k, v in context.items()})
    return TimelineEntry(
        at=first_at,
        kind=EntryKind.ERROR,
        severity=severity,
        title=f"{code}{times}: {message}",
        host=host,
        vm_uuid=vm_uuid,
        vm_name=vm_name,
        key=key,
        until=last_at if last_at != first_at else None,
        detail=detail,
    )


_HEALTH_SEVERITY = {
    HealthState.OK: Severity.INFO,
    HealthState.WARN: Severity.WARNING,
    HealthState.CRIT: Severity.CRITICAL,
    HealthState.UNKNOWN: Severity.WARNING,
}


def entry_from_health(alert: HealthAlert, *, key: str = "") -> TimelineEntry:
    title = f"{alert.check} {alert.subject}: {alert.previous.label} → {alert.current.label}"
    if alert.message:
        title += f" ({alert.message})"
    return TimelineEntry(
        at=alert.at,
        kind=EntryKind.HEALTH,
        severity=_HEALTH_SEVERITY[alert.current],
        title=title,
        host=alert.host,
        key=key,
        detail={
            "check": alert.check,
            "subject": alert.subject,
            "previous": alert.previous.label,
            "state": alert.current.label,
            "message": alert.message,
        },
    )


_OUTCOME_SEVERITY = {
    Outcome.VERIFIED: Severity.INFO,
    Outcome.IGNORED: Severity.WARNING,
    Outcome.FAILED: Severity.ERROR,
    Outcome.CANCELLED: Severity.WARNING,
}


def entry_from_audit(rec: AuditRecord, *, key: str = "") -> TimelineEntry:
    who = rec.user + (f" from {rec.client}" if rec.client else "")
    title = f"{rec.action} by {who}: {rec.outcome.value} in {rec.duration_s:.1f} s"
    if rec.message:
        title += f" — {rec.message}"
    detail = {
        "action": rec.action,
        "user": rec.user,
        "outcome": rec.outcome.value,
        "duration_s": f"{rec.duration_s:.3f}",
    }
    if rec.client:
        detail["client"] = rec.client
    if rec.error_code:
        detail["code"] = rec.error_code
    return TimelineEntry(
        at=rec.started_at,
        kind=EntryKind.ACTION,
        severity=_OUTCOME_SEVERITY[rec.outcome],
        title=title,
        host=rec.host,
        vm_uuid=rec.vm_uuid or None,
        vm_name=rec.vm_name or None,
        key=key,
        until=rec.started_at + rec.duration_s,
        detail=detail,
    )


_CONNECTION_SEVERITY = {
    ConnectionState.CONNECTING: Severity.INFO,
    ConnectionState.CONNECTED: Severity.INFO,
    ConnectionState.DEGRADED: Severity.WARNING,
    ConnectionState.RECONNECTING: Severity.WARNING,
    ConnectionState.DOWN: Severity.ERROR,
    ConnectionState.CLOSED: Severity.INFO,
}


def entry_from_connection(conn: HostConnection, *, key: str = "") -> TimelineEntry:
    """A host's connection changed state (its pool saw libvirtd go or come back)."""
    title = f"connection to {conn.host}: {conn.state.value}"
    if conn.message:
        title += f" ({conn.message})"
    detail = {"event_kind": "connection", "state": conn.state.value, "uri": conn.uri}
    return TimelineEntry(
        at=conn.at,
        kind=EntryKind.EVENT,
        severity=_CONNECTION_SEVERITY.get(conn.state, Severity.INFO),
        title=title,
        host=conn.host,
        key=key,
        detail=detail,
    )


def health_transitions(
    results: Iterable[tuple[str, str, str | None, HealthState, str, float]],
) -> list[HealthAlert]:
    """(check, subject, host, state, message, at) results, oldest first -> state changes.

    The first result of each check is its starting state, not a transition.
    """
    last: dict[tuple[str, str, str | None], HealthState] = {}
    out: list[HealthAlert] = []
    for check, subject, host, state, message, at in results:
        key = (check, subject, host)
        before = last.get(key)
        last[key] = state
        if before is not None and before is not state:
            out.append(HealthAlert(check, subject, before, state, message, at, host))
    return out


# -- windows, filters, ordering -------------------------------------------------------------


# zoom presets of the timeline screen
ZOOMS: tuple[tuple[str, float], ...] = (("15 min", 900.0), ("1 h", 3600.0), ("24 h", 86400.0))


@dataclass(frozen=True, slots=True)
class TimelineFilter:
    """What to show; an empty set means "any". VMs match by name or uuid."""

    hosts: frozenset[str] = frozenset()
    vms: frozenset[str] = frozenset()
    kinds: frozenset[EntryKind] = frozenset()
    min_severity: Severity = Severity.INFO
    text: str = ""

    def matches(self, e: TimelineEntry) -> bool:
        if self.hosts and e.host not in self.hosts:
            return False
        if self.vms and not ({e.vm_name, e.vm_uuid} & self.vms):
            return False
        if self.kinds and e.kind not in self.kinds:
            return False
        if e.severity < self.min_severity:
            return False
        if self.text:
            needle = self.text.lower()
            hay = " ".join((e.title, e.hint, e.vm_name or "", e.host or "")).lower()
            if needle not in hay:
                return False
        return True

    def describe(self) -> str:
        parts = []
        if self.hosts:
            parts.append("host " + ",".join(sorted(self.hosts)))
        if self.vms:
            parts.append("vm " + ",".join(sorted(self.vms)))
        if self.kinds:
            parts.append("kind " + ",".join(sorted(k.value for k in self.kinds)))
        if self.min_severity > Severity.INFO:
            parts.append(f"severity ≥ {self.min_severity.label}")
        if self.text:
            parts.append(f"text “{self.text}”")
        return "; ".join(parts) or "everything"

    def to_dict(self) -> dict[str, object]:
        return {
            "hosts": sorted(self.hosts),
            "vms": sorted(self.vms),
            "kinds": sorted(k.value for k in self.kinds),
            "min_severity": self.min_severity.label,
            "text": self.text,
        }


def parse_severity(text: str) -> Severity:
    try:
        return Severity[text.strip().upper()]
    except KeyError:
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"unknown severity {text!r}",
            "use one of: " + ", ".join(s.label for s in Severity),
            Severity.WARNING,
        ) from None


def parse_kinds(texts: Iterable[str]) -> frozenset[EntryKind]:
    out = set()
    for text in texts:
        for part in text.split(","):
            if not part.strip():
                continue
            try:
                out.add(EntryKind(part.strip().lower()))
            except ValueError:
                raise AppError(
                    ErrorCode.INVALID_INPUT,
                    f"unknown kind {part!r}",
                    "use one of: " + ", ".join(k.value for k in EntryKind),
                    Severity.WARNING,
                ) from None
    return frozenset(out)


def build_timeline(
    entries: Iterable[TimelineEntry],
    window: Window,
    flt: TimelineFilter = TimelineFilter(),
    *,
    context: Iterable[TimelineEntry] = (),
    disk_paths: Mapping[str, Sequence[str]] | None = None,
) -> list[TimelineEntry]:
    """Order, hint (over everything known, so a VM's entry still learns of the host's disk),
    then keep what is in the window and passes the filter. Duplicate keys are kept once."""
    seen: set[str] = set()
    unique: list[TimelineEntry] = []
    for e in entries:
        if e.key and e.key in seen:
            continue
        seen.add(e.key)
        unique.append(e)
    everything = ordered(unique)
    hinted = add_hints(everything, context=ordered(context), disk_paths=disk_paths or {})
    return [e for e in hinted if window.contains(e) and flt.matches(e)]


# -- plain text -----------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Untrusted text made safe for a terminal: control characters (escape sequences,
    newlines) shown as \\xNN instead of acting on the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


_SEVERITY_WORD = {
    Severity.INFO: "info",
    Severity.WARNING: "WARN",
    Severity.ERROR: "ERROR",
    Severity.CRITICAL: "CRIT",
}


def entry_line(e: TimelineEntry, tz: tzinfo | None = None) -> str:
    """One line for `virtwatch timeline`: local time, severity, kind, host, VM, what, hint."""
    when = datetime.fromtimestamp(e.at, tz=UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    who = e.vm_name or "(host)"
    line = (
        f"{when}  {_SEVERITY_WORD[e.severity]:<5}  {e.kind.value:<6}  {e.host or '-'}  "
        f"{who}  {e.title}"
    )
    if e.hint:
        line += f"  [hint: {e.hint}]"
    return printable(line)


# -- time in words --------------------------------------------------------------------------
