"""A table drawn line by line on Textual's public API: a `ScrollView` whose
`render_line(y)` draws a line of labels, then one row per line, with a row cursor, keys
and the mouse. A subclass says what the rows are (`row_id`, `row_cells`). Drawn rows are
kept in an `LRUCache` by what their drawing depends on (row key and version, layout,
cursor/hover, styles, scroll), so a repaint redraws only rows that changed.

It draws what Textual's DataTable draws for one-line rows, a row cursor, no fixed rows
or columns and no row labels — the same styles (its component classes are named
`linetable--*`, styled in app.tcss) and padding — except that a text wider than its
column ends in '…' where DataTable cuts it short (tests/tui/test_line_table.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size, Spacing, clamp
from textual.scroll_view import ScrollView
from textual.strip import Strip

PAD = 1  # blank cells each side of a column's text
HEADER = 1  # lines of labels above the rows
STRIPS = 1_024  # drawn rows kept (a row's old versions age out)
CELLS = 8_192  # drawn cells kept, shared by every row with the same text in a column

RowId = tuple[Hashable, int]  # (row key, version): a new version whenever its text changes


@dataclass(slots=True)
class _Frame:
    """What every line of one paint shares, read once per paint."""

    look: tuple[Style, ...]  # (base, header, cursor, hover, header hover)
    width: int
    scroll: tuple[int, int]
    cursor_row: int
    hover_row: int | None  # -1: the labels; None: no hover shown
    # (column, cursor, hover) -> (pre style, post style) of a cell; column -1: the filler
    styles: dict[tuple[int, bool, bool], tuple[Style, Style]] = field(default_factory=dict)


def draw_cell(console: Console, value: Text, width: int, pre: Style, post: Style) -> list[Segment]:
    """One cell's line: its text cut to `width` less the padding (ending in '…'),
    justified, padded, styled as DataTable styles a cell (`pre` under the text's own
    style, `post` over it)."""
    inner = max(0, width - 2 * PAD)
    if value.cell_len > inner:
        value = value.copy()
        value.truncate(inner, overflow="ellipsis")
    segments = list(value.render(console))
    if value.style:  # Text.render leaves the text's own base style to the caller
        segments = list(Segment.apply_style(segments, console.get_style(value.style)))
    used = Segment.get_line_length(segments)
    if value.justify == "right" and used < inner:
        segments.insert(0, Segment(" " * (inner - used)))
    pad = Segment(" " * PAD)
    line = [pad, *Segment.adjust_line_length(segments, inner), pad]
    return list(Segment.apply_style(line, pre, post))


class LineTable(ScrollView):
    """Rows under a line of labels, a row cursor, keys and mouse; subclasses hold rows."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "linetable--header",
        "linetable--cursor",
        "linetable--hover",
        "linetable--header-hover",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("up", "cursor_up", "Cursor up", show=False),
        Binding("down", "cursor_down", "Cursor down", show=False),
        Binding("pageup", "cursor_page_up", "Page up", show=False),
        Binding("pagedown", "cursor_page_down", "Page down", show=False),
        Binding("ctrl+home", "cursor_first", "Top", show=False),
        Binding("ctrl+end", "cursor_last", "Bottom", show=False),
        Binding("home", "scroll_left_edge", "Home", show=False),
        Binding("end", "scroll_right_edge", "End", show=False),
    ]
    ALLOW_SELECT = False

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._labels: tuple[Text, ...] = ()
        self._widths: tuple[int, ...] = ()  # each column's, padding included
        self._edges: tuple[int, ...] = (0,)  # x of each column's left edge, then the end
        self._layout_version = 0
        self._cursor = 0
        self._hover: int | None = None
        self._frame: _Frame | None = None  # set while a paint is under way
        self._strip_cache: LRUCache[tuple[object, ...], Strip] = LRUCache(STRIPS)
        self._cell_cache: LRUCache[tuple[object, ...], list[Segment]] = LRUCache(CELLS)
        self._header_strip: tuple[tuple[object, ...], Strip] | None = None

    # --- what a subclass says -----------------------------------------------------------

    @property
    def row_count(self) -> int:
        raise NotImplementedError

    def row_id(self, index: int) -> RowId:
        """The row at `index` (display order), about to be drawn."""
        raise NotImplementedError

    def row_cells(self, index: int) -> Sequence[Text]:
        """Its cells, one per column (asked only when its drawing is not kept)."""
        raise NotImplementedError

    def header_clicked(self, column: int) -> None:
        """A label was clicked."""

    def row_chosen(self, index: int) -> None:
        """Enter on a row, or a click on the cursor's row."""

    def room_changed(self) -> None:
        """The width there is changed (a resize, the scrollbar came or went)."""

    # --- layout and repaints ---------------------------------------------------------------

    def room(self, columns: int) -> int | None:
        """Cells `columns` columns' text may take (padding excluded); None: not laid
        out yet. The vertical scrollbar takes its share."""
        if not self.size.width:
            return None
        return self.size.width - self.scrollbar_size_vertical - 2 * PAD * columns

    def set_columns(self, labels: Sequence[Text], widths: Sequence[int]) -> bool:
        """The labels and each column's text width; True when they changed (then the
        whole table is repainted)."""
        padded = tuple(w + 2 * PAD for w in widths)
        same = [(t.plain, t.justify) for t in labels] == [
            (t.plain, t.justify) for t in self._labels
        ]
        if same and padded == self._widths:
            return False
        self._labels, self._widths = tuple(labels), padded
        edges = [0]
        for w in padded:
            edges.append(edges[-1] + w)
        self._edges = tuple(edges)
        self._layout_version += 1
        self._resize_virtual()
        self.refresh()
        return True

    def rows_changed(self) -> None:
        """Rows came, went or changed places: every row line is repainted."""
        self._resize_virtual()
        self._cursor = clamp(self._cursor, 0, max(0, self.row_count - 1))
        width, height = self.size
        if height > HEADER:
            self.refresh(Region(0, HEADER, width, height - HEADER))

    def refresh_cells(self, spans: Iterable[tuple[int, int, int]]) -> None:
        """Repaint, of the rows in view, the cells of row `index` from column `first` to
        `last` for each (index, first, last); when they are most of the window, one
        region around them all (never the labels)."""
        width, height = self.size
        top, left = int(self.scroll_y), int(self.scroll_x)
        edges = list(self._edges)
        edges[-1] = max(edges[-1], width + left)  # the last column's filler to the edge
        regions: list[Region] = []
        for index, first, last in spans:
            y = index - top + HEADER
            if HEADER <= y < height:
                x0, x1 = max(0, edges[first] - left), min(width, edges[last + 1] - left)
                if x1 > x0:
                    regions.append(Region(x0, y, x1 - x0, 1))
        if len(regions) * 2 > height - HEADER:
            self.refresh(Region.from_union(regions))
        elif regions:
            self.refresh(*regions)

    def window(self) -> range:
        """The rows in view (every row is one line high)."""
        height = self.size.height - HEADER
        if height <= 0:
            return range(0)  # not laid out yet: rows are formatted when first drawn
        top = int(self.scroll_y)
        return range(top, min(self.row_count, top + height))

    def _resize_virtual(self) -> None:
        self.virtual_size = Size(self._edges[-1], self.row_count + HEADER)

    def _refresh_row(self, index: int) -> None:
        """Repaint one row's line (-1: the labels), if in view."""
        y = HEADER - 1 if index < 0 else index - int(self.scroll_y) + HEADER
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def on_resize(self, _event: events.Resize) -> None:
        self.room_changed()

    def watch_show_vertical_scrollbar(self) -> None:
        self.call_later(self.room_changed)  # the scrollbar takes a column of the room

    def notify_style_update(self) -> None:
        # CSS changed (theme, focus): what is kept was drawn with the old styles
        super().notify_style_update()
        self._strip_cache.clear()
        self._cell_cache.clear()
        self._header_strip = None
        self.refresh()

    # --- the cursor ------------------------------------------------------------------------

    @property
    def cursor_row(self) -> int:
        return self._cursor

    def move_cursor(self, *, row: int, scroll: bool = True, animate: bool = False) -> None:
        """Put the cursor on row `row` (kept within the rows) and, with `scroll`, scroll
        it into view."""
        new = clamp(row, 0, max(0, self.row_count - 1))
        old, self._cursor = self._cursor, new
        if old != new:
            self._refresh_row(old)
            self._refresh_row(new)
        if scroll:
            self._scroll_cursor_into_view(animate=animate)

    def _scroll_cursor_into_view(self, *, animate: bool = False) -> None:
        width = max(self.size.width, self._edges[-1])
        region = Region(int(self.scroll_x), self._cursor + HEADER, width, 1)
        self.scroll_to_region(region, animate=animate, spacing=Spacing(top=HEADER), force=True)

    def _set_hover(self, row: int | None) -> None:
        if row != self._hover:
            old, self._hover = self._hover, row
            for index in (old, row):
                if index is not None:
                    self._refresh_row(index)

    # --- keys and mouse --------------------------------------------------------------------

    def action_select_cursor(self) -> None:
        self._set_hover(None)
        if self.row_count:
            self.row_chosen(self._cursor)

    def action_cursor_up(self) -> None:
        self._set_hover(None)
        self.move_cursor(row=self._cursor - 1)

    def action_cursor_down(self) -> None:
        self._set_hover(None)
        self.move_cursor(row=self._cursor + 1)

    def action_cursor_page_up(self) -> None:
        """A page up: the view and the cursor move by the rows the window holds."""
        self._set_hover(None)
        height = self.scrollable_content_region.height - HEADER
        self.scroll_relative(y=-height, animate=False)
        self.move_cursor(row=self._cursor - min(height, self._cursor), scroll=False)

    def action_cursor_page_down(self) -> None:
        self._set_hover(None)
        height = self.scrollable_content_region.height - HEADER
        self.scroll_relative(y=height, animate=False, force=True)
        below = max(0, self.row_count - 1 - self._cursor)
        self.move_cursor(row=self._cursor + min(height, below), scroll=False)

    def action_cursor_first(self) -> None:
        self._set_hover(None)
        self.move_cursor(row=0)

    def action_cursor_last(self) -> None:
        self._set_hover(None)
        self.move_cursor(row=self.row_count - 1)

    def action_scroll_left_edge(self) -> None:
        self._set_hover(None)
        self.scroll_x = 0

    def action_scroll_right_edge(self) -> None:
        self._set_hover(None)
        self.scroll_x = self.max_scroll_x

    def _place(self, event: events.MouseEvent) -> tuple[int, int | None]:
        """(x in the table, the row under the mouse: -1 the labels, None no row)."""
        offset = event.get_content_offset(self)
        if offset is None:
            return 0, None
        x = offset.x + int(self.scroll_x)
        if offset.y < HEADER:
            return x, -1
        index = offset.y - HEADER + int(self.scroll_y)
        return x, (index if index < self.row_count else None)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        self._set_hover(self._place(event)[1])

    def on_leave(self, _event: events.Leave) -> None:
        self._set_hover(None)

    def on_click(self, event: events.Click) -> None:
        x, row = self._place(event)
        self._set_hover(row)
        if row == -1:
            edges = self._edges
            column = next((i for i in range(len(edges) - 1) if edges[i] <= x < edges[i + 1]), None)
            if column is not None:
                self.header_clicked(column)
        elif row is not None:
            event.stop()
            if row == self._cursor:
                self.row_chosen(row)
            else:
                self.move_cursor(row=row, animate=True)

    # --- drawing ---------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        self._frame = self._make_frame()
        try:
            return super().render_lines(crop)
        finally:
            self._frame = None

    def _make_frame(self) -> _Frame:
        style = self.get_component_rich_style
        return _Frame(
            look=(
                self.rich_style,
                style("linetable--header"),
                style("linetable--cursor"),
                style("linetable--hover"),
                style("linetable--header-hover"),
            ),
            width=self.size.width,
            scroll=(int(self.scroll_x), int(self.scroll_y)),
            cursor_row=self._cursor,
            hover_row=self._hover,
        )

    def render_line(self, y: int) -> Strip:
        frame = self._frame or self._make_frame()
        if y < HEADER:
            return self._header(frame)
        index = y - HEADER + frame.scroll[1]
        if index >= self.row_count:
            return Strip.blank(frame.width, frame.look[0])
        cursor, hover = index == frame.cursor_row, index == frame.hover_row
        key = (
            *self.row_id(index),
            self._layout_version,
            cursor,
            hover,
            frame.look,
            frame.scroll[0],
            frame.width,
        )
        strip = self._strip_cache.get(key)
        if strip is None:
            strip = self._draw_row(self.row_cells(index), cursor, hover, frame)
            self._strip_cache.set(key, strip)
        return strip

    def _styles(self, frame: _Frame, column: int, cursor: bool, hover: bool) -> tuple[Style, Style]:
        """A data cell's styles (column -1: the filler after the last column), as
        DataTable works them out: base, the mouse metadata, then hover and cursor; the
        cursor's colour over the text's own."""
        slot = (column, cursor, hover)
        found = frame.styles.get(slot)
        if found is None:
            base, _header, cursor_style, hover_style, _ = frame.look
            component = Style()
            if hover:
                component += hover_style
            if cursor:
                component += cursor_style
            if column < 0:
                pre = base + component + Style.from_meta({"out_of_bounds": True})
            else:
                pre = base + Style.from_meta({"column": column}) + component
            found = frame.styles[slot] = (pre, Style.from_color(color=component.color))
        return found

    def _cell(self, value: Text, width: int, styles: tuple[Style, Style]) -> list[Segment]:
        """A drawn cell, kept by its text and styles: a column's cells of the same text
        (and state) are drawn once for every row that holds it."""
        key = (value.plain, value.style, value.justify, tuple(value.spans), width, styles)
        segments = self._cell_cache.get(key)
        if segments is None:
            segments = draw_cell(self.app.console, value, width, *styles)
            self._cell_cache.set(key, segments)
        return segments

    def _draw_row(self, cells: Sequence[Text], cursor: bool, hover: bool, frame: _Frame) -> Strip:
        segments: list[Segment] = []
        for column, (value, width) in enumerate(zip(cells, self._widths, strict=True)):
            segments += self._cell(value, width, self._styles(frame, column, cursor, hover))
        fill = max(0, frame.width - self._edges[-1])
        segments.append(Segment(" " * fill, self._styles(frame, -1, cursor, hover)[0]))
        return self._cut(segments, self._edges[-1] + fill, frame)

    def _header(self, frame: _Frame) -> Strip:
        """The labels, styled as DataTable styles its header row."""
        hover = frame.hover_row == -1
        key = (self._layout_version, hover, frame.look, frame.scroll[0], frame.width)
        if self._header_strip is not None and self._header_strip[0] == key:
            return self._header_strip[1]
        _base, header, _cursor, hover_style, header_hover = frame.look
        component = Style() + hover_style + header_hover if hover else Style()
        post = Style.from_color(color=component.color)
        segments: list[Segment] = []
        for column, (label, width) in enumerate(zip(self._labels, self._widths, strict=True)):
            pre = header + Style.from_meta({"column": column}) + component
            segments += draw_cell(self.app.console, label, width, pre, post)
        fill = max(0, frame.width - self._edges[-1])
        extend = header + component + Style.from_meta({"out_of_bounds": True})
        segments.append(Segment(" " * fill, extend))
        strip = self._cut(segments, self._edges[-1] + fill, frame)
        self._header_strip = (key, strip)
        return strip

    @staticmethod
    def _cut(segments: list[Segment], length: int, frame: _Frame) -> Strip:
        """The part of a line in view, as wide as the table."""
        x = frame.scroll[0]
        strip = Strip(segments, length).crop(x, x + frame.width)
        return strip.adjust_cell_length(frame.width, frame.look[0]).simplify()
