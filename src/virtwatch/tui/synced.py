"""A DataTable kept equal to a list of keyed rows, rewriting only what changed.

For the small tables (health, errors, tasks): the caller says what the rows should
be, in order; the table adds, removes, updates changed cells and re-orders.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

Row = tuple[str, Sequence[Text]]  # (key, one Text per column)


class SyncedTable(DataTable[Text]):
    DEFAULT_CSS = """
    SyncedTable { height: 1fr; }
    """

    def __init__(
        self, columns: Sequence[tuple[str, str]], *, id: str | None = None, classes: str = ""
    ) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._column_spec = tuple(columns)
        self._plain: dict[str, tuple[tuple[str, str], ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label in self._column_spec:
            self.add_column(label, key=key)

    def sync(self, rows: Sequence[Row]) -> int:
        """Make the table show `rows` in this order; returns cells written."""
        if not self.columns:
            for key, label in self._column_spec:
                self.add_column(label, key=key)
        # keep the cursor on its row while someone is using this table; else stay on top
        cursor = self.selected_key() if self.has_focus else None
        wanted = {key: cells for key, cells in rows}
        n = 0
        for key in [k for k in self._plain if k not in wanted]:
            self.remove_row(key)
            del self._plain[key]
        for key, cells in rows:
            sig = tuple((c.plain, str(c.style)) for c in cells)
            old = self._plain.get(key)
            if old is None:
                self.add_row(*cells, key=key)
                n += len(cells)
            elif old != sig:
                for i, (col, _label) in enumerate(self._column_spec):
                    if old[i] != sig[i]:
                        self.update_cell(key, col, cells[i], update_width=True)
                        n += 1
            self._plain[key] = sig
        order = [key for key, _ in rows]
        if order != self._order:
            position = {k: i for i, k in enumerate(order)}
            first = self._column_spec[0][0]
            index_of = {id(self.get_cell(k, first)): position[k] for k in order}
            self.sort(first, key=lambda cell: index_of[id(cell)])
            self._order = order
            if cursor is not None and cursor in position:
                self.move_cursor(row=position[cursor], animate=False, scroll=False)
            elif self.row_count:
                self.move_cursor(row=0, animate=False)
        return n

    def selected_key(self) -> str | None:
        if not self.row_count or not self.is_valid_row_index(self.cursor_row):
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def keys(self) -> list[str]:
        return [row.key.value or "" for row in self.ordered_rows]

    def plain_rows(self) -> list[tuple[str, ...]]:
        """Each row's text in display order (tests and headless views)."""
        return [tuple(p for p, _s in self._plain[k]) for k in self.keys()]
