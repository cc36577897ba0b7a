"""The Performance pane: each host's CPU and memory over the last minutes, and the
VMs using the most CPU now, as sparklines drawn from the in-memory rings.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

from virtwatch.core.collect.history import HOST, MetricHistory
from virtwatch.core.model import Snapshot
from virtwatch.tui.format import fmt_pct, sparkline
from virtwatch.tui.pane import Pane

LABEL = 12


def performance_text(
    snapshots: Mapping[str, Snapshot], history: MetricHistory, width: int, height: int
) -> Text:
    """Host lines first, then the top VMs by CPU as many as fit."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if not snapshots:
        text.append("waiting for the first snapshot…", style="dim")
        return text
    label = max(6, min(LABEL, width // 4))
    spark_w = max(3, width - label - 12)
    lines = 0
    for host, snap in sorted(snapshots.items()):
        hs = snap.host_sample
        if lines:
            text.append("\n")
        text.append(f"{host[: label - 1]:<{label}}", style="bold")
        if hs is None:
            text.append("no host sample", style="dim")
            lines += 1
            continue
        cpu = history.sparkline(host, HOST, "host.cpu_pct", spark_w)
        text.append("CPU ")
        text.append(sparkline(cpu, spark_w, top=100.0), style="cyan")
        text.append(f" {fmt_pct(hs.cpu_pct)}")
        mem = history.sparkline(host, HOST, "host.mem_used_kib", spark_w)
        text.append("\n" + " " * label + "MEM ")
        text.append(
            sparkline(mem, spark_w, top=float(hs.mem_total_kib or 0) or None), style="magenta"
        )
        pct = (
            None
            if hs.mem_used_kib is None or not hs.mem_total_kib
            else 100.0 * hs.mem_used_kib / hs.mem_total_kib
        )
        text.append(f" {fmt_pct(pct)}")
        lines += 2
    room = height - lines - 1
    busy = sorted(
        ((d.cpu_pct, host, d) for host, s in snapshots.items() for d in s.domains if d.cpu_pct),
        key=lambda t: (-(t[0] or 0.0), t[2].name),
    )
    if room > 0 and busy:
        text.append("\n")
        text.append("top CPU", style="bold")
        for _pct, host, d in busy[: room - 1 if room > 1 else 0]:
            spark = history.sparkline(host, d.uuid, "cpu_pct", spark_w)
            name = d.name if len(d.name) < label else d.name[: label - 2] + "…"
            text.append("\n")
            text.append(f"{name:<{label}}")
            text.append("    ")
            text.append(sparkline(spark, spark_w, top=100.0), style="green")
            text.append(f" {fmt_pct(d.cpu_pct)}")
    return text


class PerformanceView(Widget, can_focus=True):
    """Renders at its own size, so a maximised pane shows more VMs. Drawn line by line
    from its own `Text` lines: a new snapshot repaints only the lines that changed."""

    DEFAULT_CSS = """
    PerformanceView { height: 1fr; }
    """

    def __init__(self, history: MetricHistory, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history = history
        self.snapshots: Mapping[str, Snapshot] = {}
        self._lines_for = Size(0, 0)  # the size `_lines` were made for
        self._lines: list[Text] = []
        self._style = Style()  # the widget's style the strips were drawn with
        self._strips: dict[int, Strip] = {}  # line -> drawn

    def _make_lines(self) -> list[Text]:
        text = performance_text(self.snapshots, self.history, self.size.width, self.size.height)
        return list(text.split("\n"))

    def show(self, snapshots: Mapping[str, Snapshot]) -> None:
        """Repaint only the lines that changed (a full repaint re-renders every line)."""
        self.snapshots = snapshots
        lines = self._make_lines()
        if self.size != self._lines_for or len(lines) != len(self._lines):
            self._lines_for, self._lines = self.size, lines
            self._strips.clear()
            self.refresh()
            return
        changed = [
            y for y, pair in enumerate(zip(self._lines, lines, strict=True)) if pair[0] != pair[1]
        ]
        self._lines = lines
        for y in changed:
            self._strips.pop(y, None)
        if changed:
            self.refresh(*(Region(0, y, self.size.width, 1) for y in changed))

    def render_lines(self, crop: Region) -> list[Strip]:
        style = self.visual_style.rich_style  # once per paint, not once per line
        if self.size != self._lines_for:
            self._lines_for, self._lines = self.size, self._make_lines()
            self._strips.clear()
        if style != self._style:
            self._style = style
            self._strips.clear()
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        strip = self._strips.get(y)
        if strip is None:
            width, style = self._lines_for.width, self._style
            if y < len(self._lines):
                line = self._lines[y].copy()
                line.truncate(width, overflow="ellipsis")
                strip = Strip(Segment.apply_style(line.render(self.app.console), style))
            else:
                strip = Strip.blank(width, style)
            self._strips[y] = strip
        return strip


class PerformancePane(Pane):
    def __init__(self, history: MetricHistory, *, id: str | None = None) -> None:
        super().__init__("Performance", id=id)
        self._history = history

    def compose(self) -> ComposeResult:
        yield PerformanceView(self._history, id="performance-view")

    def show(self, snapshots: Mapping[str, Snapshot]) -> None:
        self.query_one(PerformanceView).show(snapshots)
