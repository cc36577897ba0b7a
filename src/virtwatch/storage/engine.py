"""Engines for the store: SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE) or PostgreSQL.

synchronous=FULL: a committed write survives an app crash *and* a power loss; it
costs ~1 ms per commit here and the writer commits at most about once a second.
One writer engine (one connection) and a separate read-only reader engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

BUSY_TIMEOUT_MS = 5000


def db_url(target: str | Path) -> str:
    """A `--db` value (a file path or a SQLAlchemy URL) -> an async SQLAlchemy URL."""
    text = str(target)
    if "://" in text:
        if text.startswith("sqlite://"):
            return text.replace("sqlite://", "sqlite+aiosqlite://", 1)
        if text.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + text.split("://", 1)[1]
        return text
    return f"sqlite+aiosqlite:///{Path(text).expanduser().resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (None for PostgreSQL or an in-memory database)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # let SQLAlchemy's "begin" event emit BEGIN IMMEDIATE itself (SQLAlchemy's SQLite recipe)
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # first: switching a new file to WAL takes a lock, and two stores opening the same new
    # file at once (two recorders starting together) must wait for each other, not fail
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # only takes effect before the first table exists: a new file frees pages incrementally
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_connect_reader(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # take the write lock up front: a deferred read-then-write transaction fails at once
    # with "database is locked" when another connection committed meanwhile
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin_reader(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def make_engine(url: str, *, reader: bool = False) -> AsyncEngine:
    """The writer engine (one connection), or with `reader=True` a read-only one."""
    # SQLAlchemy loads with the first engine: `db_url` and `sqlite_path` stay cheap for
    # the command line, which parses --db long before (or without) opening a database
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None and not reader:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=2 if reader else 1, max_overflow=0)
        event.listen(
            engine.sync_engine, "connect", _sqlite_connect_reader if reader else _sqlite_connect
        )
        event.listen(engine.sync_engine, "begin", _sqlite_begin_reader if reader else _sqlite_begin)
        return engine
    return create_async_engine(
        url,
        pool_size=2 if reader else 1,
        max_overflow=2 if reader else 1,
        pool_pre_ping=True,
        pool_recycle=3600,
    )
