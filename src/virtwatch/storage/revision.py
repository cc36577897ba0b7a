"""The schema revision this virtwatch's migrations end at, and a cheap read of the revision
a database is stamped with: opening a database that is already current needs no Alembic
(a test keeps HEAD_REVISION equal to the migrations' head)."""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

HEAD_REVISION = "0004"
VERSION_TABLE = "alembic_version"  # Alembic's own bookkeeping table and column
_SELECT = text(f"SELECT version_num FROM {VERSION_TABLE}")


def stamped_revisions(conn: Connection) -> tuple[str, ...]:
    """Every revision stamped in the database: none for one Alembic never touched, one
    for a linear history like ours."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return ()
    return tuple(sorted(str(v) for v in conn.execute(_SELECT).scalars()))


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (None when it has no schema yet); like Alembic's
    `MigrationContext.get_current_revision`, a database with several heads is an error."""
    revs = stamped_revisions(conn)
    if len(revs) > 1:
        raise ValueError(f"the database is stamped with several revisions: {', '.join(revs)}")
    return revs[0] if revs else None


async def revision_of(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(current_revision)
