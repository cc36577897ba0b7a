"""A dedicated connection: one connection of a pool reserved for one consumer (the
collector, and the event stream on the same connection), reopened after it is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from virtwatch.core.errors import AppError
from virtwatch.core.libvirt.calls import Borrowed, is_dead_error
from virtwatch.core.libvirt.connection import SourceState
from virtwatch.core.libvirt.pool import LibvirtPool, Listener, _Entry, _misuse
from virtwatch.core.libvirt.uri import redact_uri

log = logging.getLogger(__name__)


class DedicatedConnection:
    """One connection of a pool reserved for one consumer (a `ConnectionSource`).

    Opened on first use; after libvirtd drops it, reopened in the background with the
    pool's backoff, and `add_open_listener` functions run again before it is used.
    While the host is down, `connection()` fails at once with the outage's error."""

    def __init__(self, pool: LibvirtPool, name: str) -> None:
        self._pool = pool
        self.name = name
        self._state = SourceState.UNOPENED
        self._entry: _Entry | None = None
        self._lock = asyncio.Lock()
        self._lost_event = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._open_listeners: list[Listener] = []
        self._close_listeners: list[Listener] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self.users = 0
        self.opens = 0
        self.wanted = False  # used at least once: the pool keeps it open from then on
        self.opened_at: float | None = None

    @property
    def uri(self) -> str:
        return self._pool.uri

    @property
    def read_only(self) -> bool:
        return self._pool.read_only

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def live(self) -> bool:
        e = self._entry
        return e is not None and not e.dead and not e.closed and not e.suspect

    def __repr__(self) -> str:
        return f"<DedicatedConnection {self.name} {redact_uri(self.uri)} {self._state}>"

    def add_open_listener(self, fn: Listener) -> None:
        """Call `fn(conn)` in a worker thread after each (re)open, before the connection
        is handed out: event callbacks re-register here after a reconnect."""
        self._open_listeners.append(fn)

    def add_close_listener(self, fn: Listener) -> None:
        """Call `fn(conn)` in a worker thread before a live connection is closed on
        purpose (deregister event callbacks here)."""
        self._close_listeners.append(fn)

    def _check_usable(self) -> None:
        if self._state in (SourceState.CLOSING, SourceState.CLOSED):
            raise _misuse(f"dedicated connection '{self.name}' is {self._state}")
        self._pool._check_open()

    async def open(self) -> DedicatedConnection:
        """Open now rather than on first use."""
        await self._ensure()
        return self

    async def _ensure(self) -> _Entry:
        self._check_usable()
        self.wanted = True
        if self.live:
            assert self._entry is not None
            return self._entry
        async with self._lock:
            self._check_usable()
            if self.live:
                assert self._entry is not None
                return self._entry
            self._drop()
            try:
                entry = await self._pool._open_entry(self)
            except AppError:
                self._start_keeper()
                raise
            if self._state in (SourceState.CLOSING, SourceState.CLOSED):
                self._pool._destroy(entry)
                raise _misuse(f"dedicated connection '{self.name}' is {self._state}")
            self._entry = entry
            self._state = SourceState.OPEN
            self.opens += 1
            self.opened_at = time.time()
            self._lost_event.clear()
            self._pool._update_link()
            self._pool._changed()
            self._start_keeper()
            return entry

    def _drop(self) -> None:
        """Detach the current entry; close it now, or when its last user is done."""
        entry, self._entry = self._entry, None
        if entry is not None and not entry.closed:
            if entry.users:
                entry.retired = True
            else:
                self._pool._destroy(entry)

    def _lost(self, entry: _Entry) -> None:
        if entry is self._entry:
            self._lost_event.set()
            self._drop()

    def _start_keeper(self) -> None:
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(
                self._keep(), name=f"pool:{self._pool.host}:{self.name}"
            )

    async def _keep(self) -> None:
        """Reopen after death (with the pool's backoff); probe while idle."""
        interval = self._pool.settings.health_interval_s
        while self._state is SourceState.OPEN or self._state is SourceState.UNOPENED:
            if self._pool.state is not SourceState.OPEN:
                return
            if self.live:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._lost_event.wait()
                entry = self._entry
                if (
                    self.live
                    and entry is not None
                    and self.users == 0
                    and time.monotonic() - entry.last_checked >= interval
                ):
                    await self._pool._probe(entry)
                continue
            await self._pool._wait_turn()
            with contextlib.suppress(AppError):
                await self._ensure()
            if not self.live:
                await asyncio.sleep(0)  # the pool's backoff paces the next try

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Borrowed]:
        entry = await self._ensure()
        self.users += 1
        entry.users += 1
        self._idle.clear()
        borrowed = self._pool._lend(entry)
        try:
            yield borrowed
        except BaseException as exc:
            if is_dead_error(exc) and not entry.dead:
                self._pool._mark_lost(entry, "a call failed: the connection is closed")
            raise
        finally:
            borrowed.end()
            entry.last_used = time.monotonic()
            entry.users -= 1
            self.users -= 1
            if (
                entry.users == 0
                and (entry.dead or entry.retired or entry.suspect)
                and not entry.closed
            ):
                if entry is self._entry:
                    self._entry = None
                self._pool._destroy(entry)
            if self.users == 0:
                self._idle.set()
                self._pool._drained.set()

    async def close(self) -> None:
        """Wait (up to the pool's close grace) for users, then close; frees its slot."""
        await self._shutdown(grace_s=self._pool.settings.close_grace_s)

    async def _shutdown(self, *, grace_s: float) -> None:
        if self._state is SourceState.CLOSED:
            return
        self._state = SourceState.CLOSING
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self.users and grace_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await self._idle.wait()
        entry, self._entry = self._entry, None
        if entry is not None and not entry.closed:
            if entry.users:
                entry.retired = True  # closed by the last user on its way out
            else:
                if self._close_listeners and not entry.dead:
                    with contextlib.suppress(Exception):
                        await self._pool._run_listeners(entry, self._close_listeners)
                self._pool._destroy(entry)
        self._state = SourceState.CLOSED
        self._pool._forget_dedicated(self)
        self._pool._update_link()
