"""What the dashboard has learned from the hub, kept small and bounded. Pure Python.

The App folds each record it receives into this object and hands the parts down
to the widgets that show them; nothing here knows about Textual.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field

from virtwatch.core.errors import Severity
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.model import Snapshot
from virtwatch.core.records import (
    AuditRecord,
    DomainEvent,
    HealthAlert,
    HealthResult,
    HostConnection,
    TaskUpdate,
)

MAX_ERRORS = 500
MAX_EVENTS = 1000
MAX_AUDIT = 500
MAX_TRANSITIONS = 500
MAX_FINISHED_TASKS = 200


def error_key(report: ErrorReport) -> str:
    """The reporter's fingerprint, or one made the same way for an unfingerprinted report."""
    if report.fingerprint:
        return report.fingerprint
    e = report.error
    return f"{e.code}|{report.host or ''}|{report.vm or ''}|{e.message}"


@dataclass(slots=True)
class DashboardState:
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    connections: dict[str, HostConnection] = field(default_factory=dict)
    errors: dict[str, ErrorReport] = field(default_factory=dict)  # by fingerprint
    health: dict[tuple[str, str], HealthResult] = field(default_factory=dict)
    transitions: collections.deque[HealthAlert] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_TRANSITIONS)
    )
    unacknowledged: list[HealthAlert] = field(default_factory=list)
    tasks: dict[str, TaskUpdate] = field(default_factory=dict)
    audit: collections.deque[AuditRecord] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_AUDIT)
    )
    events: collections.deque[DomainEvent] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_EVENTS)
    )

    # --- folding records in -------------------------------------------------------

    def add_error(self, report: ErrorReport) -> str:
        key = error_key(report)
        old = self.errors.get(key)
        if old is not None and report.fingerprint == "" and old.fingerprint == "":
            # an unfingerprinted repeat: count it ourselves
            report = ErrorReport(
                report.error,
                report.host,
                report.vm,
                report.at,
                "",
                old.count + report.count,
                old.first_at if old.first_at is not None else old.at,
            )
        self.errors[key] = report
        if len(self.errors) > MAX_ERRORS:
            oldest = min(self.errors, key=lambda k: self.errors[k].at)
            del self.errors[oldest]
        return key

    def add_health(self, result: HealthResult) -> None:
        self.health[(result.check, result.subject)] = result

    def add_alert(self, alert: HealthAlert) -> None:
        self.transitions.append(alert)
        self.unacknowledged.append(alert)

    def acknowledge(self, alerts: Iterable[HealthAlert] | None = None) -> int:
        """Acknowledge some alerts (all when None); returns how many were removed."""
        if alerts is None:
            n = len(self.unacknowledged)
            self.unacknowledged.clear()
            return n
        drop = {id(a) for a in alerts}
        before = len(self.unacknowledged)
        self.unacknowledged = [a for a in self.unacknowledged if id(a) not in drop]
        return before - len(self.unacknowledged)

    def add_task(self, update: TaskUpdate) -> None:
        self.tasks[update.task_id] = update
        finished = [t for t in self.tasks.values() if t.state.finished]
        if len(finished) > MAX_FINISHED_TASKS:
            finished.sort(key=lambda t: t.at)
            for t in finished[: len(finished) - MAX_FINISHED_TASKS]:
                del self.tasks[t.task_id]

    # --- questions the UI asks ---------------------------------------------------------

    def running_actions(self) -> list[TaskUpdate]:
        return [
            t for t in self.tasks.values() if t.kind.startswith("action.") and not t.state.finished
        ]

    def errors_filtered(self, *, min_severity: Severity, text: str) -> list[ErrorReport]:
        """Newest first, at or above `min_severity`, containing `text` (case-insensitive)
        in the code, message, host or VM."""
        needle = text.lower()
        out = []
        for r in self.errors.values():
            if r.error.severity < min_severity:
                continue
            if needle:
                hay = " ".join(
                    (str(r.error.code), r.error.message, r.host or "", r.vm or "")
                ).lower()
                if needle not in hay:
                    continue
            out.append(r)
        out.sort(key=lambda r: r.at, reverse=True)
        return out

    def vm_events(self, host: str, uuid: str) -> list[DomainEvent]:
        return [e for e in self.events if e.host == host and e.vm_uuid == uuid]

    def vm_audit(self, host: str, uuid: str) -> list[AuditRecord]:
        return [a for a in self.audit if a.host == host and a.vm_uuid == uuid]

    def vm_errors(self, host: str, name: str) -> list[ErrorReport]:
        out = [r for r in self.errors.values() if r.host == host and r.vm == name]
        out.sort(key=lambda r: r.at, reverse=True)
        return out

    def hosts(self) -> list[str]:
        return sorted(set(self.snapshots) | set(self.connections))
