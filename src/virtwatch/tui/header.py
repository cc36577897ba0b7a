"""The host headers: one line per host — who it is, how fresh its data is, its
connection state and next retry, its VMs, and its CPU/memory gauges — plus notices.
A host's line never wraps: where it does not fit, the less important parts go first
(`LEAVE_OUT`), then it is cut with '…'.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.containers import Vertical
from textual.widget import Widget

from virtwatch.core.incidents import ErrorReport
from virtwatch.core.model import DomainState, Snapshot
from virtwatch.core.records import ConnectionState, HostConnection
from virtwatch.tui.format import fmt_age, fmt_duration, fmt_kib, gauge

GAUGE_WIDTH = 8
SHORT_GAUGE_WIDTH = 4
FRESH_S = 10.0  # data younger than this is not worth a highlight

# What a host's line leaves out, one more at a time, until it fits its width
LEAVE_OUT = (
    "versions",  # libvirt and hypervisor versions
    "long gauges",  # gauges SHORT_GAUGE_WIDTH cells wide, not GAUGE_WIDTH
    "fresh age",  # 'data now' while the data is fresh (an old age stays, in yellow)
    "hostname",  # the hostname the host reports
    "gauges",  # the gauges' bars (their figures stay)
    "uri",  # the URI after a host's own name
    "words",  # 'connected' after its ●, 'running' after the VM counts
)

_CONN_STYLE = {
    ConnectionState.CONNECTING: ("…", "yellow"),
    ConnectionState.CONNECTED: ("●", "green"),
    ConnectionState.DEGRADED: ("◐", "yellow"),
    ConnectionState.RECONNECTING: ("↻", "yellow"),
    ConnectionState.DOWN: ("✖", "bold red"),
    ConnectionState.CLOSED: ("○", "dim"),
}


def connection_text(
    conn: HostConnection | None, snap: Snapshot | None, now: float, *, terse: bool = False
) -> Text:
    """'● connected', '⚠ not answering', '↻ reconnecting in 4s', '✖ down for 12m, retry
    in 8s'; `terse` leaves a plain 'connected' at its ●. Connected with stale data is
    'not answering': libvirtd holds the connection open but gives no reply."""
    live = conn is None or conn.state in (ConnectionState.CONNECTED, ConnectionState.DEGRADED)
    if live and snap is not None and snap.stale:  # a problem: its words always stay
        return Text("⚠ not answering", style="bold yellow")
    if conn is None or (terse and conn.state is ConnectionState.CONNECTED):
        if snap is None and conn is None:
            return Text("…", style="dim")
        return Text("●" if terse else "● connected", style="green")
    mark, style = _CONN_STYLE.get(conn.state, ("?", ""))
    words = str(conn.state)
    if conn.state is ConnectionState.DOWN:
        words += f" for {fmt_duration(now - conn.since)}"
    if conn.next_retry_at is not None and conn.state is not ConnectionState.CONNECTED:
        words += f", retry in {fmt_duration(max(0.0, conn.next_retry_at - now))}"
    return Text(f"{mark} {words}", style=style)


def host_line(
    host: str,
    snap: Snapshot | None,
    conn: HostConnection | None,
    now: float,
    *,
    leave_out: Collection[str] = (),
) -> Text:
    """A host's first line, without the parts named in `leave_out` (see `LEAVE_OUT`)."""
    line = Text()
    line.append(host, style="bold")
    terse = "words" in leave_out
    if snap is None:
        uri = conn.uri if conn is not None else ""
        if uri and uri != host and "uri" not in leave_out:
            line.append(" ")
            line.append(uri, style="dim")
        line.append(" · ")
        line.append_text(connection_text(conn, snap, now))
        if conn is None:
            line.append(" connecting…", style="dim")
        return line
    f = snap.facts
    if f.uri != host and "uri" not in leave_out:
        line.append(" ")
        line.append(f.uri, style="dim")
    if "hostname" not in leave_out:
        line.append(f" · {f.hostname}")
    if "versions" not in leave_out:
        line.append(f" · libvirt {f.libvirt_version} · {f.driver} {f.hypervisor_version}")
    line.append(" · ")
    line.append_text(connection_text(conn, snap, now, terse=terse))
    age = now - snap.taken_at
    if age >= FRESH_S or snap.stale or "fresh age" not in leave_out:
        old = age >= FRESH_S or snap.stale
        line.append(f" · data {fmt_age(age)}", style="bold yellow" if old else "dim")
    running = sum(1 for d in snap.domains if d.state is DomainState.RUNNING)
    line.append(f" · VMs {running}/{len(snap.domains)}{'' if terse else ' running'}")
    hs = snap.host_sample
    if hs is not None:
        bars = "gauges" not in leave_out
        width = SHORT_GAUGE_WIDTH if "long gauges" in leave_out else GAUGE_WIDTH
        line.append(" · CPU ")
        if bars:
            line.append(gauge(hs.cpu_pct, width), style="cyan on grey23")
            line.append(" ")
        pct = "—" if hs.cpu_pct is None else f"{hs.cpu_pct:.0f}%"
        line.append(f"{pct} · MEM ")
        mem_pct = (
            None
            if hs.mem_used_kib is None or not hs.mem_total_kib
            else 100.0 * hs.mem_used_kib / hs.mem_total_kib
        )
        if bars:
            line.append(gauge(mem_pct, width), style="magenta on grey23")
            line.append(" ")
        line.append(f"{fmt_kib(hs.mem_used_kib)}/{fmt_kib(hs.mem_total_kib)}".replace(".0 ", " "))
    return line


def fitted_host_line(
    host: str, snap: Snapshot | None, conn: HostConnection | None, now: float, width: int | None
) -> Text:
    """The host's line with as much as fits in `width` cells (None: all of it): parts
    leave in `LEAVE_OUT` order, and what still does not fit is cut with '…'. The host's
    own name is never cut: one longer than the line wraps."""
    line = host_line(host, snap, conn, now)
    if width is None:
        return line
    for n in range(1, len(LEAVE_OUT) + 1):
        if line.cell_len <= width:
            return line
        line = host_line(host, snap, conn, now, leave_out=LEAVE_OUT[:n])
    if line.cell_len > width and cell_len(host) < width:
        line.truncate(width, overflow="ellipsis")
    return line


def header_text(
    host: str,
    snap: Snapshot | None,
    conn: HostConnection | None,
    error: ErrorReport | None,
    now: float,
    width: int | None = None,
) -> Text:
    """A host's header as plain `Text` (host names and messages are untrusted): its
    line fitted to `width` (see `fitted_host_line`), then its notices, which wrap."""
    line = fitted_host_line(host, snap, conn, now, width)
    if snap is not None and getattr(snap, "stale", False):
        line.append("\n  ")
        why = getattr(snap, "error", None) or "the host stopped answering"
        line.append(f"⌛ stale: {why}", style="bold yellow")
        retry = getattr(snap, "next_try_at", None)
        if retry is not None:
            line.append(f" · next try in {fmt_duration(max(0.0, retry - now))}", style="yellow")
    if conn is not None and conn.message and conn.state is not ConnectionState.CONNECTED:
        line.append("\n  ")
        line.append(conn.message, style="yellow")
    if error is not None and (snap is None or error.at >= snap.taken_at):
        line.append("\n  ")
        line.append(f"✖ {error.error.one_line()}", style="bold red")
    if snap is not None and snap.notice:
        line.append("\n")
        line.append(snap.notice, style="bold black on yellow")
    return line


class HostHeader(Widget):
    """One host's header line(s). Rendered, not a Static: a changed figure repaints
    this line only; the screen is laid out again only when the line count changes."""

    DEFAULT_CSS = """
    HostHeader { height: auto; }
    """

    def __init__(self, host: str, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(classes="host-header")
        self.host = host
        self._clock = clock
        self.snapshot: Snapshot | None = None
        self.connection: HostConnection | None = None
        self.error: ErrorReport | None = None
        self._shown = Text()

    def on_mount(self) -> None:
        self.refresh_text()

    def on_resize(self, _event: events.Resize) -> None:
        # after the layout under way: a layout asked for during it would keep the height
        # worked out for the old text
        self.call_after_refresh(self.refresh_text)

    def render(self) -> Text:
        return self._shown

    def refresh_text(self) -> None:
        width = self.size.width or None  # not laid out yet: all of it, fitted on resize
        text = header_text(
            self.host, self.snapshot, self.connection, self.error, self._clock(), width
        )
        if text == self._shown:
            return
        # only a new height needs a new layout (which repaints far more than this line):
        # a different number of lines, or a length change where a line may wrap
        width = self.size.width
        relayout = text.plain.count("\n") != self._shown.plain.count("\n") or (
            len(text.plain) != len(self._shown.plain)
            and any(
                cell_len(line) >= width for t in (text, self._shown) for line in t.plain.split("\n")
            )
        )
        self._shown = text
        self.refresh(layout=relayout or not self.size.height)


class HostHeaders(Vertical):
    """A header per host, in the order hosts first appeared."""

    DEFAULT_CSS = """
    HostHeaders { height: auto; }
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._by_host: dict[str, HostHeader] = {}

    def header(self, host: str) -> HostHeader:
        h = self._by_host.get(host)
        if h is None:
            h = self._by_host[host] = HostHeader(host, clock=self._clock)
            self.mount(h)
        return h

    def show_snapshot(self, snap: Snapshot) -> None:
        h = self.header(snap.host)
        h.snapshot = snap
        h.refresh_text()

    def show_connection(self, conn: HostConnection) -> None:
        h = self.header(conn.host)
        h.connection = conn
        h.refresh_text()

    def show_error(self, report: ErrorReport) -> None:
        # errors of a host (not of one VM) belong in its header; others go to the pane
        if report.vm is not None or report.host is None:
            return
        h = self.header(report.host)
        h.error = report
        h.refresh_text()

    def tick(self) -> None:
        for h in self._by_host.values():
            h.refresh_text()

    def text(self) -> str:
        return "\n".join(str(h.render()) for h in self._by_host.values())
