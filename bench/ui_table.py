"""Applying a 1,000-VM snapshot to the Machines pane, vs a naive refresh of every cell.

Every value of every VM changes each update (the worst case). Both run in the same
process, headless, at 200x60; the figure that matters is the ratio. "apply" is the
call that takes the snapshot (what the issue's target is about); "with next frame"
adds the paint that follows (and the test pilot's idle wait). The pane also runs
sorted by CPU %, where every update re-sorts all rows.

    .venv/bin/python -m bench.ui_table [--vms 1000] [--updates 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from bench.ui_common import fleet
from virtwatch.core.hub import Hub
from virtwatch.tui.app import VirtwatchApp
from virtwatch.tui.rows import COLUMN_INDEX, row_cells, visible_columns
from virtwatch.tui.settings import UiSettings

T0 = 1_795_000_000.0


class NaiveApp(App[None]):
    def compose(self) -> ComposeResult:
        yield DataTable(id="naive")


def naive_apply(table: DataTable[Text], n: int, tick: int) -> None:
    """What a first version does: format every cell and write every cell."""
    snap = fleet(n, tick)
    cols = visible_columns(multi_host=False)
    for d in snap.domains:
        key = f"{snap.host}/{d.uuid}"
        cells = row_cells(snap.host, d, snap.taken_at)
        for c in cols:
            table.update_cell(key, c.key, Text(cells[COLUMN_INDEX[c.key]]))


async def bench_naive(n: int, updates: int) -> tuple[list[float], list[float]]:
    app = NaiveApp()
    applied: list[float] = []
    painted: list[float] = []
    async with app.run_test(size=(200, 60)) as pilot:
        table: DataTable[Text] = app.query_one("#naive", DataTable)
        cols = visible_columns(multi_host=False)
        for c in cols:
            table.add_column(c.label, key=c.key)
        snap = fleet(n, 0)
        for d in snap.domains:
            cells = row_cells(snap.host, d, snap.taken_at)
            table.add_row(
                *(Text(cells[COLUMN_INDEX[c.key]]) for c in cols), key=f"{snap.host}/{d.uuid}"
            )
        await pilot.pause()
        for i in range(1, updates + 1):
            t = time.perf_counter()
            naive_apply(table, n, i)
            applied.append(time.perf_counter() - t)
            await pilot.pause()
            painted.append(time.perf_counter() - t)
    return applied, painted


async def bench_ours(
    n: int, updates: int, *, sort: str = "name"
) -> tuple[list[float], list[float], int, int]:
    now = [T0]
    hub = Hub()
    app = VirtwatchApp(hub, clock=lambda: now[0], settings=UiSettings(refresh_s=0.01))
    applied: list[float] = []
    painted: list[float] = []
    cells = deferred = 0
    async with app.run_test(size=(200, 60)) as pilot:
        table = app.dashboard.machines
        if sort != "name":
            table.sort_by(sort, reverse=True)
        first = fleet(n, 0)
        app.history.record(first)
        table.apply(first)
        await pilot.pause()
        for i in range(1, updates + 1):
            snap = fleet(n, i)
            now[0] = snap.taken_at
            app.history.record(snap)  # the snapshot worker does this before the screen sees it
            t = time.perf_counter()
            stats = table.apply(snap)
            applied.append(time.perf_counter() - t)
            await pilot.pause()
            painted.append(time.perf_counter() - t)
            cells += stats.cells_updated
            deferred += stats.deferred
    return applied, painted, cells // updates, deferred // updates


def ms(values: list[float]) -> str:
    p90 = sorted(values)[int(len(values) * 0.9)]
    return f"median {statistics.median(values) * 1000:6.1f} ms, p90 {p90 * 1000:6.1f} ms"


async def main(n: int, updates: int) -> None:
    naive_a, naive_p = await bench_naive(n, updates)
    ours_a, ours_p, cells, deferred = await bench_ours(n, updates)
    cpu_a, cpu_p, _, _ = await bench_ours(n, updates, sort="cpu")
    print(f"{n} VMs, every value changing, {updates} updates each (headless, 200x60)")
    print(f"  naive: every cell rewritten      apply {ms(naive_a)} | with next frame {ms(naive_p)}")
    print(f"  Machines pane, sorted by name    apply {ms(ours_a)} | with next frame {ms(ours_p)}")
    print(f"  Machines pane, sorted by CPU %   apply {ms(cpu_a)} | with next frame {ms(cpu_p)}")
    total = n * len(visible_columns(multi_host=False))
    print(
        f"  per update: {cells} cells rewritten (of {total}: the rows on screen), "
        f"{deferred} rows out of view with a new sample, formatted when drawn"
    )
    naive = statistics.median(naive_a)
    print(
        f"  ratio ours/naive (apply): {statistics.median(ours_a) / naive:.2f} by name, "
        f"{statistics.median(cpu_a) / naive:.2f} by CPU %"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--updates", type=int, default=40)
    a = ap.parse_args()
    asyncio.run(main(a.vms, a.updates))
