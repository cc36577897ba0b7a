"""A pool of libvirt connections for one URI: shared connections lent to FIFO waiters,
and dedicated connections that a single consumer (the collector) never shares. It
watches their health, replaces dead ones with backoff, and publishes the host's
`HostConnection` state and `PoolStats` records.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import libvirt

from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt
from virtwatch.core.libvirt.calls import (
    Borrowed,
    Guard,
    await_thread,
    in_daemon_thread,
    is_dead_error,
)
from virtwatch.core.libvirt.connection import (
    Credentials,
    SourceState,
    open_blocking,
    open_timeout_error,
)
from virtwatch.core.libvirt.eventloop import LibvirtEventThread
from virtwatch.core.libvirt.pool_policy import (
    PoolSettings,
    PoolStats,
    _same_figures,
    backoff_delay,
    host_state,
)
from virtwatch.core.libvirt.uri import redact_text, redact_uri
from virtwatch.core.percentile import percentile
from virtwatch.core.records import ConnectionState, HostConnection

if TYPE_CHECKING:
    from virtwatch.core.libvirt.dedicated import DedicatedConnection

log = logging.getLogger(__name__)

Listener = Callable[[libvirt.virConnect], None]
T = TypeVar("T")
WAIT_WINDOW = 1024  # acquire waits kept for the p50/p99 figures
_CLOSE_REASONS = {0: "an error", 1: "end of file", 2: "a keepalive timeout", 3: "the client"}


# --- settings -------------------------------------------------------------------------


# --- records and pure policy ----------------------------------------------------------


# --- internals ------------------------------------------------------------------------


class _Entry(Guard):
    """One libvirt connection (a `Guard`: calls on it are counted, and it is closed only
    when the last one has returned) and what the pool knows about it."""

    __slots__ = (
        "check_first",
        "closed",
        "created_at",
        "dead",
        "last_checked",
        "last_used",
        "owner",
        "retired",
        "serial",
        "users",
    )

    def __init__(self, serial: int, owner: DedicatedConnection | None, label: str) -> None:
        super().__init__(label)
        self.serial = serial
        self.owner = owner
        self.created_at = time.monotonic()
        self.last_used = self.created_at
        self.last_checked = self.created_at
        self.dead = False
        self.check_first = False  # a borrower was cancelled mid-call: probe before reuse
        self.closed = False  # the pool is done with it (closing or closed)
        self.retired = False  # abandoned while borrowed: closed when returned
        self.users = 0  # borrowers of a dedicated connection (loop side)

    def __repr__(self) -> str:
        flags = "".join(f" {f}" for f in ("dead", "suspect") if getattr(self, f))
        return f"<conn #{self.serial}{flags}>"


@dataclass(slots=True)
class _Outage:
    """Since when the host has been (partly) unreachable, and when to try again."""

    since: float  # wall clock
    reason: str
    error: AppError | None = None
    attempts: int = 0
    next_retry: float = 0.0  # monotonic; 0 = now
    next_retry_wall: float | None = None
    failed_at: float = 0.0  # monotonic time the last counted failure happened


def _probe(conn: libvirt.virConnect) -> bool:
    """Blocking health probe: the local alive flag, then one cheap round trip."""
    try:
        return bool(conn.isAlive()) and conn.getLibVersion() > 0
    except libvirt.libvirtError:
        return False


def _misuse(message: str) -> AppError:
    return AppError(
        ErrorCode.INTERNAL_ERROR,
        message,
        "this is a bug in virtwatch: the pool was used outside its open/close lifetime",
    )


# --- the pool -------------------------------------------------------------------------


class LibvirtPool:
    """Connections to one libvirt URI.

        async with LibvirtPool(uri, publish=hub.publish) as pool:
            async with pool.connection() as b:      # or acquire() / release()
                await b.call(lambda conn: conn.lookupByName("web").create())
            collector_source = pool.dedicated("collector")

    States: unopened -> open -> closing -> closed; using it outside `open` is an error.
    `open()` never fails because the host is unreachable (the pool reconnects in the
    background and publishes the outage); `acquire()` does, with a clear error.
    Dedicated connections count toward `max_size` and `min_size`.
    """

    def __init__(
        self,
        uri: str,
        *,
        settings: PoolSettings | None = None,
        host: str | None = None,
        read_only: bool = False,
        credentials: Credentials | None = None,
        publish: Callable[[object], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._uri = uri
        self.settings = settings or PoolSettings()
        self.host = host or redact_uri(uri)
        self._read_only = read_only
        self._credentials = credentials
        self._publish = publish
        self._rand = rand
        self._state = SourceState.UNOPENED
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serials = itertools.count(1)
        self._idle: collections.deque[_Entry] = collections.deque()  # right end = most recent
        self._in_use: dict[int, _Entry] = {}  # id(entry) -> entry (unique across pools)
        self._calls: set[asyncio.Future[Any]] = set()  # calls in flight, on any connection
        self._checking: set[_Entry] = set()
        self._opening = 0
        self._owed = 0  # lost shared connections not yet replaced
        self._retired: dict[int, _Entry] = {}
        self._waiters: collections.deque[asyncio.Future[_Entry | None]] = collections.deque()
        self._dedicated: dict[str, DedicatedConnection] = {}
        self._closers: set[asyncio.Future[None]] = set()
        self._maintainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._turn = asyncio.Event()  # set (and replaced) when the host answers again
        self._drained = asyncio.Event()
        self._closed = asyncio.Event()
        self._outage: _Outage | None = None
        self._ever_connected = False
        self._published_link: tuple[ConnectionState, float | None, str] | None = None
        self._link_since = time.time()
        self._stats_handle: asyncio.TimerHandle | None = None
        self._stats_at = 0.0
        self._last_stats: PoolStats | None = None
        self._waits: collections.deque[float] = collections.deque(maxlen=WAIT_WINDOW)
        self.created = 0
        self.destroyed = 0
        self.failures = 0
        self.timeouts = 0

    # --- identity and state -----------------------------------------------------------

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def connection_state(self) -> ConnectionState:
        return self._link_state()

    @property
    def last_error(self) -> AppError | None:
        """The failure behind the current outage, if any."""
        return self._outage.error if self._outage else None

    def __repr__(self) -> str:
        return (
            f"<LibvirtPool {self.host} {redact_uri(self._uri)} {self._state} "
            f"size={self._size()} idle={len(self._idle)} in_use={len(self._in_use)} "
            f"waiters={len(self._waiters)}>"
        )

    def _check_open(self) -> None:
        if self._state is SourceState.UNOPENED:
            raise _misuse(
                f"connection pool for {redact_uri(self._uri)} is not open yet: "
                "`await pool.open()` or use `async with pool` first"
            )
        if self._state is not SourceState.OPEN:
            raise self._closed_error()

    def _closed_error(self) -> AppError:
        return AppError(
            ErrorCode.INTERNAL_ERROR,
            f"connection pool for {redact_uri(self._uri)} is {self._state}",
            "virtwatch is shutting down; a connection was requested after close() began",
            Severity.WARNING,
            {"uri": redact_uri(self._uri)},
        )

    # --- sizes ------------------------------------------------------------------------

    def _shared_cap(self) -> int:
        return self.settings.max_size - len(self._dedicated)

    def _shared_min(self) -> int:
        return max(0, self.settings.min_size - len(self._dedicated))

    def _shared_size(self) -> int:
        return len(self._idle) + len(self._in_use) + self._opening + len(self._checking)

    def _dedicated_open(self) -> int:
        return sum(1 for d in self._dedicated.values() if d.live)

    def _size(self) -> int:
        shared = len(self._idle) + len(self._in_use) + len(self._checking)
        return shared + self._dedicated_open()

    def _live(self) -> int:
        shared = sum(1 for e in self._idle if not e.dead)
        shared += sum(1 for e in self._in_use.values() if not e.dead)
        shared += sum(1 for e in self._checking if not e.dead)
        return shared + self._dedicated_open()

    # --- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> LibvirtPool:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> LibvirtPool:
        """Start the event thread, open `min_size` shared connections, start upkeep.

        An unreachable host is not an error here: it is published as an outage and
        retried in the background."""
        if self._state is not SourceState.UNOPENED:
            raise _misuse(f"connection pool for {redact_uri(self._uri)} is already {self._state}")
        self._loop = asyncio.get_running_loop()
        LibvirtEventThread.ensure_running()  # keepalive and close callbacks need it
        self._state = SourceState.OPEN
        self._update_link()
        await self._replenish()
        self._maintainer = asyncio.create_task(self._maintain(), name=f"pool:{self.host}")
        self._publish_stats()
        return self

    async def close(self, *, grace_s: float | None = None) -> None:
        """Stop lending, wait up to `grace_s` (default settings.close_grace_s) for borrowed
        connections to come back and calls in flight to return, then `terminate()`."""
        if self._state is SourceState.UNOPENED:
            self._state = SourceState.CLOSED
            for dedicated in self._dedicated.values():
                dedicated._state = SourceState.CLOSED
            self._closed.set()
            return
        if self._state is not SourceState.OPEN:
            await self._closed.wait()
            return
        self._state = SourceState.CLOSING
        self._fail_waiters()
        for entry in list(self._idle):
            self._idle.remove(entry)
            self._destroy(entry)
        grace = self.settings.close_grace_s if grace_s is None else grace_s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self._in_use or any(d.users for d in self._dedicated.values()):
                    self._drained.clear()
                    await self._drained.wait()
                # threads of cancelled borrowers may still be inside libvirt: their
                # connections close when they leave (a Guard), but a clean exit waits
                pending = {f for f in self._calls if not f.done()}
                if pending:
                    await asyncio.wait(pending)
        await self.terminate()

    async def terminate(self) -> None:
        """Close now. Connections still borrowed are abandoned, and a connection with a
        thread still inside a call closes when that thread leaves libvirt (`Guard`)."""
        if self._state is SourceState.CLOSED:
            return
        self._state = SourceState.CLOSING
        self._fail_waiters()
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
            self._maintainer = None
        for dedicated in list(self._dedicated.values()):
            await dedicated._shutdown(grace_s=0.0)
        for entry in list(self._idle) + list(self._checking):
            self._destroy(entry)
        self._idle.clear()
        self._checking.clear()
        for key, entry in self._in_use.items():
            entry.retired = True
            self._retired[key] = entry
        self._in_use.clear()
        if self._closers:
            await asyncio.wait(set(self._closers), timeout=self.settings.check_timeout_s)
        if self._stats_handle is not None:
            self._stats_handle.cancel()
            self._stats_handle = None
        self._state = SourceState.CLOSED
        self._update_link()
        self._publish_stats()
        self._closed.set()

    def _fail_waiters(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(self._closed_error())

    # --- borrowing --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection(self, *, timeout_s: float | None = None) -> AsyncIterator[Borrowed]:
        """Borrow a shared connection for the block; returned even when cancelled."""
        borrowed = await self.acquire(timeout_s=timeout_s)
        dead = suspect = False
        try:
            yield borrowed
        except BaseException as exc:
            dead = is_dead_error(exc)
            suspect = isinstance(exc, asyncio.CancelledError)
            raise
        finally:
            self._release(borrowed, dead=dead, suspect=suspect)

    async def acquire(self, *, timeout_s: float | None = None) -> Borrowed:
        """A live shared connection; waiters are served first come, first served.

        Raises AppError: after `timeout` (default settings.acquire_timeout_s) naming the
        pool's state; at once while the host is unreachable and a retry is pending."""
        self._check_open()
        entry = self._lend_now()
        if entry is not None:  # the common case: no waiting, no timer, no probe
            self._waits.append(0.0)
            self._changed()
            return self._lend(entry)
        limit = self.settings.acquire_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit) as deadline:
                entry = await self._acquire_entry()
        except TimeoutError:
            if not deadline.expired():
                raise
            self.timeouts += 1
            self._waits.append(time.monotonic() - started)
            self._changed()
            raise self._timeout_error(limit) from None
        self._waits.append(time.monotonic() - started)
        self._changed()
        return self._lend(entry)

    def _lend(self, entry: _Entry) -> Borrowed:
        return Borrowed(
            entry,
            uri=self._uri,
            timeout_s=self.settings.call_timeout_s,
            calls=self._calls,
            on_suspect=self._on_suspect,
            on_dead=self._on_dead,
        )

    def _on_suspect(self, guard: Guard) -> None:
        """A call outlived its deadline: never lend this connection again. A shared one
        is destroyed when returned; a dedicated one is replaced now (its teardown waits
        for the call to leave libvirt)."""
        entry = guard if isinstance(guard, _Entry) else None
        if entry is None or entry.closed:
            return
        log.info(
            "%s: connection #%d is suspect: a call outlived its deadline", self.host, entry.serial
        )
        if entry.owner is not None:
            entry.owner._lost(entry)
        self._changed()

    def _on_dead(self, guard: Guard) -> None:
        if isinstance(guard, _Entry) and not guard.dead and not guard.closed:
            self._mark_lost(guard, "a call failed: the connection is closed")

    def _lend_now(self) -> _Entry | None:
        """The most recently used idle entry, if nobody waits and it needs no probe."""
        if self._waiters or not self._idle:
            return None
        entry = self._idle[-1]
        idle_for = time.monotonic() - max(entry.last_used, entry.last_checked)
        if entry.dead or entry.check_first or idle_for >= self.settings.check_after_idle_s:
            return None
        self._idle.pop()
        self._in_use[id(entry)] = entry
        return entry

    def release(self, borrowed: Borrowed, *, dead: bool = False) -> None:
        """Give back a connection from `acquire()`. Never blocks. `dead=True` when a call
        on it failed with a connection error: it is closed and replaced."""
        self._release(borrowed, dead=dead, suspect=False)

    def _release(self, borrowed: Borrowed, *, dead: bool, suspect: bool) -> None:
        guard = borrowed._guard
        if borrowed._ended or not isinstance(guard, _Entry):
            raise _misuse(
                f"a connection to {redact_uri(self._uri)} was released that this pool did not "
                "lend, or was released twice"
            )
        borrowed.end()
        key = id(guard)
        entry = self._in_use.pop(key, None)
        if entry is None:
            retired = self._retired.pop(key, None)
            if retired is not None:
                self._destroy(retired)
                return
            raise _misuse(
                f"a connection to {redact_uri(self._uri)} was released that this pool did not "
                "lend, or was released twice"
            )
        self._settle(entry, dead=dead, suspect=suspect)

    def _settle(self, entry: _Entry, *, dead: bool, suspect: bool = False) -> None:
        entry.last_used = time.monotonic()
        if suspect:
            entry.check_first = True
        if dead and not entry.dead:
            self._mark_lost(entry, "a call failed: the connection is closed")
        if (
            entry.dead
            or entry.suspect
            or self._state is not SourceState.OPEN
            or self._shared_size() + 1 > self._shared_cap()
        ):
            self._destroy(entry)
        else:
            self._put_back(entry)
        if not self._in_use:
            self._drained.set()
        self._changed()

    async def _acquire_entry(self) -> _Entry:
        while True:
            self._check_open()
            grant = await self._grant()
            if grant is None:  # a reserved slot: open a new connection in it
                return await self._open_reserved()
            if await self._usable(grant):
                return grant

    async def _grant(self) -> _Entry | None:
        """An idle entry (now lent), or None for a reserved slot to open into."""
        if not self._waiters:
            if self._idle:
                entry = self._idle.pop()
                self._in_use[id(entry)] = entry
                return entry
            if self._can_reserve():
                self._opening += 1
                return None
        assert self._loop is not None
        fut: asyncio.Future[_Entry | None] = self._loop.create_future()
        self._waiters.append(fut)
        self._changed()
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._give_back(fut.result())  # served at the instant we were cancelled
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            self._changed()
            raise

    def _give_back(self, grant: _Entry | None) -> None:
        if grant is None:
            self._opening -= 1
            self._slot_freed()
        else:
            self._in_use.pop(id(grant), None)
            self._settle(grant, dead=False)

    async def _usable(self, entry: _Entry) -> bool:
        """Probe a lent entry when it idled long or a borrower was cancelled on it."""
        if entry.dead:
            self._in_use.pop(id(entry), None)
            self._settle(entry, dead=True)
            return False
        idle_for = time.monotonic() - max(entry.last_used, entry.last_checked)
        if not entry.check_first and idle_for < self.settings.check_after_idle_s:
            return True
        try:
            ok = await self._probe(entry)
        except BaseException:
            self._in_use.pop(id(entry), None)
            self._settle(entry, dead=False, suspect=True)
            raise
        if ok:
            entry.check_first = False
            return True
        self._in_use.pop(id(entry), None)
        self._settle(entry, dead=True)
        return False

    async def _probe(self, entry: _Entry) -> bool:
        fut = in_daemon_thread(lambda: entry.run(_probe), name=f"libvirt-probe:{self.host}")
        try:
            ok = await await_thread(fut, self.settings.check_timeout_s)
        except TimeoutError:
            ok = False
            entry.suspect = True  # the probe thread is still inside: never lend it again
        except AppError:  # closing under us
            ok = False
        entry.last_checked = time.monotonic()
        if not ok and not entry.dead:
            self._mark_lost(entry, "a health probe failed")
        return ok

    async def _open_reserved(self) -> _Entry:
        """Open into a slot `_grant` reserved; the slot is freed whatever happens."""
        try:
            entry = await self._open_entry(None)
        except BaseException:
            self._opening -= 1
            self._slot_freed()
            raise
        self._opening -= 1
        if self._state is not SourceState.OPEN:
            self._destroy(entry)
            raise self._closed_error()
        self._in_use[id(entry)] = entry
        self._update_link()
        self._changed()
        return entry

    def _put_back(self, entry: _Entry) -> None:
        """Hand `entry` to the first waiter still waiting, else make it idle."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self._in_use[id(entry)] = entry
                fut.set_result(entry)
                return
        self._idle.append(entry)
        if self._shared_size() > self._shared_min():
            self._wake.set()  # upkeep plans when to reap this extra

    def _slot_freed(self) -> None:
        """Capacity came back: offer it to waiters, and let upkeep top up to min_size."""
        self._offer_slots()
        self._wake.set()

    def _offer_slots(self) -> None:
        """Waiters get a reserved slot to open into, while there is room."""
        if self._state is not SourceState.OPEN:
            return
        while self._waiters and self._can_reserve():
            fut = self._waiters.popleft()
            if not fut.done():
                self._opening += 1
                fut.set_result(None)

    def _timeout_error(self, limit: float) -> AppError:
        s = self.stats()
        return AppError(
            ErrorCode.RESOURCE_EXHAUSTED,
            f"no connection to {redact_uri(self._uri)} came free within {limit:g} s "
            f"(pool: {s.size}/{s.max_size} open, {s.in_use} in use, {s.idle} idle, "
            f"{s.dedicated} dedicated, {s.waiters} more waiting; host {self._link_state()})",
            "calls on this host are slow or stuck (a hung QEMU holds its VM's job lock); "
            "check `virsh -c URI list`, or raise [pool] max_size / acquire_timeout",
            Severity.ERROR,
            {
                "uri": redact_uri(self._uri),
                "size": str(s.size),
                "in_use": str(s.in_use),
                "waiters": str(s.waiters),
            },
            transient=True,
        )

    # --- opening and closing connections ----------------------------------------------

    async def _open_entry(self, owner: DedicatedConnection | None) -> _Entry:
        """Open, set up keepalive and the close callback, run `owner`'s open listeners.

        Fails fast while a retry is pending after a failure (the host is down)."""
        if self._in_backoff():
            raise self._unreachable_error()
        started = time.monotonic()
        entry = _Entry(next(self._serials), owner, self.host)

        def work() -> _Entry:
            entry.conn = open_blocking(self._uri, self._read_only, self._credentials)
            try:
                self._prepare(entry)
            except BaseException:
                entry.teardown()
                raise
            return entry

        def orphan(late: _Entry) -> None:
            late.teardown()

        fut = in_daemon_thread(work, name=f"libvirt-open:{self.host}", on_orphan=orphan)
        try:
            await await_thread(fut, self.settings.open_timeout_s, orphan)
            if owner is not None and owner._open_listeners:
                await self._run_listeners(entry, owner._open_listeners)
        except TimeoutError:
            raise self._open_failed(
                entry, open_timeout_error(self._uri, self.settings.open_timeout_s), started
            ) from None
        except libvirt.libvirtError as err:
            what = f"cannot connect to {redact_uri(self._uri)}"
            raise self._open_failed(
                entry, from_libvirt(err, uri=self._uri, what=what, opening=True), started
            ) from err
        except AppError as err:
            raise self._open_failed(entry, err, started) from err
        except asyncio.CancelledError:
            self._spawn_close(entry)
            raise
        except Exception as err:
            bug = AppError(
                ErrorCode.INTERNAL_ERROR,
                f"opening {redact_uri(self._uri)} failed: {redact_text(str(err))}",
                "an open listener raised; this is a bug in virtwatch",
            )
            raise self._open_failed(entry, bug, started) from err
        self.created += 1
        self._ever_connected = True
        if owner is None and self._owed:
            self._owed -= 1
        o = self._outage
        if o is not None and o.error is not None:
            # the host answers: end the backoff and wake everyone waiting for a turn; the
            # outage itself ends when every wanted connection is back (_settle_outage)
            o.error, o.attempts, o.next_retry, o.next_retry_wall = None, 0, 0.0, None
            o.reason = "the host answers again; replacing lost connections"
            self._turn.set()
            self._turn = asyncio.Event()
        return entry  # the caller places it, then calls _changed()

    async def _run_listeners(self, entry: _Entry, listeners: Iterable[Listener]) -> None:
        todo = list(listeners)

        def run(conn: libvirt.virConnect) -> None:
            for fn in todo:
                fn(conn)

        fut = in_daemon_thread(lambda: entry.run(run), name=f"libvirt-listeners:{self.host}")
        try:
            await await_thread(fut, self.settings.open_timeout_s)
        except BaseException:
            if not fut.done():
                entry.suspect = True
            raise

    def _open_failed(self, entry: _Entry, err: AppError, started: float) -> AppError:
        self._spawn_close(entry)
        self.failures += 1
        now = time.monotonic()
        outage = self._outage
        if outage is None:
            outage = self._outage = _Outage(time.time(), err.message)
        outage.error = err
        outage.reason = err.message
        if started >= outage.failed_at:  # one attempt round counts once, however many tried
            outage.attempts += 1
            if err.transient:
                delay = backoff_delay(
                    outage.attempts,
                    initial_s=self.settings.reconnect_initial_s,
                    max_s=self.settings.reconnect_max_s,
                    rand=self._rand(),
                )
            else:
                delay = self.settings.down_retry_s
            outage.failed_at = now
            outage.next_retry = now + delay
            outage.next_retry_wall = time.time() + delay
        log.info(
            "%s: open failed (%s); retry in %.1f s", self.host, err.message, outage.next_retry - now
        )
        self._update_link()
        self._changed()
        return err

    def _prepare(self, entry: _Entry) -> None:
        """Blocking, in the opening thread: keepalive and a close callback (both best effort:
        the test driver supports neither keepalive nor ever calls the callback)."""
        conn = entry.conn
        s = self.settings
        try:
            conn.setKeepAlive(s.keepalive_interval_s, s.keepalive_count)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                log.debug("%s: keepalive not enabled: %s", self.host, redact_text(str(err)))

        def closed(_conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
            self._from_event_thread(self._on_closed, entry, reason)

        try:
            conn.registerCloseCallback(closed, None)
        except libvirt.libvirtError as err:
            log.debug("%s: no close callback: %s", self.host, redact_text(str(err)))

    def _from_event_thread(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                loop.call_soon_threadsafe(fn, *args)

    def _on_closed(self, entry: _Entry, reason: int) -> None:
        """libvirt's close callback, now on the loop: the connection is dead."""
        if entry.closed or entry.dead:
            return
        self._mark_lost(
            entry, f"libvirtd closed the connection ({_CLOSE_REASONS.get(reason, reason)})"
        )
        if entry in self._idle:
            self._idle.remove(entry)
            self._destroy(entry)

    def _mark_lost(self, entry: _Entry, reason: str) -> None:
        entry.dead = True
        self.failures += 1
        if entry.owner is None:
            self._owed += 1  # replaced even above min_size: the new open proves the host
        if self._outage is None:
            self._outage = _Outage(time.time(), reason)
        log.info("%s: connection #%d lost: %s", self.host, entry.serial, reason)
        if entry.owner is not None:
            entry.owner._lost(entry)
        self._wake.set()
        self._update_link()
        self._changed()

    def _destroy(self, entry: _Entry) -> None:
        """Forget `entry` (already removed from the pool's structures) and close it."""
        if entry.closed:
            return
        entry.closed = True
        self.destroyed += 1
        self._spawn_close(entry)
        if entry.owner is None:
            self._slot_freed()
        self._update_link()
        self._changed()

    def _spawn_close(self, entry: _Entry) -> None:
        entry.closed = True
        if entry.conn is None:
            return
        fut = in_daemon_thread(entry.teardown, name=f"libvirt-close:{self.host}")
        self._closers.add(fut)
        fut.add_done_callback(self._closers.discard)

    # --- outage and backoff -----------------------------------------------------------

    def _in_backoff(self) -> bool:
        o = self._outage
        return o is not None and o.error is not None and time.monotonic() < o.next_retry

    def _unreachable_error(self) -> AppError:
        o = self._outage
        assert o is not None
        assert o.error is not None
        last = o.error
        ctx = dict(last.context)
        ctx["host"] = self.host
        if o.next_retry_wall is not None:
            ctx["next_retry_at"] = f"{o.next_retry_wall:.3f}"
        return AppError(
            last.code,
            f"{self.host} is unreachable, reconnecting: {last.message}",
            last.hint,
            last.severity,
            ctx,
            last.transient,
            last.libvirt_code,
            last.libvirt_domain,
        )

    def _settle_outage(self) -> None:
        """End an outage once every wanted connection is back: each lost one replaced (a
        successful open proves the host answers), no retry pending."""
        o = self._outage
        if o is None or self._state is not SourceState.OPEN or self._waiters:
            return
        if o.error is not None or self._owed:
            return  # a retry is due, or a lost connection is not yet replaced
        every = [*self._idle, *self._in_use.values(), *self._checking]
        if any(e.dead for e in every) or (not every and self._shared_min() > 0):
            return
        if len(every) < self._shared_min():
            return
        if any(d.wanted and not d.live for d in self._dedicated.values()):
            return
        if self._live() == 0:
            return
        self._outage = None

    def _can_reserve(self) -> bool:
        """Room to open a shared connection now. In backoff with live shared connections
        around, waiters wait for one of those instead of failing fast."""
        if self._shared_size() >= self._shared_cap():
            return False
        return not (self._in_backoff() and self._live_shared() > 0)

    def _live_shared(self) -> int:
        every = [*self._idle, *self._in_use.values(), *self._checking]
        return sum(1 for e in every if not e.dead)

    async def _wait_turn(self) -> None:
        """Sleep until the next retry is due, or the host answered another opener."""
        while self._in_backoff():
            o = self._outage
            assert o is not None
            turn = self._turn
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, o.next_retry - time.monotonic())):
                    await turn.wait()

    def _link_state(self) -> ConnectionState:
        o = self._outage
        return host_state(
            closed=self._state is SourceState.CLOSED,
            live=self._live(),
            ever_connected=self._ever_connected,
            outage=o is not None,
            down=o is not None and o.error is not None and not o.error.transient,
        )

    def _update_link(self) -> None:
        if self._state in (SourceState.UNOPENED, SourceState.CLOSING):
            return  # nothing to say yet; connections closing on purpose are no outage
        self._settle_outage()
        state = self._link_state()
        o = self._outage
        retry = None
        message = ""
        if o is not None and state is not ConnectionState.CLOSED:
            retry = o.next_retry_wall if o.error is not None else None
            message = o.reason
        key = (state, retry, message)
        if key == self._published_link:
            return
        previous = self._published_link
        now = time.time()
        if previous is None or previous[0] is not state:
            self._link_since = now
            if state in (ConnectionState.RECONNECTING, ConnectionState.DOWN) and o is not None:
                self._link_since = o.since
        self._published_link = key
        if self._publish is not None:
            self._publish(
                HostConnection(
                    host=self.host,
                    uri=redact_uri(self._uri),
                    state=state,
                    at=now,
                    since=self._link_since,
                    next_retry_at=retry,
                    message=message,
                )
            )

    # --- upkeep -----------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Keep min_size open, reap idle extras, probe idle connections, publish stats."""
        s = self.settings
        while True:
            self._wake.clear()
            await self._replenish()
            self._offer_slots()  # a backoff that ended may let waiters open
            self._update_link()  # e.g. an outage that settled once waiters were served
            now = time.monotonic()
            self._reap_idle(now)
            await self._check_idle(now)
            if now - self._stats_at >= s.stats_interval_s:
                self._publish_stats()
            wake_at = self._stats_at + s.stats_interval_s
            if self._idle:
                oldest = self._idle[0]
                wake_at = min(
                    wake_at,
                    oldest.last_used + s.idle_timeout_s,
                    min(max(e.last_used, e.last_checked) for e in self._idle) + s.health_interval_s,
                )
            o = self._outage
            if o is not None and o.next_retry > time.monotonic():
                wake_at = min(wake_at, o.next_retry)  # the next retry is due
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, wake_at - time.monotonic())):
                    await self._wake.wait()

    async def _replenish(self) -> None:
        """Open up to min_size, and a replacement for each lost connection."""
        while (
            self._state is SourceState.OPEN
            and (self._shared_size() < self._shared_min() or self._owed > 0)
            and self._shared_size() < self._shared_cap()
            and not self._in_backoff()
        ):
            self._opening += 1
            try:
                entry = await self._open_entry(None)
            except AppError:
                self._opening -= 1
                self._offer_slots()
                return
            except BaseException:
                self._opening -= 1
                raise
            self._opening -= 1
            if self._state is not SourceState.OPEN:
                self._destroy(entry)
                return
            self._put_back(entry)
            self._update_link()
            self._changed()

    def _reap_idle(self, now: float) -> None:
        timeout = self.settings.idle_timeout_s
        while (
            self._idle
            and self._shared_size() > self._shared_min()
            and now - self._idle[0].last_used >= timeout
        ):
            self._destroy(self._idle.popleft())

    async def _check_idle(self, now: float) -> None:
        due = [
            e
            for e in self._idle
            if now - max(e.last_used, e.last_checked) >= self.settings.health_interval_s
        ]
        for entry in due:
            if entry not in self._idle:
                continue
            self._idle.remove(entry)
            self._checking.add(entry)
            try:
                ok = await self._probe(entry)
            finally:
                self._checking.discard(entry)
            if ok and self._state is SourceState.OPEN:
                self._put_back(entry)
            else:
                self._destroy(entry)

    # --- dedicated connections --------------------------------------------------------

    def dedicated(self, name: str) -> DedicatedConnection:
        """The dedicated connection called `name` (created on first ask, opened on first
        use): a `ConnectionSource` nothing else borrows. It takes one of `max_size` slots."""
        if self._state in (SourceState.CLOSING, SourceState.CLOSED):
            raise self._closed_error()
        existing = self._dedicated.get(name)
        if existing is not None:
            return existing
        if len(self._dedicated) + 1 >= self.settings.max_size:
            raise AppError(
                ErrorCode.VALIDATION_ERROR,
                f"pool for {redact_uri(self._uri)} cannot dedicate another connection: "
                f"{len(self._dedicated)} of max_size {self.settings.max_size} already are, "
                "and one must stay shared",
                "raise [pool] max_size",
            )
        from virtwatch.core.libvirt.dedicated import DedicatedConnection  # it imports us

        dedicated = DedicatedConnection(self, name)
        self._dedicated[name] = dedicated
        self._changed()
        return dedicated

    def _forget_dedicated(self, dedicated: DedicatedConnection) -> None:
        if self._dedicated.get(dedicated.name) is dedicated:
            del self._dedicated[dedicated.name]
            self._slot_freed()
            self._update_link()
            self._changed()

    # --- statistics -------------------------------------------------------------------

    def stats(self) -> PoolStats:
        waits = list(self._waits)
        return PoolStats(
            host=self.host,
            uri=redact_uri(self._uri),
            state=self._state,
            size=self._size(),
            idle=len(self._idle),
            in_use=len(self._in_use) + len(self._checking),
            dedicated=len(self._dedicated),
            dedicated_open=self._dedicated_open(),
            opening=self._opening,
            waiters=sum(1 for f in self._waiters if not f.done()),
            min_size=self.settings.min_size,
            max_size=self.settings.max_size,
            created=self.created,
            destroyed=self.destroyed,
            failures=self.failures,
            timeouts=self.timeouts,
            acquire_wait_p50_s=percentile(waits, 50) if waits else None,
            acquire_wait_p99_s=percentile(waits, 99) if waits else None,
            at=time.time(),
        )

    def _changed(self) -> None:
        """Publish stats soon (coalesced: at most one record per 0.2 s from changes)."""
        if self._publish is None or self._stats_handle is not None or self._loop is None:
            return
        if self._state is SourceState.CLOSED:
            return
        delay = max(0.0, self._stats_at + 0.2 - time.monotonic())
        self._stats_handle = self._loop.call_later(delay, self._publish_stats)

    def _publish_stats(self) -> None:
        if self._stats_handle is not None:
            self._stats_handle.cancel()
            self._stats_handle = None
        self._stats_at = time.monotonic()
        stats = self.stats()
        if self._last_stats is not None and _same_figures(stats, self._last_stats):
            return
        self._last_stats = stats
        if self._publish is not None:
            self._publish(stats)
