"""The dashboard's start as the CLI composes it (`recording_after_start`): the first table
is painted before the store side opens, nothing published meanwhile is lost, the app gets
the stored history once the store is open, and a database that cannot open ends the app
with its error. A real test-driver runtime, a real SQLite file, the real app (pilot)."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from tests.conftest import FleetFactory
from tests.waiting import until
from virtwatch.cli.compose import build_runtime, recording_after_start
from virtwatch.core.config import Config
from virtwatch.core.errors import AppError
from virtwatch.core.hub import Hub
from virtwatch.core.runtime import HostConfig
from virtwatch.storage.intake import store_intake
from virtwatch.storage.rows import ms
from virtwatch.tui.app import VirtwatchApp
from virtwatch.tui.factory import make_app

pytestmark = pytest.mark.libvirt

NEVER = 3600.0  # the start ends with the first table or the app's exit, never by the clock


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    """The start ends with gc.freeze(): give this test process its collector back."""
    yield
    gc.unfreeze()


def compose(uri: str, db: Path) -> tuple[VirtwatchApp, AbstractAsyncContextManager[None]]:
    """What `run_dashboard` builds before its app runs, in the same order."""
    hub = Hub()
    intake = store_intake(hub)
    config = Config({}, None)
    rt = build_runtime(config, [HostConfig(uri, name="lab", interval_s=0.2)], hub)
    app = make_app(hub, config=config, interval_s=0.2, runner=rt.tasks, sources=rt.pools)
    block = recording_after_start(app, config, rt, hub, str(db), intake, startup_max_s=NEVER)
    return app, block


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def count(db: Path, sql: str) -> int:
    n = rows(db, sql)[0][0]
    assert isinstance(n, int)
    return n


async def test_the_store_opens_after_the_first_table_and_keeps_what_came_before(
    make_fleet: FleetFactory, tmp_path: Path
) -> None:
    db = tmp_path / "virtwatch.db"
    app, block = compose(make_fleet(5, states=(1,)), db)
    async with block, app.run_test(size=(120, 40)) as pilot:
        await app.first_table.wait()
        # painted, and the store side has not opened: no file, no stored history yet
        assert app.dashboard.machines.row_count == 5
        assert not db.exists()
        assert app.series_source is None
        first = app.board.snapshots["lab"]
        await until(lambda: app.series_source is not None, "the stored history")
        assert app.timeline is not None
        await pilot.press("q")
    # what the runtime published before the writer existed was kept: its very first
    # record (the host connecting) and the samples of the snapshot on the first table;
    # and the health checks ran once the store was open
    states = [s for (s,) in rows(db, "SELECT state FROM host_connection ORDER BY id")]
    assert states[0] == "connecting"
    assert "connected" in states
    taken = ms(first.taken_at)
    assert count(db, f"SELECT count(*) FROM metric_sample WHERE ts_ms = {taken}") > 0
    assert count(db, "SELECT count(*) FROM health_result") > 0


async def test_an_app_that_leaves_before_any_table_still_keeps_its_records(
    tmp_path: Path,
) -> None:
    db = tmp_path / "virtwatch.db"
    app, block = compose(f"test://{tmp_path / 'no-such-fleet.xml'}", db)  # never answers
    async with block, app.run_test(size=(120, 40)) as pilot:
        await until(lambda: bool(app.board.errors), "the host's error on screen")
        assert not app.first_table.is_set()
        await pilot.press("q")
    assert count(db, "SELECT count(*) FROM error_log") >= 1
    assert ("connecting",) in rows(db, "SELECT state FROM host_connection")


async def test_a_database_that_cannot_open_ends_the_app_with_its_error(
    make_fleet: FleetFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    app, block = compose(make_fleet(2, states=(1,)), blocker / "sub" / "virtwatch.db")

    async def run() -> None:
        async with block, app.run_test(size=(120, 40)):
            await app.first_table.wait()
            await until(lambda: not app.is_running, "the app ending")

    with pytest.raises(AppError, match="cannot open the database"):
        await run()
