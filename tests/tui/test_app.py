"""Pilot tests of the dashboard: what the table shows as snapshots arrive on the hub."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from rich.text import Text
from textual.widgets import DataTable

from tests.canned import NOW, domain, fleet_snapshot
from tests.conftest import FleetFactory
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.hub import Hub
from virtwatch.core.reports import ErrorReport
from virtwatch.core.runtime import HostConfig, Runtime
from virtwatch.tui.app import VirtwatchApp
from virtwatch.tui.header import HostHeader
from virtwatch.tui.machines import MachineTable


def frozen() -> float:
    return NOW


async def settle(pilot: object, rounds: int = 3) -> None:
    for _ in range(rounds):
        await pilot.pause()  # type: ignore[attr-defined]


async def test_table_shows_every_vm_of_a_snapshot() -> None:
    hub = Hub()
    app = VirtwatchApp(hub, clock=frozen)
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.query_one(MachineTable)
        shown = table.shown()
        assert table.row_count == 12
        rows = {cells[0]: cells for cells in shown.values()}
        assert rows["staging-api"][1] == "paused"
        assert rows["staging-api"][5] == "paused: I/O error"
        assert rows["legacy-crm"][5] == "shut off: crashed"
        assert rows["db-primary"][3].strip() == "61.2%"
        assert rows["build-runner"][5] == "up 5m40s"
        assert rows["win2022-rdp"][3] == "—"


async def test_updates_touch_only_changed_cells() -> None:
    hub = Hub()
    app = VirtwatchApp(hub, clock=frozen)
    async with app.run_test(size=(120, 40)) as pilot:
        snap = fleet_snapshot()
        hub.publish(snap)
        await settle(pilot)
        table = app.query_one(MachineTable)
        target = snap.domains[0]
        changed = dataclasses.replace(target, cpu_pct=77.7)
        stats = table.apply(dataclasses.replace(snap, domains=(changed, *snap.domains[1:]), tick=2))
        assert (stats.added, stats.removed, stats.cells_updated) == (0, 0, 1)
        assert table.apply(snap).cells_updated == 1
        gone = dataclasses.replace(snap, domains=snap.domains[1:], tick=3)
        assert table.apply(gone).removed == 1
        assert table.row_count == 11


async def test_hostile_names_are_shown_as_text_not_markup() -> None:
    hub = Hub()
    app = VirtwatchApp(hub, clock=frozen)
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.query_one(MachineTable)
        key = MachineTable.row_key("qemu:///system", "10000000-0000-4000-8000-000000000010")
        cell = table.get_cell(key, "name")
        assert isinstance(cell, Text)
        assert cell.plain == "[bold red]x[/]"
        assert not cell.spans


async def test_errors_and_notices_appear_in_the_header() -> None:
    hub = Hub()
    app = VirtwatchApp(hub, clock=frozen)
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(fleet_snapshot(notice="DEMO HOST (fictional values)"))
        await settle(pilot)
        err = AppError(ErrorCode.LIBVIRT_CONNECTION_LOST, "[red]lost[/]", "it reconnects")
        hub.publish(ErrorReport(err, "qemu:///system", None, NOW + 1))
        await settle(pilot)
        text = app.query_one(HostHeader).render()
        plain = str(text)
        assert "DEMO HOST (fictional values)" in plain
        assert "[red]lost[/] — it reconnects" in plain


async def test_q_quits() -> None:
    hub = Hub()
    app = VirtwatchApp(hub, clock=frozen)
    async with app.run_test() as pilot:
        await pilot.press("q")
        await settle(pilot)
    assert app.return_code == 0


@pytest.mark.libvirt
async def test_live_table_from_a_real_runtime(make_fleet: FleetFactory) -> None:
    """The whole pipe: test-driver fleet -> collector -> hub -> table, refreshed per tick."""
    hub = Hub()
    uri = make_fleet(6, states=(1,))
    async with Runtime([HostConfig(uri, name="lab", interval_s=0.1)], hub=hub) as rt:
        app = VirtwatchApp(hub)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.query_one(MachineTable)
            for _ in range(100):
                await pilot.pause(0.05)
                if table.row_count == 6:
                    break
            assert table.row_count == 6
            async with rt.sources[0].connection() as conn:
                await asyncio.to_thread(conn.lookupByName("vm-0002").suspend)
            rt.collectors[0].force_tick()
            for _ in range(100):
                await pilot.pause(0.05)
                rows = {c[0]: c for c in table.shown().values()}
                if rows["vm-0002"][1] == "paused":
                    break
            assert rows["vm-0002"][1] == "paused"
            assert isinstance(app.query_one(DataTable), MachineTable)


def test_changed_domain_changes_its_cells() -> None:
    from virtwatch.tui.machines import row_cells

    d = domain("a", cpu=10.0)
    assert row_cells(d, NOW) != row_cells(dataclasses.replace(d, cpu_pct=11.0), NOW)
