"""The Machines pane with a thousand VMs: an update rewrites only the cells that
changed, formats only the rows on screen (the others when they are drawn), and still
sorts and filters every row by its raw values. The Performance pane redraws by line."""

from __future__ import annotations

import dataclasses

from rich.text import Text
from textual._compositor import CompositorUpdate
from textual.geometry import Region

from tests.canned import HOST, NOW, domain, fleet_snapshot
from tests.tui.conftest import AppFactory, settle
from virtwatch.core.model import DomainSample, Snapshot
from virtwatch.tui.machines import MachineTable
from virtwatch.tui.performance import PerformanceView, performance_text
from virtwatch.tui.settings import UiSettings

N = 1_000


def thousand(**changes: DomainSample) -> Snapshot:
    """1,000 running VMs vm-0000..vm-0999 (CPU by index); `changes` replaces some by name."""
    doms = [
        domain(
            f"vm-{i:04d}",
            cpu=float(i % 97),
            used_mib=512 + i,
            uuid=f"20000000-0000-4000-8000-{i:012d}",
        )
        for i in range(N)
    ]
    doms = [changes.get(d.name, d) for d in doms]
    return dataclasses.replace(fleet_snapshot(), domains=tuple(doms))


def key_of(name: str) -> str:
    return MachineTable.row_key(HOST, f"20000000-0000-4000-8000-{int(name[3:]):012d}")


def cells_of(table: MachineTable) -> dict[tuple[str, str], Text]:
    """Every cell object the table holds, by (row, column), after formatting every row."""
    table.shown()  # rows out of view are formatted on demand
    return {
        (key, str(column.value)): cell
        for key in table.shown_order()
        for column, cell in zip(table.columns, table.get_row(key), strict=True)
    }


def screen_lines(table: MachineTable) -> list[str]:
    return [strip.text for strip in table.render_lines(Region(0, 0, *table.size))]


async def test_a_thousand_vm_update_rewrites_only_the_changed_cells(make_app: AppFactory) -> None:
    app, _hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dashboard.machines
        first = thousand()
        assert table.apply(first).added == N
        await settle(pilot)
        before = cells_of(table)
        on_screen, off_screen = "vm-0003", "vm-0900"
        assert on_screen in "".join(screen_lines(table))
        assert off_screen not in "".join(screen_lines(table))
        old = {d.name: d for d in first.domains}
        # a new snapshot: new objects for every VM, two of them with a new value
        snap = thousand(
            **{
                on_screen: old[on_screen]._replace(mem_used_kib=3 * 1024 * 1024),
                off_screen: old[off_screen]._replace(cpu_pct=55.5),
            }
        )
        stats = table.apply(dataclasses.replace(snap, tick=2))
        # on screen: only the memory cell of vm-0003; the rows out of view wait
        assert (stats.added, stats.removed, stats.cells_updated) == (0, 0, 1)
        assert stats.deferred > N - 100
        after = cells_of(table)
        replaced = {cell for cell, obj in after.items() if obj is not before[cell]}
        assert replaced == {(key_of(on_screen), "mem"), (key_of(off_screen), "cpu")}
        assert after[(key_of(on_screen), "mem")].plain == "3.0 GiB / 2.0 GiB"
        assert after[(key_of(off_screen), "cpu")].plain.startswith(" 55.5%")
        # the same snapshot again rewrites nothing
        assert table.apply(dataclasses.replace(snap, tick=3)).cells_updated == 0
        assert all(obj is after[cell] for cell, obj in cells_of(table).items())


async def test_an_update_sends_the_terminal_only_the_changed_cells(make_app: AppFactory) -> None:
    app, _hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dashboard.machines
        first = thousand()
        table.apply(first)
        await settle(pilot)
        sent: list[str] = []

        def display(_screen: object, update: object) -> None:
            # what the app would write to a terminal (headless, it writes nothing)
            if isinstance(update, CompositorUpdate):
                sent.append(update.render_segments(app.console))

        app._display = display  # type: ignore[method-assign,assignment]
        old = {d.name: d for d in first.domains}
        changed = {f"vm-{i:04d}": old[f"vm-{i:04d}"]._replace(mem_used_kib=3 << 20) for i in (3, 7)}
        table.apply(dataclasses.replace(thousand(**changed), tick=2))
        await settle(pilot)
        out = "".join(sent)
        assert out.count("3.0 GiB / 2.0 GiB") == 2
        # every other row stayed as it was on screen, and so did the columns after the
        # last one written (Textual sends a widget's line from its left edge)
        names = {f"vm-{i:04d}" for i in range(N) if f"vm-{i:04d}" in out}
        assert names == {"vm-0003", "vm-0007"}
        assert "up 3h" not in out


async def test_rows_out_of_view_are_drawn_with_their_new_values(make_app: AppFactory) -> None:
    app, _hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dashboard.machines
        first = thousand()
        table.apply(first)
        await settle(pilot)
        table.action_scroll_bottom()  # drawn once with its old values, then out of view
        await settle(pilot)
        assert any("vm-0999" in line and " 29.0%" in line for line in screen_lines(table))
        table.action_scroll_top()
        await settle(pilot)
        last = {d.name: d for d in first.domains}["vm-0999"]
        table.apply(
            dataclasses.replace(
                thousand(**{"vm-0999": last._replace(cpu_pct=42.0)}),
                tick=2,
            )
        )
        table.action_scroll_bottom()  # the last row comes into view and is formatted
        await settle(pilot)
        line = next(line for line in screen_lines(table) if "vm-0999" in line)
        assert " 42.0%" in line


async def test_sort_and_filter_use_every_rows_raw_values(make_app: AppFactory) -> None:
    app, _hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dashboard.machines
        first = thousand()
        table.apply(first)
        table.sort_by("cpu", reverse=True)
        await settle(pilot)
        assert table.shown_order()[0] != key_of("vm-0777")
        old = {d.name: d for d in first.domains}
        hot = old["vm-0777"]._replace(cpu_pct=99.99)  # was out of view
        stats = table.apply(dataclasses.replace(thousand(**{"vm-0777": hot}), tick=2))
        assert stats.resorted
        assert table.shown_order()[0] == key_of("vm-0777")
        table.action_scroll_top()  # the cursor had followed its VM to the bottom
        await settle(pilot)
        first_row = screen_lines(table)[1]  # under the labels
        assert "vm-0777" in first_row
        assert "100.0%" in first_row
        # a filter sees the new state of a VM that was never drawn
        paused = domain("vm-0500", state=3, reason=5, uuid="20000000-0000-4000-8000-000000000500")
        table.apply(dataclasses.replace(thousand(**{"vm-0500": paused}), tick=3))
        table.set_filter("state:paused")
        assert list(table.shown()) == [key_of("vm-0500")]
        assert table.shown()[key_of("vm-0500")][3] == "paused: I/O error"


async def test_performance_pane_shows_the_new_lines_after_each_snapshot(
    make_app: AppFactory,
) -> None:
    app, hub = make_app(settings=UiSettings(refresh_s=0.05))
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        view = app.dashboard.query_one(PerformanceView)
        snap = fleet_snapshot(tick=2, taken_at=NOW + 2)
        doms = tuple(d._replace(cpu_pct=88.8) if d.name == "web-01" else d for d in snap.domains)
        hub.publish(dataclasses.replace(snap, domains=doms))
        await pilot.pause(0.2)
        await settle(pilot)
        assert app.board.snapshots[HOST].tick == 2
        drawn = [s.text.rstrip() for s in view.render_lines(Region(0, 0, *view.size))]
        expected = performance_text(
            app.board.snapshots, app.history, view.size.width, view.size.height
        ).plain.split("\n")
        assert drawn[: len(expected)] == [line.rstrip() for line in expected]
        assert any("web-01" in line and "88.8%" in line for line in drawn)
