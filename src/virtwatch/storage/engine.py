"""Engines for the store: SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE) or PostgreSQL.

synchronous=FULL: a committed write survives an app crash *and* a power loss; it
costs ~1 ms per commit here and the writer commits at most about once a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

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


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # let SQLAlchemy's "begin" event emit BEGIN IMMEDIATE itself (SQLAlchemy's SQLite recipe)
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # take the write lock up front: a deferred read-then-write transaction fails at once
    # with "database is locked" when another connection committed meanwhile
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=1, max_overflow=0)
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)
