"""Borrowing libvirt connections. `ConnectionSource` is the interface the pool
implements; `SingleConnection` is the simplest honest source: one lazily opened,
replaced when libvirt reports it dead. Opening is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import libvirt

from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt
from virtwatch.core.uri import redact_uri

DEFAULT_OPEN_TIMEOUT_S = 10.0


class SourceState(enum.StrEnum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ConnectionSource(Protocol):
    """Hands out live libvirt connections for one URI."""

    @property
    def uri(self) -> str: ...

    @property
    def read_only(self) -> bool: ...

    def connection(self) -> contextlib.AbstractAsyncContextManager[libvirt.virConnect]: ...

    async def close(self) -> None: ...


def is_connection_dead(err: libvirt.libvirtError) -> bool:
    """True when the error means this connection will never work again."""
    return bool(
        err.get_error_code() == libvirt.VIR_ERR_INVALID_CONN
        or err.get_error_domain() == libvirt.VIR_FROM_RPC
    )


def _open_blocking(uri: str, read_only: bool) -> libvirt.virConnect:
    return libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)


def _close_quietly(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


async def open_connection(
    uri: str, *, read_only: bool = False, timeout_s: float = DEFAULT_OPEN_TIMEOUT_S
) -> libvirt.virConnect:
    """Open `uri` in a thread; give up after `timeout_s` (libvirt has no connect timeout).

    A connection that opens after we gave up is closed when it arrives, not leaked.
    """
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, _open_blocking, uri, read_only)
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
    except TimeoutError:
        fut.add_done_callback(_close_late)
        raise AppError(
            ErrorCode.LIBVIRT_CONNECTION_FAILED,
            f"{redact_uri(uri)} did not answer within {timeout_s:g} s",
            "libvirtd may be starting (it re-probes QEMU after a restart) or hung; "
            "check `virsh -c URI list`",
            Severity.CRITICAL,
            {"uri": redact_uri(uri)},
            transient=True,
        ) from None
    except asyncio.CancelledError:
        fut.add_done_callback(_close_late)
        raise
    except libvirt.libvirtError as err:
        raise from_libvirt(err, uri=uri, what=f"cannot connect to {redact_uri(uri)}") from err


def _close_late(fut: asyncio.Future[libvirt.virConnect]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        _close_quietly(fut.result())


class SingleConnection:
    """One connection, opened on first use and reopened after libvirt declares it dead."""

    def __init__(
        self, uri: str, *, read_only: bool = False, open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S
    ) -> None:
        self._uri = uri
        self._read_only = read_only
        self._open_timeout_s = open_timeout_s
        self._conn: libvirt.virConnect | None = None
        self._lock = asyncio.Lock()
        self._state = SourceState.UNOPENED
        self.opened_at: float | None = None
        self._open_listeners: list[Callable[[libvirt.virConnect], None]] = []

    def add_open_listener(self, fn: Callable[[libvirt.virConnect], None]) -> None:
        """Call `fn(conn)` in a worker thread after each (re)open, before the connection
        is handed out: event callbacks re-register here after a reconnect."""
        self._open_listeners.append(fn)

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def state(self) -> SourceState:
        return self._state

    def __repr__(self) -> str:
        return f"<SingleConnection {redact_uri(self._uri)} {self._state}>"

    async def _ensure(self) -> libvirt.virConnect:
        if self._state in (SourceState.CLOSING, SourceState.CLOSED):
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"connection source for {redact_uri(self._uri)} is {self._state}",
                "this is a bug in virtwatch: a connection was borrowed after shutdown",
            )
        async with self._lock:
            if self._conn is None:
                conn = await open_connection(
                    self._uri, read_only=self._read_only, timeout_s=self._open_timeout_s
                )
                for listener in self._open_listeners:
                    await asyncio.to_thread(listener, conn)
                self._conn = conn
                self._state = SourceState.OPEN
                self.opened_at = time.time()
            return self._conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[libvirt.virConnect]:
        conn = await self._ensure()
        try:
            yield conn
        except libvirt.libvirtError as err:
            if is_connection_dead(err) and self._conn is conn:
                self._conn = None
                await asyncio.to_thread(_close_quietly, conn)
            raise

    async def close(self) -> None:
        if self._state is SourceState.CLOSED:
            return
        self._state = SourceState.CLOSING
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(_close_quietly, conn)
        self._state = SourceState.CLOSED
