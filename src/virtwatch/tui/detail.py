"""The VM detail screen: live graphs of CPU, memory, disk and network over 5 min,
1 h, 24 h or 7 d, with events and actions marked on the time axis; the VM's devices
and the recent events, errors and audit rows that concern it.

Short ranges come from the in-memory rings; longer ones (or a short one the rings do
not reach back to yet) from the store, through `SeriesSource`, in one async worker.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from virtwatch.core.collect.details import DeviceFigures, DomainDetails, device_figures
from virtwatch.core.collect.history import MetricHistory, Point
from virtwatch.core.errors import AppError
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.model import DomainSample
from virtwatch.core.ops.actions import Action
from virtwatch.core.records import AuditRecord, DomainEvent, Outcome
from virtwatch.tui.action_flow import ACTION_BINDINGS, outcome_text
from virtwatch.tui.format import (
    UNKNOWN,
    fmt_age,
    fmt_kib,
    fmt_mem,
    fmt_pct,
    fmt_rate,
)
from virtwatch.tui.ports import (
    DetailsSource,
    ExtraStatsSource,
    SeriesSource,
    TimelineSource,
    VmRef,
)
from virtwatch.tui.rows import uptime_text


class Span(enum.Enum):
    """A graph range: (label, seconds, x unit seconds, x unit name)."""

    MIN5 = ("5 min", 300.0, 60.0, "minutes ago")
    HOUR1 = ("1 h", 3600.0, 60.0, "minutes ago")
    DAY1 = ("24 h", 86400.0, 3600.0, "hours ago")
    DAY7 = ("7 d", 7 * 86400.0, 86400.0, "days ago")

    @property
    def label(self) -> str:
        return self.value[0]

    @property
    def seconds(self) -> float:
        return self.value[1]

    @property
    def unit_s(self) -> float:
        return self.value[2]

    @property
    def unit_name(self) -> str:
        return self.value[3]

    @property
    def from_rings(self) -> bool:
        return self in (Span.MIN5, Span.HOUR1)


@dataclass(frozen=True, slots=True)
class GraphSpec:
    key: str
    title: str
    metrics: tuple[tuple[str, str, str], ...]  # (metric, legend, color)
    scale: float = 1.0  # divide values by this (KiB -> MiB, B/s -> KB/s)
    unit: str = ""


GRAPHS: tuple[GraphSpec, ...] = (
    GraphSpec("cpu", "CPU %", (("cpu_pct", "of its vCPUs", "green"),), unit="%"),
    GraphSpec(
        "mem",
        "Memory (MiB)",
        (("mem_used_kib", "used", "magenta"), ("mem_alloc_kib", "allocated", "gray")),
        scale=1024.0,
        unit="MiB",
    ),
    GraphSpec(
        "disk",
        "Disk (KB/s)",
        (("disk_rd_bps", "read", "cyan"), ("disk_wr_bps", "write", "orange")),
        scale=1000.0,
        unit="KB/s",
    ),
    GraphSpec(
        "net",
        "Network (KB/s)",
        (("net_rx_bps", "rx", "blue"), ("net_tx_bps", "tx", "red")),
        scale=1000.0,
        unit="KB/s",
    ),
)
ALL_METRICS = tuple(m for g in GRAPHS for m, _l, _c in g.metrics)


def to_xy(
    points: Sequence[Point], now: float, span: Span, scale: float
) -> tuple[list[float], list[float]]:
    """Points in the window as (x = time before `now` in the span's unit, negative;
    y = value / scale)."""
    since = now - span.seconds
    xs: list[float] = []
    ys: list[float] = []
    for t, v in points:
        if since <= t <= now:
            xs.append((t - now) / span.unit_s)
            ys.append(v / scale)
    return xs, ys


@dataclass(frozen=True, slots=True)
class Marker:
    at: float
    label: str
    color: str


def markers_for(
    events: Sequence[DomainEvent], audit: Sequence[AuditRecord], errors: Sequence[ErrorReport]
) -> list[Marker]:
    """Events (blue), admin actions (green when verified, red otherwise), errors (red)."""
    out = [Marker(e.at, e.summary, "blue") for e in events]
    for a in audit:
        color = "green" if a.outcome is Outcome.VERIFIED else "red"
        out.append(Marker(a.started_at, f"{a.action} by {a.user}: {a.outcome}", color))
    out.extend(Marker(r.at, f"{r.error.code}", "red") for r in errors)
    out.sort(key=lambda m: m.at)
    return out


class MetricGraph(PlotextPlot):
    """One plot: a few series over the chosen span, with vertical event markers."""

    def __init__(self, spec: GraphSpec, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="graph")
        self.spec = spec
        self.series: Mapping[str, Sequence[Point]] = {}
        self.markers: list[Marker] = []
        self.span = Span.MIN5
        self.now = 0.0
        self.note = ""

    def show(
        self,
        series: Mapping[str, Sequence[Point]],
        markers: list[Marker],
        span: Span,
        now: float,
        note: str = "",
    ) -> None:
        self.series, self.markers, self.span, self.now, self.note = (
            series,
            markers,
            span,
            now,
            note,
        )
        self.replot()

    def points_shown(self) -> int:
        return sum(
            len(to_xy(self.series.get(m, ()), self.now, self.span, 1.0)[0])
            for m, _l, _c in self.spec.metrics
        )

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        s = self.spec
        title = f"{s.title} · {self.span.label}"
        plt.title(title + (f" · {self.note}" if self.note else ""))
        if self.size.height >= 12:
            plt.xlabel(self.span.unit_name)
        any_data = False
        for metric, legend, color in s.metrics:
            xs, ys = to_xy(self.series.get(metric, ()), self.now, self.span, s.scale)
            if xs:
                any_data = True
                plt.plot(xs, ys, label=legend, color=color, marker="braille")
        lo = -self.span.seconds / self.span.unit_s
        plt.xlim(lo, 0.0)
        if s.unit == "%":
            plt.ylim(0, 100)
        elif not any_data:
            plt.ylim(0, 1)
        for m in self.markers:
            x = (m.at - self.now) / self.span.unit_s
            if lo <= x <= 0:
                plt.vline(x, m.color)
        if not any_data:
            plt.text("no data for this range", x=lo * 0.6, y=0.5)
        self.refresh()


def definition_text(details: DomainDetails | None, note: str = "") -> Text:
    """Title, description, tags, disks and NICs from the VM's definition (untrusted)."""
    t = Text()
    if details is None:
        t.append(note or "definition not loaded", style="dim")
        return t
    if details.title:
        t.append(details.title, style="bold")
        t.append("\n")
    if details.description:
        t.append(details.description.strip().replace("\n", " "), style="italic")
        t.append("\n")
    t.append("tags ", style="bold")
    t.append(
        ", ".join(details.tags) if details.tags else "none", style="" if details.tags else "dim"
    )
    t.append("\n")
    for disk in details.disks:
        t.append("disk ", style="bold")
        t.append(f"{disk.target} {disk.device} {disk.source or '(empty)'}")
        extra = [x for x in (disk.bus, disk.format, "ro" if disk.readonly else None) if x]
        if extra:
            t.append(f" ({', '.join(extra)})", style="dim")
        t.append("\n")
    for nic in details.nics:
        t.append("nic ", style="bold")
        t.append(f"{nic.mac or '?'} {nic.kind} {nic.source or ''}".rstrip())
        extra = [x for x in (nic.model, nic.target) if x]
        if extra:
            t.append(f" ({', '.join(extra)})", style="dim")
        t.append("\n")
    if not details.disks and not details.nics:
        t.append("no disks or NICs defined\n", style="dim")
    return t


_VCPU_STATES = {0: "offline", 1: "running", 2: "blocked"}


def devices_text(figures: DeviceFigures | None, note: str = "") -> Text:
    """Per-vCPU time, per-disk and per-NIC figures of the VM (live, from its counters)."""
    t = Text()
    if figures is None:
        t.append(note or "device figures not loaded", style="dim")
        return t
    for v in figures.vcpus:
        t.append(f"vcpu{v.index} ", style="bold")
        t.append(f"{fmt_pct(v.busy_pct).strip()} {_VCPU_STATES.get(v.state or -1, '')}".rstrip())
        t.append("\n")
    for d in figures.disks:
        t.append(f"disk {d.name} ", style="bold")
        t.append(f"read {fmt_rate(d.rd_bps)}, write {fmt_rate(d.wr_bps)}")
        iops = [f"{x:.0f}" if x is not None else UNKNOWN for x in (d.rd_iops, d.wr_iops)]
        t.append(f" · {iops[0]}/{iops[1]} IOPS")
        if d.capacity:
            t.append(f" · {fmt_kib(d.capacity / 1024)}", style="dim")
        t.append("\n")
    for n in figures.nics:
        t.append(f"nic {n.name} ", style="bold")
        t.append(f"rx {fmt_rate(n.rx_bps)}, tx {fmt_rate(n.tx_bps)}")
        if n.errors or n.drops:
            t.append(f" · {n.errors or 0} errors, {n.drops or 0} drops", style="yellow")
        t.append("\n")
    if not (figures.vcpus or figures.disks or figures.nics):
        t.append("no per-device counters (the VM is not running)\n", style="dim")
    return t


def facts_text(ref: VmRef, d: DomainSample | None, now: float) -> Text:
    t = Text()
    t.append(ref.name, style="bold")
    t.append(f" on {ref.host}\n")
    if d is None:
        t.append("not in the latest snapshot", style="yellow")
        return t
    up = uptime_text(d, now)
    t.append(d.state_text + (f" · {up}" if up != UNKNOWN else "") + "\n")
    t.append(f"uuid {d.uuid}\n", style="dim")
    t.append(f"vCPU {UNKNOWN if d.vcpus is None else d.vcpus} · CPU {fmt_pct(d.cpu_pct).strip()}\n")
    t.append(f"memory {fmt_mem(d.mem_used_kib, d.mem_alloc_kib)} ({d.mem_source})\n")
    disk = getattr(d, "disk", None)
    if disk is not None:
        t.append(
            f"disks {', '.join(disk.devices) or UNKNOWN}: "
            f"read {fmt_rate(disk.rd_bps)}, write {fmt_rate(disk.wr_bps)}"
        )
        if disk.capacity_bytes:
            t.append(f", {fmt_kib(disk.capacity_bytes / 1024)}")
        t.append("\n")
    net = getattr(d, "net", None)
    if net is not None:
        t.append(
            f"NICs {', '.join(net.devices) or UNKNOWN}: "
            f"rx {fmt_rate(net.rx_bps)}, tx {fmt_rate(net.tx_bps)}\n"
        )
    t.append(f"measured {fmt_age(now - d.measured_at)}", style="dim")
    return t


def recent_text(
    events: Sequence[DomainEvent],
    audit: Sequence[AuditRecord],
    errors: Sequence[ErrorReport],
    now: float,
    limit: int = 12,
) -> Text:
    """Newest first: events, actions (who, outcome) and errors of this VM."""
    rows: list[tuple[float, str, str, str]] = []
    for e in events:
        rows.append((e.at, "event", e.summary, "blue"))
    for a in audit:
        who = a.user + (f"@{a.client}" if a.client else "")
        _row, toast, _sev = outcome_text(a)
        rows.append((a.started_at, "action", f"{toast} (by {who})", "green"))
    for r in errors:
        count = f" x{r.count}" if r.count > 1 else ""
        rows.append((r.at, "error", f"{r.error.code}{count}: {r.error.message}", "red"))
    rows.sort(key=lambda r: r[0], reverse=True)
    t = Text()
    if not rows:
        t.append("no events, actions or errors recorded for this VM", style="dim")
    for at, kind, words, style in rows[:limit]:
        t.append(f"{fmt_age(now - at):>10} ", style="dim")
        t.append(f"{kind:<6} ", style=style)
        t.append(words)
        t.append("\n")
    return t


class VmDetailScreen(Screen[None]):
    DEVICE_POLL_S: ClassVar[float] = 2.0  # live per-device figures: one reading this often
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "span('MIN5')", "5 min"),
        Binding("2", "span('HOUR1')", "1 h"),
        Binding("3", "span('DAY1')", "24 h"),
        Binding("4", "span('DAY7')", "7 d"),
        Binding("escape,backspace", "close", "Back"),
        *ACTION_BINDINGS,
    ]

    class Loaded(Message):
        """Stored series (and events) for a span arrived."""

        def __init__(
            self,
            span: Span,
            series: Mapping[str, Sequence[Point]],
            events: Sequence[DomainEvent],
            audit: Sequence[AuditRecord],
            failed: str = "",
        ) -> None:
            super().__init__()
            self.span = span
            self.series = series
            self.events = events
            self.audit = audit
            self.failed = failed

    def __init__(
        self,
        ref: VmRef,
        *,
        history: MetricHistory,
        sample: Callable[[], DomainSample | None],
        events: Callable[[], Sequence[DomainEvent]],
        audit: Callable[[], Sequence[AuditRecord]],
        errors: Callable[[], Sequence[ErrorReport]],
        request_action: Callable[[Action, Sequence[VmRef]], None] | None = None,
        series_source: SeriesSource | None = None,
        timeline: TimelineSource | None = None,
        details: DetailsSource | None = None,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(id="detail")
        self.details_source = details
        self.details: DomainDetails | None = None
        self.devices: DeviceFigures | None = None  # the latest per-device figures
        self._details_note = "" if details is not None else "definition: not available here"
        self.ref = ref
        self.history = history
        self._sample = sample
        self._events = events
        self._audit = audit
        self._errors = errors
        self._request_action = request_action
        self.series_source = series_source
        self.timeline = timeline
        self.read_only = read_only or request_action is None
        self._clock = clock
        self.span = Span.MIN5
        self._stored: dict[Span, VmDetailScreen.Loaded] = {}
        self.requests: list[tuple[Span, float, float]] = []  # store queries made (for tests)

    def compose(self) -> ComposeResult:
        with Horizontal(id="detail-top"):
            yield Static("", id="detail-facts", markup=False)
            with VerticalScroll(id="detail-definition-box"):
                yield Static("", id="detail-devices", markup=False)
                yield Static("", id="detail-definition", markup=False)
            with VerticalScroll(id="detail-recent-box"):
                yield Static("", id="detail-recent", markup=False)
        with Container(id="graphs"):
            for spec in GRAPHS:
                yield MetricGraph(spec, id=f"graph-{spec.key}")
        yield Static("", id="span-bar", markup=False)
        yield Footer()

    def on_resize(self) -> None:
        self.set_class(self.size.height < 32, "-small")

    def on_mount(self) -> None:
        self.title = f"{self.ref.name} on {self.ref.host}"
        self.set_class(self.size.height < 32, "-small")
        self.redraw()
        self.set_interval(1.0, self._tick_text)
        if self.details_source is not None:
            self._details_note = "loading the definition…"
            self.run_worker(self._load_details(), group="details", exclusive=True)
        self._show_definition()
        if isinstance(self.details_source, ExtraStatsSource):
            self.run_worker(
                self._poll_devices(self.details_source), group="devices", exclusive=True
            )
        self._show_devices(None, "")

    async def _poll_devices(self, source: ExtraStatsSource) -> None:
        """The one worker for the live per-device figures: the VM's counters every
        DEVICE_POLL_S (one bulk stats call per tick, shared by the loads of that tick),
        rates between consecutive readings."""
        prev = None
        while True:
            try:
                cur = await source.extra_stats(self.ref.host, self.ref.uuid)
            except AppError as err:
                self.post_message(self.DevicesLoaded(None, f"devices: {err.message}"))
                prev = None
            else:
                self.post_message(self.DevicesLoaded(device_figures(prev, cur), ""))
                prev = cur
            await asyncio.sleep(self.DEVICE_POLL_S)

    class DevicesLoaded(Message):
        def __init__(self, figures: DeviceFigures | None, note: str) -> None:
            super().__init__()
            self.figures = figures
            self.note = note

    def on_vm_detail_screen_devices_loaded(self, message: VmDetailScreen.DevicesLoaded) -> None:
        self.devices = message.figures
        self._show_devices(message.figures, message.note)

    def _show_devices(self, figures: DeviceFigures | None, note: str) -> None:
        if not isinstance(self.details_source, ExtraStatsSource):
            note = "device figures: not available here"
        self.query_one("#detail-devices", Static).update(devices_text(figures, note or "…"))

    async def _load_details(self) -> None:
        """The one worker for the definition (batched and cached by the core's loader)."""
        assert self.details_source is not None
        try:
            details = await self.details_source.details(self.ref.host, self.ref.uuid)
        except AppError as err:
            self.post_message(self.DetailsLoaded(None, f"definition unavailable: {err.message}"))
            return
        self.post_message(self.DetailsLoaded(details, ""))

    class DetailsLoaded(Message):
        def __init__(self, details: DomainDetails | None, note: str) -> None:
            super().__init__()
            self.details = details
            self.note = note

    def on_vm_detail_screen_details_loaded(self, message: VmDetailScreen.DetailsLoaded) -> None:
        self.details = message.details
        self._details_note = message.note
        self._show_definition()

    def _show_definition(self) -> None:
        self.query_one("#detail-definition", Static).update(
            definition_text(self.details, self._details_note)
        )

    def graph(self, key: str) -> MetricGraph:
        return self.query_one(f"#graph-{key}", MetricGraph)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "vm" and self.read_only)

    # --- drawing ---------------------------------------------------------------------

    def _tick_text(self) -> None:
        now = self._clock()
        self.query_one("#detail-facts", Static).update(facts_text(self.ref, self._sample(), now))
        stored = self._stored.get(self.span)
        events = list(self._events()) + list(stored.events if stored else ())
        audit = list(self._audit()) + list(stored.audit if stored else ())
        self.query_one("#detail-recent", Static).update(
            recent_text(_unique_events(events), _unique_audit(audit), self._errors(), now)
        )

    def _span_bar(self) -> Text:
        t = Text()
        for i, span in enumerate(Span, start=1):
            style = "bold reverse" if span is self.span else "dim"
            t.append(f" {i} {span.label} ", style=style)
            t.append(" ")
        source = "memory" if self._ring_backed() else "database"
        t.append(f"· from {source}", style="dim")
        return t

    def _ring_backed(self) -> bool:
        if not self.span.from_rings:
            return False
        if self.series_source is None:
            return True
        since = self._clock() - self.span.seconds
        return self.history.covers(self.ref.host, self.ref.uuid, "cpu_pct", since)

    def redraw(self) -> None:
        """Draw the current span from the rings, or ask the store for it."""
        now = self._clock()
        self.query_one("#span-bar", Static).update(self._span_bar())
        self._tick_text()
        if self._ring_backed():
            since = now - self.span.seconds
            series = {
                m: self.history.series(self.ref.host, self.ref.uuid, m, since=since)
                for m in ALL_METRICS
            }
            self._draw(series, [], [], now, "")
        elif self.series_source is None:
            self._draw({}, [], [], now, "no stored history (no database)")
        else:
            stored = self._stored.get(self.span)
            if stored is not None:
                self._draw(stored.series, stored.events, stored.audit, now, stored.failed)
            else:
                self._draw({}, [], [], now, "loading…")
                self.run_worker(self._load(self.span, now), group="series", exclusive=True)

    def _draw(
        self,
        series: Mapping[str, Sequence[Point]],
        events: Sequence[DomainEvent],
        audit: Sequence[AuditRecord],
        now: float,
        note: str,
    ) -> None:
        markers = markers_for(
            _unique_events([*self._events(), *events]),
            _unique_audit([*self._audit(), *audit]),
            self._errors(),
        )
        for spec in GRAPHS:
            self.graph(spec.key).show(series, markers, self.span, now, note)

    async def _load(self, span: Span, now: float) -> None:
        """The one worker for stored data: series of every metric, events, audit."""
        assert self.series_source is not None
        since = now - span.seconds
        self.requests.append((span, since, now))
        src = self.series_source
        try:
            results = await asyncio.gather(
                *(src.series(self.ref.host, self.ref.uuid, m, since, now) for m in ALL_METRICS)
            )
            events: Sequence[DomainEvent] = ()
            audit: Sequence[AuditRecord] = ()
            if self.timeline is not None:
                events = await self.timeline.vm_events(self.ref.host, self.ref.uuid, since, now)
                audit = await self.timeline.vm_audit(self.ref.host, self.ref.uuid, since, now)
        except Exception as err:  # the store said no: show why on the graphs, keep going
            self.post_message(self.Loaded(span, {}, (), (), f"history unavailable: {err}"))
            return
        series = {m: list(r) for m, r in zip(ALL_METRICS, results, strict=True)}
        self.post_message(self.Loaded(span, series, events, audit))

    def on_vm_detail_screen_loaded(self, message: VmDetailScreen.Loaded) -> None:
        self._stored[message.span] = message
        if message.span is self.span:
            self.redraw()

    def data_changed(self) -> None:
        """A new snapshot arrived: ring-backed graphs move, stored ones stay."""
        if self._ring_backed():
            self.redraw()
        else:
            self._tick_text()

    # --- keys --------------------------------------------------------------------------

    def action_span(self, name: str) -> None:
        self.span = Span[name]
        self.redraw()

    def action_vm(self, action: str) -> None:
        if self._request_action is not None:
            self._request_action(Action(action), [self.ref])

    def action_close(self) -> None:
        self.dismiss(None)


def _unique_events(events: Sequence[DomainEvent]) -> list[DomainEvent]:
    seen: set[tuple[float, str, str]] = set()
    out = []
    for e in events:
        k = (e.at, str(e.kind), e.summary)
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


def _unique_audit(audit: Sequence[AuditRecord]) -> list[AuditRecord]:
    seen: set[tuple[float, str]] = set()
    out = []
    for a in audit:
        k = (a.started_at, a.action)
        if k not in seen:
            seen.add(k)
            out.append(a)
    return out
