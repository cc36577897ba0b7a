"""Running Alembic programmatically on an open connection, at startup and from the CLI.

An upgrade is one transaction (BEGIN IMMEDIATE on SQLite, and PostgreSQL's DDL is
transactional): a failed migration leaves the previous schema as it was. On
PostgreSQL an advisory lock serialises recorders that start at the same moment.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x76_77_6D_69  # "vwmi": any constant shared by every virtwatch


def alembic_config(
    connection: Connection | None = None, *, script_location: Path = MIGRATIONS
) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision(script_location: Path = MIGRATIONS) -> str:
    head = ScriptDirectory.from_config(
        alembic_config(script_location=script_location)
    ).get_current_head()
    assert head is not None
    return head


def revisions(script_location: Path = MIGRATIONS) -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(script_location=script_location))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(
    engine: AsyncEngine, revision: str = "head", *, script_location: Path = MIGRATIONS
) -> tuple[str | None, str | None]:
    """Upgrade the schema to `revision` in one transaction (all or nothing).

    Returns the (before, after) revisions.
    """

    def run(sync_conn: Connection) -> tuple[str | None, str | None]:
        if sync_conn.dialect.name == "postgresql":
            sync_conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        before = current_revision(sync_conn)
        command.upgrade(alembic_config(sync_conn, script_location=script_location), revision)
        return before, current_revision(sync_conn)

    async with engine.begin() as conn:
        return await conn.run_sync(run)


async def revision_of(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(current_revision)
