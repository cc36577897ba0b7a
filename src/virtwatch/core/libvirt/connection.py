"""Borrowing libvirt connections. `ConnectionSource` is the interface the pool
implements; `SingleConnection` is the simplest honest source: one lazily opened,
replaced when libvirt reports it dead. Opening is bounded by a timeout.

The rule that keeps the process alive: libvirt frees a `virConnect` in `virConnectClose`,
and a thread still inside a call on it then returns into freed memory (SIGSEGV). So a
borrower never holds the raw connection: it gets a `Borrowed` whose `call(fn)` runs
`fn(conn)` in a thread that a `Guard` counts until the call really returns, and the
connection is closed only after the last such thread has left. Only this module and
`pool.py` start threads that touch libvirt (`tests/unit/test_thread_rule.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

import libvirt

from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt
from virtwatch.core.libvirt.uri import MASK, redact_uri

DEFAULT_OPEN_TIMEOUT_S = 10.0
DEFAULT_CALL_TIMEOUT_S = 60.0  # a call's deadline unless its caller names one
CLOSE_WAIT_S = 5.0  # a source's close() waits this long for in-flight calls and the close
T = TypeVar("T")


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
            if ok and on_orphan is not None:
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


def closed_connection_error(label: str) -> AppError:
    """A call refused because its connection is being closed (it counts as dead)."""
    return AppError(
        ErrorCode.LIBVIRT_CONNECTION_LOST,
        f"the connection to {label} is closed",
        "virtwatch reconnects by itself; retry the action",
        Severity.WARNING,
        {"uri": label},
        transient=True,
        libvirt_code=libvirt.VIR_ERR_INVALID_CONN,
    )


def no_answer_error(label: str, timeout_s: float, what: str) -> AppError:
    """libvirtd took longer than the call's deadline: the host is not answering."""
    return AppError(
        ErrorCode.LIBVIRT_NOT_ANSWERING,
        f"libvirtd at {label} did not answer within {timeout_s:g} s ({what})",
        "libvirtd may be hung or overloaded (a stuck storage pool, a slow QEMU monitor); "
        "check `virsh -c URI list`; virtwatch reconnects when it answers again",
        Severity.ERROR,
        {"uri": label},
        transient=True,
    )


class Guard:
    """One libvirt connection and the threads inside calls on it.

    `run(fn)` (blocking) counts the calling thread until `fn(conn)` returns, and lets one
    thread at a time into libvirt; `teardown()` (blocking) closes the connection at once
    when no thread is inside it or waiting for its turn, else the last one out closes it.
    Once teardown began, `run` refuses. `suspect`: a call outlived its deadline; the
    connection is never lent again. Thread-safe.

    One call at a time, because libvirt 9.0's client crashes (SIGSEGV in its I/O loop)
    when a keepalive timeout closes a connection while two or more threads wait inside
    calls on it: what a frozen libvirtd does (scripts/repro_keepalive_crash.py)."""

    __slots__ = (
        "_busy",
        "_close_pending",
        "_lock",
        "_torn",
        "_turn",
        "conn",
        "label",
        "suspect",
    )

    def __init__(self, label: str, conn: libvirt.virConnect = None) -> None:
        self.label = label  # the redacted URI, for messages
        self.conn: libvirt.virConnect = conn
        self.suspect = False
        self._lock = threading.Lock()  # guards the counts and flags
        self._turn = threading.Lock()  # held by the one thread inside libvirt
        self._busy = 0
        self._close_pending = False
        self._torn = False

    @property
    def busy(self) -> int:
        """Threads inside a call on the connection now, or waiting for their turn."""
        return self._busy

    @property
    def closing(self) -> bool:
        return self._torn or self._close_pending

    def run(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Blocking: `fn(conn)`, counted, one thread at a time. Raises
        `closed_connection_error` once closing (also after waiting for the turn)."""
        with self._lock:
            if self._torn or self._close_pending or self.conn is None:
                raise closed_connection_error(self.label)
            self._busy += 1
        try:
            with self._turn:
                if self._close_pending:  # it began closing while we waited
                    raise closed_connection_error(self.label)
                return fn(self.conn)
        except BaseException as exc:
            # the traceback's frames hold virDomain objects: let them die in this thread,
            # while it is still counted, not wherever the exception is read
            exc.__traceback__ = None
            raise
        finally:
            with self._lock:
                self._busy -= 1
                last_out = self._close_pending and self._busy == 0
                if last_out:
                    self._close_pending = False
            if last_out:
                self.teardown()

    def teardown(self) -> None:
        """Blocking: drop the close callback, then close; once, and never under a running
        call (then the last caller does it when it returns). Never raises."""
        with self._lock:
            if self._torn or self.conn is None:
                return
            if self._busy:
                self._close_pending = True
                return
            self._torn = True
        conn = self.conn
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        close_quietly(conn)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _holds_libvirt_objects(value: object) -> bool:
    """A shallow look for libvirt objects in a call's result (they must not leave the
    call's thread: the last reference to a virDomain can close its connection)."""
    if isinstance(value, libvirt.virConnect | libvirt.virDomain):
        return True
    if isinstance(value, list | tuple) and value:
        return _holds_libvirt_objects(value[0])
    return False


class Borrowed:
    """A libvirt connection lent for one `async with source.connection()` block.

    `await b.call(fn)` runs `fn(conn)` in a thread of its own and returns its result,
    which must be plain data (no virDomain, no virConnect). The connection cannot be
    closed while that thread is inside libvirt, even after the awaiting task timed out
    or was cancelled: such a call leaves the connection suspect (never lent again) and
    the source replaces it. A call that fails with a connection error marks it dead."""

    __slots__ = ("_calls", "_ended", "_guard", "_on_dead", "_on_suspect", "_timeout_s", "_uri")

    def __init__(
        self,
        guard: Guard,
        *,
        uri: str,
        timeout_s: float,
        calls: set[asyncio.Future[Any]],
        on_suspect: Callable[[Guard], None],
        on_dead: Callable[[Guard], None],
    ) -> None:
        self._guard = guard
        self._uri = uri
        self._timeout_s = timeout_s
        self._calls = calls
        self._on_suspect = on_suspect
        self._on_dead = on_dead
        self._ended = False

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def suspect(self) -> bool:
        return self._guard.suspect

    @property
    def connection_id(self) -> int:
        """Which connection this is: the same for every borrow of one connection."""
        return id(self._guard)

    def __repr__(self) -> str:
        return f"<Borrowed {self._guard.label}{' suspect' if self._guard.suspect else ''}>"

    def end(self) -> None:
        """The borrow is over: later calls are a bug."""
        self._ended = True

    async def call(
        self,
        fn: Callable[[libvirt.virConnect], T],
        *,
        timeout_s: float | None = None,
        what: str = "a libvirt call",
    ) -> T:
        """`fn(conn)` in a worker thread; at most `timeout_s` (default: the source's call
        timeout), then `no_answer_error`. libvirt errors propagate as they are."""
        guard = self._guard
        if self._ended:
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"a connection to {guard.label} was used after its borrow ended",
                "this is a bug in virtwatch: a Borrowed handle escaped its `async with`",
            )
        if guard.closing:
            raise closed_connection_error(guard.label)
        if guard.suspect:  # a call on it already hung: do not queue another one behind it
            raise AppError(
                ErrorCode.LIBVIRT_NOT_ANSWERING,
                f"libvirtd at {guard.label} has not answered an earlier call ({what})",
                "libvirtd may be hung or overloaded; virtwatch reconnects when it answers",
                Severity.ERROR,
                {"uri": guard.label},
                transient=True,
            )
        limit = self._timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        left: asyncio.Future[None] = loop.create_future()  # the thread left libvirt

        def work() -> T:
            try:
                return guard.run(fn)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone
                    loop.call_soon_threadsafe(_resolve, left)

        self._calls.add(left)
        left.add_done_callback(self._calls.discard)
        fut = in_daemon_thread(work, name=f"libvirt-call:{guard.label}")
        try:
            result = await await_thread(fut, limit)
        except TimeoutError:
            self._abandon()
            raise no_answer_error(guard.label, limit, what) from None
        except asyncio.CancelledError:
            # await_thread cancels `fut` when it gives up on a thread still running (and
            # only then: a result that was ready leaves it done, not cancelled)
            if fut.cancelled():
                self._abandon()
            raise
        except BaseException as exc:
            if is_dead_error(exc):
                self._on_dead(guard)
            raise
        if _holds_libvirt_objects(result):
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"a call on {guard.label} returned a libvirt object ({type(result).__name__})",
                "this is a bug in virtwatch: calls must return plain data",
            )
        return result

    def _abandon(self) -> None:
        self._guard.suspect = True
        self._on_suspect(self._guard)


async def close_guard(guard: Guard, *, calls: set[asyncio.Future[Any]], wait_s: float) -> None:
    """Close `guard`'s connection from the loop: wait up to `wait_s` for calls in flight,
    then tear down in a daemon thread (bounded too: a close on a hung daemon waits for its
    reply). A call still inside libvirt after that closes it on its way out."""
    pending = {f for f in calls if not f.done()}
    if pending and wait_s > 0:
        await asyncio.wait(pending, timeout=wait_s)
    fut = in_daemon_thread(guard.teardown, name=f"libvirt-close:{guard.label}")
    with contextlib.suppress(TimeoutError):
        await await_thread(fut, wait_s)


def teardown_soon(guard: Guard) -> None:
    """Close `guard`'s connection in a daemon thread, without waiting (see `Guard`)."""
    threading.Thread(
        target=guard.teardown, name=f"libvirt-close:{guard.label}", daemon=True
    ).start()


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
