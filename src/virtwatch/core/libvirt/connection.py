"""Borrowing libvirt connections. `ConnectionSource` is the interface the pool
implements; `SingleConnection` is the simplest honest source: one lazily opened,
replaced when libvirt reports it dead. Opening is bounded by a timeout.

A borrower never holds the raw connection: it gets a `Borrowed` (calls.py) whose
`call(fn)` runs `fn(conn)` in a thread that a `Guard` counts until the call really
returns; the connection is closed only after the last such thread has left.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import libvirt

from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt
from virtwatch.core.libvirt.calls import (
    DEFAULT_CALL_TIMEOUT_S,
    Borrowed,
    Guard,
    await_thread,
    close_guard,
    close_quietly,
    in_daemon_thread,
    is_dead_error,
    teardown_soon,
)
from virtwatch.core.libvirt.uri import MASK, redact_uri

DEFAULT_OPEN_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 5.0  # a source's close() waits this long for in-flight calls and the close


class SourceState(enum.StrEnum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ConnectionSource(Protocol):
    """Lends live libvirt connections for one URI, as `Borrowed` handles."""

    @property
    def uri(self) -> str: ...

    @property
    def read_only(self) -> bool: ...

    def connection(self) -> contextlib.AbstractAsyncContextManager[Borrowed]: ...

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


def open_timeout_error(uri: str, timeout_s: float) -> AppError:
    """Opening took longer than `timeout_s`: libvirtd accepts but does not answer."""
    return AppError(
        ErrorCode.LIBVIRT_NOT_ANSWERING,
        f"libvirtd at {redact_uri(uri)} did not answer within {timeout_s:g} s (connecting)",
        "libvirtd may be starting (it re-probes QEMU after a restart) or hung; "
        "check `virsh -c URI list`",
        Severity.CRITICAL,
        {"uri": redact_uri(uri)},
        transient=True,
    )


async def open_guarded(
    uri: str,
    *,
    read_only: bool = False,
    timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
    credentials: Credentials | None = None,
) -> Guard:
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
        conn = await await_thread(fut, timeout_s, close_quietly)
    except TimeoutError:
        raise open_timeout_error(uri, timeout_s) from None
    except libvirt.libvirtError as err:
        what = f"cannot connect to {redact_uri(uri)}"
        raise from_libvirt(err, uri=uri, what=what, opening=True) from err
    return Guard(redact_uri(uri), conn)


async def probe_uri(
    uri: str, *, read_only: bool = False, timeout_s: float = DEFAULT_OPEN_TIMEOUT_S
) -> None:
    """Open `uri` and close it again: raises the AppError an open would. The close runs
    in a daemon thread nobody waits for (on a hung daemon it waits for a reply)."""
    guard = await open_guarded(uri, read_only=read_only, timeout_s=timeout_s)
    teardown_soon(guard)


# --- calls that cannot outlive their connection --------------------------------------


class SingleConnection:
    """One connection, opened on first use and replaced after libvirt declares it dead
    or a call on it outlived its deadline. What the one-shot commands use."""

    def __init__(
        self,
        uri: str,
        *,
        read_only: bool = False,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        credentials: Credentials | None = None,
    ) -> None:
        self._uri = uri
        self._label = redact_uri(uri)
        self._read_only = read_only
        self._open_timeout_s = open_timeout_s
        self._call_timeout_s = call_timeout_s
        self._credentials = credentials
        self._guard: Guard | None = None
        self._lock = asyncio.Lock()
        self._state = SourceState.UNOPENED
        self._calls: set[asyncio.Future[Any]] = set()
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
        return f"<SingleConnection {self._label} {self._state}>"

    async def _ensure(self) -> Guard:
        if self._state in (SourceState.CLOSING, SourceState.CLOSED):
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"connection source for {self._label} is {self._state}",
                "this is a bug in virtwatch: a connection was borrowed after shutdown",
            )
        async with self._lock:
            if self._guard is None:
                guard = await open_guarded(
                    self._uri,
                    read_only=self._read_only,
                    timeout_s=self._open_timeout_s,
                    credentials=self._credentials,
                )
                listeners = list(self._open_listeners)

                def run_listeners(conn: libvirt.virConnect) -> None:
                    for listener in listeners:
                        listener(conn)

                if listeners:
                    fut = in_daemon_thread(
                        lambda: guard.run(run_listeners), name=f"libvirt-listeners:{self._label}"
                    )
                    try:
                        await await_thread(fut, self._open_timeout_s)
                    except BaseException:
                        guard.suspect = True
                        teardown_soon(guard)
                        raise
                self._guard = guard
                self._state = SourceState.OPEN
                self.opened_at = time.time()
            return self._guard

    def _retire(self, guard: Guard) -> None:
        if self._guard is guard:
            self._guard = None
        teardown_soon(guard)  # deferred by the guard while a call is inside

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Borrowed]:
        guard = await self._ensure()
        borrowed = Borrowed(
            guard,
            uri=self._uri,
            timeout_s=self._call_timeout_s,
            calls=self._calls,
            on_suspect=self._retire,
            on_dead=self._retire,
        )
        try:
            yield borrowed
        except BaseException as err:
            if is_dead_error(err):
                self._retire(guard)
            raise
        finally:
            borrowed.end()

    async def close(self, *, wait_s: float | None = None) -> None:
        """Wait up to `wait_s` (default CLOSE_WAIT_S) for calls in flight, then close;
        never hangs on a hung daemon (a call still inside closes it on its way out)."""
        if self._state is SourceState.CLOSED:
            return
        self._state = SourceState.CLOSING
        guard, self._guard = self._guard, None
        if guard is not None:
            wait = CLOSE_WAIT_S if wait_s is None else wait_s
            await close_guard(guard, calls=self._calls, wait_s=wait)
        self._state = SourceState.CLOSED
