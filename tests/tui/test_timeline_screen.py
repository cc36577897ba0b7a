"""Pilot tests of the Timeline screen over a real SQLite store: open it from anywhere,
filter and zoom, Enter lands on the VM's detail at that moment with the entry marked,
`e` exports the window; without a database it shows what this session saw."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text

from tests.canned import domain, fleet_snapshot
from tests.integration.test_timeline_store import DB, HOST, MIN, RULES, T0, WEB, records, samples
from tests.tui.conftest import AppFactory, settle
from virtwatch.core.errors import Severity
from virtwatch.core.hub import Hub
from virtwatch.core.records import DomainEvent, EventKind
from virtwatch.core.triage.entries import EntryKind, TimelineEntry
from virtwatch.core.triage.spike_watch import Series, SpikeWatch
from virtwatch.core.triage.when import Window
from virtwatch.storage import rollup
from virtwatch.storage.engine import db_url
from virtwatch.storage.export import StoreIncidents
from virtwatch.storage.store import Store
from virtwatch.storage.timeline_queries import StoreRollupReader
from virtwatch.storage.writer import StoreWriter
from virtwatch.tui.app import VirtwatchApp
from virtwatch.tui.detail import GRAPHS, Marker, Span, VmDetailScreen
from virtwatch.tui.timeline_screen import (
    MARK_COLOR,
    MomentDetailScreen,
    TimelineScreen,
    WindowDialog,
    anchor_for,
    entry_cells,
    span_for,
)

NOW = float(T0 + 2 * 3600)


def clock() -> float:
    return NOW


class StoredSeries:
    """A SeriesSource over the store's minute rollups (what the CLI wires for the detail)."""

    def __init__(self, store: Store) -> None:
        self.reader = StoreRollupReader(store)
        self.queries: list[tuple[str, float, float]] = []

    async def series(
        self, host: str, vm_uuid: str, metric: str, since: float, until: float
    ) -> Sequence[tuple[float, float]]:
        self.queries.append((metric, since, until))
        key = Series(host, vm_uuid, metric)
        rows = (await self.reader.minute_rows(int(since), int(until), [key])).get(key, [])
        return [(float(r.ts), r.mean) for r in rows]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    hub = Hub()
    async with Store(db_url(tmp_path / "history.db")) as st:
        writer = StoreWriter(st, hub, maintenance=False)
        writer.add_samples(samples())
        for item in records():
            writer.add_record(item)  # type: ignore[arg-type]
        await writer.flush()
        await rollup.rollup(st, [HOST], now_ms=int(NOW * 1000))
        for event in await SpikeWatch(StoreRollupReader(st), hub.publish, RULES).judge_new():
            writer.add_record(event)
        await writer.flush()
        yield st


def build(make_app: AppFactory, store: Store | None, **kw: Any) -> tuple[VirtwatchApp, Hub]:
    if store is not None:
        kw.setdefault("timeline", StoreIncidents(store, generated_by="vw test"))
        kw.setdefault("series", StoredSeries(store))
    return make_app(clock=clock, **kw)


async def loaded(pilot: Any, screen: TimelineScreen, loads: int = 1) -> None:
    """Wait (bounded) until the screen has answered `loads` store queries."""
    for _ in range(200):
        await pilot.pause()
        if len(screen.loads) >= loads and screen.status != "loading…":
            return
    raise AssertionError(f"the timeline did not load: {screen.status}")


async def open_timeline(pilot: Any, app: VirtwatchApp) -> TimelineScreen:
    await pilot.press("i")
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, TimelineScreen)
    await loaded(pilot, screen)
    return screen


def kinds(screen: TimelineScreen) -> list[tuple[EntryKind, str | None]]:
    return [(e.kind, e.vm_name) for e in screen.entries]


async def test_open_filter_enter_lands_on_the_vm_detail_at_that_moment(
    make_app: AppFactory, store: Store
) -> None:
    app, _hub = build(make_app, store)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = await open_timeline(pilot, app)
        # the last hour, oldest first: the spike, the disk, the pause, the actions
        assert screen.view.window == Window(NOW - 3600, NOW)
        assert [e.at - T0 for e in screen.entries] == [
            60 * MIN, 65 * MIN, 70 * MIN, 71 * MIN, 71 * MIN + 0.5, 72 * MIN, 73 * MIN,
            80 * MIN, 80 * MIN + 1, 85 * MIN, 88 * MIN,
        ]  # fmt: skip
        assert screen.table.row_count == 11
        # filter: only events, then only web-01's (the VM under the cursor)
        await pilot.press("k")
        await loaded(pilot, screen, 2)
        assert screen.view.flt.kinds == {EntryKind.EVENT}
        assert kinds(screen) == [
            (EntryKind.EVENT, "web-01"), (EntryKind.EVENT, "web-01"),
            (EntryKind.EVENT, "web-01"), (EntryKind.EVENT, "db-01"),
        ]  # fmt: skip
        screen.table.move_cursor(row=1)  # "suspended: I/O error"
        await pilot.press("v")
        await loaded(pilot, screen, 3)
        assert screen.view.flt.vms == {WEB}
        assert [e.title for e in screen.entries][1] == "suspended: I/O error"
        detail = str(screen.query_one("#timeline-detail").render())
        assert "likely cause: host disk /var/lib/libvirt was crit at that moment" in detail
        # Enter: the VM's detail, its graphs around that moment, the entry marked
        screen.table.move_cursor(row=1)
        entry = screen.entries[1]
        await pilot.press("enter")
        await settle(pilot)
        detail_screen = app.screen
        assert isinstance(detail_screen, MomentDetailScreen)
        assert isinstance(detail_screen, VmDetailScreen)
        assert (detail_screen.ref.host, detail_screen.ref.uuid) == (HOST, WEB)
        assert detail_screen.ref.name == "web-01"
        assert detail_screen.moment == entry.at
        assert detail_screen.span is Span.HOUR1
        end = entry.at + 1800  # half an hour after: the moment sits mid-graph
        assert detail_screen.graphs_end == anchor_for(entry.at, Span.HOUR1, NOW) == end
        for _ in range(100):  # the stored series of that hour arrive in a worker
            await pilot.pause()
            if detail_screen.graph("cpu").points_shown():
                break
        assert detail_screen.requests == [(Span.HOUR1, end - 3600, end)]
        mark = Marker(entry.at, "suspended: I/O error", MARK_COLOR)
        for spec in GRAPHS:
            assert mark in detail_screen.graph(spec.key).markers
        cpu = detail_screen.graph("cpu")
        assert cpu.now == end
        assert cpu.points_shown() == 48  # a minute each, from the rollups (42..89 min in)
        # back: the filtered timeline is still there
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is screen
        assert screen.view.flt.vms == {WEB}


async def test_zoom_custom_window_severity_text_and_clear(
    make_app: AppFactory, store: Store
) -> None:
    app, _hub = build(make_app, store)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = await open_timeline(pilot, app)
        await pilot.press("1")
        await loaded(pilot, screen, 2)
        assert screen.view.window == Window(NOW - 900, NOW)
        assert screen.entries == []  # nothing in the last 15 min
        assert "nothing in this window" in str(screen.query_one("#timeline-detail").render())
        await pilot.press("3")
        await loaded(pilot, screen, 3)
        assert screen.view.zoom_s == 86400
        assert len(screen.entries) == 13  # the connection and the boot too
        await pilot.press("s", "s")  # at least error
        await loaded(pilot, screen, 5)
        assert screen.view.flt.min_severity is Severity.ERROR
        assert all(e.severity >= Severity.ERROR for e in screen.entries)
        await pilot.press("x")
        await loaded(pilot, screen, 6)
        await pilot.press("slash")
        await pilot.press(*"no space")
        await pilot.press("enter")
        for _ in range(100):
            await pilot.pause()
            if screen.view.flt.text == "no space" and screen.status != "loading…":
                break
        assert [e.kind for e in screen.entries] == [EntryKind.EVENT]
        # a custom window: 70 to 72 minutes in
        await pilot.press("x")
        await pilot.press("c")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, WindowDialog)
        dialog.query_one("#since").value = str(T0 + 70 * MIN)  # type: ignore[attr-defined]
        dialog.query_one("#until").value = str(T0 + 72 * MIN)  # type: ignore[attr-defined]
        dialog.query_one("#since").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is screen
        for _ in range(100):
            await pilot.pause()
            if screen.view.zoom_s is None and screen.status != "loading…":
                break
        assert screen.view.window == Window(T0 + 70 * MIN, T0 + 72 * MIN)
        assert [e.at - T0 for e in screen.entries] == [70 * MIN, 71 * MIN, 71 * MIN + 0.5]


async def test_a_bad_custom_window_says_why_and_stays_open(
    make_app: AppFactory, store: Store
) -> None:
    app, _hub = build(make_app, store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = await open_timeline(pilot, app)
        await pilot.press("c")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, WindowDialog)
        dialog.query_one("#since").value = "whenever"  # type: ignore[attr-defined]
        dialog.query_one("#since").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is dialog
        assert "cannot read the time 'whenever'" in str(dialog.query_one("#window-error").render())
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is screen  # type: ignore[comparison-overlap]
        assert screen.view.zoom_s == 3600


async def test_export_writes_the_window_with_one_key(
    make_app: AppFactory, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app, _hub = build(make_app, store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = await open_timeline(pilot, app)
        await pilot.press("e")
        for _ in range(200):
            await pilot.pause()
            if screen.exported:
                break
        (path,) = screen.exported
        assert path.parent == tmp_path
        doc = json.loads(path.read_text())
        assert doc["schema"] == "virtwatch.export"
        assert doc["window"] == {
            "since": NOW - 3600,
            "until": NOW,
            "since_iso": "2026-11-18T12:00:00+00:00",
            "until_iso": "2026-11-18T13:00:00+00:00",
        }
        assert len(doc["timeline"]) == 11
        assert "hunter2" not in path.read_text()


async def test_a_host_level_entry_opens_nothing(make_app: AppFactory, store: Store) -> None:
    app, _hub = build(make_app, store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = await open_timeline(pilot, app)
        row = next(i for i, e in enumerate(screen.entries) if e.kind is EntryKind.HEALTH)
        screen.table.move_cursor(row=row)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is screen


async def test_without_a_database_it_shows_this_session_and_follows_the_hub(
    make_app: AppFactory,
) -> None:
    app, hub = build(make_app, None)
    async with app.run_test(size=(120, 40)) as pilot:
        hub.publish(
            DomainEvent(HOST, DB, "db-01", EventKind.LIFECYCLE, "started: booted", NOW - 60)
        )
        await settle(pilot)
        screen = await open_timeline(pilot, app)
        assert [e.title for e in screen.entries] == ["started: booted"]
        assert screen.status == "no database: this session only"
        hub.publish(
            DomainEvent(HOST, DB, "db-01", EventKind.LIFECYCLE, "stopped: crashed", NOW - 30)
        )
        for _ in range(400):  # the screen looks for new records every 2 s
            await pilot.pause(0.01)
            if len(screen.entries) == 2:
                break
        assert [e.title for e in screen.entries] == ["started: booted", "stopped: crashed"]
        await pilot.press("e")
        await settle(pilot)
        assert screen.exported == []
        await pilot.press("i")  # from the timeline itself: no second copy
        await settle(pilot)
        assert app.screen is screen


async def test_the_key_works_from_the_vm_detail_too(make_app: AppFactory, store: Store) -> None:
    app, hub = build(make_app, store)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        screen = await open_timeline(pilot, app)
        screen.table.move_cursor(row=0)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, MomentDetailScreen)
        await pilot.press("i")  # back to the timeline that opened it
        await settle(pilot)
        assert app.screen is screen  # type: ignore[comparison-overlap]
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.dashboard  # type: ignore[comparison-overlap]
        # from the dashboard's own detail screen: the timeline replaces it
        snap = fleet_snapshot(taken_at=NOW)
        hub.publish(dataclasses.replace(snap, host=HOST, domains=(domain("web-01", uuid=WEB),)))
        await settle(pilot)
        assert app.open_detail(HOST, WEB) is not None
        await settle(pilot)
        assert isinstance(app.screen, VmDetailScreen)
        await pilot.press("i")
        await settle(pilot)
        again = app.screen
        assert isinstance(again, TimelineScreen)
        assert again is not screen
        assert [type(s) for s in app.screen_stack][-2:] == [type(app.dashboard), TimelineScreen]
        await loaded(pilot, again)
        again.table.move_cursor(row=0)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, MomentDetailScreen)


def test_rows_are_text_never_markup() -> None:
    e = TimelineEntry(
        NOW, EntryKind.EVENT, Severity.ERROR, "[bold red]x[/] stopped: crashed", HOST,
        WEB, "[red]vm[/]", "event:1", hint="[link]h[/]",
    )  # fmt: skip
    cells = entry_cells(e, 3600, UTC)
    assert all(isinstance(c, Text) for c in cells)
    assert cells[0].plain == "13:00:00"
    assert cells[4].plain == "[red]vm[/]"
    assert cells[5].plain == "[bold red]x[/] stopped: crashed  ← [link]h[/]"
    assert cells[1].plain == "error"


@pytest.mark.parametrize(
    ("window_s", "span"),
    [(900, Span.HOUR1), (3600, Span.HOUR1), (86400, Span.DAY1), (3 * 86400, Span.DAY7)],
)
def test_the_detail_range_follows_the_zoom(window_s: float, span: Span) -> None:
    assert span_for(window_s) is span


def test_the_moment_sits_mid_graph_unless_that_is_the_future() -> None:
    assert anchor_for(1000.0, Span.HOUR1, now=10_000.0) == 2800.0
    assert anchor_for(9900.0, Span.HOUR1, now=10_000.0) == 10_000.0
