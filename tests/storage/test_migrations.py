"""Migrations on real databases: from empty, from every earlier revision, all or nothing."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from virtwatch.core.errors import AppError
from virtwatch.storage import migrate
from virtwatch.storage.engine import make_engine
from virtwatch.storage.models import Base
from virtwatch.storage.store import Store

HEAD_TABLES = {
    "metric",
    "metric_sample",
    "metric_minute",
    "metric_hour",
    "rollup_state",
    "error_log",
    "domain_event",
    "task_log",
    "audit",
    "health_result",
    "health_alert",
    "host_connection",
    "writer_claim",
    "alembic_version",
}

# rows each revision can hold, inserted before upgrading past it
SEED: dict[str, list[str]] = {
    "0001": [
        "INSERT INTO metric (host, vm_uuid, vm_name, name) VALUES ('h', 'u1', 'web', 'cpu_pct')",
        "INSERT INTO metric_sample (metric_id, ts_ms, value) VALUES (1, 1000, 12.5)",
    ],
    "0002": [
        "INSERT INTO error_log (fingerprint, code, category, severity, message, hint, "
        "context, cause, host, vm, count, first_at_ms, last_at_ms, closed) VALUES "
        "('f', 'TIMEOUT', 'resource', 30, 'slow', 'wait', '{}', '', 'h', 'web', 3, 1, 2, false)",
        "INSERT INTO domain_event (host, vm_uuid, vm_name, kind, summary, detail, at_ms) "
        "VALUES ('h', 'u1', 'web', 'lifecycle', 'started', '{}', 5)",
    ],
    "0003": [
        "INSERT INTO metric_minute (metric_id, ts_ms, count, sum, min, max, p95) "
        "VALUES (1, 0, 1, 12.5, 12.5, 12.5, 12.5)",
    ],
    "0004": [
        "INSERT INTO writer_claim (host, holder, role, pid, nodename, started_ms, "
        "heartbeat_ms, writing, process_ns) "
        "VALUES ('h', 'n:1:0:ab', 'recorder', 1, 'n', 0, 0, true, '')",
    ],
}


def _diff(sync_conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(sync_conn), Base.metadata))


def _tables(sync_conn: Connection) -> set[str]:
    return set(inspect(sync_conn).get_table_names())


async def _schema(url: str) -> tuple[str | None, set[str], list[object]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rev = await conn.run_sync(migrate.current_revision)
            return rev, await conn.run_sync(_tables), await conn.run_sync(_diff)
    finally:
        await engine.dispose()


async def _exec(url: str, statements: list[str]) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for sql in statements:
                await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def _count(url: str, table: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
    finally:
        await engine.dispose()


def test_history_is_linear_and_ends_at_head() -> None:
    revs = migrate.revisions()
    assert revs[0] == "0001"
    assert revs[-1] == migrate.head_revision()
    assert len(revs) == len(set(revs)) >= 3


async def test_from_empty_to_head_matches_the_models(store_url: str) -> None:
    async with Store(store_url) as store:
        assert store.migrated_from is None
        assert store.revision == migrate.head_revision()
    rev, tables, diff = await _schema(store_url)
    assert rev == migrate.head_revision()
    assert tables == HEAD_TABLES
    assert diff == []  # the models describe exactly what the migrations built


def test_every_revision_has_seed_rows() -> None:
    assert set(SEED) == set(migrate.revisions())


@pytest.mark.parametrize("start", migrate.revisions()[:-1])
async def test_from_every_earlier_revision_keeps_the_data(store_url: str, start: str) -> None:
    revs = migrate.revisions()
    engine = make_engine(store_url)
    try:
        assert await migrate.upgrade(engine, start) == (None, start)
    finally:
        await engine.dispose()
    for seeded in revs[: revs.index(start) + 1]:
        await _exec(store_url, SEED[seeded])
    async with Store(store_url) as store:
        assert (store.migrated_from, store.revision) == (start, migrate.head_revision())
    rev, tables, diff = await _schema(store_url)
    assert (rev, tables, diff) == (migrate.head_revision(), HEAD_TABLES, [])
    assert await _count(store_url, "metric_sample") == 1
    if start >= "0002":
        assert await _count(store_url, "error_log") == 1
    if start >= "0003":
        assert await _count(store_url, "metric_minute") == 1
    for later in revs[revs.index(start) + 1 :]:  # the new tables take rows (that refer to old)
        await _exec(store_url, SEED[later])


async def test_every_revision_is_reachable_step_by_step(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        before: str | None = None
        for rev in migrate.revisions():
            assert await migrate.upgrade(engine, rev) == (before, rev)
            before = rev
    finally:
        await engine.dispose()


async def test_a_failed_migration_leaves_the_previous_schema(store_url: str) -> None:
    """0003 creates rollup_state and metric_minute before metric_hour; a metric_hour
    that already exists makes it fail half-way. Nothing of 0003 may remain."""
    engine = make_engine(store_url)
    try:
        await migrate.upgrade(engine, "0002")
    finally:
        await engine.dispose()
    await _exec(store_url, [*SEED["0001"], *SEED["0002"], "CREATE TABLE metric_hour (x INTEGER)"])
    with pytest.raises(AppError, match="cannot open the database") as info:
        await Store(store_url).open()
    assert "metric_hour" in str(info.value)
    rev, tables, _diff = await _schema(store_url)
    assert rev == "0002"
    assert "rollup_state" not in tables
    assert "metric_minute" not in tables
    assert await _count(store_url, "metric_sample") == 1
    assert await _count(store_url, "error_log") == 1
    await _exec(store_url, ["DROP TABLE metric_hour"])
    async with Store(store_url) as store:  # fixed: the same upgrade now goes through
        assert store.revision == migrate.head_revision()


async def test_a_broken_revision_rolls_back_entirely(store_url: str, tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, scripts)
    (scripts / "versions" / "0099_broken.py").write_text(
        '"""broken"""\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n"
        f"revision = '0099'\ndown_revision = {migrate.head_revision()!r}\n"
        "branch_labels = None\ndepends_on = None\n"
        "def upgrade() -> None:\n"
        "    op.create_table('half_done', sa.Column('id', sa.Integer, primary_key=True))\n"
        "    op.execute('INSERT INTO metric (host) VALUES (NULL)')\n"
        "def downgrade() -> None:\n"
        "    pass\n"
    )
    engine = make_engine(store_url)
    try:
        await migrate.upgrade(engine)
        with pytest.raises(Exception, match=r"(?i)not null|null value"):
            await migrate.upgrade(engine, script_location=scripts)
        assert await migrate.revision_of(engine) == migrate.head_revision()
        async with engine.connect() as conn:
            assert "half_done" not in await conn.run_sync(_tables)
    finally:
        await engine.dispose()


async def test_two_stores_opening_at_once_both_get_the_head(store_url: str) -> None:
    """Two recorders starting together on one database: one migrates, one waits."""
    a, b = Store(store_url), Store(store_url)
    await asyncio.gather(a.open(), b.open())
    try:
        assert a.revision == b.revision == migrate.head_revision()
    finally:
        await a.close()
        await b.close()
