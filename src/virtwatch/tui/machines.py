"""The Machines pane's table: one line per VM of every host, updated in place.

`machine_rows.MachineRows` holds the rows (filter, sort, marks, what each row says, the
columns' fit, which rows changed); this widget draws them with `line_table.LineTable`
on Textual's public line API. An update formats only the rows on screen — a row out of
view keeps its new sample and is formatted when next drawn — and repaints only the
cells whose text changed. Column widths follow the text the shown rows hold now and the
room there is (`rows.fit_widths`). VM names come from untrusted places: every cell is a
rich `Text`, never markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message

from virtwatch.core.collect.history import MetricHistory
from virtwatch.core.model import DomainSample, DomainState, Snapshot
from virtwatch.core.ops.actions import Action
from virtwatch.tui.action_flow import ACTION_BINDINGS
from virtwatch.tui.line_table import LineTable, RowId
from virtwatch.tui.machine_rows import (
    DEFAULT_STALE_AFTER_S,
    Layout,
    MachineRows,
    Row,
    row_key,
)
from virtwatch.tui.ports import VmRef
from virtwatch.tui.rows import ALL_COLUMNS, COLUMN_INDEX, SORTABLE, Cells, Column

STATE_STYLE = {
    DomainState.RUNNING: "green",
    DomainState.PAUSED: "yellow",
    DomainState.SHUTOFF: "dim",
    DomainState.CRASHED: "bold red",
    DomainState.BLOCKED: "yellow",
    DomainState.SHUTDOWN: "yellow",
    DomainState.PMSUSPENDED: "cyan",
}
_COLUMNS = {c.key: c for c in ALL_COLUMNS}


@dataclass(frozen=True, slots=True)
class ApplyStats:
    added: int
    removed: int
    cells_updated: int  # cells rewritten (on screen) by this update
    resorted: bool = False
    deferred: int = 0  # changed rows out of view: formatted when next drawn


def cell_text(row: Row, c: Column) -> Text:
    """One cell of a row as `Text` (never markup), styled by state and staleness."""
    text = row.cells[COLUMN_INDEX[c.key]]
    if c.key == "mark":
        return Text(text, style="bold magenta")
    state, stale = row.look
    style = STATE_STYLE.get(state, "") if c.key == "state" else ""
    if stale:
        style = f"{style} dim".strip()
    return Text(text, style=style, justify="right" if c.numeric else "left")


class MachineTable(LineTable):
    """Live VM table. `apply(snapshot)` diffs against what it shows."""

    DEFAULT_CSS = """
    MachineTable { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_mark", "Mark / unmark VM", show=False),
        Binding("o", "next_sort", "Sort by the next column", show=False),
        Binding("O", "reverse_sort", "Reverse the sort order", show=False),
        *ACTION_BINDINGS,
    ]

    class ActionRequested(Message):
        """An action key on the marked VMs (or the one under the cursor)."""

        def __init__(self, action: Action, targets: list[VmRef]) -> None:
            super().__init__()
            self.action = action
            self.targets = targets

    class Opened(Message):
        """Enter on a VM: open its detail screen."""

        def __init__(self, ref: VmRef) -> None:
            super().__init__()
            self.ref = ref

    class SortChanged(Message):
        def __init__(self, column: str, reverse: bool) -> None:
            super().__init__()
            self.column = column
            self.reverse = reverse

    row_key = staticmethod(row_key)

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        history: MetricHistory | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._clock = clock
        self.model = MachineRows(history=history, stale_after_s=stale_after_s)
        self.read_only = False  # hides the action keys
        self.column_layout: Layout = self.model.fit(None)  # the columns as drawn

    # --- what the model holds, read by the dashboard -------------------------------

    @property
    def history(self) -> MetricHistory | None:
        return self.model.history

    @property
    def filter_text(self) -> str:
        return self.model.filter_text

    @property
    def marked(self) -> set[str]:
        return self.model.marked

    @property
    def tags(self) -> Mapping[str, Sequence[str]]:
        return self.model.tags

    @property
    def sort_column(self) -> str:
        return self.model.sort_column

    @property
    def sort_reverse(self) -> bool:
        return self.model.sort_reverse

    # --- the rows, for LineTable ---------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.model.order)

    def row_id(self, index: int) -> RowId:
        """A row about to be drawn: formatted now if it changed out of view."""
        key = self.model.order[index]
        row = self.model.rows[key]
        if row.dirty:
            self.model.ensure(key, self._clock(), drawing=True)
            if self.model.fit_dirty:
                self.call_later(self._refit)  # a column's widest text changed
        return key, row.version

    def row_cells(self, index: int) -> list[Text]:
        row = self.model.rows[self.model.order[index]]
        return [cell_text(row, c) for c in self.column_layout.columns]

    def on_mount(self) -> None:
        self._refit()

    def room_changed(self) -> None:
        self._refit()

    def _refit(self) -> bool:
        """Fit the columns to the shown text and the room; True when they changed."""
        layout = self.column_layout = self.model.fit(self.room(len(self.model.columns)))
        labels = [
            Text(label, justify="right" if c.numeric else "left")
            for c, label in zip(layout.columns, layout.labels, strict=True)
        ]
        return self.set_columns(labels, layout.widths)

    # --- updates -------------------------------------------------------------------------

    def apply(self, snap: Snapshot) -> ApplyStats:
        """Show `snap`'s VMs of `snap.host`: add and remove rows, keep every row's sample
        and sort key, and rewrite the changed cells of the rows on screen (the others
        when they are next drawn)."""
        now = self._clock()
        keep = self._key_at_cursor()
        applied = self.model.apply(snap, now)
        updated, deferred = self._settle(now, keep=keep)
        return ApplyStats(applied.added, applied.removed, updated, applied.resorted, deferred)

    def refresh_ages(self) -> int:
        """Re-evaluate staleness (call about once a second); returns cells updated."""
        now = self._clock()
        self.model.age(now)
        return self._settle(now)[0]

    def _settle(self, now: float, *, keep: str | None = None) -> tuple[int, int]:
        """After the model changed: the cursor stays on its VM (`keep`), the changed rows
        on screen are formatted, the columns fitted again when their widest text changed,
        and only what changed is repainted. Returns (cells rewritten, rows left to
        format when drawn)."""
        model = self.model
        moved = model.take_moved()
        if moved:
            self.rows_changed()
            index = None if keep is None else model.index_of(keep)
            if index is not None and index != self.cursor_row:
                self.move_cursor(row=index)
        order = model.order
        updated = model.format_rows([order[i] for i in self.window()], now)
        relaid = model.take_relaid()
        if model.fit_dirty or relaid:
            relaid = self._refit() or relaid
        written = model.take_written()
        if relaid:
            self.refresh()
        elif not moved and written:
            spans = ((model.index_of(k), first, last) for k, (first, last) in written.items())
            self.refresh_cells((i, first, last) for i, first, last in spans if i is not None)
        return updated, model.deferred()

    # --- filter, sort, marks, activity ------------------------------------------------------

    def set_filter(self, text: str) -> None:
        """Show only the VMs `text` matches (see `rows.Query`); "" shows all."""
        keep = self._key_at_cursor()
        self.model.set_filter(text)
        self._settle(self._clock(), keep=keep)

    def sort_by(self, column: str, *, reverse: bool | None = None) -> None:
        """Sort by `column`; choosing the current column again flips the order."""
        keep = self._key_at_cursor()
        self.model.sort_by(column, reverse=reverse)
        self._settle(self._clock(), keep=keep)
        self.post_message(self.SortChanged(self.sort_column, self.sort_reverse))

    def set_tags(self, tags: Mapping[str, Sequence[str]]) -> None:
        keep = self._key_at_cursor()
        self.model.set_tags(tags)
        self._settle(self._clock(), keep=keep)

    def set_activity(self, host: str, uuid: str, text: str | None) -> None:
        """Show an action's progress in the VM's state cell (None clears it)."""
        self.model.set_activity(row_key(host, uuid), text)
        self._settle(self._clock())

    def activity(self, host: str, uuid: str) -> str | None:
        return self.model.activity(row_key(host, uuid))

    def toggle_mark(self, key: str) -> None:
        self.model.toggle_mark(key)
        self._settle(self._clock())

    def clear_marks(self) -> None:
        self.model.clear_marks()
        self._settle(self._clock())

    # --- what is selected and shown --------------------------------------------------------

    def _key_at_cursor(self) -> str | None:
        order = self.model.order
        return order[self.cursor_row] if 0 <= self.cursor_row < len(order) else None

    def ref(self, key: str) -> VmRef | None:
        return self.model.ref(key)

    def selected(self) -> VmRef | None:
        key = self._key_at_cursor()
        return None if key is None else self.ref(key)

    def targets(self) -> list[VmRef]:
        """Marked VMs (by name), else the one under the cursor."""
        if self.marked:
            refs = [self.ref(k) for k in self.marked]
            return sorted((r for r in refs if r is not None), key=lambda r: r.name)
        sel = self.selected()
        return [] if sel is None else [sel]

    def sample(self, host: str, uuid: str) -> DomainSample | None:
        row = self.model.rows.get(row_key(host, uuid))
        return None if row is None else row.sample

    def shown(self) -> dict[str, Cells]:
        """What each shown row says, by row key (tests and headless views). Formats
        the rows that changed out of view."""
        now = self._clock()
        cells = self.model.shown_cells(now)
        self._settle(now)
        return cells

    def get_cell(self, key: str, column: str) -> Text:
        """A shown cell as drawn (before it is cut to its column's width)."""
        now = self._clock()
        row = self.model.ensure(key, now)
        self._settle(now)
        if row is None or not row.shown:
            raise KeyError(key)
        return cell_text(row, _COLUMNS[column])

    def shown_order(self) -> list[str]:
        """Row keys in display order."""
        return list(self.model.order)

    def total(self) -> int:
        return len(self.model.rows)

    # --- input ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # False hides the key from the footer and makes it do nothing
        return not (action == "vm" and self.read_only)

    def action_vm(self, action: str) -> None:
        targets = self.targets()
        if targets:
            self.post_message(self.ActionRequested(Action(action), targets))

    def action_toggle_mark(self) -> None:
        key = self._key_at_cursor()
        if key is not None:
            self.toggle_mark(key)
            if self.cursor_row < self.row_count - 1:
                self.move_cursor(row=self.cursor_row + 1)

    def action_next_sort(self) -> None:
        keys = [c.key for c in self.model.columns if c.key in SORTABLE]
        i = keys.index(self.sort_column) if self.sort_column in keys else -1
        self.sort_by(keys[(i + 1) % len(keys)], reverse=self.sort_reverse)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    def header_clicked(self, column: int) -> None:
        key = self.column_layout.columns[column].key
        if key in SORTABLE:
            self.sort_by(key)

    def row_chosen(self, index: int) -> None:
        ref = self.ref(self.model.order[index])
        if ref is not None:
            self.post_message(self.Opened(ref))
