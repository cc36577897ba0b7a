"""The cheap revision read that lets a current database open without Alembic: it agrees
with Alembic at every revision, and only a database behind the head loads Alembic."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import text

from virtwatch.storage import migrate, revision
from virtwatch.storage.engine import make_engine
from virtwatch.storage.store import Store

# opens the store in a fresh interpreter and says what it found and what it loaded
OPEN = """
import asyncio, sys
from virtwatch.storage.store import Store

async def main():
    async with Store(sys.argv[1]) as store:
        print(store.migrated_from, store.revision, "alembic" in sys.modules)

asyncio.run(main())
"""


def open_in_a_new_process(url: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", OPEN, url], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.split()


def test_the_head_constant_is_the_migrations_head() -> None:
    assert revision.HEAD_REVISION == migrate.head_revision() == migrate.revisions()[-1]


async def test_the_cheap_read_agrees_with_alembic_at_every_revision(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        assert await revision.revision_of(engine) is None
        assert await migrate.revision_of(engine) is None
        for rev in migrate.revisions():
            await migrate.upgrade(engine, rev)
            assert await revision.revision_of(engine) == rev
            assert await migrate.revision_of(engine) == rev
    finally:
        await engine.dispose()


def test_a_current_database_opens_without_loading_alembic(store_url: str) -> None:
    head = revision.HEAD_REVISION
    assert open_in_a_new_process(store_url) == ["None", head, "True"]  # created: migrated
    assert open_in_a_new_process(store_url) == [head, head, "False"]  # current: a read only


async def test_a_database_behind_the_head_is_still_migrated(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        await migrate.upgrade(engine, "0002")
    finally:
        await engine.dispose()
    assert open_in_a_new_process(store_url) == ["0002", revision.HEAD_REVISION, "True"]


async def test_without_migrations_the_store_reports_the_revision_it_found(
    store_url: str,
) -> None:
    engine = make_engine(store_url)
    try:
        await migrate.upgrade(engine, "0001")
    finally:
        await engine.dispose()
    async with Store(store_url, run_migrations=False) as store:
        assert (store.migrated_from, store.revision) == (None, "0001")


async def test_several_stamped_revisions_are_an_error_like_alembics(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('0002')"))
        with pytest.raises(ValueError, match=f"several revisions: 0002, {revision.HEAD_REVISION}"):
            await revision.revision_of(engine)
    finally:
        await engine.dispose()
