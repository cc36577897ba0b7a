"""The Tasks view: running and recent background tasks — state, attempt n/m, next
retry, duration — and `c` to cancel the one under the cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from virtwatch.core.records import TaskState, TaskUpdate
from virtwatch.tui.format import UNKNOWN, fmt_duration
from virtwatch.tui.pane import Pane
from virtwatch.tui.ports import TaskControl
from virtwatch.tui.synced import Row, SyncedTable

TASK_STYLE = {
    TaskState.PENDING: "dim",
    TaskState.RUNNING: "cyan",
    TaskState.RETRYING: "yellow",
    TaskState.SUCCEEDED: "green",
    TaskState.FAILED: "bold red",
    TaskState.CANCELLED: "magenta",
}
TASK_COLUMNS = (
    ("state", "State"),
    ("name", "Task"),
    ("attempt", "Attempt"),
    ("retry", "Next retry"),
    ("duration", "Duration"),
    ("message", "Message"),
)


def task_rows(tasks: Sequence[TaskUpdate], now: float) -> list[Row]:
    """Unfinished first (oldest first), then finished (newest first)."""
    running = sorted((t for t in tasks if not t.state.finished), key=lambda t: t.at)
    done = sorted((t for t in tasks if t.state.finished), key=lambda t: t.at, reverse=True)
    rows: list[Row] = []
    for t in running + done:
        retry = UNKNOWN
        if t.state is TaskState.RETRYING and t.next_try_at is not None:
            retry = f"in {fmt_duration(max(0.0, t.next_try_at - now))}"
        end = t.at if t.state.finished else now
        duration = UNKNOWN if t.started_at is None else fmt_duration(end - t.started_at)
        message = t.message
        if t.error_code:
            message = f"{t.error_code}: {message}" if message else t.error_code
        rows.append(
            (
                t.task_id,
                [
                    Text(str(t.state), style=TASK_STYLE[t.state]),
                    Text(t.name),
                    Text(f"{t.attempt}/{t.max_attempts}", justify="right"),
                    Text(retry),
                    Text(duration, justify="right"),
                    Text(message),
                ],
            )
        )
    return rows


class TasksScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel_task", "Cancel task"),
        Binding("escape,t", "close", "Back"),
    ]

    def __init__(
        self,
        tasks: Callable[[], Sequence[TaskUpdate]],
        control: TaskControl | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(id="tasks-screen")
        self._tasks = tasks
        self.control = control
        self._clock = clock

    def compose(self) -> ComposeResult:
        with Pane("Tasks", id="tasks-pane"):
            yield SyncedTable(TASK_COLUMNS, id="tasks-table")
            yield Static("", id="tasks-empty", markup=False)
        yield Footer()

    @property
    def table(self) -> SyncedTable:
        return self.query_one("#tasks-table", SyncedTable)

    def on_mount(self) -> None:
        self.redraw()
        self.table.focus()
        self.set_interval(1.0, self.redraw)

    def redraw(self) -> None:
        tasks = self._tasks()
        self.table.sync(task_rows(tasks, self._clock()))
        running = sum(1 for t in tasks if not t.state.finished)
        self.query_one("#tasks-pane", Pane).set_subtitle(
            f"{running} running · {len(tasks) - running} finished"
        )
        empty = self.query_one("#tasks-empty", Static)
        empty.display = not tasks
        empty.update(Text("no background tasks yet", style="dim"))

    def data_changed(self) -> None:
        self.redraw()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "cancel_task" and self.control is None)

    def action_cancel_task(self) -> None:
        key = self.table.selected_key()
        if key is None or self.control is None:
            return
        task = next((t for t in self._tasks() if t.task_id == key), None)
        if task is None or task.state.finished:
            self.notify("that task has already finished", title="tasks")
            return
        if self.control.cancel(key):
            self.notify(f"cancelling {task.name}", title="tasks", markup=False)
        else:
            self.notify(
                f"{task.name} could not be cancelled",
                title="tasks",
                severity="warning",
                markup=False,  # task names carry VM names
            )

    def action_close(self) -> None:
        self.dismiss(None)
