"""The Machines pane's table: one row per VM of every host, updated in place.

It keeps every VM it was told about (a model) and shows those the filter keeps,
sorted by one column (sort keys come from raw values, for every row). An update
formats only the rows on screen — a row scrolled out of view keeps its new sample
and is formatted when it is next drawn — and rewrites only the cells whose text
changed, repainting only those rows. Column widths follow the text the shown rows
hold now (a column shrinks when its widest text goes) and the room there is: short
of room, labels get shorter and State, Host, Name are cut with '…' (`rows.fit_widths`).
VM names come from untrusted places: every cell is a rich `Text`, never markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual._segment_tools import line_crop
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.geometry import Offset, Region, Size
from textual.message import Message
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import CellKey, ColumnKey, RowKey

from virtwatch.core.history import MetricHistory
from virtwatch.core.model import DomainSample, DomainState, Snapshot
from virtwatch.tui.ports import VmAction, VmRef
from virtwatch.tui.rows import (
    COLUMN_INDEX,
    SORTABLE,
    SPARK_WIDTH,
    Cells,
    Column,
    Query,
    SortValue,
    fit_widths,
    matches,
    parse_query,
    row_cells,
    sort_value,
    visible_columns,
)

STATE_STYLE = {
    DomainState.RUNNING: "green",
    DomainState.PAUSED: "yellow",
    DomainState.SHUTOFF: "dim",
    DomainState.CRASHED: "bold red",
    DomainState.BLOCKED: "yellow",
    DomainState.SHUTDOWN: "yellow",
    DomainState.PMSUSPENDED: "cyan",
}
DEFAULT_STALE_AFTER_S = 10.0
MAX_DRAWN_CELLS = 10_000  # rendered cells kept (one entry per cell, replaced on change)
MAX_DRAWN_ROWS = 1_000  # assembled rows kept (one entry per row, replaced on change)
LINE_CACHE = 256  # DataTable's line caches: a frame's lines (each change starts afresh)


class KeyedText(Text):
    """The mark cell: a `Text` that knows its row, so the table can sort by our model."""

    __slots__ = ("row_key",)

    def __init__(self, text: str, row_key: str) -> None:
        super().__init__(text, style="bold magenta")
        self.row_key = row_key


SegmentLines = list[list[Segment]]


SortKey = tuple[SortValue, str, str]


@dataclass(slots=True)
class _Row:
    host: str
    sample: DomainSample
    cells: Cells  # what the table holds for the row: its text when last formatted
    look: tuple[DomainState, bool]  # (state, stale) when last formatted: what styles use
    shown: bool
    sort_key: SortKey  # by the current sort column, from the raw sample
    dirty: bool = False  # sample, mark, activity or age moved on since `cells`


@dataclass(frozen=True, slots=True)
class _Frame:
    """What every line of one paint shares, read once rather than once per line."""

    style: Style  # the table's base style
    columns: tuple[tuple[ColumnKey, int], ...]  # (key, render width) in display order
    width: int  # their total
    plain: bool  # the layout `_assemble_row` draws
    size: Size  # the table's
    header: int  # lines above the rows
    scroll: Offset
    cursor_row: int
    hover_row: int
    state: tuple[object, ...]  # the rest a drawn row depends on (cursor and focus states)


@dataclass(frozen=True, slots=True)
class ApplyStats:
    added: int
    removed: int
    cells_updated: int  # cells rewritten (on screen) by this update
    resorted: bool = False
    deferred: int = 0  # changed rows out of view: formatted when next drawn


class MachineTable(DataTable[Text]):
    """Live VM table. `apply(snapshot)` diffs against what it shows."""

    DEFAULT_CSS = """
    MachineTable { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_mark", "Mark / unmark VM", show=False),
        Binding("o", "next_sort", "Sort by the next column", show=False),
        Binding("O", "reverse_sort", "Reverse the sort order", show=False),
        Binding("s", "vm('start')", "Start"),
        Binding("d", "vm('shutdown')", "Shutdown"),
        Binding("F", "vm('force_off')", "Force off"),
        Binding("r", "vm('reboot')", "Reboot"),
        Binding("p", "vm('pause')", "Pause"),
        Binding("u", "vm('resume')", "Resume"),
    ]

    class ActionRequested(Message):
        """An action key on the marked VMs (or the one under the cursor)."""

        def __init__(self, action: VmAction, targets: list[VmRef]) -> None:
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

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        history: MetricHistory | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self._clock = clock
        self.history = history
        self.stale_after_s = stale_after_s
        self._rows: dict[str, _Row] = {}
        self._hosts: dict[str, float] = {}  # host -> taken_at of its latest snapshot
        self._flagged: set[str] = set()  # hosts whose collector says they are stale
        self._columns: tuple[Column, ...] = visible_columns(multi_host=False)
        self._query: Query = parse_query("")
        self.filter_text = ""
        self.sort_column = "name"
        self.sort_reverse = False
        self.marked: set[str] = set()
        self._activity: dict[str, str] = {}
        self.tags: Mapping[str, Sequence[str]] = {}  # row key -> tags (domain details)
        self.read_only = False  # hides the action keys
        # rows whose cells were written since `_touch` -> (first, last) column written
        self._written: dict[str, tuple[int, int]] = {}
        # column -> {text width: how many shown rows hold a text that wide}
        self._counts: dict[str, dict[int, int]] = {}
        self._content: dict[str, int] = {}  # column -> its widest text on a shown row
        self._fit_dirty = False  # a column's widest text changed since `_fit`
        self._short_labels = False  # the table is short of room (see `rows.fit_widths`)
        # (row, column) -> (the Text drawn, what else the drawing depends on, lines)
        self._cells_drawn: dict[
            tuple[RowKey, ColumnKey], tuple[Text, tuple[object, ...], SegmentLines]
        ] = {}
        # (row, line) -> (what the assembly depends on, the assembled row)
        self._rows_drawn: dict[
            tuple[RowKey, int], tuple[tuple[object, ...], tuple[SegmentLines, SegmentLines]]
        ] = {}
        # DataTable keys these by its update count, which moves on with nearly every
        # update: entries of earlier counts are never used again, only kept alive
        self._line_cache.maxsize = LINE_CACHE
        self._row_render_cache.maxsize = LINE_CACHE
        self._row_renderable_cache.maxsize = LINE_CACHE
        self._row_version: dict[str, int] = {}  # row key -> new number when a cell changes
        self._versions = 0  # the last number handed out (never reused)
        self._widths_version = 0  # bumped when a column width or the columns change
        self._frame: _Frame | None = None  # set while a paint is under way
        self._strips_drawn: dict[RowKey, tuple[tuple[object, ...], Strip]] = {}  # row's line
        self._header_drawn: tuple[tuple[object, ...], Strip] | None = None
        # (row, column, base and cursor styles) -> a cell's style with the mouse metadata
        self._cell_styles: dict[tuple[int, int, Style, Style], Style] = {}

    # --- structure ------------------------------------------------------------

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for c in self._columns:
            self.add_column(self._label(c), key=c.key)

    def _label(self, c: Column, *, short: bool | None = None) -> Text:
        short = self._short_labels if short is None else short
        text = c.short if short and c.short else c.label
        if c.key == self.sort_column:
            text += " ▼" if self.sort_reverse else " ▲"
        return Text(text, justify="right" if c.numeric else "left")

    def _relabel(self) -> None:
        self._widths_version += 1
        self._fit_dirty = True  # the sort mark moved: labels' widths changed
        for c in self._columns:
            col = self.columns.get(c.key)  # type: ignore[call-overload]
            if col is not None:
                col.label = self._label(c)
        self._require_update_dimensions = True
        self.refresh()

    @staticmethod
    def row_key(host: str, uuid: str) -> str:
        return f"{host}/{uuid}"

    def _cell(self, key: str, row: _Row, c: Column) -> Text:
        """One cell of a row as `Text` (never markup), styled by state and staleness."""
        text = row.cells[COLUMN_INDEX[c.key]]
        if c.key == "mark":
            return KeyedText(text, key)
        state, stale = row.look
        style = STATE_STYLE.get(state, "") if c.key == "state" else ""
        if stale:
            style = f"{style} dim".strip()
        return Text(text, style=style, justify="right" if c.numeric else "left")

    def _styled(self, key: str, row: _Row) -> list[Text]:
        return [self._cell(key, row, c) for c in self._columns]

    def _show(self, key: str, row: _Row) -> None:
        """Add the row with the text it had when last formatted; when that is out of
        date (`dirty`) it is formatted when drawn."""
        self.add_row(*self._styled(key, row), key=key)
        row.shown = True
        self._new_version(key)  # new cells
        self._count(row.cells, 1)

    def _hide(self, key: str, row: _Row) -> None:
        self.remove_row(key)
        row.shown = False
        self._count(row.cells, -1)

    # --- widths ---------------------------------------------------------------

    def _count(self, cells: Cells, sign: int) -> None:
        """A row's texts come (1) or go (-1) from the shown rows."""
        for c in self._columns:
            width = cell_len(cells[COLUMN_INDEX[c.key]])
            if sign > 0:
                self._recount(c.key, None, width)
            else:
                self._recount(c.key, width, None)

    def _recount(self, column: str, old: int | None, new: int | None) -> None:
        """One shown cell's text went from `old` to `new` cells wide (None: no cell)."""
        counts = self._counts.setdefault(column, {})
        top = self._content.get(column, 0)
        if old is not None:
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
        if new is not None:
            counts[new] = counts.get(new, 0) + 1
        if new is not None and new > top:
            top = new
        elif old == top and old not in counts:
            top = max(counts, default=0)  # the widest text went: the column may shrink
        else:
            return
        self._content[column] = top
        self._fit_dirty = True
        self._require_update_dimensions = True

    def _fit(self) -> bool:
        """Set the columns' widths (and labels) from the widest text each shows now and
        the room there is; True when any changed."""
        self._fit_dirty = False
        padding = 2 * self.cell_padding
        width = self.size.width - self.scrollbar_size_vertical
        room = width - padding * len(self._columns) if self.size.width else None
        labels = [
            (
                cell_len(self._label(c, short=False).plain),
                cell_len(self._label(c, short=True).plain),
            )
            for c in self._columns
        ]
        content = [self._content.get(c.key, 0) for c in self._columns]
        fit = fit_widths(self._columns, content, labels, room)
        changed = fit.short_labels != self._short_labels
        self._short_labels = fit.short_labels
        for c, w in zip(self._columns, fit.widths, strict=True):
            col = self.columns.get(c.key)  # type: ignore[call-overload]
            if col is None:
                continue
            if changed:
                col.label = self._label(c)
            if col.content_width != w:
                col.content_width = w
                changed = True
        return changed

    def on_resize(self, _event: events.Resize) -> None:
        self._update_dimensions(())

    def watch_show_vertical_scrollbar(self) -> None:
        # the scrollbar takes a column of the room
        self.call_later(self._update_dimensions, ())

    def _rebuild(self) -> None:
        """Columns changed (a second host appeared): lay the table out again."""
        cursor = self._key_at_cursor()
        self.clear(columns=True)
        self._counts.clear()
        self._content.clear()
        self._fit_dirty = True
        self._widths_version += 1
        self._add_columns()
        for key, row in self._rows.items():
            row.shown = False
            if self._matches(key, row):
                self._show(key, row)
        self._resort(keep=cursor)

    # --- data -----------------------------------------------------------------

    def _matches(self, key: str, row: _Row) -> bool:
        return matches(self._query, row.host, row.sample, self.tags.get(key, ()))

    def _stale_s(self, host: str, now: float) -> float | None:
        age = now - self._hosts.get(host, now)
        return age if age > self.stale_after_s or host in self._flagged else None

    def _cells(self, key: str, host: str, d: DomainSample, now: float) -> Cells:
        spark: Sequence[float] = ()
        if self.history is not None and d.state.is_active:
            spark = self.history.sparkline(host, d.uuid, "cpu_pct", SPARK_WIDTH)
        return row_cells(
            host,
            d,
            now,
            spark=spark,
            marked=key in self.marked,
            activity=self._activity.get(key),
            stale_s=self._stale_s(host, now),
        )

    def _format(self, key: str, row: _Row, now: float) -> int:
        """Bring a row's text up to date with its sample; rewrite (if shown) the cells
        whose text or look changed. Returns how many cells were rewritten."""
        row.dirty = False
        old, old_look = row.cells, row.look
        row.cells = self._cells(key, row.host, row.sample, now)
        row.look = (row.sample.state, self._stale_s(row.host, now) is not None)
        if row.shown and (old != row.cells or old_look != row.look):
            return self._update(key, row, old, old_look)
        return 0

    def _update(self, key: str, row: _Row, old: Cells, old_look: tuple[DomainState, bool]) -> int:
        """Write the cells of a shown row whose text (or look) changed.

        Writes go straight into the table's cell store; the rows written are repainted
        once per batch (`_touch`), not once per cell as `update_cell` does: with 1,000
        rows that per-call refresh was most of the cost of an update."""
        restyle = old_look != row.look
        data = self._data[key]  # type: ignore[index]  # RowKey hashes and compares as str
        n = 0
        first, last = len(self._columns), -1
        for i, c in enumerate(self._columns):
            idx = COLUMN_INDEX[c.key]
            if restyle or old[idx] != row.cells[idx]:
                first, last = min(first, i), i
                data[c.key] = self._cell(key, row, c)  # type: ignore[index]
                before, width = cell_len(old[idx]), cell_len(row.cells[idx])
                if before != width:
                    self._recount(c.key, before, width)
                n += 1
        if n:
            self._new_version(key)
            was = self._written.get(key, (first, last))
            self._written[key] = (min(first, was[0]), max(last, was[1]))
        return n

    def _new_version(self, key: str) -> None:
        self._versions += 1
        self._row_version[key] = self._versions

    def _visible_keys(self) -> list[str]:
        """Keys of the rows in the table's window (every row is one line high)."""
        height = self.size.height - (self.header_height if self.show_header else 0)
        if height <= 0 or not self.row_count:
            return []  # not laid out yet: rows are formatted when first drawn
        top = int(self.scroll_y)
        get_key = self._row_locations.get_key
        keys = (get_key(i) for i in range(top, min(self.row_count, top + height)))
        return [k.value for k in keys if k is not None and k.value is not None]

    def _settle(self) -> tuple[int, int]:
        """Format the changed rows on screen now; leave the others for when they are
        drawn. Returns (cells rewritten, rows left to format)."""
        now = self._clock()
        n = 0
        rows = self._rows
        for key in self._visible_keys():
            row = rows.get(key)
            if row is not None and row.dirty:
                n += self._format(key, row, now)
        deferred = sum(1 for r in rows.values() if r.dirty and r.shown)
        if deferred:
            # rows out of view changed: DataTable's line cache (keyed by this count)
            # must not serve their old lines when they scroll into view
            self._update_count += 1
        if self._fit_dirty:
            self._update_dimensions(())  # a column's widest text changed: widths now
        self._touch()
        return n, deferred

    def _ensure(self, key: str, *, drawing: bool = False) -> None:
        """Format a row about to be drawn or read, if it changed since."""
        row = self._rows.get(key)
        if row is not None and row.dirty:
            self._format(key, row, self._clock())
            if drawing:  # drawn right now, so it need not be repainted again
                self._written.pop(key, None)
            if self._fit_dirty:
                self._measure_soon()  # a column's widest text changed: widths when idle

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[SegmentLines, SegmentLines]:
        """DataTable re-assembles every visible row after any change; this keeps a row's
        segments while its cells, its position, the widths and the cursor/hover on it
        are the same, so a tick that changes five rows re-assembles five rows. A row
        that changed while out of view is formatted here, when it is first drawn."""
        row_index = self._row_locations.get(row_key)
        if row_index is None or row_key is self._header_row_key:
            return super()._render_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        self._ensure(row_key.value or "", drawing=True)
        slot = (row_key, line_no)
        key = (
            row_index,
            base_style,
            self._row_version.get(row_key.value or "", 0),
            self._widths_version,
            cursor_location.row == row_index,
            hover_location.row == row_index,
            self.cursor_type,
            self.show_cursor,
            self._show_hover_cursor,
            self._pseudo_class_state,
            self.scroll_x,  # fixed and scrolling parts are split by the horizontal scroll
            self.size.width,  # the last column is padded out to the table's width
        )
        hit = self._rows_drawn.get(slot)
        if hit is not None and hit[0] == key:
            return hit[1]
        frame = self._frame
        if frame is None or line_no or not self._plain_layout():
            pair = super()._render_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        else:
            pair = self._assemble_row(
                row_key,
                row_index,
                base_style,
                cursor_location.row == row_index,
                hover_location.row == row_index,
                frame,
            )
        if len(self._rows_drawn) > MAX_DRAWN_ROWS:
            self._rows_drawn.clear()
        self._rows_drawn[slot] = (key, pair)
        return pair

    def _plain_layout(self) -> bool:
        """The table as this pane builds it: row cursor, one-line rows, no labels, no
        fixed rows or columns, no zebra stripes (`_assemble_row` draws only this)."""
        return (
            self.cursor_type == "row"
            and not self.fixed_columns
            and not self.fixed_rows
            and not self.zebra_stripes
            and not self._should_render_row_labels
        )

    def _assemble_row(
        self,
        row_key: RowKey,
        row_index: int,
        base_style: Style,
        cursor: bool,
        hover: bool,
        frame: _Frame,
    ) -> tuple[SegmentLines, SegmentLines]:
        """A data row as DataTable assembles it in `_render_line_in_row` for this
        layout, with the column widths and base style read once per frame rather than
        once per row."""
        cells: SegmentLines = [
            self._cell_lines(row_key, key, row_index, i, base_style, width, cursor, hover)[0]
            for i, (key, width) in enumerate(frame.columns)
        ]
        extend, _ = self._get_styles_to_render_cell(
            False,
            False,
            False,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            False,
            False,
        )
        extend = base_style + extend
        extend += Style.from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
        cells.append([Segment(" " * max(0, frame.size.width - frame.width), extend)])
        return [], cells

    def notify_style_update(self) -> None:
        # CSS changed (theme, focus): the component styles drawn into cells may differ
        self._cells_drawn.clear()
        self._rows_drawn.clear()
        self._strips_drawn.clear()
        self._cell_styles.clear()
        self._header_drawn = None
        super().notify_style_update()

    def render_lines(self, crop: Region) -> list[Strip]:
        # what DataTable works out again for every line (or cell), once per frame
        self._pseudo_class_state = self.get_pseudo_class_state()
        columns = tuple((c.key, c.get_render_width(self)) for c in self.ordered_columns)
        self._frame = _Frame(
            style=self.rich_style,
            columns=columns,
            width=sum(w for _, w in columns),
            plain=self._plain_layout(),
            size=self.size,
            header=self.header_height if self.show_header else 0,
            scroll=self.scroll_offset,
            cursor_row=self.cursor_coordinate.row,
            hover_row=self.hover_coordinate.row,
            state=(
                self.show_cursor,
                self._show_hover_cursor,
                self._pseudo_class_state,
                self.cursor_foreground_priority,
                self.cursor_background_priority,
            ),
        )
        try:
            return super().render_lines(crop)
        finally:
            self._frame = None

    def render_line(self, y: int) -> Strip:
        frame = self._frame
        if frame is None or not frame.plain:
            return super().render_line(y)
        if y < frame.header:
            # the labels: DataTable re-renders them after every update (its caches are
            # keyed by its update count); they change only with the sort or the widths
            key = (
                y,
                self._widths_version,
                frame.style,
                frame.columns,
                frame.size.width,
                frame.scroll.x,
                self.hover_coordinate,
                self.cursor_coordinate,
                frame.state,
            )
            if self._header_drawn is not None and self._header_drawn[0] == key:
                return self._header_drawn[1]
            x = frame.scroll.x
            strip = self._render_line(y, x, x + frame.size.width, frame.style)
            self._header_drawn = (key, strip)
            return strip
        index = y - frame.header + frame.scroll.y  # every row is one line high
        row_key = self._row_locations.get_key(index)
        if row_key is None:
            return Strip.blank(frame.size.width, frame.style)
        return self._row_strip(row_key, index, frame)

    def _row_strip(self, row_key: RowKey, index: int, frame: _Frame) -> Strip:
        """A data row's line as DataTable's `_render_line` makes it, kept per row while
        its cells, position, cursor/hover and the frame's layout stay the same."""
        self._ensure(row_key.value or "", drawing=True)
        cursor = frame.cursor_row == index
        hover = frame.hover_row == index
        key = (
            index,
            self._row_version.get(row_key.value or "", 0),
            cursor,
            hover,
            frame.style,
            frame.columns,
            frame.size.width,
            frame.scroll.x,
            frame.state,
        )
        hit = self._strips_drawn.get(row_key)
        if hit is not None and hit[0] == key:
            return hit[1]
        _, cells = self._assemble_row(row_key, index, frame.style, cursor, hover, frame)
        width, x = frame.size.width, frame.scroll.x
        segments = line_crop(list(chain.from_iterable(cells)), x, x + width, width)
        strip = Strip(segments).adjust_cell_length(width, frame.style).simplify()
        if len(self._strips_drawn) > MAX_DRAWN_ROWS:
            self._strips_drawn.clear()
        self._strips_drawn[row_key] = (key, strip)
        return strip

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        """DataTable's own cache forgets every cell whenever any cell changes; this one
        keeps a cell's rendering while the cell holds the same `Text` object, so a tick
        that changes the CPU column re-renders that column, not every visible cell."""
        if row_index < 0 or column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        return self._cell_lines(
            row_key, column_key, row_index, column_index, base_style, width, cursor, hover
        )

    def _cell_lines(
        self,
        row_key: RowKey,
        column_key: ColumnKey,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool,
        hover: bool,
    ) -> SegmentLines:
        value = self._data[row_key][column_key]
        slot = (row_key, column_key)
        key = (
            row_index,  # part of the mouse metadata DataTable adds to the style
            base_style,
            width,
            cursor,
            hover,
            self._show_hover_cursor,
            self._pseudo_class_state,
        )
        hit = self._cells_drawn.get(slot)
        # the entry holds `value`, so its id cannot have been reused
        if hit is not None and hit[0] is value and hit[1] == key:
            return hit[2]
        lines = self._draw_cell(value, row_index, column_index, base_style, width, cursor, hover)
        if len(self._cells_drawn) > MAX_DRAWN_CELLS:
            self._cells_drawn.clear()
        self._cells_drawn[slot] = (value, key, lines)
        return lines

    def _draw_cell(
        self,
        value: Text,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool,
        hover: bool,
    ) -> SegmentLines:
        """One-line cells drawn directly as segments (what DataTable draws through
        Padding and console.render_lines, at a fraction of the cost): the same
        component styles, the same row/column metadata for the mouse. A text wider
        than its column (cut by `rows.fit_widths`) ends in '…'."""
        component_style, post_style = self._get_styles_to_render_cell(
            False,
            False,
            row_index < self.fixed_rows or column_index < self.fixed_columns,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        where = (row_index, column_index, base_style, component_style)
        pre = self._cell_styles.get(where)
        if pre is None:
            pre = base_style + Style.from_meta({"row": row_index, "column": column_index})
            pre += component_style
            if len(self._cell_styles) > MAX_DRAWN_CELLS:
                self._cell_styles.clear()
            self._cell_styles[where] = pre
        pad = " " * self.cell_padding
        inner = max(0, width - 2 * self.cell_padding)
        console = self.app.console
        if value.cell_len > inner:
            value = value.copy()
            value.truncate(inner, overflow="ellipsis")
        segments = list(value.render(console))
        if value.style:  # Text.render leaves the text's own base style to the caller
            segments = list(Segment.apply_style(segments, console.get_style(value.style)))
        used = Segment.get_line_length(segments)
        if value.justify == "right" and used < inner:
            segments.insert(0, Segment(" " * (inner - used)))
        line = [Segment(pad), *Segment.adjust_line_length(segments, inner), Segment(pad)]
        return [list(Segment.apply_style(line, pre, post_style))]

    def _touch(self) -> None:
        """Repaint the cells written since the last call: per row, the span from the
        first to the last column written; when they are most of the window, one region
        around them all (never the labels)."""
        written, self._written = self._written, {}
        if not written:
            return
        self._update_count += 1
        header = self.header_height if self.show_header else 0
        width, height = self.size
        top, left = int(self.scroll_y), int(self.scroll_x)
        edges = [0]  # x of each column's left edge, and of the last one's right edge
        for column in self.ordered_columns:
            edges.append(edges[-1] + column.get_render_width(self))
        edges[-1] = max(edges[-1], width + left)  # the last column's filler to the edge
        spans: list[Region] = []
        for key, (first, last) in written.items():
            index = self._row_locations.get(RowKey(key))
            y = None if index is None else index - top + header
            if y is not None and header <= y < height:
                x0, x1 = max(0, edges[first] - left), min(width, edges[last + 1] - left)
                if x1 > x0:
                    spans.append(Region(x0, y, x1 - x0, 1))
        if len(spans) * 2 > height - header:
            self.refresh(Region.from_union(spans))
        elif spans:
            self.refresh(*spans)

    def apply(self, snap: Snapshot) -> ApplyStats:
        """Show `snap`'s VMs of `snap.host`: add and remove rows, keep every row's sample
        and sort key, and rewrite the changed cells of the rows on screen (the others
        when they are next drawn)."""
        now = self._clock()
        host = snap.host
        self._hosts[host] = snap.taken_at
        if getattr(snap, "stale", False):
            self._flagged.add(host)
        else:
            self._flagged.discard(host)
        if len(self._hosts) > 1 and not any(c.key == "host" for c in self._columns):
            self._columns = visible_columns(multi_host=True)
            self._rebuild()
        cursor = self._key_at_cursor()
        stale = self._stale_s(host, now) is not None
        prefix = f"{host}/"
        wanted = {self.row_key(host, d.uuid): d for d in snap.domains}
        removed = added = 0
        sort_dirty = False
        column = self.sort_column
        filtering = not self._query.empty
        rows = self._rows
        for key in [k for k in rows if k.startswith(prefix) and k not in wanted]:
            row = rows.pop(key)
            if row.shown:
                self._hide(key, row)
                removed += 1
            self.marked.discard(key)
            self._activity.pop(key, None)
            self._row_version.pop(key, None)
        for key, d in wanted.items():
            existing = rows.get(key)
            if existing is None:
                # formatted at once: a new row's text sets its columns' widths
                cells = self._cells(key, host, d, now)
                row = rows[key] = _Row(
                    host, d, cells, (d.state, stale), False, sort_value(column, host, d)
                )
                if self._matches(key, row):
                    self._show(key, row)
                    added += 1
                    sort_dirty = True
                continue
            row = existing
            old = row.sample
            row.sample = d
            row.dirty = True
            sort_key = sort_value(column, host, d)
            if sort_key != row.sort_key:
                row.sort_key = sort_key
                sort_dirty = sort_dirty or row.shown
            if filtering and (d.name, d.state, d.state_text) != (
                old.name,
                old.state,
                old.state_text,
            ):
                keep = self._matches(key, row)
                if keep and not row.shown:
                    self._show(key, row)
                    added += 1
                    sort_dirty = True
                elif row.shown and not keep:
                    self._hide(key, row)
                    removed += 1
        if sort_dirty:
            self._resort(keep=cursor)
        updated, deferred = self._settle()
        if added:
            self._measure_soon()
        return ApplyStats(added, removed, updated, sort_dirty, deferred)

    def _measure_soon(self) -> None:
        """DataTable measures new rows when it is next idle; make sure that moment comes
        even when nothing else happens to this table."""
        self.call_later(self.check_idle)

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """Widths come from `_fit` (DataTable would measure the new rows again and only
        ever widen a column); DataTable works out the scrollable size from them. Its
        rows here are one line high and unlabelled, which is all it learns from them."""
        changed = self._fit()
        super()._update_dimensions(())
        if changed:
            # DataTable caches rendered rows by its update count, not by column widths
            self._widths_version += 1
            self._update_count += 1
            self.refresh()

    def _update_column_widths(self, updated_cells: set[CellKey]) -> None:
        # no measuring: the shown rows' text widths are counted as they change
        self._require_update_dimensions = True

    def refresh_ages(self) -> int:
        """Re-evaluate staleness (call about once a second); returns cells updated."""
        now = self._clock()
        for row in self._rows.values():
            if row.look[1] or self._stale_s(row.host, now) is not None:
                row.dirty = True
        return self._settle()[0]

    def _refresh_row(self, *keys: str) -> None:
        """Rows whose mark or activity changed: redrawn now if on screen."""
        for key in keys:
            row = self._rows.get(key)
            if row is not None:
                row.dirty = True
        self._settle()

    # --- filter, sort, marks, activity ------------------------------------------

    def set_filter(self, text: str) -> None:
        """Show only the VMs `text` matches (see `rows.Query`); "" shows all."""
        self.filter_text = text
        self._query = parse_query(text)
        cursor = self._key_at_cursor()
        for key, row in self._rows.items():
            keep = self._matches(key, row)
            if keep and not row.shown:
                self._show(key, row)
            elif row.shown and not keep:
                self._hide(key, row)
        self._resort(keep=cursor)
        self._settle()
        self._measure_soon()

    def sort_by(self, column: str, *, reverse: bool | None = None) -> None:
        """Sort by `column`; choosing the current column again flips the order."""
        if column not in SORTABLE:
            raise ValueError(f"cannot sort by {column!r}; one of {', '.join(SORTABLE)}")
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        if column != self.sort_column:
            for row in self._rows.values():
                row.sort_key = sort_value(column, row.host, row.sample)
        self.sort_column, self.sort_reverse = column, reverse
        self._relabel()
        self._resort(keep=self._key_at_cursor())
        self._settle()
        self.post_message(self.SortChanged(column, reverse))

    def _resort(self, *, keep: str | None) -> None:
        rows = self._rows

        def key_of(cell: Text) -> SortKey:
            assert isinstance(cell, KeyedText)
            return rows[cell.row_key].sort_key

        if self.row_count:
            self.sort("mark", key=key_of, reverse=self.sort_reverse)
        if keep is not None and keep in rows and rows[keep].shown:
            index = self.get_row_index(keep)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False, scroll=False)

    def _key_at_cursor(self) -> str | None:
        if not self.row_count or not self.is_valid_row_index(self.cursor_row):
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return key

    def set_activity(self, host: str, uuid: str, text: str | None) -> None:
        """Show an action's progress in the VM's state cell (None clears it)."""
        key = self.row_key(host, uuid)
        if text is None:
            self._activity.pop(key, None)
        else:
            self._activity[key] = text
        self._refresh_row(key)

    def activity(self, host: str, uuid: str) -> str | None:
        return self._activity.get(self.row_key(host, uuid))

    def toggle_mark(self, key: str) -> None:
        if key in self.marked:
            self.marked.discard(key)
        elif key in self._rows:
            self.marked.add(key)
        self._refresh_row(key)

    def clear_marks(self) -> None:
        keys = list(self.marked)
        self.marked.clear()
        self._refresh_row(*keys)

    def set_tags(self, tags: Mapping[str, Sequence[str]]) -> None:
        self.tags = tags
        self.set_filter(self.filter_text)

    # --- what is selected ---------------------------------------------------------

    def ref(self, key: str) -> VmRef | None:
        row = self._rows.get(key)
        return None if row is None else VmRef(row.host, row.sample.uuid, row.sample.name)

    def selected(self) -> VmRef | None:
        key = self._key_at_cursor()
        return None if key is None else self.ref(key)

    def targets(self) -> list[VmRef]:
        """Marked VMs (in table order), else the one under the cursor."""
        if self.marked:
            refs = [self.ref(k) for k in self.marked]
            ordered = sorted((r for r in refs if r is not None), key=lambda r: r.name)
            return ordered
        sel = self.selected()
        return [] if sel is None else [sel]

    def sample(self, host: str, uuid: str) -> DomainSample | None:
        row = self._rows.get(self.row_key(host, uuid))
        return None if row is None else row.sample

    def shown(self) -> dict[str, Cells]:
        """What each shown row says, by row key (tests and headless views). Formats
        the rows that changed out of view."""
        now = self._clock()
        for key, row in self._rows.items():
            if row.shown and row.dirty:
                self._format(key, row, now)
        self._touch()
        return {k: r.cells for k, r in self._rows.items() if r.shown}

    def get_cell(self, row_key: RowKey | str, column_key: ColumnKey | str) -> Text:
        self._ensure(row_key.value or "" if isinstance(row_key, RowKey) else row_key)
        self._touch()
        return super().get_cell(row_key, column_key)

    def get_row(self, row_key: RowKey | str) -> list[Text]:
        self._ensure(row_key.value or "" if isinstance(row_key, RowKey) else row_key)
        self._touch()
        return super().get_row(row_key)

    def get_row_at(self, row_index: int) -> list[Text]:
        key = self._row_locations.get_key(row_index)
        if key is not None and key.value is not None:
            self._ensure(key.value)
            self._touch()
        return super().get_row_at(row_index)

    def shown_order(self) -> list[str]:
        """Row keys in display order."""
        return [row.key.value or "" for row in self.ordered_rows]

    def total(self) -> int:
        return len(self._rows)

    # --- input ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # False hides the key from the footer and makes it do nothing
        return not (action == "vm" and self.read_only)

    def action_vm(self, action: str) -> None:
        targets = self.targets()
        if targets:
            self.post_message(self.ActionRequested(VmAction(action), targets))

    def action_toggle_mark(self) -> None:
        key = self._key_at_cursor()
        if key is not None:
            self.toggle_mark(key)
            if self.cursor_row < self.row_count - 1:
                self.move_cursor(row=self.cursor_row + 1)

    def action_next_sort(self) -> None:
        keys = [c.key for c in self._columns if c.key in SORTABLE]
        i = keys.index(self.sort_column) if self.sort_column in keys else -1
        self.sort_by(keys[(i + 1) % len(keys)], reverse=self.sort_reverse)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = event.column_key.value
        if key in SORTABLE:
            self.sort_by(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        ref = self.ref(event.row_key.value or "")
        if ref is not None:
            self.post_message(self.Opened(ref))
