"""Pilot tests of the dashboard: each drives the keys an admin would press and
asserts what the screen shows and what the core received."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import DataTable, Input

from tests.canned import (
    HOST,
    HOST2,
    NOW,
    all_records,
    audit_records,
    domain,
    error_reports,
    fleet_snapshot,
    health_alerts,
    health_results,
    second_host_snapshot,
    task_updates,
)
from tests.conftest import FleetFactory
from tests.tui.conftest import (
    AppFactory,
    RecordingSeries,
    RecordingSink,
    RecordingTasks,
    frozen,
    settle,
)
from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.ops.actions import Action
from virtwatch.core.records import AuditRecord, Outcome, TaskState, TaskUpdate
from virtwatch.core.runtime import HostConfig, Runtime
from virtwatch.tui.app import VirtwatchApp
from virtwatch.tui.dashboard import NARROW_BELOW, DashboardScreen
from virtwatch.tui.detail import Span, VmDetailScreen
from virtwatch.tui.dialogs import ConfirmScreen, ErrorRecordScreen, QuitScreen, TypeCountScreen
from virtwatch.tui.header import HostHeaders
from virtwatch.tui.help import HelpScreen
from virtwatch.tui.machines import MachineTable
from virtwatch.tui.ports import VmRef
from virtwatch.tui.settings import UiSettings
from virtwatch.tui.tasks import TasksScreen

WEB01 = "10000000-0000-4000-8000-000000000001"
FAST = UiSettings(refresh_s=0.05)


def rows_by_name(table: MachineTable) -> dict[str, tuple[str, ...]]:
    return {cells[2]: cells for cells in table.shown().values()}


def names_in_order(table: MachineTable) -> list[str]:
    shown = table.shown()
    return [shown[k][2] for k in table.shown_order()]


async def select(pilot: object, table: MachineTable, name: str) -> None:
    order = names_in_order(table)
    table.move_cursor(row=order.index(name))
    await settle(pilot)


# --- the Machines pane ----------------------------------------------------------------


async def test_table_shows_every_vm_of_a_snapshot(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        assert table.row_count == 12
        rows = rows_by_name(table)
        assert rows["staging-api"][3] == "paused: I/O error"
        assert rows["legacy-crm"][3] == "shut off: crashed"
        assert rows["web-01"][3] == "running"
        assert rows["db-primary"][5].startswith(" 61.2 ")
        assert rows["build-runner"][9] == "5m40s"
        assert rows["win2022-rdp"][9] == "—"
        assert rows["win2022-rdp"][5].startswith("    — ")  # where a figure would be
        assert rows["backup"][5] == "—"  # no sparkline for a VM that is off


async def test_updates_touch_only_changed_cells(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        snap = fleet_snapshot()
        hub.publish(snap)
        await settle(pilot)
        table = app.dashboard.machines
        target = next(d for d in snap.domains if d.name == "cache-01")
        changed = target._replace(mem_used_kib=1024 * 1024)
        doms = tuple(changed if d is target else d for d in snap.domains)
        stats = table.apply(dataclasses.replace(snap, domains=doms, tick=2))
        assert (stats.added, stats.removed, stats.cells_updated) == (0, 0, 1)
        assert table.apply(dataclasses.replace(snap, domains=doms, tick=3)).cells_updated == 0
        gone = dataclasses.replace(snap, domains=snap.domains[1:], tick=4)
        assert table.apply(gone).removed == 1
        assert table.row_count == 11


async def test_hostile_names_are_shown_as_text_not_markup(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        key = MachineTable.row_key(HOST, "10000000-0000-4000-8000-000000000010")
        cell = table.get_cell(key, "name")
        assert isinstance(cell, Text)
        assert cell.plain == "[bold red]x[/]"
        assert not cell.spans
        await select(pilot, table, "[bold red]x[/]")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, VmDetailScreen)
        facts = app.screen.query_one("#detail-facts").render()
        assert "[bold red]x[/] on qemu:///system" in str(facts)


async def test_filter_by_state_name_and_host(make_app: AppFactory) -> None:
    app, hub = make_app(settings=FAST)
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        hub.publish(second_host_snapshot())
        await settle(pilot)
        await pilot.pause(0.1)
        table = app.dashboard.machines
        assert table.row_count == 15
        assert "host" in table.column_layout.keys  # two hosts: a host column
        await pilot.press("slash")
        assert app.screen.query_one("#filter", Input).has_focus
        await pilot.press(*"state:paused")
        await settle(pilot)
        assert sorted(rows_by_name(table)) == ["ci-worker", "staging-api"]
        assert rows_by_name(table)["ci-worker"][3] == "paused: by admin"
        await pilot.press("space", "h", "o", "s", "t", ":", "h", "v", "-", "0", "8")
        await settle(pilot)
        assert sorted(rows_by_name(table)) == ["ci-worker"]
        await pilot.press("enter")  # keep the filter, back to the table
        await settle(pilot)
        assert table.has_focus
        assert table.filter_text == "state:paused host:hv-08"
        await pilot.press("slash", "escape")  # Esc in the box clears it
        await settle(pilot)
        assert table.row_count == 15
        await pilot.press("slash", *"web")
        await settle(pilot)
        assert {c[1] for c in table.shown().values()} == {HOST, HOST2}
        assert sorted(rows_by_name(table)) == ["web-01", "web-02"]
        table.set_tags({MachineTable.row_key(HOST, WEB01): ("frontend",)})
        table.set_filter("tag:frontend")
        assert list(rows_by_name(table)) == ["web-01"]


async def test_sort_by_any_column_keys_and_header_click(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(200, 60)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        assert names_in_order(table)[:3] == ["[bold red]x[/]", "backup", "build-runner"]
        table.sort_by("cpu", reverse=True)
        await settle(pilot)
        assert names_in_order(table)[:3] == ["build-runner", "db-primary", "web-01"]
        await pilot.press("O")  # reverse
        await settle(pilot)
        order = names_in_order(table)
        assert order[-1] == "build-runner"
        await pilot.press("o")  # the next column: memory
        await settle(pilot)
        assert table.sort_column == "mem"
        assert names_in_order(table)[-1] == "db-primary"
        await pilot.click(MachineTable, offset=(4, 0))  # the Name header
        await settle(pilot)
        assert table.sort_column == "name"
        assert table.column_layout.label("name")[-1] in "▲▼"


async def test_cursor_stays_on_its_vm_when_the_order_changes(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        snap = fleet_snapshot()
        hub.publish(snap)
        await settle(pilot)
        table = app.dashboard.machines
        table.sort_by("cpu", reverse=True)
        await select(pilot, table, "cache-01")
        doms = tuple(d._replace(cpu_pct=99.9) if d.name == "cache-01" else d for d in snap.domains)
        table.apply(dataclasses.replace(snap, domains=doms, tick=2))
        await settle(pilot)
        assert names_in_order(table)[0] == "cache-01"
        ref = table.selected()
        assert ref is not None
        assert ref.name == "cache-01"


async def test_stale_rows_are_dimmed_with_their_age(make_app: AppFactory) -> None:
    now = [NOW]
    app, hub = make_app(clock=lambda: now[0], settings=FAST)
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        assert rows_by_name(table)["web-01"][3] == "running"
        now[0] = NOW + 75
        app.dashboard.tick(force=True)  # the screen's once-a-second timer
        assert rows_by_name(table)["web-01"][3] == "running · 1m15s old"
        cell = table.get_cell(MachineTable.row_key(HOST, WEB01), "cpu")
        assert "dim" in str(cell.style)
        header = app.dashboard.query_one(HostHeaders).text()
        assert "data 1m15s ago" in header
        hub.publish(fleet_snapshot(taken_at=NOW + 75))
        await pilot.pause(0.1)
        await settle(pilot)
        assert rows_by_name(table)["web-01"][3] == "running"


async def test_maximise_and_restore_a_pane_and_focus_moves(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        assert screen.machines.has_focus
        await pilot.press("z")
        assert screen.maximized_pane() == "machines-pane"
        await pilot.press("z")
        assert screen.maximized_pane() is None
        visited = []
        for _ in range(4):
            await pilot.press("tab")
            focused = screen.focused
            assert focused is not None
            pane = next(a for a in focused.ancestors_with_self if "pane" in a.classes)
            visited.append(pane.id)
        assert visited == ["performance-pane", "health-pane", "errors-pane", "machines-pane"]
        await pilot.press("shift+tab")
        await pilot.press("z")
        assert screen.maximized_pane() == "errors-pane"
        await pilot.press("escape")
        assert screen.maximized_pane() is None
        await pilot.click("#health-pane", offset=(10, 4))
        assert screen.focused is not None
        assert screen.health_pane in screen.focused.ancestors


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_four_panes_fit_small_and_large_terminals(
    make_app: AppFactory, size: tuple[int, int]
) -> None:
    app, hub = make_app()
    async with app.run_test(size=size) as pilot:
        hub.publish(fleet_snapshot())
        for r in all_records():
            hub.publish(r)
        await settle(pilot)
        screen = app.screen
        assert screen.has_class("-narrow") is (size[0] < NARROW_BELOW)
        for pane in ("machines-pane", "performance-pane", "health-pane", "errors-pane"):
            region = screen.query_one(f"#{pane}").region
            assert region.width >= 20, (pane, region)
            assert region.height >= 5, (pane, region)
            assert region.right <= size[0]
            assert region.bottom <= size[1]
        machines = screen.query_one("#machines-pane").region
        shown_rows = machines.height - 3  # borders and the header row
        assert shown_rows >= min(12, 7 if size[1] == 24 else 12)


# --- actions --------------------------------------------------------------------------


async def test_shutdown_asks_naming_vm_and_host_then_cancel_sends_nothing(
    make_app: AppFactory, sink: RecordingSink
) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        await select(pilot, table, "web-01")
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        text = str(app.screen.query_one("#confirm-text").render())
        assert "Shutdown this VM?" in text
        assert "web-01 on qemu:///system" in text
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert sink.requests == []
        assert rows_by_name(table)["web-01"][3] == "running"


async def test_confirmed_shutdown_reaches_the_core_and_progress_shows_in_place(
    make_app: AppFactory, sink: RecordingSink
) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        await select(pilot, table, "web-01")
        await pilot.press("d", "y")
        await settle(pilot)
        web01 = VmRef(HOST, WEB01, "web-01")
        assert sink.requests == [(Action.SHUTDOWN, [web01])]
        assert rows_by_name(table)["web-01"][3] == "running ⟳ shutdown requested"
        upd = TaskUpdate(
            "a-1", "shutdown web-01", "action.shutdown", TaskState.RETRYING, 1, 3, NOW,
            NOW, next_try_at=NOW + 2, message="job lock held", host=HOST, vm_name="web-01",
        )  # fmt: skip
        hub.publish(upd)
        await settle(pilot)
        assert rows_by_name(table)["web-01"][3] == "running ⟳ shutdown retry 1/3 in 2s"
        assert any("attempt 1 of 3" in str(n.message) for n in app._notifications)
        hub.publish(dataclasses.replace(upd, state=TaskState.RUNNING, attempt=2))
        await settle(pilot)
        assert rows_by_name(table)["web-01"][3] == "running ⟳ shutdown… 2/3"
        hub.publish(
            AuditRecord(HOST, WEB01, "web-01", "shutdown", "root", None, Outcome.VERIFIED, NOW, 3.2)
        )
        hub.publish(dataclasses.replace(upd, state=TaskState.SUCCEEDED, attempt=2))
        await settle(pilot)
        assert rows_by_name(table)["web-01"][3] == "running ✔ shutdown done"
        assert any("shutdown verified in 3.2 s" in str(n.message) for n in app._notifications)
        assert app.flow.pending == {}


async def test_start_needs_no_confirmation(make_app: AppFactory, sink: RecordingSink) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        await select(pilot, app.dashboard.machines, "backup")
        await pilot.press("s")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert [(a, [t.name for t in ts]) for a, ts in sink.requests] == [
            (Action.START, ["backup"])
        ]


async def test_force_off_of_marked_vms_asks_to_type_the_count(
    make_app: AppFactory, sink: RecordingSink
) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        for name in ("web-01", "web-02", "cache-01"):
            await select(pilot, table, name)
            await pilot.press("space")
        assert len(table.marked) == 3
        assert rows_by_name(table)["web-02"][0] == "●"
        await pilot.press("F")
        await settle(pilot)
        assert isinstance(app.screen, TypeCountScreen)
        prompt = str(app.screen.query_one("#count-prompt").render())
        assert "Type 3 to confirm" in prompt
        await pilot.press("2", "enter")
        await settle(pilot)
        assert isinstance(app.screen, TypeCountScreen)
        assert "not 3" in str(app.screen.query_one("#count-error").render())
        assert sink.requests == []
        await pilot.press("3", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert len(sink.requests) == 1
        action, targets = sink.requests[0]
        assert action is Action.FORCE_OFF
        assert sorted(t.name for t in targets) == ["cache-01", "web-01", "web-02"]
        assert table.marked == set()  # marks are cleared once the action is sent


async def test_force_off_typed_count_can_be_cancelled(
    make_app: AppFactory, sink: RecordingSink
) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        for name in ("web-01", "web-02"):
            await select(pilot, table, name)
            await pilot.press("space")
        await pilot.press("F", "escape")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert sink.requests == []
        assert any("cancelled" in str(n.message) for n in app._notifications)


async def test_a_failed_action_shows_message_and_hint(
    make_app: AppFactory, sink: RecordingSink
) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        await select(pilot, table, "web-01")
        await pilot.press("s")
        await settle(pilot)
        err = AppError(
            ErrorCode.MACHINE_INVALID_STATE,
            "start: domain is already running",
            "the VM is not in a state that allows this; check its current state",
            Severity.WARNING,
        )
        hub.publish(ErrorReport(err, HOST, "web-01", NOW))
        hub.publish(
            AuditRecord(HOST, WEB01, "web-01", "start", "root", None, Outcome.FAILED, NOW, 0.1,
                        "domain is already running", "MACHINE_INVALID_STATE")
        )  # fmt: skip
        await settle(pilot)
        messages = [str(n.message) for n in app._notifications]
        assert any(
            "domain is already running — the VM is not in a state that allows this" in m
            for m in messages
        )
        assert rows_by_name(table)["web-01"][3] == "running ✖ start failed"


async def test_read_only_hides_every_action(make_app: AppFactory, sink: RecordingSink) -> None:
    app, hub = make_app(read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        table = app.dashboard.machines
        await select(pilot, table, "web-01")
        await pilot.press("d", "F", "s", "p")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert sink.requests == []
        footer_keys = {b.binding.key for b in app.screen.active_bindings.values() if b.enabled}
        assert not {"d", "F", "s", "p", "r", "u"} & footer_keys
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        assert "Force off" not in app.screen.text()


async def test_per_host_read_only_refuses_that_hosts_vms(
    make_app: AppFactory, sink: RecordingSink
) -> None:
    app, hub = make_app(read_only_hosts={HOST2}, settings=FAST)
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        hub.publish(second_host_snapshot())
        await settle(pilot)
        await pilot.pause(0.1)
        table = app.dashboard.machines
        for key in list(table.shown()):
            if key.endswith("-000000000001"):  # web-01 on both hosts
                table.toggle_mark(key)
        await pilot.press("s")
        await settle(pilot)
        assert [(a, [(t.host, t.name) for t in ts]) for a, ts in sink.requests] == [
            (Action.START, [(HOST, "web-01")])
        ]
        assert any("hv-08 is read-only" in str(n.message) for n in app._notifications)


async def test_q_quits_at_once_when_nothing_runs(make_app: AppFactory) -> None:
    app, _hub = make_app()
    async with app.run_test() as pilot:
        await pilot.press("q")
        await settle(pilot)
    assert app.return_code == 0


async def test_q_asks_while_an_action_runs(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        await select(pilot, app.dashboard.machines, "backup")
        await pilot.press("s")  # start: in flight until its audit row arrives
        await pilot.press("q")
        await settle(pilot)
        assert isinstance(app.screen, QuitScreen)
        assert "start backup on qemu:///system" in str(app.screen.query_one("#quit-text").render())
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("q", "y")
        await settle(pilot)
    assert app.return_code == 0


# --- detail screen ------------------------------------------------------------------------


async def test_detail_ranges_come_from_rings_then_the_store(make_app: AppFactory) -> None:
    from tests.canned import filled_history

    series = RecordingSeries()
    app, hub = make_app(history=filled_history(), series=series, timeline=series)
    async with app.run_test(size=(160, 48)) as pilot:
        hub.publish(fleet_snapshot())
        for r in all_records():
            hub.publish(r)
        await settle(pilot)
        await select(pilot, app.dashboard.machines, "web-01")
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, VmDetailScreen)
        assert screen.span is Span.MIN5
        assert screen.graph("cpu").points_shown() == 150  # 5 min at 2 s, from memory
        assert series.queries == []
        recent = str(screen.query_one("#detail-recent").render())
        assert "reboot verified" in recent
        assert "by alice@10.0.0.5" in recent
        assert "started: booted" in recent
        assert "MACHINE_INVALID_STATE" in recent
        assert len(screen.graph("cpu").markers) >= 4
        await pilot.press("3")
        await settle(pilot)
        await pilot.pause(0.05)
        await settle(pilot)
        assert screen.span.name == "DAY1"
        assert {(q[2], q[3], q[4]) for q in series.queries} >= {("cpu_pct", NOW - 86400, NOW)}
        assert screen.graph("cpu").points_shown() == 51
        await pilot.press("4")
        await settle(pilot)
        await pilot.pause(0.05)
        assert any(q[3] == NOW - 7 * 86400 for q in series.queries)
        await pilot.press("2")  # 1 h: the rings hold 5 min only, so the store fills it
        await settle(pilot)
        await pilot.pause(0.05)
        assert any(q[3] == NOW - 3600 for q in series.queries)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)


async def test_detail_without_a_database_says_so(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        await select(pilot, app.dashboard.machines, "web-01")
        await pilot.press("enter", "3")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, VmDetailScreen)
        assert screen.graph("cpu").note == "no stored history (no database)"


async def test_detail_actions_confirm_and_reach_the_core(
    make_app: AppFactory, sink: RecordingSink
) -> None:
    app, hub = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        await select(pilot, app.dashboard.machines, "web-02")
        await pilot.press("enter", "p")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, VmDetailScreen)
        assert [(a, [t.name for t in ts]) for a, ts in sink.requests] == [
            (Action.PAUSE, ["web-02"])
        ]


# --- health, errors, tasks, help ------------------------------------------------------------


async def test_health_pane_lists_checks_and_alerts_until_acknowledged(
    make_app: AppFactory,
) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        for r in health_results():
            hub.publish(r)
        for a in health_alerts():
            hub.publish(a)
        await settle(pilot)
        pane = app.dashboard.health_pane
        rows = pane.query_one("#health-checks", DataTable)
        plain = rows.plain_rows()  # type: ignore[attr-defined]
        assert plain[0][:3] == ("crit", "host.disk", "/var/lib/libvirt")
        assert plain[0][3:6] == ("97.2%", "85% / 95%", "30s ago")
        assert len(plain) == 6
        assert sum("host.disk" in str(n.message) for n in app._notifications) == 1
        assert "2 alert(s)" in str(pane.query_one("#health-alerts").render())
        pane.query_one("#health-checks").focus()
        await pilot.press("h")
        history = pane.query_one("#health-history", DataTable)
        assert history.row_count == 2
        assert history.plain_rows()[0][3] == "warn → crit"  # type: ignore[attr-defined]
        await pilot.press("a")
        await settle(pilot)
        assert app.board.unacknowledged == []
        assert not pane.query_one("#health-alerts").display
        assert history.row_count == 2  # the history stays


async def test_errors_pane_filters_and_opens_the_full_record(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        for r in error_reports():
            hub.publish(r)
        await settle(pilot)
        pane = app.dashboard.errors_pane
        table = pane.table
        assert [r[1] for r in table.plain_rows()] == [
            "MACHINE_INVALID_STATE",
            "LIBVIRT_CONNECTION_LOST",
            "DATABASE_ERROR",
        ]
        assert table.plain_rows()[1][4] == "42"
        assert table.plain_rows()[0][3] == "start: [bold red]domain is already running[/]"
        table.focus()
        await pilot.press("v", "v")  # at least warning, then at least error
        await settle(pilot)
        assert [r[1] for r in table.plain_rows()] == ["LIBVIRT_CONNECTION_LOST"]
        await pilot.press("v", "v")  # critical, then back to everything
        await settle(pilot)
        assert table.row_count == 3
        await pilot.press("slash", *"socket", "enter")
        await settle(pilot)
        assert [r[1] for r in table.plain_rows()] == ["LIBVIRT_CONNECTION_LOST"]
        assert table.has_focus
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ErrorRecordScreen)
        record = str(app.screen.query_one("#error-record").render())
        assert "virtwatch reconnects on its own" in record
        assert "libvirt_domain = 7" in record
        assert "count     42" in record
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_tasks_view_lists_tasks_and_cancels_with_a_key(make_app: AppFactory) -> None:
    control = RecordingTasks()
    app, hub = make_app(tasks=control)
    async with app.run_test(size=(160, 48)) as pilot:
        for t in task_updates():
            hub.publish(t)
        await settle(pilot)
        await pilot.press("t")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TasksScreen)
        rows = screen.table.plain_rows()
        assert [r[0] for r in rows] == ["running", "retrying", "succeeded", "failed"]
        assert rows[1][2:4] == ("2/3", "in 2s")
        assert rows[1][5] == "TIMEOUT: job lock held"
        await pilot.press("c")
        await settle(pilot)
        assert control.cancelled == ["t-1"]
        screen.table.move_cursor(row=2)
        await pilot.press("c")
        await settle(pilot)
        assert control.cancelled == ["t-1"]  # a finished task cannot be cancelled
        hub.publish(dataclasses.replace(task_updates()[0], state=TaskState.CANCELLED, at=NOW))
        await settle(pilot)
        assert screen.table.plain_rows()[1][0] == "cancelled"
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_help_lists_every_key(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.text()
        for words in (
            "Quit", "Help", "Filter", "Maximise pane", "Tasks", "Mark / unmark VM",
            "Sort by the next column", "Start", "Shutdown", "Force off", "Reboot",
            "Pause", "Resume", "Acknowledge alerts", "Min severity", "command palette",
        ):  # fmt: skip
            assert words in text, words
        for screen_cls in (DashboardScreen, MachineTable):
            for b in screen_cls.BINDINGS:
                assert b.description in text  # type: ignore[union-attr]
        await pilot.press("escape")
        await select(pilot, app.dashboard.machines, "web-01")
        await pilot.press("enter", "question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        assert "24 h" in app.screen.text()
        assert "7 d" in app.screen.text()


async def test_the_machines_subtitle_counts_one_vm_or_several(make_app: AppFactory) -> None:
    app, hub = make_app(settings=FAST)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.dashboard.query_one("#machines-pane")
        base = fleet_snapshot()
        for tick, (n, words) in enumerate(((1, "1 VM"), (2, "2 VMs"), (1, "1 VM")), 1):
            hub.publish(dataclasses.replace(base, tick=tick, domains=base.domains[:n]))
            await pilot.pause(0.1)
            await settle(pilot)
            assert str(pane.border_subtitle) == words


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 60)])
async def test_a_host_header_never_wraps_it_leaves_parts_out(
    make_app: AppFactory, size: tuple[int, int]
) -> None:
    from virtwatch.tui.header import HostHeader

    app, hub = make_app()
    async with app.run_test(size=size) as pilot:
        hub.publish(fleet_snapshot())
        hub.publish(second_host_snapshot())
        await settle(pilot)
        headers = list(app.dashboard.query(HostHeader))
        assert [h.host for h in headers] == [HOST, HOST2]
        for h in headers:
            text = h.render().plain
            first = text.split("\n")[0]
            assert len(first) <= h.size.width
            # one screen line for the host line and one for each notice under it
            assert h.size.height == text.count("\n") + 1
            for part in (h.host, "VMs", "CPU", "MEM"):
                assert part in first
        first = headers[0].render().plain
        assert ("libvirt 9.0.0" in first) is (size[0] > 160)
        assert "● connected" in first or size[0] < 120
        # the terminal narrows: the header follows
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        assert all(len(h.render().plain.split("\n")[0]) <= 78 for h in headers)
        assert headers[0].size.height == 1


async def test_errors_and_notices_appear_in_the_header(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(fleet_snapshot(notice="DEMO HOST (fictional values)"))
        await settle(pilot)
        err = AppError(ErrorCode.LIBVIRT_CONNECTION_LOST, "[red]lost[/]", "it reconnects")
        hub.publish(ErrorReport(err, HOST, None, NOW + 1))
        for c in all_records()[:2]:
            hub.publish(c)
        await settle(pilot)
        text = app.dashboard.query_one(HostHeaders).text()
        assert "DEMO HOST (fictional values)" in text
        assert "[red]lost[/] — it reconnects" in text
        assert "hv-08.example.net/system · ↻ reconnecting, retry in 8s" in text
        assert "VMs 8/12 running" in text


async def test_theme_and_refresh_are_saved_to_the_config(
    make_app: AppFactory, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[hosts]]\nuri = "test:///default"\n\n[ui]\ntheme = "nord"\n')
    from virtwatch.core.config import load_config
    from virtwatch.tui.settings import ui_settings

    settings = ui_settings(load_config(config))
    app, _hub = make_app(settings=settings, config_path=config)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.theme == "nord"
        app.theme = "gruvbox"
        app.set_refresh(2.0)
        await settle(pilot)
    data = tomllib.loads(config.read_text())
    assert data["ui"] == {"theme": "gruvbox", "refresh_s": 2.0, "stale_after_s": 10.0}
    assert data["hosts"] == [{"uri": "test:///default"}]


async def test_command_palette_offers_actions_and_settings(make_app: AppFactory) -> None:
    app, hub = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("VM: force off", "Refresh every 2 s", "Tasks", "Help: every key"):
            assert title in titles
        assert any("theme" in t.lower() for t in titles)


@pytest.mark.libvirt
async def test_live_table_from_a_real_runtime(make_fleet: FleetFactory) -> None:
    """The whole pipe: test-driver fleet -> collector -> hub -> table, refreshed per tick."""
    hub = Hub()
    uri = make_fleet(6, states=(1,))
    async with Runtime([HostConfig(uri, name="lab", interval_s=0.1)], hub=hub) as rt:
        app = VirtwatchApp(hub, settings=FAST, cursor_blink=False)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.dashboard.machines
            for _ in range(100):
                await pilot.pause(0.05)
                if table.row_count == 6:
                    break
            assert table.row_count == 6
            async with rt.sources[0].connection() as b:
                await b.call(lambda conn: conn.lookupByName("vm-0002").suspend())
            rt.collectors[0].force_tick()
            rows: dict[str, tuple[str, ...]] = {}
            for _ in range(100):
                await pilot.pause(0.05)
                rows = rows_by_name(table)
                if rows["vm-0002"][3].startswith("paused"):
                    break
            assert rows["vm-0002"][3] == "paused: by admin"
            last = rt.collectors[0].last
            assert last is not None
            assert app.history.sparkline("lab", last.domains[0].uuid, "mem_alloc_kib", 8)


def test_changed_domain_changes_its_cells() -> None:
    from virtwatch.tui.rows import row_cells

    d = domain("a", cpu=10.0)
    assert row_cells(HOST, d, NOW) != row_cells(HOST, d._replace(cpu_pct=11.0), NOW)


def test_frozen_clock_is_the_canned_now() -> None:
    assert frozen() == NOW
    assert audit_records()[0].outcome is Outcome.VERIFIED


async def test_detail_graphs_follow_new_snapshots(make_app: AppFactory) -> None:
    now = [NOW]
    app, hub = make_app(clock=lambda: now[0], settings=FAST)
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        await select(pilot, app.dashboard.machines, "web-01")
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, VmDetailScreen)
        assert screen.graph("cpu").points_shown() == 1
        for i in range(1, 4):
            now[0] = NOW + 2 * i
            snap = fleet_snapshot(taken_at=now[0], tick=i + 1)
            doms = tuple(d._replace(measured_at=now[0]) for d in snap.domains)
            hub.publish(dataclasses.replace(snap, domains=doms))
            await pilot.pause(0.1)
            await settle(pilot)
        assert screen.graph("cpu").points_shown() == 4
        facts = str(screen.query_one("#detail-facts").render())
        assert "CPU 23.4%" in facts


async def test_toasts_show_hostile_names_as_text(make_app: AppFactory, sink: RecordingSink) -> None:
    app, hub = make_app()
    hostile = "10000000-0000-4000-8000-000000000010"
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(fleet_snapshot())
        await settle(pilot)
        await select(pilot, app.dashboard.machines, "[bold red]x[/]")
        await pilot.press("r", "y")
        await settle(pilot)
        assert [t.name for _a, ts in sink.requests for t in ts] == ["[bold red]x[/]"]
        hub.publish(
            AuditRecord(HOST, hostile, "[bold red]x[/]", "reboot", "root", None,
                        Outcome.VERIFIED, NOW, 1.0)
        )  # fmt: skip
        await settle(pilot)
        [note] = [n for n in app._notifications if "reboot verified" in n.message]
        assert note.message == "[bold red]x[/]: reboot verified in 1.0 s"
        assert note.markup is False
