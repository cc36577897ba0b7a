"""Throw-away databases for the storage suite: a SQLite file, or a fresh PostgreSQL
database on the local server that scripts/postgres-up.sh starts (never skipped)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import asyncpg
import pytest

from virtwatch.storage.engine import db_url

PG_URL = os.environ.get(
    "VIRTWATCH_TEST_PG", "postgresql://virtwatch:virtwatch@127.0.0.1:5432/virtwatch"
)


def pg_run(*statements: str, url: str = PG_URL) -> list[list[tuple[object, ...]]]:
    """Run statements on PostgreSQL (in a thread with its own loop: callable anywhere)."""

    async def go() -> list[list[tuple[object, ...]]]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return [[tuple(r) for r in await conn.fetch(sql)] for sql in statements]
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def pg_url_of(name: str) -> str:
    return PG_URL.rsplit("/", 1)[0] + "/" + name


@contextmanager
def pg_database() -> Iterator[str]:
    """A new empty database; its plain postgresql:// URL. Dropped afterwards."""
    name = f"vwtest_{uuid.uuid4().hex[:12]}"
    try:
        pg_run(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as err:
        pytest.fail(
            f"PostgreSQL is not reachable as {PG_URL.split('@')[-1]}: {err}. "
            "Start it with scripts/postgres-up.sh (make test does)"
        )
    try:
        yield pg_url_of(name)
    finally:
        _drop(name)


def _drop(name: str) -> None:
    # not WITH (FORCE): that needs rights over autovacuum workers, which a plain DROP
    # stops by itself; a session of a killed test process may take a moment to go
    for attempt in range(50):
        try:
            pg_run(f'DROP DATABASE IF EXISTS "{name}"')
            return
        except asyncpg.ObjectInUseError:
            if attempt == 49:
                raise
            time.sleep(0.2)


@contextmanager
def database(kind: str, tmp: os.PathLike[str]) -> Iterator[str]:
    """An async SQLAlchemy URL of a fresh database of `kind` ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        yield db_url(os.path.join(tmp, "virtwatch.db"))
    else:
        with pg_database() as url:
            yield db_url(url)
