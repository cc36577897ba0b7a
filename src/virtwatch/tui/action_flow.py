"""From an action key to a verified outcome on screen: confirm, hand to the core,
then show progress in the VM's row and as toasts as TaskUpdates, ErrorReports and
AuditRecords arrive on the hub.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from textual.binding import Binding

from virtwatch.core.incidents import ErrorReport
from virtwatch.core.ops.actions import Action
from virtwatch.core.records import AuditRecord, Outcome, TaskState, TaskUpdate
from virtwatch.tui.format import fmt_duration
from virtwatch.tui.ports import ActionSink, VmRef

CLEAR_AFTER_S = 15.0

# the action keys, the same wherever a VM can be acted on (the Machines pane, the VM
# detail screen): each runs that widget's `action_vm(<Action value>)`
_ACTION_KEYS = {
    Action.START: "s",
    Action.SHUTDOWN: "d",
    Action.FORCE_OFF: "F",
    Action.REBOOT: "r",
    Action.PAUSE: "p",
    Action.RESUME: "u",
}
ACTION_BINDINGS: tuple[Binding, ...] = tuple(
    Binding(key, f"vm('{action.value}')", action.label.capitalize())
    for action, key in _ACTION_KEYS.items()
)


def activity_text(update: TaskUpdate, now: float) -> str | None:
    """What a VM's row says while its action runs; None once finished."""
    verb = update.kind.removeprefix("action.").replace("_", " ")
    attempt = f" {update.attempt}/{update.max_attempts}" if update.max_attempts > 1 else ""
    if update.state is TaskState.PENDING:
        return f"⟳ {verb} queued"
    if update.state is TaskState.RUNNING:
        return f"⟳ {verb}…{attempt}" if update.attempt > 1 else f"⟳ {verb}…"
    if update.state is TaskState.RETRYING:
        wait = ""
        if update.next_try_at is not None:
            wait = f" in {fmt_duration(max(0.0, update.next_try_at - now))}"
        return f"⟳ {verb} retry{attempt}{wait}"
    return None


def outcome_text(record: AuditRecord) -> tuple[str, str, str]:
    """(row text, toast text, toast severity) for an action's outcome."""
    verb = record.action.replace("_", " ")
    took = f"{record.duration_s:.1f} s"
    if record.outcome is Outcome.VERIFIED:
        return f"✔ {verb} done", f"{record.vm_name}: {verb} verified in {took}", "information"
    if record.outcome is Outcome.IGNORED:
        why = f": {record.message}" if record.message else ""
        return (
            f"⚠ {verb} ignored",
            f"{record.vm_name} ignored the {verb} after {took}{why}",
            "warning",
        )
    if record.outcome is Outcome.CANCELLED:
        return f"○ {verb} cancelled", f"{record.vm_name}: {verb} cancelled", "warning"
    why = record.message or (record.error_code or "failed")
    return f"✖ {verb} failed", f"{record.vm_name}: {verb} failed — {why}", "error"


@dataclass(frozen=True, slots=True)
class Pending:
    action: Action
    ref: VmRef
    at: float


Notify = Callable[[str, str, str], None]  # (message, title, severity)
ShowActivity = Callable[[str, str, str | None], None]  # (host, uuid, text)


class ActionFlow:
    """Owns the sink and knows which actions are in flight. No Textual here: the
    screen passes in how to notify and how to show a row's activity."""

    def __init__(
        self,
        sink: ActionSink | None,
        *,
        notify: Notify,
        show_activity: ShowActivity,
        read_only: bool = False,
        read_only_hosts: Collection[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self._notify = notify
        self._show = show_activity
        self.read_only = read_only or sink is None
        self.read_only_hosts = frozenset(read_only_hosts)
        self._clock = clock
        self.pending: dict[tuple[str, str], Pending] = {}  # (host, vm name) -> request
        self._uuid_of: dict[tuple[str, str], str] = {}
        self._error_shown: dict[tuple[str, str], float] = {}

    def allowed(self, targets: Sequence[VmRef]) -> tuple[list[VmRef], list[VmRef]]:
        """(can act on, refused because their host is read-only)."""
        ok = [t for t in targets if not self.read_only and t.host not in self.read_only_hosts]
        return ok, [t for t in targets if t not in ok]

    def submit(self, action: Action, targets: Sequence[VmRef]) -> None:
        """Hand a confirmed action to the core and mark the rows as requested."""
        if self.sink is None or not targets:
            return
        now = self._clock()
        for t in targets:
            self.pending[(t.host, t.name)] = Pending(action, t, now)
            self._uuid_of[(t.host, t.name)] = t.uuid
            self._show(t.host, t.uuid, f"⟳ {action.label} requested")
        self.sink.request(action, list(targets))

    def running(self) -> list[str]:
        return [f"{p.action.label} {p.ref.name} on {p.ref.host}" for p in self.pending.values()]

    def on_task(self, update: TaskUpdate) -> None:
        if not update.kind.startswith("action.") or update.host is None or not update.vm_name:
            return
        key = (update.host, update.vm_name)
        uuid = self._uuid_of.get(key)
        if uuid is None:
            return  # an action another client started: its audit row still shows
        text = activity_text(update, self._clock())
        if text is not None:
            self._show(update.host, uuid, text)
        if update.state is TaskState.RETRYING:
            self._notify(
                f"{update.name}: attempt {update.attempt} of {update.max_attempts} failed"
                + (f" — {update.message}" if update.message else ""),
                "retrying",
                "warning",
            )
        if update.state is TaskState.FAILED and update.message and key not in self._error_shown:
            self._notify(f"{update.name} failed — {update.message}", "action failed", "error")
            self._error_shown[key] = self._clock()

    def on_error(self, report: ErrorReport) -> None:
        """An action's failure carries its hint in the error report."""
        if report.host is None or report.vm is None:
            return
        key = (report.host, report.vm)
        if key in self.pending:
            self._notify(report.error.one_line(), f"{report.vm}: action failed", "error")
            self._error_shown[key] = self._clock()

    def on_audit(self, record: AuditRecord) -> tuple[str, str, str] | None:
        """Returns (host, uuid, row text) to show for a while, or None."""
        key = (record.host, record.vm_name)
        row, toast, severity = outcome_text(record)
        self.pending.pop(key, None)
        # a failure before the VM was looked up carries no uuid: ours knows it
        uuid = self._uuid_of.pop(key, None) or record.vm_uuid
        shown = self._error_shown.pop(key, None)
        if not (record.outcome is Outcome.FAILED and shown is not None):
            self._notify(toast, "action", severity)
        return record.host, uuid, row
