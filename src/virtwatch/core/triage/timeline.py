"""The incident timeline: one time-ordered stream of events, errors, health transitions,
actions, spikes and config changes, with filters and hints that join likely causes.

Pure over records: the store (storage/timeline_queries.py) and the hub both hand records to the
`entry_from_*` builders; `build_timeline` orders, hints and filters them.
"""

from __future__ import annotations

import bisect
import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo

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


class EntryKind(enum.StrEnum):
    EVENT = "event"  # libvirt said so: lifecycle with its reason, I/O error, watchdog, devices
    ERROR = "error"  # the error log (code, severity, count)
    HEALTH = "health"  # a health check changed state
    ACTION = "action"  # an admin acted, with the verified outcome and who
    SPIKE = "spike"  # a metric far outside its own recent behaviour
    CONFIG = "config"  # the VM's definition changed


# at one instant, causes sort before effects: the action, then what libvirt said, ...
_KIND_ORDER = {k: i for i, k in enumerate(EntryKind.__members__.values())}
_KIND_ORDER[EntryKind.ACTION] = -1


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
"""`virtwatch timeline --json` (schema `virtwatch.timeline`): window, filter, truncated,
entries as `entry_to_dict` gives them. Versioned on its own, not with the export."""


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


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


# -- windows, filters, ordering -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """[since, until) in epoch seconds."""

    since: float
    until: float

    def __post_init__(self) -> None:
        if not self.until > self.since:
            raise AppError(
                ErrorCode.INVALID_INPUT,
                f"the window ends ({iso_utc(self.until)}) before it starts ({iso_utc(self.since)})",
                "give --until later than --since",
                Severity.WARNING,
            )

    @classmethod
    def last(cls, span_s: float, now: float) -> Window:
        return cls(now - span_s, now)

    @property
    def span_s(self) -> float:
        return self.until - self.since

    def contains(self, e: TimelineEntry) -> bool:
        """An entry belongs to the window when it happened in it, or its span overlaps it."""
        end = e.until if e.until is not None else e.at
        return e.at < self.until and end >= self.since


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


def ordered(entries: Iterable[TimelineEntry]) -> list[TimelineEntry]:
    """Oldest first; at one instant causes (actions) before effects; ties by key."""
    return sorted(entries, key=lambda e: e.sort_key)


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


# -- hints ----------------------------------------------------------------------------------

_BAD = (HealthState.WARN, HealthState.CRIT)
ACTION_EFFECT_S = 120.0  # an action's effect arrives within this after it started
CAUSE_LOOKBACK_S = 15 * 60.0  # a spike this recent may explain a crash
ERROR_NEAR_S = 5 * 60.0


@dataclass(frozen=True, slots=True)
class _HealthStep:
    at: float
    check: str
    subject: str
    state: HealthState
    message: str


class _Index:
    """Lookups over one ordered list of entries (plus context) for the hint rules."""

    def __init__(self, entries: Sequence[TimelineEntry], context: Sequence[TimelineEntry]) -> None:
        self.health: dict[str | None, list[_HealthStep]] = {}
        self.by_vm: dict[str, list[TimelineEntry]] = {}
        self.by_host_errors: dict[str | None, list[TimelineEntry]] = {}
        for e in ordered([*context, *entries]):
            if e.kind is EntryKind.HEALTH:
                state = _state_of(e.detail.get("state", ""))
                if state is not None:
                    self.health.setdefault(e.host, []).append(
                        _HealthStep(
                            e.at,
                            e.detail.get("check", ""),
                            e.detail.get("subject", ""),
                            state,
                            e.detail.get("message", ""),
                        )
                    )
            elif e.kind is EntryKind.ERROR:
                self.by_host_errors.setdefault(e.host, []).append(e)
            if e.vm_uuid:
                self.by_vm.setdefault(e.vm_uuid, []).append(e)

    def bad_checks_at(
        self, host: str | None, at: float, wanted: Callable[[str], bool]
    ) -> list[_HealthStep]:
        """Checks on `host` whose latest state at `at` was warn or crit, worst first."""
        latest: dict[tuple[str, str], _HealthStep] = {}
        for step in self.health.get(host, []):
            if step.at > at:
                break
            if wanted(step.check):
                latest[(step.check, step.subject)] = step
        bad = [s for s in latest.values() if s.state in _BAD]
        return sorted(bad, key=lambda s: (-s.state, s.check, s.subject))

    def vm_entries(self, vm_uuid: str, since: float, until: float) -> list[TimelineEntry]:
        rows = self.by_vm.get(vm_uuid, [])
        times = [e.at for e in rows]
        return rows[bisect.bisect_left(times, since) : bisect.bisect_right(times, until)]

    def host_errors(self, host: str | None, since: float, until: float) -> list[TimelineEntry]:
        return [
            e
            for e in self.by_host_errors.get(host, [])
            if e.at <= until and (e.until if e.until is not None else e.at) >= since
        ]


def _state_of(label: str) -> HealthState | None:
    try:
        return HealthState[label.upper()]
    except KeyError:
        return None


def _is_disk(check: str) -> bool:
    return "disk" in check or "filesystem" in check or check.endswith(".fs")


def _is_memory(check: str) -> bool:
    return "mem" in check or "swap" in check or "psi" in check


def _holds(subject: str, paths: Sequence[str]) -> bool:
    mount = subject.rstrip("/") + "/"
    return any(p == subject or p.startswith(mount) for p in paths)


def _words(e: TimelineEntry) -> str:
    return f"{e.title} {e.detail.get('reason', '')}".lower()


def _io_error_hint(e: TimelineEntry, ix: _Index, disks: Mapping[str, Sequence[str]]) -> str:
    if e.kind is not EntryKind.EVENT or not (
        e.detail.get("event_kind") == EventKind.IO_ERROR.value or "i/o error" in _words(e)
    ):
        return ""
    bad = ix.bad_checks_at(e.host, e.at, _is_disk)
    if bad:
        paths = disks.get(e.vm_uuid or "", ())
        holding = [s for s in bad if paths and _holds(s.subject, paths)]
        step = (holding or bad)[0]
        what = "the host disk holding it" if holding else "host disk"
        msg = f": {step.message}" if step.message else ""
        return f"{what} {step.subject} was {step.state.label} at that moment{msg}"
    for err in ix.host_errors(e.host, e.at - ERROR_NEAR_S, e.at + ERROR_NEAR_S):
        text = err.title.lower()
        if "no space" in text or "enospc" in text or err.detail.get("code") == "RESOURCE_EXHAUSTED":
            return f"the host reported '{err.title}' at {clock_time(err.at)}"
    return ""


def _crash_hint(e: TimelineEntry, ix: _Index) -> str:
    words = _words(e)
    if e.kind is not EntryKind.EVENT or not any(
        w in words for w in ("crashed", "panicked", "watchdog")
    ):
        return ""
    parts = []
    bad = ix.bad_checks_at(e.host, e.at, _is_memory)
    if bad:
        step = bad[0]
        msg = f" ({step.message})" if step.message else ""
        parts.append(f"host {step.check} was {step.state.label}{msg}: the OOM killer may have")
        parts[-1] += " ended QEMU" if "crashed" in words else " starved the guest"
    if e.vm_uuid:
        for prior in reversed(ix.vm_entries(e.vm_uuid, e.at - CAUSE_LOOKBACK_S, e.at)):
            if prior.kind is EntryKind.SPIKE and prior.detail.get("phase") == "start":
                parts.append(f"after {prior.title} at {clock_time(prior.at)}")
                break
    return "; ".join(parts)


# lifecycle words (events.py's decoding) -> the actions that produce them
_EFFECTS: tuple[tuple[str, frozenset[str]], ...] = (
    ("destroyed", frozenset({"force_off"})),
    ("shut down", frozenset({"shutdown"})),
    ("shutdown:", frozenset({"shutdown"})),
    ("suspended: by admin", frozenset({"pause"})),
    ("resumed: unpaused", frozenset({"resume"})),
    ("started: booted", frozenset({"start"})),
    ("reboot", frozenset({"reboot"})),
)


def _action_hint(e: TimelineEntry, ix: _Index) -> str:
    if e.kind is not EntryKind.EVENT or not e.vm_uuid:
        return ""
    words = _words(e)
    actions = next((acts for w, acts in _EFFECTS if w in words), None)
    if actions is None:
        return ""
    for prior in reversed(ix.vm_entries(e.vm_uuid, e.at - ACTION_EFFECT_S, e.at)):
        if prior.kind is EntryKind.ACTION and prior.detail.get("action") in actions:
            who = prior.detail.get("user", "?")
            if prior.detail.get("client"):
                who += f" from {prior.detail['client']}"
            return f"{prior.detail['action']} by {who} at {clock_time(prior.at)}"
    return ""


def _failed_action_hint(e: TimelineEntry, ix: _Index) -> str:
    if e.kind is not EntryKind.ACTION or e.detail.get("outcome") != "failed" or not e.vm_uuid:
        return ""
    for prior in reversed(ix.vm_entries(e.vm_uuid, float("-inf"), e.at)):
        if prior.kind is EntryKind.EVENT and prior.at < e.at:
            return f"last event before it: {prior.title} at {clock_time(prior.at)}"
    return ""


def _spike_hint(e: TimelineEntry, ix: _Index) -> str:
    if e.kind is not EntryKind.SPIKE or e.detail.get("phase") != "start":
        return ""
    bad = ix.bad_checks_at(e.host, e.until if e.until is not None else e.at, lambda c: True)
    if bad:
        step = bad[0]
        return f"host {step.check} {step.subject} was {step.state.label} at the same time"
    return ""


def add_hints(
    entries: Sequence[TimelineEntry],
    *,
    context: Sequence[TimelineEntry] = (),
    disk_paths: Mapping[str, Sequence[str]] | None = None,
) -> list[TimelineEntry]:
    """Each entry with a hint when the others (or `context`: e.g. the health state before
    the window) show a likely cause at that moment. Entries keep their order."""
    ix = _Index(entries, context)
    disks = disk_paths or {}
    out = []
    for e in entries:
        hint = (
            _io_error_hint(e, ix, disks)
            or _crash_hint(e, ix)
            or _action_hint(e, ix)
            or _failed_action_hint(e, ix)
            or _spike_hint(e, ix)
        )
        out.append(replace(e, hint=hint) if hint and hint != e.hint else e)
    return out


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


def iso_utc(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="seconds")


def clock_time(at: float, tz: tzinfo | None = None) -> str:
    """HH:MM:SS in local time (or `tz`)."""
    return datetime.fromtimestamp(at, tz=UTC).astimezone(tz).strftime("%H:%M:%S")


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*(?:ago)?\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse_when(text: str, now: float, tz: tzinfo | None = None) -> float:
    """'now', '15m' / '2h' / '1d' (ago), '10:30' (today, local), ISO 8601 ('2026-11-26T10:00',
    local unless it names a zone), or epoch seconds -> epoch seconds."""
    t = text.strip()
    if t.lower() == "now":
        return now
    if m := _RELATIVE.match(t):
        return now - float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    if m := _CLOCK.match(t):
        local_now = datetime.fromtimestamp(now, tz=UTC).astimezone(tz)
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hh < 24 and mm < 60 and ss < 60:
            when = local_now.replace(hour=hh, minute=mm, second=ss, microsecond=0)
            if when.timestamp() > now:  # '23:50' just after midnight means yesterday
                when -= timedelta(days=1)
            return when.timestamp()
    try:
        value = float(t)
    except ValueError:
        pass
    else:
        if value > 1e9:
            return value
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"cannot read the time {text!r}",
            "use 'now', '15m', '2h', '1d' (ago), '10:30', '2026-11-26T10:00' or epoch seconds",
            Severity.WARNING,
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz) if tz is not None else dt.astimezone()
    return dt.timestamp()
