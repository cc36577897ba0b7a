"""The Timeline screen: one time-ordered stream of what happened — libvirt events with
their decoded reasons, errors, health transitions, admin actions with who and the
verified outcome, metric spikes and config changes — filtered by host, VM, kind and
severity, zoomed to the last 15 min / 1 h / 24 h or a custom window. Enter opens the
VM's detail screen positioned at that moment with the entry marked on its graphs;
`e` exports the window as one JSON document.

History comes from the store through `IncidentSource` (storage/export.py implements
it) in one async worker; without a database the screen shows what this session saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import Worker

from virtwatch.core.errors import AppError, Severity
from virtwatch.core.model import HostFacts
from virtwatch.core.triage.entries import EntryKind, TimelineEntry
from virtwatch.core.triage.timeline import (
    ZOOMS,
    TimelineFilter,
    build_timeline,
    entry_from_audit,
    entry_from_error,
    entry_from_event,
    entry_from_health,
)
from virtwatch.core.triage.when import Window, parse_when
from virtwatch.tui.detail import GRAPHS, Marker, Span, VmDetailScreen
from virtwatch.tui.ports import VmRef

if TYPE_CHECKING:
    from virtwatch.tui.app import VirtwatchApp

MAX_ROWS_SHOWN = 10_000  # the newest; a bigger window says so and asks for a filter
FOLLOW_CHECK_S = 2.0  # how often a "last N" window looks for new records on the hub
MARK_COLOR = "yellow"

_SEVERITY_STYLE = {
    Severity.INFO: "dim",
    Severity.WARNING: "yellow",
    Severity.ERROR: "red",
    Severity.CRITICAL: "bold red",
}
_SEVERITY_WORD = {
    Severity.INFO: "info",
    Severity.WARNING: "warn",
    Severity.ERROR: "error",
    Severity.CRITICAL: "crit",
}
_KIND_STYLE = {
    EntryKind.EVENT: "cyan",
    EntryKind.ERROR: "red",
    EntryKind.HEALTH: "magenta",
    EntryKind.ACTION: "green",
    EntryKind.SPIKE: "yellow",
    EntryKind.CONFIG: "blue",
}
COLUMNS: tuple[tuple[str, str], ...] = (
    ("time", "Time"),
    ("sev", "Sev"),
    ("kind", "Kind"),
    ("host", "Host"),
    ("vm", "VM"),
    ("what", "What happened"),
)


@runtime_checkable
class IncidentSource(Protocol):
    """The store's history for this screen (storage.export.StoreIncidents)."""

    async def window_entries(
        self, window: Window, flt: TimelineFilter
    ) -> tuple[Sequence[TimelineEntry], bool]: ...

    async def export_window(
        self,
        window: Window,
        flt: TimelineFilter,
        *,
        facts: Mapping[str, HostFacts] | None = None,
        directory: Path | None = None,
    ) -> tuple[Path, Sequence[str]]: ...


# -- pure helpers ---------------------------------------------------------------------------


def fmt_when(at: float, span_s: float, tz: tzinfo | None = None) -> str:
    """Clock time for a window of a day or less; with the date beyond that."""
    dt = datetime.fromtimestamp(at, tz=UTC).astimezone(tz)
    return dt.strftime("%H:%M:%S") if span_s <= 86400 else dt.strftime("%m-%d %H:%M")


def entry_cells(e: TimelineEntry, span_s: float, tz: tzinfo | None = None) -> tuple[Text, ...]:
    """The row of one entry; every untrusted string is a Text, never markup."""
    what = Text(e.title)
    if e.hint:
        what.append(f"  ← {e.hint}", style="italic")
    return (
        Text(fmt_when(e.at, span_s, tz), style="dim"),
        Text(_SEVERITY_WORD[e.severity], style=_SEVERITY_STYLE[e.severity]),
        Text(e.kind.value, style=_KIND_STYLE[e.kind]),
        Text(e.host or "—"),
        Text(e.vm_name or "—", style="" if e.vm_name else "dim"),
        what,
    )


def entry_detail(e: TimelineEntry, tz: tzinfo | None = None) -> Text:
    """The full record of the entry under the cursor, for the bottom panel."""
    t = Text()
    when = datetime.fromtimestamp(e.at, tz=UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    t.append(f"{when}  ", style="bold")
    t.append(f"{e.kind.value} · {e.severity.label}", style=_KIND_STYLE[e.kind])
    if e.vm_name:
        t.append(f" · {e.vm_name}")
    t.append(f" on {e.host or '?'}\n")
    t.append(e.title)
    if e.hint:
        t.append("\nlikely cause: ", style="bold yellow")
        t.append(e.hint)
    shown = {k: v for k, v in e.detail.items() if k not in ("event_kind",) and v}
    if shown:
        t.append("\n")
        t.append("  ".join(f"{k}={v}" for k, v in sorted(shown.items())), style="dim")
    return t


def span_for(window_s: float) -> Span:
    """The detail screen's graph range for an entry seen in a window of this size."""
    if window_s <= 3600:
        return Span.HOUR1
    if window_s <= 86400:
        return Span.DAY1
    return Span.DAY7


def anchor_for(at: float, span: Span, now: float) -> float:
    """Where the detail screen's graphs end so that `at` sits in their middle (or as
    near as the present allows)."""
    return min(now, at + span.seconds / 2)


_KIND_CYCLE: tuple[frozenset[EntryKind], ...] = (
    frozenset(),
    *(frozenset({k}) for k in EntryKind),
)
_SEVERITY_CYCLE = (Severity.INFO, Severity.WARNING, Severity.ERROR, Severity.CRITICAL)


def next_in(options: Sequence[Any], current: Any) -> Any:
    try:
        return options[(list(options).index(current) + 1) % len(options)]
    except ValueError:
        return options[0]


@dataclass(frozen=True, slots=True)
class View:
    """What the screen shows: a window (following now, or fixed) and a filter."""

    window: Window
    flt: TimelineFilter
    zoom_s: float | None  # a preset span that follows now; None: a fixed custom window

    @property
    def follows(self) -> bool:
        return self.zoom_s is not None

    def label(self) -> str:
        if self.zoom_s is not None:
            return next((name for name, s in ZOOMS if s == self.zoom_s), f"{self.zoom_s:g} s")
        return "custom"


# -- the VM detail, positioned at a moment ---------------------------------------------------


class MomentDetailScreen(VmDetailScreen):
    """The VM detail screen with its graphs ending around `at` and the entry marked."""

    def __init__(
        self, ref: VmRef, *, at: float, mark: str, span: Span, anchor: float, **kwargs: Any
    ) -> None:
        super().__init__(ref, clock=lambda: anchor, **kwargs)
        self.moment = at
        self.graphs_end = anchor
        self.mark = Marker(at, mark, MARK_COLOR)
        self.span = span

    def redraw(self) -> None:
        super().redraw()
        for spec in GRAPHS:
            graph = self.graph(spec.key)
            if self.mark not in graph.markers:
                graph.markers = [*graph.markers, self.mark]
                graph.replot()


# -- the custom window dialog ---------------------------------------------------------------


class WindowDialog(ModalScreen[Window | None]):
    """Two times ('2h', '10:30', ISO 8601, epoch s); Enter applies, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: Window, *, clock: Callable[[], float]) -> None:
        super().__init__(id="window-dialog")
        self._current = current
        self._clock = clock

    def compose(self) -> ComposeResult:
        with Vertical(id="window-box"):
            yield Static("Window: since / until ('2h', '10:30', 2026-11-26T10:00, now)")
            since = datetime.fromtimestamp(self._current.since, tz=UTC).astimezone()
            until = datetime.fromtimestamp(self._current.until, tz=UTC).astimezone()
            yield Input(since.strftime("%Y-%m-%dT%H:%M:%S"), id="since")
            yield Input(until.strftime("%Y-%m-%dT%H:%M:%S"), id="until")
            yield Static("", id="window-error", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        now = self._clock()
        try:
            window = Window(
                parse_when(self.query_one("#since", Input).value, now),
                parse_when(self.query_one("#until", Input).value, now),
            )
        except AppError as err:  # unreadable or backwards: say it, stay open
            self.query_one("#window-error", Static).update(Text(err.one_line(), style="red"))
            return
        self.dismiss(window)

    def action_cancel(self) -> None:
        self.dismiss(None)


# -- the screen -----------------------------------------------------------------------------


class TimelineScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "zoom(900)", "15 min"),
        Binding("2", "zoom(3600)", "1 h"),
        Binding("3", "zoom(86400)", "24 h"),
        Binding("c", "custom", "Custom window"),
        Binding("slash", "text_filter", "Filter text"),
        Binding("h", "cycle_host", "Host"),
        Binding("v", "toggle_vm", "This VM only"),
        Binding("k", "cycle_kind", "Kind"),
        Binding("s", "cycle_severity", "Severity"),
        Binding("x", "clear_filters", "Clear filters"),
        Binding("e", "export", "Export"),
        Binding("enter", "open", "Open VM at this moment", show=False),
        Binding("escape", "close", "Back"),
    ]
    DEFAULT_CSS = """
    TimelineScreen #timeline-table { height: 1fr; }
    TimelineScreen #timeline-head { height: auto; }
    TimelineScreen #timeline-detail { height: auto; max-height: 8; border-top: solid $accent; }
    TimelineScreen #timeline-filter { display: none; }
    TimelineScreen #timeline-filter.-open { display: block; }
    WindowDialog { align: center middle; }
    WindowDialog #window-box { width: 70; height: auto; border: round $accent; padding: 1; }
    """

    class Loaded(Message):
        """Entries of one view arrived (or the reason they did not)."""

        def __init__(
            self, view: View, entries: Sequence[TimelineEntry], truncated: bool, failed: str = ""
        ) -> None:
            super().__init__()
            self.view = view
            self.entries = entries
            self.truncated = truncated
            self.failed = failed

    def __init__(
        self,
        source: IncidentSource | None,
        *,
        open_vm: Callable[[TimelineEntry, View], None] | None = None,
        live: Callable[[], Sequence[TimelineEntry]] = lambda: (),
        changes: Callable[[], object] = lambda: None,
        facts: Callable[[], Mapping[str, HostFacts]] = dict,
        hosts: Callable[[], Sequence[str]] = list,
        clock: Callable[[], float] = time.time,
        zoom_s: float = 3600.0,
        export_dir: Path | None = None,
        tz: tzinfo | None = None,
    ) -> None:
        super().__init__(id="timeline")
        self.source = source
        self._open_vm = open_vm
        self._live = live
        self._changes = changes
        self._facts = facts
        self._hosts = hosts
        self._clock = clock
        self._export_dir = export_dir
        self._tz = tz
        now = clock()
        self.view = View(Window.last(zoom_s, now), TimelineFilter(), zoom_s)
        self.entries: list[TimelineEntry] = []
        self.truncated = False
        self.status = "loading…"
        self._seen_changes: object = changes()
        self.loads: list[View] = []  # views asked of the store (for tests)
        self.exported: list[Path] = []

    # --- layout --------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="timeline-head", markup=False)
        yield Input(placeholder="text in what happened / hint / VM / host", id="timeline-filter")
        table: DataTable[Text] = DataTable(
            id="timeline-table", cursor_type="row", zebra_stripes=True
        )
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static("", id="timeline-detail", markup=False)
        yield Footer()

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#timeline-table", DataTable)

    def on_mount(self) -> None:
        self.title = "Timeline"
        self.table.focus()
        self.reload()
        self.set_interval(FOLLOW_CHECK_S, self._follow)

    # --- loading -----------------------------------------------------------------------

    def reload(self, *, slide: bool = True) -> None:
        """Ask for the current view (a following window first slides to now)."""
        if slide and self.view.zoom_s is not None:
            self.view = replace(self.view, window=Window.last(self.view.zoom_s, self._clock()))
        self.status = "loading…"
        self._show_head()
        view = self.view

        async def load() -> None:  # a function, not a coroutine: a worker cancelled
            await self._load(view)  # before it starts leaves no coroutine unawaited

        _worker: Worker[None] = self.run_worker(load, group="timeline", exclusive=True)

    async def _load(self, view: View) -> None:
        self.loads.append(view)
        if self.source is None:
            live = build_timeline(self._live(), view.window, view.flt)
            self.post_message(self.Loaded(view, live, False, "no database: this session only"))
            return
        try:
            entries, truncated = await self.source.window_entries(view.window, view.flt)
        except Exception as err:  # the store said no: say why, keep the screen
            self.post_message(self.Loaded(view, (), False, f"history unavailable: {err}"))
            return
        self.post_message(self.Loaded(view, entries, truncated))

    def on_timeline_screen_loaded(self, message: TimelineScreen.Loaded) -> None:
        if message.view != self.view:
            return  # an older view's answer
        entries = list(message.entries)
        self.truncated = message.truncated or len(entries) > MAX_ROWS_SHOWN
        shown = entries[-MAX_ROWS_SHOWN:]
        self.entries = shown
        self.status = message.failed
        self._fill(shown)

    def _fill(self, entries: Sequence[TimelineEntry]) -> None:
        table = self.table
        keep = self._current()
        table.clear()
        span = self.view.window.span_s
        for i, e in enumerate(entries):
            table.add_row(*entry_cells(e, span, self._tz), key=e.key or f"row:{i}")
        if entries:
            row = len(entries) - 1  # the newest by default; else stay on the same entry
            if keep is not None:
                row = next((i for i, e in enumerate(entries) if e.key == keep.key), row)
            table.move_cursor(row=row)
        self._show_head()
        self._show_detail()

    def _follow(self) -> None:
        """A following window reloads when new records arrived on the hub."""
        seen = self._changes()
        if seen != self._seen_changes:
            self._seen_changes = seen
            if self.view.follows:
                self.reload()

    # --- text ----------------------------------------------------------------------------

    def _show_head(self) -> None:
        w = self.view.window
        t = Text()
        for i, (name, seconds) in enumerate(ZOOMS, start=1):
            style = "bold reverse" if self.view.zoom_s == seconds else "dim"
            t.append(f" {i} {name} ", style=style)
            t.append(" ")
        t.append(" c custom ", style="bold reverse" if self.view.zoom_s is None else "dim")
        t.append(
            f"  {fmt_when(w.since, 86401, self._tz)} → {fmt_when(w.until, 86401, self._tz)}",
            style="bold",
        )
        t.append(f"  · {self.view.flt.describe()}")
        t.append(f"  · {len(self.entries)} entries")
        if self.truncated:
            t.append("  · truncated: narrow the window or filter", style="yellow")
        if self.status:
            t.append(f"  · {self.status}", style="dim")
        self.query_one("#timeline-head", Static).update(t)

    def _current(self) -> TimelineEntry | None:
        table = self.table
        if not self.entries or table.row_count == 0:
            return None
        row = table.cursor_row
        return self.entries[row] if 0 <= row < len(self.entries) else None

    def _show_detail(self) -> None:
        e = self._current()
        text = entry_detail(e, self._tz) if e is not None else Text("nothing in this window")
        self.query_one("#timeline-detail", Static).update(text)

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    # --- keys ------------------------------------------------------------------------------

    def _set_filter(self, flt: TimelineFilter) -> None:
        self.view = replace(self.view, flt=flt)
        self.reload(slide=False)

    def action_zoom(self, seconds: float) -> None:
        self.view = View(Window.last(float(seconds), self._clock()), self.view.flt, float(seconds))
        self.reload()

    def action_custom(self) -> None:
        def chosen(window: Window | None) -> None:
            if window is not None:
                self.view = View(window, self.view.flt, None)
                self.reload()

        self.app.push_screen(WindowDialog(self.view.window, clock=self._clock), chosen)

    def action_text_filter(self) -> None:
        box = self.query_one("#timeline-filter", Input)
        box.add_class("-open")
        box.value = self.view.flt.text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "timeline-filter":
            self._set_filter(replace(self.view.flt, text=event.value.strip()))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "timeline-filter":
            event.input.remove_class("-open")
            self.table.focus()

    def action_cycle_host(self) -> None:
        hosts = sorted({*self._hosts(), *(e.host for e in self.entries if e.host)})
        options: list[frozenset[str]] = [frozenset(), *(frozenset({h}) for h in hosts)]
        self._set_filter(replace(self.view.flt, hosts=next_in(options, self.view.flt.hosts)))

    def action_toggle_vm(self) -> None:
        if self.view.flt.vms:
            self._set_filter(replace(self.view.flt, vms=frozenset()))
            return
        e = self._current()
        if e is None or not e.vm_uuid:
            self.notify("this entry concerns no VM", title="timeline", severity="warning")
            return
        self._set_filter(replace(self.view.flt, vms=frozenset({e.vm_uuid})))

    def action_cycle_kind(self) -> None:
        self._set_filter(replace(self.view.flt, kinds=next_in(_KIND_CYCLE, self.view.flt.kinds)))

    def action_cycle_severity(self) -> None:
        sev = next_in(_SEVERITY_CYCLE, self.view.flt.min_severity)
        self._set_filter(replace(self.view.flt, min_severity=sev))

    def action_clear_filters(self) -> None:
        box = self.query_one("#timeline-filter", Input)
        box.value = ""
        box.remove_class("-open")
        self._set_filter(TimelineFilter())
        self.table.focus()

    def action_open(self) -> None:
        e = self._current()
        if e is None:
            return
        if not e.vm_uuid or e.host is None:
            self.notify(
                "a host-level entry: no VM to open", title="timeline", severity="information"
            )
            return
        if self._open_vm is not None:
            self._open_vm(e, self.view)

    def action_export(self) -> None:
        if self.source is None:
            self.notify("no database: nothing stored to export", title="export", severity="warning")
            return
        view = self.view

        async def export() -> None:
            await self._export(view)

        _worker: Worker[None] = self.run_worker(export, group="export", exclusive=True)

    async def _export(self, view: View) -> None:
        assert self.source is not None
        try:
            path, words = await self.source.export_window(
                view.window, view.flt, facts=self._facts(), directory=self._export_dir
            )
        except Exception as err:
            self.notify(f"export failed: {err}", title="export", severity="error", markup=False)
            return
        self.exported.append(path)
        self.notify(f"wrote {path}\n" + "\n".join(words), title="export", timeout=10, markup=False)

    def action_close(self) -> None:
        box = self.query_one("#timeline-filter", Input)
        if box.has_focus:
            box.remove_class("-open")
            self.table.focus()
            return
        self.dismiss(None)


# -- wiring into the app --------------------------------------------------------------------


def _session_entries(app: VirtwatchApp) -> list[TimelineEntry]:
    """What this session saw on the hub (for a dashboard without a database)."""
    st = app.board
    out = [entry_from_event(e, key=f"live:event:{i}") for i, e in enumerate(st.events)]
    out += [entry_from_audit(a, key=f"live:audit:{i}") for i, a in enumerate(st.audit)]
    out += [entry_from_error(r, key=f"live:error:{k}") for k, r in st.errors.items()]
    out += [entry_from_health(a, key=f"live:alert:{i}") for i, a in enumerate(st.transitions)]
    return out


def _changes(app: VirtwatchApp) -> object:
    st = app.board
    return (
        len(st.events),
        st.events[-1].at if st.events else None,
        len(st.audit),
        st.audit[-1].started_at if st.audit else None,
        len(st.errors),
        max((r.at for r in st.errors.values()), default=None),
        len(st.transitions),
        st.transitions[-1].at if st.transitions else None,
    )


def timeline_screen_for(
    app: VirtwatchApp, *, clock: Callable[[], float] = time.time
) -> TimelineScreen:
    """The screen bound to the app's store (when its TimelineSource is also an
    IncidentSource), its rings and state, and its detail screen."""
    source = app.timeline if isinstance(app.timeline, IncidentSource) else None

    def open_vm(e: TimelineEntry, view: View) -> None:
        assert e.host is not None
        assert e.vm_uuid is not None
        host, uuid, name = e.host, e.vm_uuid, e.vm_name or e.vm_uuid
        span = span_for(view.window.span_s)
        table = app.dashboard.machines
        st = app.board
        screen = MomentDetailScreen(
            VmRef(host, uuid, name),
            at=e.at,
            mark=e.title,
            span=span,
            anchor=anchor_for(e.at, span, clock()),
            history=app.history,
            sample=lambda: table.sample(host, uuid),
            events=lambda: st.vm_events(host, uuid),
            audit=lambda: st.vm_audit(host, uuid),
            errors=lambda: st.vm_errors(host, name),
            request_action=None if app.flow.read_only else app.dashboard.request_action,
            series_source=app.series_source,
            timeline=app.timeline,
            read_only=app.flow.read_only or host in app.flow.read_only_hosts,
        )
        app.push_screen(screen)

    return TimelineScreen(
        source,
        open_vm=open_vm,
        live=lambda: _session_entries(app),
        changes=lambda: _changes(app),
        facts=lambda: {h: s.facts for h, s in app.board.snapshots.items()},
        hosts=lambda: sorted(app.board.snapshots),
        clock=clock,
    )


def show_timeline(app: VirtwatchApp, *, clock: Callable[[], float] = time.time) -> None:
    """The app's Timeline key: back to the open timeline if there is one, else a new one
    right above the dashboard (closing a detail or tasks view: the detail screen it
    opens must not meet another one on the stack). Does nothing over a dialog."""
    if isinstance(app.screen, ModalScreen):
        return
    existing = next((s for s in app.screen_stack if isinstance(s, TimelineScreen)), None)
    if existing is not None:
        while app.screen is not existing:
            app.pop_screen()
        return
    while len(app.screen_stack) > 1 and app.screen is not app.dashboard:
        app.pop_screen()
    app.push_screen(timeline_screen_for(app, clock=clock))
