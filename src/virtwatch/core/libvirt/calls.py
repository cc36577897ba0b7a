"""Blocking libvirt calls that cannot outlive their connection.

libvirt frees a virConnect in virConnectClose, and a thread still inside a call on it
returns into freed memory; its client also crashes when a keepalive timeout fires with
two threads inside calls on one connection (scripts/repro_keepalive_crash.py). So every
call runs through a `Guard` (one thread at a time, counted; the connection closed only
when none is inside), by way of a `Borrowed` handle, in a daemon thread of its own. Only
this module, connection.py, pool.py and eventloop.py start threads that touch libvirt
(`tests/unit/test_thread_rule.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import libvirt

from virtwatch.core.errors import AppError, ErrorCode, Severity

DEFAULT_CALL_TIMEOUT_S = 60.0  # a call's deadline unless its caller names one


T = TypeVar("T")


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
