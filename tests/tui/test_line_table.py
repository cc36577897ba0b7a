"""LineTable draws what Textual's DataTable draws for the same rows (one line high, a
row cursor, app.tcss's styles): labels, cells, the cursor focused and not, the mouse's
hover; compared line by line, text and style, through public API only. One difference
is meant: a text wider than its column ends in '…' (DataTable cuts it short)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.widget import Widget
from textual.widgets import DataTable

import virtwatch.tui
from virtwatch.tui.line_table import LineTable, RowId

LABELS = [Text(" "), Text("Name ▲"), Text("State"), Text("CPU %", justify="right")]
WIDTHS = [1, 16, 17, 6]
ROWS = [
    [Text("●", style="bold magenta"), Text("web-01"), Text("running", style="green"),
     Text("23.4", justify="right")],
    [Text(" "), Text("[bold]x[/]"), Text("paused: I/O error", style="yellow"),
     Text("—", justify="right")],
    [Text(" "), Text("a-very-long-name"), Text("shut off", style="dim"),
     Text("", justify="right")],
]  # fmt: skip


class Rows(LineTable):
    """Fixed rows."""

    @property
    def row_count(self) -> int:
        return len(ROWS)

    def row_id(self, index: int) -> RowId:
        return index, 0

    def row_cells(self, index: int) -> list[Text]:
        return ROWS[index]

    def on_mount(self) -> None:
        self.set_columns(LABELS, WIDTHS)


class Both(App[None]):
    CSS_PATH: ClassVar[Any] = Path(virtwatch.tui.__file__).with_name("app.tcss")
    CSS = "DataTable, LineTable { height: 6; }"

    def compose(self) -> ComposeResult:
        stock: DataTable[Text] = DataTable(cursor_type="row", id="stock")
        for key, (label, width) in enumerate(zip(LABELS, WIDTHS, strict=True)):
            stock.add_column(label, width=width, key=str(key))
        for i, row in enumerate(ROWS):
            stock.add_row(*row, key=str(i))
        yield stock
        yield Rows(id="ours")


def drawn(widget: Widget) -> list[list[tuple[str, str]]]:
    """Each line as (text, style) runs, the mouse metadata left out."""
    lines = []
    for y in range(widget.size.height):
        strip = widget.render_line(y).simplify()
        lines.append([(s.text, str(s.style)) for s in strip])
    return lines


async def test_line_table_draws_what_data_table_draws() -> None:
    app = Both()
    async with app.run_test(size=(60, 14)) as pilot:
        stock, ours = app.query_one("#stock", DataTable), app.query_one(Rows)
        pairs: list[tuple[str, Any, Any]] = []
        for name in ("focused", "blurred"):
            for widget in (stock, ours):
                if name == "focused":
                    widget.focus()
                else:
                    app.set_focus(None)
                widget.move_cursor(row=1)
                await pilot.pause()
                await pilot.pause()
                pairs.append((name, widget, drawn(widget)))
        for widget in (stock, ours):
            await pilot.hover(widget, offset=(3, 3))  # the third row
            await pilot.pause()
            pairs.append(("hover", widget, drawn(widget)))
        by_state: dict[str, list[Any]] = {}
        for name, _widget, lines in pairs:
            by_state.setdefault(name, []).append(lines)
        for name, (theirs, mine) in by_state.items():
            assert mine == theirs, name
        focused = by_state["focused"][1]
        assert "[bold]x[/]" in "".join(t for t, _ in focused[2])  # as typed, not markup
        assert by_state["focused"][1] != by_state["blurred"][1]
        assert by_state["hover"][1] != by_state["blurred"][1]
        # narrower columns: long text is cut with '…'
        ours.set_columns(LABELS, [1, 8, 12, 6])
        await pilot.pause()
        lines = ["".join(t for t, _ in line) for line in drawn(ours)]
        assert lines[2].startswith("    [bold]x…  paused: I/O…       — ")
        assert lines[3].startswith("    a-very-…  shut off              ")
