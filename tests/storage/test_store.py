"""The store on a real SQLite file: migrations at open, batched sample writes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from tests.canned import fleet_snapshot
from virtwatch.core.errors import AppError
from virtwatch.core.hub import Hub
from virtwatch.storage import migrate
from virtwatch.storage.engine import db_url
from virtwatch.storage.rows import rows_from_snapshot
from virtwatch.storage.store import SampleRow, Store
from virtwatch.storage.writer import StoreWriter


async def test_open_creates_the_schema_at_head(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "v.db"
    async with Store(db_url(path)) as store:
        assert await migrate.revision_of(store.engine) == migrate.head_revision()
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert {"metric", "metric_sample", "alembic_version"} <= tables
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    con.close()


async def test_reopening_is_idempotent(store_url: str) -> None:
    url = store_url
    async with Store(url) as store:
        await store.write_samples([SampleRow("h", "u", "n", "cpu_pct", 1000, 1.0)])
    async with Store(url) as store:
        assert await store.count_samples() == 1


async def test_one_statement_for_a_tick(store_url: str) -> None:
    snap = fleet_snapshot()
    rows = rows_from_snapshot(snap)
    async with Store(store_url) as store:
        await store.write_samples(rows)
        assert store.statements == 1
        assert await store.count_samples() == len(rows)
        series = await store.series(snap.host, snap.domains[0].uuid, "cpu_pct")
    assert len(series) == 1


async def test_big_batches_are_split(store_url: str) -> None:
    rows = [SampleRow("h", f"u{i % 10}", "n", "cpu_pct", i, float(i)) for i in range(4500)]
    async with Store(store_url) as store:
        await store.write_samples(rows)
        assert store.statements == 3
        assert await store.count_samples() == 4500


async def test_unknown_values_are_not_stored_as_zero() -> None:
    rows = rows_from_snapshot(fleet_snapshot())
    names = {(r.vm_name, r.metric) for r in rows}
    assert ("backup", "cpu_pct") not in names  # shut off: no CPU figure at all
    assert ("backup", "mem_alloc_kib") in names
    assert ("win2022-rdp", "cpu_pct") not in names  # rate unknown


async def test_recorder_writes_what_the_hub_carries_and_flushes_on_cancel(
    store_url: str,
) -> None:
    hub = Hub()
    async with Store(store_url) as store:
        recorder = StoreWriter(store, hub, maintenance=False)  # canned times are old
        task = asyncio.create_task(recorder.run())
        hub.publish(fleet_snapshot(tick=1))
        await asyncio.sleep(0.2)
        hub.publish(fleet_snapshot(tick=2, taken_at=fleet_snapshot().taken_at + 2))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        per_tick = len(rows_from_snapshot(fleet_snapshot()))
        assert await store.count_samples() == 2 * per_tick


@pytest.mark.parametrize("given", ["/tmp/x.db", "sqlite:////tmp/x.db"])
def test_db_url(given: str) -> None:
    assert db_url(given) == "sqlite+aiosqlite:////tmp/x.db"


def test_values_that_are_not_finite_are_not_stored() -> None:
    from dataclasses import replace

    snap = fleet_snapshot()
    broken = snap.domains[0]._replace(cpu_pct=float("nan"), mem_used_kib=None)
    rows = rows_from_snapshot(replace(snap, domains=(broken,), host_sample=None))
    assert {r.metric for r in rows} == {"mem_alloc_kib"}


async def test_a_store_is_used_only_while_open(store_url: str) -> None:
    store = Store(store_url)
    with pytest.raises(AppError, match="unopened"):
        _ = store.engine
    async with store:
        pass
    with pytest.raises(AppError, match="closed"):
        await store.write_samples([SampleRow("h", "u", "n", "m", 1, 1.0)])
    with pytest.raises(AppError, match="opens once"):
        await store.open()


async def test_a_database_that_cannot_open_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(AppError, match="cannot open the database") as info:
        await Store(db_url(tmp_path / "dir.db")).open()
    assert info.value.hint
