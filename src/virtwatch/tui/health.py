"""The Health pane: every check's state, value, thresholds, last run and age; the
history of transitions; alerts that stay listed until acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import ContentSwitcher, Static

from virtwatch.core.records import HealthAlert, HealthResult, HealthState
from virtwatch.tui.format import UNKNOWN, fmt_age
from virtwatch.tui.pane import Pane
from virtwatch.tui.synced import Row, SyncedTable

HEALTH_STYLE = {
    HealthState.OK: "green",
    HealthState.WARN: "bold yellow",
    HealthState.CRIT: "bold red",
    HealthState.UNKNOWN: "dim",
}

_WORST_FIRST = {HealthState.CRIT: 0, HealthState.WARN: 1, HealthState.UNKNOWN: 2, HealthState.OK: 3}

CHECK_COLUMNS = (
    ("state", "State"),
    ("check", "Check"),
    ("subject", "Subject"),
    ("value", "Value"),
    ("limits", "Warn / crit"),
    ("last", "Last run"),
)
TRANSITION_COLUMNS = (
    ("at", "When"),
    ("check", "Check"),
    ("subject", "Subject"),
    ("change", "Change"),
    ("message", "Message"),
)


def _value(v: float | None, unit: str) -> str:
    if v is None:
        return UNKNOWN
    text = f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.1f}"
    return f"{text}{unit}" if unit in ("%", "s", "ms") else f"{text} {unit}".rstrip()


def check_rows(results: Sequence[HealthResult], now: float) -> list[Row]:
    """Worst first, then by check and subject."""
    ordered = sorted(results, key=lambda r: (_WORST_FIRST[r.state], r.check, r.subject))
    rows: list[Row] = []
    for r in ordered:
        state = Text(r.state.label, style=HEALTH_STYLE[r.state])
        if r.raw_state is not r.state:
            state.append(f" ({r.raw_state.label}?)", style="dim")
        limits = f"{_value(r.warn, r.unit)} / {_value(r.crit, r.unit)}"
        if r.warn is None and r.crit is None:
            limits = UNKNOWN
        rows.append(
            (
                f"{r.check}|{r.subject}",
                [
                    state,
                    Text(r.check),
                    Text(r.subject),
                    Text(_value(r.value, r.unit), justify="right"),
                    Text(limits, justify="right"),
                    Text(fmt_age(now - r.at)),
                ],
            )
        )
    return rows


def transition_rows(alerts: Sequence[HealthAlert], now: float) -> list[Row]:
    rows: list[Row] = []
    for i, a in enumerate(reversed(alerts)):
        change = Text(a.previous.label, style=HEALTH_STYLE[a.previous])
        change.append(" → ")
        change.append(a.current.label, style=HEALTH_STYLE[a.current])
        rows.append(
            (
                f"{a.at}|{a.check}|{a.subject}|{i}",
                [
                    Text(fmt_age(now - a.at)),
                    Text(a.check),
                    Text(a.subject),
                    change,
                    Text(a.message),
                ],
            )
        )
    return rows


def alerts_text(alerts: Sequence[HealthAlert]) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if not alerts:
        return text
    text.append(f"⚠ {len(alerts)} alert(s), a: acknowledge ", style="bold")
    for a in reversed(alerts[-3:]):
        text.append(f"· {a.check} ")
        text.append(a.current.label, style=HEALTH_STYLE[a.current])
        text.append(" ")
    return text


class HealthPane(Pane):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "acknowledge", "Acknowledge alerts"),
        Binding("h", "toggle_history", "Checks/history"),
    ]

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__("Health", id=id)
        self._clock = clock
        self.results: list[HealthResult] = []
        self.transitions: list[HealthAlert] = []
        self.alerts: list[HealthAlert] = []
        self._banner: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="health-alerts", markup=False)
        with ContentSwitcher(initial="health-checks", id="health-switcher"):
            yield SyncedTable(CHECK_COLUMNS, id="health-checks")
            yield SyncedTable(TRANSITION_COLUMNS, id="health-history")

    def show(
        self,
        results: Sequence[HealthResult],
        transitions: Sequence[HealthAlert],
        alerts: Sequence[HealthAlert],
    ) -> None:
        self.results = list(results)
        self.transitions = list(transitions)
        self.alerts = list(alerts)
        self.redraw()

    def redraw(self) -> None:
        now = self._clock()
        self.query_one("#health-checks", SyncedTable).sync(check_rows(self.results, now))
        self.query_one("#health-history", SyncedTable).sync(transition_rows(self.transitions, now))
        banner = self.query_one("#health-alerts", Static)
        text = alerts_text(self.alerts)
        if text != self._banner:  # an update lays the screen out again: only on change
            self._banner = text
            banner.update(text)
            banner.display = bool(self.alerts)
        worst = max(
            (r.state for r in self.results if r.state is not HealthState.UNKNOWN), default=None
        )
        self.set_subtitle(
            "no checks yet"
            if worst is None
            else f"{len(self.results)} checks · worst {worst.label}"
        )

    class AcknowledgeRequested(Message):
        """The admin acknowledged the listed alerts."""

    def action_acknowledge(self) -> None:
        self.post_message(self.AcknowledgeRequested())

    def action_toggle_history(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = (
            "health-history" if switcher.current == "health-checks" else "health-checks"
        )
        self.query_one(f"#{switcher.current}", SyncedTable).focus()
