"""The Textual app: follows the hub (one async worker per stream), folds what
arrives into `DashboardState`, and hands it down to the screen that shows it.
It never polls libvirt or the database itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from virtwatch.core.collect.history import MetricHistory
from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.model import Snapshot
from virtwatch.core.ops.actions import Action
from virtwatch.core.records import (
    AuditRecord,
    DomainEvent,
    HealthAlert,
    HealthResult,
    HealthState,
    HostConnection,
    TaskUpdate,
)
from virtwatch.tui.action_flow import ACTION_BINDINGS, ActionFlow
from virtwatch.tui.dashboard import DashboardScreen
from virtwatch.tui.dialogs import QuitScreen
from virtwatch.tui.error_log import ErrorsPane
from virtwatch.tui.health import HealthPane
from virtwatch.tui.help import NAVIGATION, HelpScreen, Section
from virtwatch.tui.machines import MachineTable
from virtwatch.tui.messages import RecordArrived, SnapshotArrived
from virtwatch.tui.ports import (
    ActionSink,
    DetailsSource,
    SeriesSource,
    TaskControl,
    TimelineSource,
)
from virtwatch.tui.settings import REFRESH_CHOICES, UiSettings, save_ui_settings
from virtwatch.tui.state import DashboardState
from virtwatch.tui.tasks import TasksScreen

if TYPE_CHECKING:
    from virtwatch.tui.detail import VmDetailScreen


@runtime_checkable
class LiveScreen(Protocol):
    """A screen that redraws from the app's data when a record or snapshot arrives."""

    def data_changed(self) -> None: ...


RECORD_KINDS: tuple[type, ...] = (
    ErrorReport,
    HealthResult,
    HealthAlert,
    HostConnection,
    TaskUpdate,
    AuditRecord,
    DomainEvent,
)
_ALERT_SEVERITY = {
    HealthState.OK: "information",
    HealthState.WARN: "warning",
    HealthState.CRIT: "error",
    HealthState.UNKNOWN: "warning",
}


class VirtwatchApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "virtwatch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("i", "timeline", "Timeline"),
    ]

    def __init__(
        self,
        hub: Hub,
        *,
        clock: Callable[[], float] = time.time,
        history: MetricHistory | None = None,
        actions: ActionSink | None = None,
        tasks: TaskControl | None = None,
        series: SeriesSource | None = None,
        timeline: TimelineSource | None = None,
        details: DetailsSource | None = None,
        read_only: bool = False,
        read_only_hosts: Collection[str] = (),
        settings: UiSettings | None = None,
        config_path: Path | None = None,
        cursor_blink: bool = True,
        config_notes: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.config_notes = tuple(config_notes)  # shown once at start (old key spellings)
        self._clock = clock
        self.history = history or MetricHistory()
        self.task_control = tasks
        self.series_source = series
        self.timeline = timeline
        self.details_source = details
        self.tags: dict[str, tuple[str, ...]] = {}  # row key -> tags, from definitions
        self.settings = settings or UiSettings()
        self.config_path = config_path
        self.cursor_blink = cursor_blink
        self.board = DashboardState()
        # set once the first snapshot's table has been painted (the start is over)
        self.first_table = asyncio.Event()
        self.flow = ActionFlow(
            actions,
            notify=self._notify,
            show_activity=self._show_activity,
            read_only=read_only,
            read_only_hosts=read_only_hosts,
            clock=clock,
        )
        # subscribe before anything can publish: the first records must not be missed
        self._snapshots: Subscription[Snapshot] = hub.subscribe(Snapshot, maxsize=1_000)
        self._records: list[Subscription[object]] = [
            hub.subscribe(kind, maxsize=1_000) for kind in RECORD_KINDS
        ]
        self.dashboard = DashboardScreen(
            state=self.board,
            history=self.history,
            flow=self.flow,
            clock=clock,
            stale_after_s=self.settings.stale_after_s,
            cursor_blink=cursor_blink,
        )

    # --- lifecycle ------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        self.theme_changed_signal.subscribe(self, lambda _t: self._save_settings())
        self.push_screen(self.dashboard)
        for note in self.config_notes:
            self.notify(note, title="config", severity="warning", timeout=20, markup=False)
        self.run_worker(self._follow_snapshots(), name="snapshots", group="hub")
        for sub in self._records:
            self.run_worker(self._follow(sub), name=sub.kind.__name__, group="hub")

    def on_unmount(self) -> None:
        self._snapshots.close()
        for sub in self._records:
            sub.close()

    async def _follow_snapshots(self) -> None:
        """Every snapshot goes into the rings; the screen sees at most one per host
        per refresh period (a newer one replaces a pending older one)."""
        while True:
            try:
                snap = await self._snapshots.get()
            except StopAsyncIteration:  # the subscription closed: the app is leaving
                return
            latest = {snap.host: snap}
            self.history.record(snap)
            while (more := self._snapshots.get_nowait()) is not None:
                self.history.record(more)
                latest[more.host] = more
            for s in latest.values():
                self.post_message(SnapshotArrived(s))
            await asyncio.sleep(self.settings.refresh_s)

    async def _follow(self, sub: Subscription[object]) -> None:
        async for record in sub:
            self.post_message(RecordArrived(record))

    # --- data in --------------------------------------------------------------------

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        snap = message.snapshot
        self.board.snapshots[snap.host] = snap
        self.dashboard.show_snapshot(snap)
        self._screen_data_changed()
        if not self.first_table.is_set():
            self.call_after_refresh(self.first_table.set)

    def on_record_arrived(self, message: RecordArrived) -> None:
        r = message.record
        st = self.board
        if isinstance(r, ErrorReport):
            st.add_error(r)
            self.flow.on_error(r)
            self.dashboard.show_error(r)
        elif isinstance(r, HealthResult):
            st.add_health(r)
            self.dashboard.show_health()
        elif isinstance(r, HealthAlert):
            st.add_alert(r)
            self.dashboard.show_health()
            self.notify(
                f"{r.check} {r.subject}: {r.previous.label} → {r.current.label}. {r.message}",
                title="health",
                severity=_ALERT_SEVERITY[r.current],  # type: ignore[arg-type]
                markup=False,
            )
        elif isinstance(r, HostConnection):
            st.connections[r.host] = r
            self.dashboard.show_connection(r)
        elif isinstance(r, TaskUpdate):
            st.add_task(r)
            self.flow.on_task(r)
        elif isinstance(r, AuditRecord):
            st.audit.append(r)
            shown = self.flow.on_audit(r)
            if shown is not None:
                self.dashboard.show_outcome(*shown)
        elif isinstance(r, DomainEvent):
            st.events.append(r)
        self._screen_data_changed()

    def _screen_data_changed(self) -> None:
        screen = self.screen
        if isinstance(screen, LiveScreen):  # the detail and tasks screens
            screen.data_changed()

    def _notify(self, message: str, title: str, severity: str) -> None:
        self.notify(message, title=title, severity=severity, markup=False)  # type: ignore[arg-type]

    def _show_activity(self, host: str, uuid: str, text: str | None) -> None:
        self.dashboard.show_activity(host, uuid, text)

    # --- screens --------------------------------------------------------------------

    def on_machine_table_opened(self, message: MachineTable.Opened) -> None:
        self.open_detail(message.ref.host, message.ref.uuid)

    def open_detail(self, host: str, uuid: str) -> VmDetailScreen | None:
        # plotext loads with the first detail screen, not at start
        from virtwatch.tui.detail import VmDetailScreen

        table = self.dashboard.machines
        ref = table.ref(MachineTable.row_key(host, uuid))
        if ref is None:
            return None
        st = self.board
        screen = VmDetailScreen(
            ref,
            history=self.history,
            sample=lambda: table.sample(host, uuid),
            events=lambda: st.vm_events(host, uuid),
            audit=lambda: st.vm_audit(host, uuid),
            errors=lambda: st.vm_errors(host, ref.name),
            request_action=None if self.flow.read_only else self.dashboard.request_action,
            series_source=self.series_source,
            timeline=self.timeline,
            details=self.details_source,
            read_only=self.flow.read_only or host in self.flow.read_only_hosts,
            clock=self._clock,
        )
        self.push_screen(screen)
        return screen

    def on_dashboard_screen_tags_wanted(self, _message: DashboardScreen.TagsWanted) -> None:
        if self.details_source is None:
            return
        missing = [
            (host, d.uuid)
            for host, snap in self.board.snapshots.items()
            for d in snap.domains
            if MachineTable.row_key(host, d.uuid) not in self.tags
        ]
        if missing:
            self.run_worker(self._load_tags(missing), group="tags", exclusive=True)

    async def _load_tags(self, keys: list[tuple[str, str]]) -> None:
        """The one worker for tags: every load in one loop tick is one batch per host."""
        assert self.details_source is not None
        src = self.details_source
        results = await asyncio.gather(
            *(src.details(host, uuid) for host, uuid in keys), return_exceptions=True
        )
        for (host, uuid), r in zip(keys, results, strict=True):
            if not isinstance(r, BaseException):
                self.tags[MachineTable.row_key(host, uuid)] = r.tags
        self.dashboard.machines.set_tags(dict(self.tags))

    def action_tasks(self) -> None:
        if isinstance(self.screen, TasksScreen):
            return
        self.push_screen(
            TasksScreen(
                lambda: list(self.board.tasks.values()), self.task_control, clock=self._clock
            )
        )

    def action_timeline(self) -> None:
        from virtwatch.tui.timeline_screen import show_timeline  # the screen imports this module

        show_timeline(self, clock=self._clock)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.help_sections(self.screen)))

    def help_sections(self, screen: Screen[object]) -> list[Section]:
        sections: list[Section] = [("Everywhere", self.BINDINGS), ("Tables", NAVIGATION)]
        if isinstance(screen, DashboardScreen):
            table_keys = [
                b
                for b in MachineTable.BINDINGS
                if not (self.flow.read_only and b in ACTION_BINDINGS)
            ]
            sections += [
                ("Dashboard", DashboardScreen.BINDINGS),
                ("Machines pane", table_keys),
                ("Health pane", HealthPane.BINDINGS),
                ("Errors pane (and / to filter it)", ErrorsPane.BINDINGS),
            ]
        elif screen.id == "detail":
            from virtwatch.tui.detail import VmDetailScreen

            assert isinstance(screen, VmDetailScreen)
            keys = [
                b
                for b in VmDetailScreen.BINDINGS
                if not (screen.read_only and b in ACTION_BINDINGS)
            ]
            sections.append(("VM detail", keys))
        elif isinstance(screen, TasksScreen):
            sections.append(("Tasks", TasksScreen.BINDINGS))
        return sections

    async def action_quit(self) -> None:
        running = self.flow.running() or [t.name for t in self.board.running_actions()]
        if not running:
            self.exit()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.exit()

        self.push_screen(QuitScreen(running), answer)

    # --- settings and the command palette ----------------------------------------------

    def set_refresh(self, seconds: float) -> None:
        self.settings = dataclasses.replace(self.settings, refresh_s=seconds)
        self._save_settings()
        self.notify(f"screen refresh every {seconds:g} s", title="settings")

    def _save_settings(self) -> None:
        self.settings = dataclasses.replace(self.settings, theme=self.theme)
        if self.config_path is None:
            return
        try:
            save_ui_settings(self.config_path, self.settings)
        except OSError as err:
            self.notify(
                f"could not save settings to {self.config_path}: {err.strerror}",
                title="settings",
                severity="warning",
                markup=False,
            )

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help: every key", "Show the keys of this screen", self.action_help)
        yield SystemCommand("Tasks", "Running and recent background tasks", self.action_tasks)
        for seconds in REFRESH_CHOICES:
            yield SystemCommand(
                f"Refresh every {seconds:g} s",
                "How often the screen shows new data (saved to the config)",
                lambda s=seconds: self.set_refresh(s),
            )
        if isinstance(screen, DashboardScreen):
            yield SystemCommand("Filter machines", "Type to filter (/)", screen.action_filter)
            yield SystemCommand(
                "Maximise or restore the pane",
                "The pane with focus (z)",
                screen.action_toggle_maximize,
            )
            if not self.flow.read_only:
                for action in Action:
                    yield SystemCommand(
                        f"VM: {action.label}",
                        "On the marked VMs, or the one under the cursor",
                        lambda a=action: screen.machines.action_vm(a.value),
                    )
