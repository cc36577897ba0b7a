"""The Errors pane: one row per distinct error (de-duplicated, with a count), filtered
by severity and text; Enter opens the full record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from virtwatch.core.errors import Severity
from virtwatch.core.incidents import ErrorReport
from virtwatch.tui.format import fmt_age
from virtwatch.tui.pane import Pane
from virtwatch.tui.state import error_key
from virtwatch.tui.synced import Row, SyncedTable

SEVERITY_STYLE = {
    Severity.INFO: "dim",
    Severity.WARNING: "yellow",
    Severity.ERROR: "red",
    Severity.CRITICAL: "bold red",
}
ERROR_COLUMNS = (
    ("sev", "Sev"),
    ("code", "Code"),
    ("where", "Host / VM"),
    ("message", "Message"),
    ("count", "Count"),
    ("last", "Last seen"),
)


def where_text(report: ErrorReport) -> str:
    if report.host and report.vm:
        return f"{report.host}/{report.vm}"
    return report.vm or report.host or "—"


def error_rows(reports: Sequence[ErrorReport], now: float) -> list[Row]:
    rows: list[Row] = []
    for r in reports:
        e = r.error
        rows.append(
            (
                error_key(r),
                [
                    Text(e.severity.label, style=SEVERITY_STYLE.get(e.severity, "")),
                    Text(str(e.code)),
                    Text(where_text(r)),
                    Text(e.message),
                    Text(str(r.count), justify="right"),
                    Text(fmt_age(now - r.at)),
                ],
            )
        )
    return rows


class ErrorsPane(Pane):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "cycle_severity", "Min severity"),
    ]

    class Opened(Message):
        """Enter on an error: show the whole record."""

        def __init__(self, report: ErrorReport) -> None:
            super().__init__()
            self.report = report

    class FilterChanged(Message):
        def __init__(self, min_severity: Severity, text: str) -> None:
            super().__init__()
            self.min_severity = min_severity
            self.text = text

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__("Errors", id=id)
        self._clock = clock
        self.min_severity = Severity.INFO
        self.filter_text = ""
        self._reports: dict[str, ErrorReport] = {}
        self._total = 0

    def compose(self) -> ComposeResult:
        yield SyncedTable(ERROR_COLUMNS, id="errors-table")

    @property
    def table(self) -> SyncedTable:
        return self.query_one("#errors-table", SyncedTable)

    def show(self, reports: Sequence[ErrorReport], total: int) -> None:
        """`reports`: already filtered and ordered; `total`: how many exist unfiltered."""
        self._reports = {error_key(r): r for r in reports}
        self._total = total
        self.table.sync(error_rows(reports, self._clock()))
        parts = [f"{len(reports)} of {total}" if len(reports) != total else f"{total}"]
        if self.min_severity > Severity.INFO:
            parts.append(f"≥ {self.min_severity.label}")
        if self.filter_text:
            parts.append(f"/{self.filter_text}")
        self.set_subtitle(" · ".join(parts))

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self.post_message(self.FilterChanged(self.min_severity, text))

    def action_cycle_severity(self) -> None:
        order = list(Severity)
        self.min_severity = order[(order.index(self.min_severity) + 1) % len(order)]
        self.post_message(self.FilterChanged(self.min_severity, self.filter_text))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        report = self._reports.get(event.row_key.value or "")
        if report is not None:
            self.post_message(self.Opened(report))
