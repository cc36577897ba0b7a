"""Borrowing libvirt connections. `ConnectionSource` is the interface the pool
implements; `SingleConnection` is the simplest honest source: one lazily opened,
replaced when libvirt reports it dead. Opening is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

import libvirt

from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt
from virtwatch.core.uri import MASK, redact_uri

DEFAULT_OPEN_TIMEOUT_S = 10.0
T = TypeVar("T")


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


class Credentials:
    """A user name and password for `openAuth`. The password never appears in a repr,
    a str, an error or a log line; only the auth callback reads it (`reveal()`)."""

    __slots__ = ("_password", "username")

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.username = username
        self._password = password

    @classmethod
    def from_file(cls, path: Path, *, username: str | None = None) -> Credentials:
        """The password is the file's first line (keep the file 0600)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise AppError(
                ErrorCode.VALIDATION_ERROR,
                f"cannot read the password file {path}: {err.strerror}",
                "check the path and its permissions",
            ) from None
        lines = text.splitlines()
        return cls(username, lines[0] if lines else "")

    @property
    def has_password(self) -> bool:
        return self._password is not None

    def reveal(self) -> str | None:
        return self._password

    def __repr__(self) -> str:
        password = MASK if self._password is not None else None
        return f"Credentials(username={self.username!r}, password={password})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Credentials are not picklable")


_AUTH_TYPES = [
    libvirt.VIR_CRED_AUTHNAME,
    libvirt.VIR_CRED_USERNAME,
    libvirt.VIR_CRED_PASSPHRASE,
    libvirt.VIR_CRED_NOECHOPROMPT,
]


def _auth_callback(creds: Credentials) -> Callable[[list[list[object]], object], int]:
    """libvirt's credential callback: fill what we have, refuse (-1) what we do not."""

    def fill(requested: list[list[object]], _opaque: object) -> int:
        try:
            for cred in requested:
                kind = cred[0]
                if kind in (libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_USERNAME):
                    if creds.username is None:
                        return -1
                    cred[4] = creds.username
                elif kind in (libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT):
                    secret = creds.reveal()
                    if secret is None:
                        return -1
                    cred[4] = secret
                else:
                    return -1
            return 0
        except Exception:  # never let a traceback (with locals) escape into libvirt's stderr
            return -1

    return fill


def effective_uri(uri: str) -> str:
    """`uri` as opened: plain ssh transports get `no_tty=1`, so ssh never prompts on the
    dashboard's terminal (it fails with a clear error instead)."""
    parts = urlsplit(uri)
    if not parts.scheme.endswith("+ssh"):
        return uri
    if any(k == "no_tty" for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return uri
    head, sep, fragment = uri.partition("#")
    joined = f"{head}&no_tty=1" if parts.query else f"{head}?no_tty=1"
    return joined + sep + fragment


def dead_error_codes(code: int | None, domain: int | None) -> bool:
    """True when libvirt's (code, domain) means the connection will never work again."""
    return bool(code == libvirt.VIR_ERR_INVALID_CONN or domain == libvirt.VIR_FROM_RPC)


def is_connection_dead(err: libvirt.libvirtError) -> bool:
    """True when the error means this connection will never work again."""
    return dead_error_codes(err.get_error_code(), err.get_error_domain())


def is_dead_error(exc: BaseException) -> bool:
    """Like `is_connection_dead`, for anything a borrower raises: a libvirtError, or an
    AppError mapped from one (callers usually convert inside the `async with`)."""
    if isinstance(exc, libvirt.libvirtError):
        return is_connection_dead(exc)
    if isinstance(exc, AppError) and exc.libvirt_code is not None:
        return dead_error_codes(exc.libvirt_code, exc.libvirt_domain)
    cause = exc.__cause__
    return isinstance(cause, libvirt.libvirtError) and is_connection_dead(cause)


def open_blocking(
    uri: str, read_only: bool = False, credentials: Credentials | None = None
) -> libvirt.virConnect:
    """Open `uri` in the calling thread (blocks, no timeout); `openAuth` with credentials."""
    target = effective_uri(uri)
    if credentials is not None:
        flags = libvirt.VIR_CONNECT_RO if read_only else 0
        auth = [_AUTH_TYPES, _auth_callback(credentials), None]
        return libvirt.openAuth(target, auth, flags)
    return libvirt.openReadOnly(target) if read_only else libvirt.open(target)


def close_quietly(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def in_daemon_thread(
    fn: Callable[[], T], *, name: str, on_orphan: Callable[[T], None] | None = None
) -> asyncio.Future[T]:
    """Run blocking `fn` in a daemon thread and return a future for its result.

    Unlike the default executor, a call that never returns (a hung libvirtd) cannot hold
    up interpreter or loop shutdown. When nobody takes the result (the future was
    cancelled, or the loop is gone), `on_orphan(result)` runs in a thread: an opened
    connection is closed there instead of leaking.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def orphan(value: T) -> None:
        if on_orphan is not None:
            with contextlib.suppress(Exception):
                on_orphan(value)

    def deliver(ok: bool, value: object) -> None:
        if fut.done():
            if ok:
                threading.Thread(
                    target=orphan, args=(cast(T, value),), name=f"{name}-orphan", daemon=True
                ).start()
            return
        if ok:
            fut.set_result(cast(T, value))
        else:
            fut.set_exception(cast(BaseException, value))

    def run() -> None:
        ok, value = True, cast(object, None)
        try:
            value = fn()
        except BaseException as exc:  # delivered to the awaiting task, never printed
            ok, value = False, exc
        try:
            loop.call_soon_threadsafe(deliver, ok, value)
        except RuntimeError:  # the loop is closed: nobody will ever read this
            if ok:
                orphan(cast(T, value))

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


async def await_thread(
    fut: asyncio.Future[T], timeout_s: float | None, on_orphan: Callable[[T], None] | None = None
) -> T:
    """Await `fut` from `in_daemon_thread` for at most `timeout_s`; raises TimeoutError.

    On timeout or cancellation the thread is abandoned; a result that was ready at that
    instant goes to `on_orphan` (the result arriving later is handled by the thread)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(fut)
    except BaseException:
        ready = not fut.cancel() and not fut.cancelled() and fut.exception() is None
        if ready and on_orphan is not None:
            threading.Thread(
                target=on_orphan, args=(fut.result(),), name="orphan", daemon=True
            ).start()
        raise


def open_timeout_error(uri: str, timeout_s: float) -> AppError:
    return AppError(
        ErrorCode.LIBVIRT_CONNECTION_FAILED,
        f"{redact_uri(uri)} did not answer within {timeout_s:g} s",
        "libvirtd may be starting (it re-probes QEMU after a restart) or hung; "
        "check `virsh -c URI list`",
        Severity.CRITICAL,
        {"uri": redact_uri(uri)},
        transient=True,
    )


async def open_connection(
    uri: str,
    *,
    read_only: bool = False,
    timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
    credentials: Credentials | None = None,
) -> libvirt.virConnect:
    """Open `uri` in a thread; give up after `timeout_s` (libvirt has no connect timeout).

    With `credentials`, opens through `openAuth` (read-only with VIR_CONNECT_RO). A
    connection that opens after we gave up is closed when it arrives, not leaked; the
    opening thread is a daemon, so a daemon that never answers cannot block shutdown.
    """
    fut = in_daemon_thread(
        lambda: open_blocking(uri, read_only, credentials),
        name="libvirt-open",
        on_orphan=close_quietly,
    )
    try:
        return await await_thread(fut, timeout_s, close_quietly)
    except TimeoutError:
        raise open_timeout_error(uri, timeout_s) from None
    except libvirt.libvirtError as err:
        what = f"cannot connect to {redact_uri(uri)}"
        raise from_libvirt(err, uri=uri, what=what, opening=True) from err


class SingleConnection:
    """One connection, opened on first use and reopened after libvirt declares it dead."""

    def __init__(
        self,
        uri: str,
        *,
        read_only: bool = False,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
        credentials: Credentials | None = None,
    ) -> None:
        self._uri = uri
        self._read_only = read_only
        self._open_timeout_s = open_timeout_s
        self._credentials = credentials
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
                    self._uri,
                    read_only=self._read_only,
                    timeout_s=self._open_timeout_s,
                    credentials=self._credentials,
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
        except BaseException as err:
            if is_dead_error(err) and self._conn is conn:
                self._conn = None
                await asyncio.to_thread(close_quietly, conn)
            raise

    async def close(self) -> None:
        if self._state is SourceState.CLOSED:
            return
        self._state = SourceState.CLOSING
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(close_quietly, conn)
        self._state = SourceState.CLOSED
