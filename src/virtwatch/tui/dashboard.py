"""The dashboard screen: host headers, then four panes — Machines, Performance,
Health, Errors — in a grid that stacks at 80x24 and spreads out at 200x60.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input

from virtwatch.core.collect.history import MetricHistory
from virtwatch.core.errors import Severity
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.model import Snapshot
from virtwatch.core.ops.actions import Action
from virtwatch.core.records import HostConnection
from virtwatch.tui.action_flow import CLEAR_AFTER_S, ActionFlow
from virtwatch.tui.dialogs import (
    ConfirmScreen,
    ErrorRecordScreen,
    TypeCountScreen,
    needs_typed_count,
)
from virtwatch.tui.error_log import ErrorsPane
from virtwatch.tui.header import HostHeaders
from virtwatch.tui.health import HealthPane
from virtwatch.tui.machines import MachineTable
from virtwatch.tui.pane import Pane
from virtwatch.tui.performance import PerformancePane
from virtwatch.tui.ports import VmRef
from virtwatch.tui.state import DashboardState

# columns: below this the side panes go under the table, which then has the whole
# width; from here, its two thirds (120+) still show every column (rows.fit_widths)
NARROW_BELOW = 180
AGES_EVERY_S = 0.9  # ages (data age, stale rows, last runs) move on at most this often
SNAPSHOTS_STOPPED_S = 1.5  # with no snapshot for this long, the timer moves ages on


class DashboardScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("z", "toggle_maximize", "Maximise pane"),
        Binding("escape", "restore", "Restore / clear filter", show=False),
        Binding("t", "app.tasks", "Tasks"),
    ]

    class TagsWanted(Message):
        """The machine filter is in use: tags (from VM definitions) should be known."""

    def __init__(
        self,
        *,
        state: DashboardState,
        history: MetricHistory,
        flow: ActionFlow,
        clock: Callable[[], float] = time.time,
        stale_after_s: float = 10.0,
        cursor_blink: bool = True,
    ) -> None:
        super().__init__(id="dashboard")
        self.state = state
        self.history = history
        self.flow = flow
        self._clock = clock
        self._stale_after_s = stale_after_s
        self._cursor_blink = cursor_blink
        self._filter_target: str = "machines"
        self._shown_at = 0.0  # monotonic time the last snapshot was shown
        self._aged_at = 0.0  # monotonic time ages last moved on

    # --- layout -----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield HostHeaders(clock=self._clock, id="headers")
        with Container(id="panes"):
            with Pane("Machines", id="machines-pane"):
                table = MachineTable(
                    clock=self._clock,
                    history=self.history,
                    stale_after_s=self._stale_after_s,
                    id="machines",
                )
                table.read_only = self.flow.read_only
                yield table
            yield PerformancePane(self.history, id="performance-pane")
            yield HealthPane(clock=self._clock, id="health-pane")
            yield ErrorsPane(clock=self._clock, id="errors-pane")
        box = Input(
            placeholder="filter: words match name, host, state or tag; host:, state:, tag:",
            id="filter",
        )
        box.cursor_blink = self._cursor_blink
        yield box
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one(MachineTable).focus()
        self.set_interval(1.0, self.tick)
        self._apply_width(self.size.width)

    def on_resize(self, event: events.Resize) -> None:
        self._apply_width(event.size.width)

    def _apply_width(self, width: int) -> None:
        self.set_class(0 < width < NARROW_BELOW, "-narrow")

    @property
    def machines(self) -> MachineTable:
        return self.query_one(MachineTable)

    @property
    def errors_pane(self) -> ErrorsPane:
        return self.query_one(ErrorsPane)

    @property
    def health_pane(self) -> HealthPane:
        return self.query_one(HealthPane)

    # --- data, pushed down by the app -------------------------------------------------

    def show_snapshot(self, snap: Snapshot) -> None:
        """Show `snap`; ages move on in the same frame (at most once a second), so a
        steady flow of snapshots paints once per refresh, not once more for ages."""
        self._shown_at = time.monotonic()
        self.machines.apply(snap)
        self.query_one(HostHeaders).show_snapshot(snap)
        self.query_one(PerformancePane).show(self.state.snapshots)
        self._machines_subtitle()
        if self._shown_at - self._aged_at >= AGES_EVERY_S:
            self.tick(force=True)

    def _machines_subtitle(self) -> None:
        total = self.machines.total()
        shown = self.machines.row_count
        pane = self.query_one("#machines-pane", Pane)
        filt = f" · /{self.machines.filter_text}" if self.machines.filter_text else ""
        marks = f" · {len(self.machines.marked)} marked" if self.machines.marked else ""
        # an active filter is always named, even when it hides nothing
        filtered = shown != total or bool(filt)
        vms = "1 VM" if total == 1 else f"{total} VMs"
        pane.set_subtitle(f"{shown} of {total}{filt}{marks}" if filtered else f"{vms}{marks}")

    def show_connection(self, conn: HostConnection) -> None:
        self.query_one(HostHeaders).show_connection(conn)

    def show_errors(self) -> None:
        pane = self.errors_pane
        reports = self.state.errors_filtered(min_severity=pane.min_severity, text=pane.filter_text)
        pane.show(reports, len(self.state.errors))

    def show_error(self, report: ErrorReport) -> None:
        self.query_one(HostHeaders).show_error(report)
        self.show_errors()

    def show_health(self) -> None:
        self.health_pane.show(
            list(self.state.health.values()),
            list(self.state.transitions),
            self.state.unacknowledged,
        )

    def show_activity(self, host: str, uuid: str, text: str | None) -> None:
        self.machines.set_activity(host, uuid, text)

    def show_outcome(self, host: str, uuid: str, text: str) -> None:
        """An outcome stays in the row for a while, then the row shows the state alone."""
        self.machines.set_activity(host, uuid, text)

        def clear() -> None:
            if self.machines.activity(host, uuid) == text:
                self.machines.set_activity(host, uuid, None)

        self.set_timer(CLEAR_AFTER_S, clear)

    def tick(self, *, force: bool = False) -> None:
        """Once a second: ages move on. Skipped while snapshots keep arriving (each
        moves the ages on itself), so a 1 s refresh paints once a second, not twice."""
        now = time.monotonic()
        if not force and now - self._shown_at < SNAPSHOTS_STOPPED_S:
            return
        self._aged_at = now
        self.query_one(HostHeaders).tick()
        self.machines.refresh_ages()
        self.health_pane.redraw()

    # --- keys ----------------------------------------------------------------------------

    def action_filter(self) -> None:
        focused = self.focused
        in_errors = focused is not None and self.errors_pane in focused.ancestors_with_self
        self._filter_target = "errors" if in_errors else "machines"
        box = self.query_one("#filter", Input)
        box.value = self.errors_pane.filter_text if in_errors else self.machines.filter_text
        box.border_title = f"filter {self._filter_target}"
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "filter":
            return
        if self._filter_target == "errors":
            self.errors_pane.set_filter(event.value)
        else:
            self.machines.set_filter(event.value)
            self._machines_subtitle()
            if event.value.strip():
                self.post_message(self.TagsWanted())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self._close_filter()

    def _close_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = False
        target = self.errors_pane.table if self._filter_target == "errors" else self.machines
        target.focus()

    def action_restore(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""
            self._close_filter()
        elif self.maximized is not None:
            self.minimize()
        elif self.machines.marked:
            self.machines.clear_marks()

    def action_toggle_maximize(self) -> None:
        if self.maximized is not None:
            self.minimize()
        elif self.focused is not None:
            self.maximize(self.focused, container=True)

    def maximized_pane(self) -> str | None:
        return None if self.maximized is None else self.maximized.id

    def on_errors_pane_filter_changed(self, _event: ErrorsPane.FilterChanged) -> None:
        self.show_errors()

    def on_errors_pane_opened(self, event: ErrorsPane.Opened) -> None:
        self.app.push_screen(ErrorRecordScreen(event.report))

    # --- actions ----------------------------------------------------------------------------

    def on_machine_table_action_requested(self, event: MachineTable.ActionRequested) -> None:
        self.request_action(event.action, event.targets)

    def request_action(self, action: Action, targets: Sequence[VmRef]) -> None:
        """Confirm when the action is destructive, then hand it to the core."""
        ok, refused = self.flow.allowed(targets)
        if refused:
            hosts = ", ".join(sorted({t.host for t in refused}))
            self.notify(
                f"{len(refused)} VM(s) skipped: {hosts} is read-only",
                title="read-only",
                severity="warning",
                markup=False,  # host names come from the config
            )
        if not ok:
            return

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.flow.submit(action, ok)
                self.machines.clear_marks()
            else:
                self.notify(f"{action.label} cancelled; nothing was done", title="cancelled")

        if needs_typed_count(action, ok):
            self.app.push_screen(TypeCountScreen(action, ok, cursor_blink=self._cursor_blink), done)
        elif action.destructive:
            self.app.push_screen(ConfirmScreen(action, ok), done)
        else:
            done(True)

    def on_health_pane_acknowledge_requested(self, _event: HealthPane.AcknowledgeRequested) -> None:
        n = self.state.acknowledge()
        self.show_health()
        if n:
            self.notify(f"{n} alert(s) acknowledged", title="health")

    def min_severity(self) -> Severity:
        return self.errors_pane.min_severity
