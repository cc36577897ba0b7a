"""The floor for bench/ui_startup.py: the least a Textual program does to paint a table of
N rows (import Textual, mount one DataTable, add the rows). Nothing else is imported.

    .venv/bin/python -m bench.ui_floor [N]
"""

from __future__ import annotations

import sys

from textual.app import App, ComposeResult
from textual.widgets import DataTable

COLUMNS = ("Name", "State", "vCPUs", "CPU %", "Memory", "Disk", "Net", "Uptime")


class TableApp(App[None]):
    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        yield DataTable()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        for i in range(self.rows):
            table.add_row(
                f"vm-{i:03d}", "running", str(1 + i % 4), f"{i % 97}.5", "1.0/2.0 GiB",
                "1.2 MB/s", "3.4 kB/s", "2d 03h",
            )  # fmt: skip


if __name__ == "__main__":
    TableApp(int(sys.argv[1]) if len(sys.argv) > 1 else 100).run()
