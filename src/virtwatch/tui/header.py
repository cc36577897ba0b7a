"""The host header: who we watch, how fresh the data is, and any notice (demo host)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.widgets import Static

from virtwatch.core.model import DomainState, Snapshot
from virtwatch.core.reports import ErrorReport
from virtwatch.tui.format import fmt_age, fmt_kib, fmt_pct


def header_text(snap: Snapshot | None, error: ErrorReport | None, now: float) -> Text:
    """The header's lines as plain `Text` (hostnames and messages are untrusted)."""
    if snap is None:
        line = Text("connecting…", style="dim")
    else:
        f = snap.facts
        running = sum(1 for d in snap.domains if d.state is DomainState.RUNNING)
        line = Text()
        line.append(snap.host, style="bold")
        line.append(
            f" · {f.hostname} · libvirt {f.libvirt_version} · {f.driver} {f.hypervisor_version}"
            f" · VMs {running} running / {len(snap.domains)}"
        )
        hs = snap.host_sample
        if hs is not None:
            line.append(
                f" · host CPU {fmt_pct(hs.cpu_pct).strip()}"
                f" · mem {fmt_kib(hs.mem_used_kib)} / {fmt_kib(hs.mem_total_kib)}"
            )
        line.append(f" · updated {fmt_age(now - snap.taken_at)}", style="dim")
    if error is not None and (snap is None or error.at >= snap.taken_at):
        line.append("\n")
        line.append(f"✖ {error.error.one_line()}", style="bold red")
    if snap is not None and snap.notice:
        line.append("\n")
        line.append(snap.notice, style="bold black on yellow")
    return line


class HostHeader(Static):
    DEFAULT_CSS = """
    HostHeader { height: auto; }
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self._clock = clock
        self.snapshot: Snapshot | None = None
        self.error: ErrorReport | None = None

    def on_mount(self) -> None:
        self.refresh_text()
        self.set_interval(1.0, self.refresh_text)

    def show(self, snap: Snapshot | None = None, error: ErrorReport | None = None) -> None:
        if snap is not None:
            self.snapshot = snap
        if error is not None:
            self.error = error
        self.refresh_text()

    def refresh_text(self) -> None:
        self.update(header_text(self.snapshot, self.error, self._clock()))
