"""The Machines pane with a thousand VMs: an update rewrites only the cells that
changed, formats only the rows on screen (the others when they are drawn), repaints
only the lines (the cells) that changed, and still sorts and filters every row by its
raw values. Column widths follow the text on the shown rows and the room there is. Keys
and the mouse move the cursor. The Performance pane redraws by line. Everything is
observed through Textual's public API: `refresh`, `render_line` and the pilot."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from textual.geometry import Region
from textual.strip import Strip

from tests.canned import HOST, NOW, domain, fleet_snapshot, with_io
from tests.tui.conftest import AppFactory, settle
from virtwatch.core.model import DomainSample, Snapshot
from virtwatch.tui.app import VirtwatchApp
from virtwatch.tui.detail import VmDetailScreen
from virtwatch.tui.machines import MachineTable
from virtwatch.tui.performance import PerformanceView, performance_text
from virtwatch.tui.rows import COLUMN_INDEX, visible_columns
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


def cells_of(table: MachineTable) -> dict[tuple[str, str], str]:
    """Every shown cell's text, by (row, column), after formatting every row."""
    keys = table.column_layout.keys
    return {
        (key, column): cells[COLUMN_INDEX[column]]
        for key, cells in table.shown().items()  # rows out of view are formatted on demand
        for column in keys
    }


def screen_lines(table: MachineTable) -> list[str]:
    return [strip.text for strip in table.render_lines(Region(0, 0, *table.size))]


@contextlib.asynccontextmanager
async def thousand_shown(
    make_app: AppFactory,
) -> AsyncIterator[tuple[VirtwatchApp, Any, MachineTable, Snapshot]]:
    """The app at 160x48 with the 1,000-VM snapshot applied (not yet drawn)."""
    app, _hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dashboard.machines
        first = thousand()
        table.apply(first)
        yield app, pilot, table, first


async def test_a_thousand_vm_update_rewrites_only_the_changed_cells(make_app: AppFactory) -> None:
    app, _hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dashboard.machines
        first = thousand()
        assert table.apply(first).added == N
        await settle(pilot)
        before = cells_of(table)
        on_screen, off_screen = "vm-0003", "vm-0900"
        assert table.shown_order()[3] == key_of(on_screen)
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
        replaced = {cell for cell, text in after.items() if text != before[cell]}
        assert replaced == {(key_of(on_screen), "mem"), (key_of(off_screen), "cpu")}
        assert after[(key_of(on_screen), "mem")] == "3.0/2.0 GiB"
        assert after[(key_of(off_screen), "cpu")].startswith(" 55.5 ")
        # the same snapshot again rewrites nothing
        assert table.apply(dataclasses.replace(snap, tick=3)).cells_updated == 0
        assert cells_of(table) == after


@dataclasses.dataclass
class Repaints:
    """What the table was asked to repaint (`refresh` regions, None: all of it) and
    which lines it then drew (`render_line`), and for which rows it drew cells afresh
    (`row_cells`: the rows whose kept drawing did not fit)."""

    regions: list[Region | None] = dataclasses.field(default_factory=list)
    lines: list[int] = dataclasses.field(default_factory=list)
    rows_drawn: list[int] = dataclasses.field(default_factory=list)

    def clear(self) -> None:
        self.regions.clear()
        self.lines.clear()
        self.rows_drawn.clear()


@contextlib.contextmanager
def watching(table: MachineTable, monkeypatch: pytest.MonkeyPatch) -> Iterator[Repaints]:
    """Wrap the table's public `refresh`, `render_line` and `row_cells` to record calls."""
    seen = Repaints()
    refresh, render_line, row_cells = table.refresh, table.render_line, table.row_cells

    def on_refresh(*regions: Region, **kw: Any) -> MachineTable:
        seen.regions.extend(regions or [None])
        return refresh(*regions, **kw)

    def on_render_line(y: int) -> Strip:
        seen.lines.append(y)
        return render_line(y)

    def on_row_cells(index: int) -> list[Any]:
        seen.rows_drawn.append(index)
        return row_cells(index)

    monkeypatch.setattr(table, "refresh", on_refresh)
    monkeypatch.setattr(table, "render_line", on_render_line)
    monkeypatch.setattr(table, "row_cells", on_row_cells)
    yield seen


async def test_an_update_repaints_only_the_changed_cells(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with thousand_shown(make_app) as (_app, pilot, table, first):
        await settle(pilot)
        with watching(table, monkeypatch) as seen:
            old = {d.name: d for d in first.domains}
            changed = {
                f"vm-{i:04d}": old[f"vm-{i:04d}"]._replace(mem_used_kib=3 << 20) for i in (3, 7)
            }
            table.apply(dataclasses.replace(thousand(**changed), tick=2))
            await settle(pilot)
        # two rows under the labels (one line): lines 4 and 8; of them, the memory cells
        layout = table.column_layout
        i = layout.keys.index("mem")
        x = sum(w + 2 for w in layout.widths[:i])
        width = layout.widths[i] + 2
        assert seen.regions == [Region(x, 4, width, 1), Region(x, 8, width, 1)]
        assert sorted(set(seen.lines)) == [4, 8]  # no other line was drawn again
        assert sorted(set(seen.rows_drawn)) == [3, 7]
        lines = screen_lines(table)
        assert "3.0/2.0 GiB" in lines[4]
        assert "3.0/2.0 GiB" in lines[8]
        # nothing new: nothing repainted
        seen.clear()
        table.apply(dataclasses.replace(thousand(**changed), tick=3))
        await settle(pilot)
        assert (seen.regions, seen.lines) == ([], [])


async def test_a_repaint_draws_again_only_rows_whose_drawing_changed(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drawn rows are kept by (row, version, layout, cursor/hover, styles): a whole
    repaint with nothing changed draws no row afresh; a cursor move draws the two rows
    it left and reached."""
    async with thousand_shown(make_app) as (_app, pilot, table, _first):
        await settle(pilot)
        with watching(table, monkeypatch) as seen:
            table.refresh()
            await settle(pilot)
            assert len(set(seen.lines)) == table.size.height
            assert seen.rows_drawn == []
            seen.clear()
            await pilot.press("down")
            await settle(pilot)
            assert table.cursor_row == 1
            assert sorted(set(seen.lines)) == [1, 2]
            assert sorted(set(seen.rows_drawn)) == [0, 1]


async def test_rows_out_of_view_are_drawn_with_their_new_values(make_app: AppFactory) -> None:
    async with thousand_shown(make_app) as (_app, pilot, table, first):
        await settle(pilot)
        table.action_cursor_last()  # drawn once with its old values, then out of view
        await settle(pilot)
        assert any("vm-0999" in line and " 29.0 " in line for line in screen_lines(table))
        table.action_cursor_first()
        await settle(pilot)
        last = {d.name: d for d in first.domains}["vm-0999"]
        table.apply(
            dataclasses.replace(
                thousand(**{"vm-0999": last._replace(cpu_pct=42.0)}),
                tick=2,
            )
        )
        table.action_cursor_last()  # the last row comes into view and is formatted
        await settle(pilot)
        line = next(line for line in screen_lines(table) if "vm-0999" in line)
        assert " 42.0 " in line


async def test_keys_move_the_cursor_and_scroll_with_it(make_app: AppFactory) -> None:
    async with thousand_shown(make_app) as (_app, pilot, table, _first):
        await settle(pilot)
        page = table.scrollable_content_region.height - 1  # the rows under the labels
        await pilot.press("pagedown")
        await settle(pilot)
        assert (table.cursor_row, table.scroll_y) == (page, page)
        await pilot.press("up", "up", "pageup")
        await settle(pilot)
        assert (table.cursor_row, table.scroll_y) == (0, 0)
        await pilot.press("ctrl+end")
        await settle(pilot)
        assert table.cursor_row == N - 1
        assert table.scroll_y == table.max_scroll_y > 0
        assert "vm-0999" in screen_lines(table)[table.scrollable_content_region.height - 1]
        await pilot.press("ctrl+home", "down", "down")
        await settle(pilot)
        assert (table.cursor_row, table.scroll_y) == (2, 0)
        assert table.selected() == table.ref(key_of("vm-0002"))


async def test_home_and_end_scroll_sideways_when_columns_are_off_screen(
    make_app: AppFactory,
) -> None:
    app, _hub = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.dashboard.machines
        table.apply(busy_fleet())
        await settle(pilot)
        assert table.max_scroll_x > 0
        assert "Uptime" not in screen_lines(table)[0]
        await pilot.press("end")
        await settle(pilot)
        assert table.scroll_x == table.max_scroll_x
        assert screen_lines(table)[0].rstrip().endswith("Uptime")
        await pilot.press("home")
        await settle(pilot)
        assert table.scroll_x == 0


async def test_the_mouse_hovers_picks_and_opens_a_row(make_app: AppFactory) -> None:
    app, _hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dashboard.machines
        table.apply(thousand())
        await settle(pilot)
        plain = table.render_line(5)
        await pilot.hover(MachineTable, offset=(10, 5))  # vm-0004, under the labels
        await settle(pilot)
        hovered = table.render_line(5)
        assert hovered.text == plain.text
        assert hovered != plain  # the hover's background
        await pilot.click(MachineTable, offset=(10, 5))
        await settle(pilot)
        assert table.cursor_row == 4
        await pilot.click(MachineTable, offset=(10, 5))  # on the cursor's row: open it
        await settle(pilot)
        assert isinstance(app.screen, VmDetailScreen)
        assert app.screen.ref.name == "vm-0004"


async def test_sort_and_filter_use_every_rows_raw_values(make_app: AppFactory) -> None:
    async with thousand_shown(make_app) as (_app, pilot, table, first):
        table.sort_by("cpu", reverse=True)
        await settle(pilot)
        assert table.shown_order()[0] != key_of("vm-0777")
        old = {d.name: d for d in first.domains}
        hot = old["vm-0777"]._replace(cpu_pct=99.99)  # was out of view
        stats = table.apply(dataclasses.replace(thousand(**{"vm-0777": hot}), tick=2))
        assert stats.resorted
        assert table.shown_order()[0] == key_of("vm-0777")
        table.action_cursor_first()  # the cursor had followed its VM to the bottom
        await settle(pilot)
        first_row = screen_lines(table)[1]  # under the labels
        assert "vm-0777" in first_row
        assert "100.0 " in first_row
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


# --- column widths ------------------------------------------------------------------

LONG = "shut off: destroyed by admin"
STATE_FLOOR = visible_columns(multi_host=False)[COLUMN_INDEX["state"] - 1].floor


def widths(table: MachineTable) -> dict[str, int]:
    layout = table.column_layout
    return dict(zip(layout.keys, layout.widths, strict=True))


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (160, 48)])
async def test_a_long_state_is_cut_to_fit_and_its_column_shrinks_when_it_goes(
    make_app: AppFactory, size: tuple[int, int]
) -> None:
    app, _hub = make_app()
    async with app.run_test(size=size) as pilot:
        table = app.dashboard.machines
        base = fleet_snapshot()
        table.apply(base)
        await settle(pilot)
        before, labels = widths(table), screen_lines(table)[0]
        widest = max(len(c[3]) for c in table.shown().values())
        assert before["state"] == (widest if size[0] >= 120 else STATE_FLOOR)
        long = domain("aa-old", state=5, reason=2)  # sorts into view at 80x24
        table.apply(dataclasses.replace(base, tick=2, domains=(*base.domains, long)))
        await settle(pilot)
        lines = screen_lines(table)
        row = next(line for line in lines if "aa-old" in line)
        state = widths(table)["state"]
        if state >= len(LONG):
            assert LONG in row
        else:  # cut, with the whole of it in the VM's detail
            assert f"{LONG[: state - 1]}… " in row
            assert LONG not in row
        if size[0] >= 120:  # every column on screen, its label whole
            assert table.virtual_size.width <= table.size.width
            for label in table.column_layout.labels:
                assert label.strip() in lines[0]
            assert "Uptime" in lines[0]
        else:  # as little as may be cut: State down to its floor, the rest scrolls
            assert state == STATE_FLOOR
        # the long state goes: the column is as narrow as before
        table.apply(dataclasses.replace(base, tick=3))
        await settle(pilot)
        assert widths(table) == before
        assert screen_lines(table)[0] == labels
        # the same VM back with the long state, then a short one: narrow again
        table.apply(dataclasses.replace(base, tick=4, domains=(*base.domains, long)))
        await settle(pilot)
        assert widths(table)["state"] == state
        running = domain("aa-old")
        table.apply(dataclasses.replace(base, tick=5, domains=(*base.domains, running)))
        await settle(pilot)
        assert widths(table) == before
        row = next(line for line in screen_lines(table) if "aa-old" in line)
        assert "running " in row


async def test_at_120_columns_a_long_name_is_cut_as_literal_text(make_app: AppFactory) -> None:
    app, _hub = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.dashboard.machines
        base = fleet_snapshot()
        hostile = domain("[bold red]a-very-long-vm-name-indeed[/]", state=5, reason=2)
        table.apply(dataclasses.replace(base, domains=(*base.domains, hostile)))
        await settle(pilot)
        lines = screen_lines(table)
        assert table.virtual_size.width <= table.size.width
        assert "Uptime" in lines[0]
        name = widths(table)["name"]
        assert name < len(hostile.name)
        assert any(f"{hostile.name[: name - 1]}… " in line for line in lines)
        cell = table.get_cell(MachineTable.row_key(HOST, hostile.uuid), "name")
        assert (cell.plain, cell.spans) == (hostile.name, [])  # the whole name, no markup


def busy_fleet() -> Snapshot:
    """The canned fleet and 30 more VMs with 16-character names (more rows than the
    pane holds: a scrollbar takes its column), every running VM carrying disk and
    network rates, several shut off in the ordinary way ('shut off: shut down')."""
    base = fleet_snapshot()
    more = [
        domain(
            f"prod-web-{i:03d}-eu1",
            state=1 if i % 5 else 5,
            reason=1,
            used_mib=14000,
            alloc_mib=16384,
            uuid=f"30000000-0000-4000-8000-{i:012d}",
        )
        for i in range(30)
    ]
    doms = [
        with_io(d, disk_bps=(1_230_000.0, 999_999.0), net_bps=(80_000.0, 25_000.0))
        if d.state.is_active
        else d
        for d in (*base.domains, *more)
    ]
    return dataclasses.replace(base, domains=tuple(doms))


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
async def test_every_column_is_on_screen_at_120_columns_with_disk_and_net_rates(
    make_app: AppFactory, size: tuple[int, int]
) -> None:
    app, _hub = make_app()
    async with app.run_test(size=size) as pilot:
        table = app.dashboard.machines
        table.apply(busy_fleet())
        await settle(pilot)
        assert table.show_vertical_scrollbar
        lines = screen_lines(table)
        assert table.virtual_size.width <= table.size.width  # nothing scrolls sideways
        labels = lines[0]
        for label in table.column_layout.labels:
            assert label.strip() in labels
        assert labels.rstrip().endswith("Uptime")
        # the unit once, in the label; the short figures of every row line up under it
        short = size[0] < 160
        disk, net = (
            ("Disk r/w B/s", "Net rx/tx B/s")
            if short
            else ("Disk read / write B/s", "Net rx / tx B/s")
        )
        assert disk in labels
        assert net in labels
        rows = [line for line in lines[1:] if "prod-web-" in line and "3h12m" in line]
        assert rows
        for row in rows:
            assert "1.2M 1.0M" in row  # 999,999 B/s: never '1000K'
            assert " 80K  25K" in row
            assert row.index("1.0M") + 4 == labels.index(disk) + len(disk)
            assert row.index("25K") + 3 == labels.index(net) + len(net)
            assert "13.7/16.0 GiB" in row
        off = next(line for line in lines if "prod-web-000-eu1" in line)
        assert "1.2M" not in off
        assert "—" in off  # no rates measured: '—', never '0'
