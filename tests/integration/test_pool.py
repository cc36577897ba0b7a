"""The connection pool against libvirt's test driver (no daemon).

The `scenario_*` functions take a URI and run unchanged against libvirtd in
tests/qemu/test_pool_qemu.py: many borrowers, FIFO order, acquire timeouts,
cancellation in the middle of acquire and of use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import libvirt
import pytest

from tests.conftest import FleetFactory
from tests.waiting import until
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.calls import Borrowed
from virtwatch.core.libvirt.connection import Credentials, SingleConnection, SourceState
from virtwatch.core.libvirt.pool import LibvirtPool
from virtwatch.core.libvirt.pool_policy import PoolSettings, PoolStats
from virtwatch.core.records import ConnectionState, HostConnection
from virtwatch.core.runtime import HostConfig, Runtime

pytestmark = pytest.mark.libvirt

SECRET = "hunter2-xyzzy"


def settings(**kw: float) -> PoolSettings:
    return PoolSettings(**kw)  # type: ignore[arg-type]


async def lib_version(b: Borrowed) -> int:
    return int(await b.call(lambda conn: conn.getLibVersion()))


# --- scenarios shared with the libvirtd tests ---------------------------------------------


async def scenario_many_borrowers(uri: str) -> None:
    """200 borrowers on 4 connections: all served, never more than 4 lent at once."""
    published: list[object] = []
    async with LibvirtPool(
        uri, settings=settings(min_size=1, max_size=4), publish=published.append
    ) as pool:
        lent = peak = 0

        async def borrower() -> int:
            nonlocal lent, peak
            async with pool.connection() as b:
                lent += 1
                peak = max(peak, lent)
                try:
                    version = await lib_version(b)
                    await asyncio.sleep(0)
                finally:
                    lent -= 1
            return version

        versions = await asyncio.gather(*(borrower() for _ in range(200)))
        assert all(v > 0 for v in versions)
        stats = pool.stats()
        assert peak == 4  # the pool grew to max_size under load, never beyond
        assert stats.in_use == 0
        assert stats.waiters == 0
        assert stats.size == stats.idle == 4
        assert stats.created == 4
        assert stats.failures == stats.timeouts == 0
        assert stats.acquire_wait_p50_s is not None
        assert stats.acquire_wait_p99_s is not None
        assert stats.acquire_wait_p99_s >= stats.acquire_wait_p50_s
    assert pool.state is SourceState.CLOSED
    assert any(isinstance(p, PoolStats) for p in published)


async def scenario_fifo(uri: str) -> None:
    """Waiters are served in the order they arrived."""
    async with LibvirtPool(uri, settings=settings(min_size=1, max_size=1)) as pool:
        held = await pool.acquire()
        order: list[int] = []

        async def waiter(i: int) -> None:
            async with pool.connection() as b:
                order.append(i)
                await lib_version(b)

        tasks = []
        for i in range(10):
            tasks.append(asyncio.create_task(waiter(i)))
            await until(_waiters_are(pool, i + 1), f"{i + 1} waiters")
        pool.release(held)
        await asyncio.gather(*tasks)
        assert order == list(range(10))


def _waiters_are(pool: LibvirtPool, n: int) -> Callable[[], bool]:
    return lambda: pool.stats().waiters == n


async def scenario_acquire_timeout(uri: str) -> None:
    """A waiter past the timeout gets an error naming the URI and the pool's state; the
    pool stays consistent (the next borrower is served at once)."""
    async with LibvirtPool(uri, settings=settings(min_size=1, max_size=2)) as pool:
        a = await pool.acquire()
        b = await pool.acquire()
        with pytest.raises(AppError) as info:
            await pool.acquire(timeout_s=0.2)
        err = info.value
        assert err.code is ErrorCode.RESOURCE_EXHAUSTED
        assert err.transient
        assert uri in err.message
        assert "2/2 open, 2 in use" in err.message
        assert "0 more waiting; host connected" in err.message
        assert err.hint
        stats = pool.stats()
        assert stats.timeouts == 1
        assert stats.waiters == 0
        pool.release(a)
        c = await pool.acquire(timeout_s=5)
        assert c.connection_id == a.connection_id  # the one just returned, lent again
        pool.release(b)
        pool.release(c)
        assert pool.stats().idle == 2


async def scenario_cancel_mid_acquire(uri: str) -> None:
    """A waiter cancelled while queued leaves no trace; one cancelled at the very moment
    it was handed a connection gives it back (no leak, no double return)."""
    async with LibvirtPool(uri, settings=settings(min_size=1, max_size=1)) as pool:
        held = await pool.acquire()
        # 1. cancelled while waiting
        waiting = asyncio.create_task(pool.acquire())
        await until(lambda: pool.stats().waiters == 1, "one waiter")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert pool.stats().waiters == 0
        # 2. handed the connection, then cancelled before it could run
        racing = asyncio.create_task(pool.acquire())
        await until(lambda: pool.stats().waiters == 1, "one waiter")
        pool.release(held)  # hands `held` to the waiter's future ...
        racing.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await racing
        stats = pool.stats()
        assert (stats.in_use, stats.idle, stats.waiters, stats.size) == (0, 1, 0, 1)
        # 3. a waiter cancelled mid-acquire while the pool opens a connection for it
        wide = LibvirtPool(uri, settings=settings(min_size=0, max_size=3))
        async with wide:
            opening = asyncio.create_task(wide.acquire())
            await asyncio.sleep(0)  # it reserved a slot and is opening in a thread
            opening.cancel()
            with pytest.raises(asyncio.CancelledError):
                await opening
            assert wide.stats().opening == 0
            assert wide.stats().in_use == 0
            async with wide.connection() as b:  # the freed slot is usable
                assert await lib_version(b) > 0
        # the connection handed over in 2. is whole and lendable
        async with pool.connection(timeout_s=5) as b:
            assert b.connection_id == held.connection_id
            assert await lib_version(b) > 0
        with pytest.raises(AppError, match="released twice"):
            pool.release(held)


async def scenario_cancel_mid_use(uri: str) -> None:
    """A borrower cancelled in the middle of a libvirt call returns its connection, which
    is suspect from then on (its thread is still inside libvirt): never lent again, not
    returned twice, replaced by a new one, and closed only after the abandoned call has
    left libvirt."""
    gate = threading.Event()
    started = threading.Event()
    finished: list[int] = []
    async with LibvirtPool(uri, settings=settings(min_size=1, max_size=1)) as pool:

        def slow_call(conn: libvirt.virConnect) -> int:
            started.set()
            gate.wait(10)
            version = int(conn.getLibVersion())  # the connection must still be open here
            finished.append(version)
            return version

        lent: list[Borrowed] = []

        async def borrower() -> None:
            async with pool.connection() as b:
                lent.append(b)
                await b.call(slow_call)

        task = asyncio.create_task(borrower())
        await asyncio.to_thread(started.wait, 10)
        assert pool.stats().in_use == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (abandoned,) = lent
        assert abandoned.suspect
        stats = pool.stats()  # given back, and out of the pool at once (a new one opens)
        assert (stats.in_use, stats.destroyed, stats.failures) == (0, 1, 0)
        with pytest.raises(AppError, match="released twice"):
            pool.release(abandoned)
        # the next borrower gets a new connection, never the suspect one; the suspect one
        # stays open meanwhile: a thread is still inside a call on it
        async with pool.connection(timeout_s=5) as b:
            assert b.connection_id != abandoned.connection_id
            assert not b.suspect
            assert await lib_version(b) > 0
        assert not _is_closed(abandoned)
        assert not finished
        gate.set()  # the abandoned call finishes on a connection that is still open ...
        await until(lambda: _is_closed(abandoned), "closed once its call left libvirt")
        assert len(finished) == 1
        assert finished[0] > 0  # ... and only then is it closed
        stats = pool.stats()
        assert (stats.failures, stats.created, stats.destroyed) == (0, 2, 1)
        assert (stats.in_use, stats.idle, stats.size) == (0, 1, 1)


# --- the same scenarios on the test driver -------------------------------------------------


@pytest.mark.parametrize(
    "scenario",
    [
        scenario_many_borrowers,
        scenario_fifo,
        scenario_acquire_timeout,
        scenario_cancel_mid_acquire,
        scenario_cancel_mid_use,
    ],
)
async def test_scenario_on_the_test_driver(
    make_fleet: FleetFactory, scenario: Callable[[str], Awaitable[None]]
) -> None:
    await scenario(make_fleet(5))


# --- lifecycle and misuse ------------------------------------------------------------------


async def test_states_and_clear_errors_on_misuse(make_fleet: FleetFactory) -> None:
    pool = LibvirtPool(make_fleet(2))
    assert pool.stats().state is SourceState.UNOPENED
    with pytest.raises(AppError, match="not open yet"):
        await pool.acquire()
    await pool.open()
    assert pool.state is SourceState.OPEN
    with pytest.raises(AppError, match="already open"):
        await pool.open()
    borrowed = await pool.acquire()
    pool.release(borrowed)
    with pytest.raises(AppError, match="released twice"):
        pool.release(borrowed)
    outside = SingleConnection("test:///default")  # a connection from another source
    try:
        async with outside.connection() as stranger:
            with pytest.raises(AppError, match="did not lend"):
                pool.release(stranger)
            assert await lib_version(stranger) > 0  # refused, and left alone
    finally:
        await outside.close()
    await pool.close()
    assert pool.stats().state is SourceState.CLOSED
    with pytest.raises(AppError, match="is closed"):
        await pool.acquire()
    with pytest.raises(AppError, match="is closed"):
        pool.dedicated("late")
    await pool.close()  # idempotent
    await pool.terminate()


async def test_open_fills_min_size_and_counts_dedicated_connections(
    make_fleet: FleetFactory,
) -> None:
    """min_size and max_size count the dedicated connections: 3 = collector + 2 shared."""
    pool = LibvirtPool(make_fleet(2), settings=settings(min_size=3, max_size=4))
    collector = pool.dedicated("collector")
    assert pool.dedicated("collector") is collector
    async with pool:
        assert pool.stats().idle == 2  # min 3 minus the dedicated one
        async with collector.connection() as b:
            assert await lib_version(b) > 0
        stats = pool.stats()
        assert (stats.size, stats.dedicated, stats.dedicated_open, stats.idle) == (3, 1, 1, 2)
        a, b, c = [await pool.acquire() for _ in range(3)]  # 4 - 1 dedicated = 3 shared
        with pytest.raises(AppError, match="4/4 open"):
            await pool.acquire(timeout_s=0.1)
        for borrowed in (a, b, c):
            pool.release(borrowed)
        for i in range(2):  # max 4: up to 3 dedicated, one stays shared
            pool.dedicated(f"extra-{i}")
        with pytest.raises(AppError, match="one must stay shared"):
            pool.dedicated("one-too-many")


async def test_waiters_are_failed_when_the_pool_closes(make_fleet: FleetFactory) -> None:
    pool = LibvirtPool(make_fleet(2), settings=settings(min_size=1, max_size=1))
    await pool.open()
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await until(lambda: pool.stats().waiters == 1, "one waiter")
    closing = asyncio.create_task(pool.close(grace_s=5))
    with pytest.raises(AppError, match="closing"):
        await waiter
    assert not closing.done()  # draining: `held` is still out
    pool.release(held)
    await closing
    assert pool.state is SourceState.CLOSED
    assert pool.stats().size == 0


async def test_close_drains_then_terminates_abandoning_a_stuck_borrower(
    make_fleet: FleetFactory,
) -> None:
    pool = LibvirtPool(make_fleet(2), settings=settings(min_size=2, max_size=2))
    await pool.open()
    stuck = await pool.acquire()
    await pool.close(grace_s=0.1)
    assert pool.stats().destroyed == 1  # the idle one
    assert pool.state is SourceState.CLOSED
    # never closed under a borrower (libvirt would free it mid-call): still usable ...
    assert not _is_closed(stuck)
    assert await lib_version(stuck) > 0
    pool.release(stuck)  # ... and closed when it comes back
    await until(lambda: _is_closed(stuck), "the abandoned connection closed")
    assert pool.stats().destroyed == 2


def _break(conn: libvirt.virConnect) -> None:
    """In a call: close the connection under the pool's feet, so that every later call
    on it fails with libvirt's own "invalid connection" (the test driver has no daemon
    that could drop it). Safe only on a connection no other thread is inside a call on:
    a borrowed shared or dedicated connection, in these tests (the pool probes only idle
    ones). libvirt-python forgets its handle on close, so the pool's own teardown later
    is refused by libvirt (an error it ignores), never a second close."""
    conn.close()


async def _fail_dead(borrowing: contextlib.AbstractAsyncContextManager[Borrowed]) -> Borrowed:
    """Borrow, break the connection underneath, and let the failing call end the block
    (the source sees the error). Returns the handle of the broken connection."""
    used: list[Borrowed] = []

    async def use() -> None:
        async with borrowing as b:
            used.append(b)
            await b.call(_break)
            await lib_version(b)

    with pytest.raises(libvirt.libvirtError) as info:
        await use()
    assert info.value.get_error_code() == libvirt.VIR_ERR_INVALID_CONN
    return used[0]


def _is_closed(b: Borrowed) -> bool:
    """The connection behind `b` has really been closed: libvirt-python drops its handle
    once virConnectClose returned (read without calling into libvirt, which could race
    the close)."""
    conn = b._guard.conn
    return conn is not None and conn._o is None


# --- health ------------------------------------------------------------------------------------


async def test_a_connection_that_fails_dead_is_replaced(make_fleet: FleetFactory) -> None:
    hub = Hub()
    states = hub.subscribe(HostConnection)
    pool = LibvirtPool(
        make_fleet(2), settings=settings(min_size=2, max_size=2), publish=hub.publish
    )
    async with pool:
        broken = await _fail_dead(pool.connection())  # as if libvirtd dropped it mid-call
        await until(lambda: pool.stats().idle == 2 and pool.stats().created == 3, "replaced")
        stats = pool.stats()
        assert (stats.destroyed, stats.failures) == (1, 1)
        async with pool.connection() as fresh:
            assert fresh.connection_id != broken.connection_id
            assert await lib_version(fresh) > 0
        seen = [states.get_nowait() for _ in range(states.pending())]
        kinds = [s.state for s in seen if s is not None]
        assert kinds[0] is ConnectionState.CONNECTING
        assert ConnectionState.DEGRADED in kinds
        assert kinds[-1] is ConnectionState.CONNECTED


async def test_an_idle_connection_is_probed_before_it_is_lent(make_fleet: FleetFactory) -> None:
    pool = LibvirtPool(
        make_fleet(2), settings=settings(min_size=1, max_size=1, check_after_idle_s=0.05)
    )
    async with pool:
        broken = await pool.acquire()
        await broken.call(_break)  # broken, but returned as if healthy (no call failed)
        pool.release(broken)
        assert pool.stats().failures == 0
        await asyncio.sleep(0.1)  # idle long enough to be probed on the next borrow
        async with pool.connection() as fresh:
            assert fresh.connection_id != broken.connection_id
            assert await lib_version(fresh) > 0
        assert pool.stats().failures == 1


async def test_idle_connections_are_probed_periodically(make_fleet: FleetFactory) -> None:
    pool = LibvirtPool(
        make_fleet(2), settings=settings(min_size=1, max_size=1, health_interval_s=0.1)
    )
    async with pool:
        broken = await pool.acquire()
        # dies (no call fails on it, so the pool cannot know) and goes back idle, where
        # nobody borrows it: only the periodic probe can find out
        await broken.call(_break)
        pool.release(broken)
        assert pool.stats().failures == 0
        await until(lambda: pool.stats().failures == 1, "the probe found it dead")
        await until(lambda: pool.stats().idle == 1 and pool.stats().created == 2, "replaced")


async def test_idle_connections_above_min_are_closed(make_fleet: FleetFactory) -> None:
    pool = LibvirtPool(make_fleet(2), settings=settings(min_size=1, max_size=4, idle_timeout_s=0.2))
    async with pool:
        lent = [await pool.acquire() for _ in range(4)]
        for borrowed in lent:
            pool.release(borrowed)
        assert pool.stats().idle == 4
        await until(lambda: pool.stats().idle == 1, "reaped down to min_size")
        assert pool.stats().destroyed == 3
        assert pool.stats().failures == 0


# --- outages, credentials, read-only ----------------------------------------------------------


async def test_an_unreachable_host_is_reported_and_retried_with_backoff() -> None:
    uri = f"qemu+tcp://admin:{SECRET}@127.0.0.1:1/system"
    hub = Hub()
    states = hub.subscribe(HostConnection)
    pool = LibvirtPool(
        uri,
        host="lab",
        settings=settings(reconnect_initial_s=0.05, reconnect_max_s=0.2),
        publish=hub.publish,
        rand=lambda: 0.0,
    )
    async with pool:  # opening never fails because the host is down
        assert pool.connection_state is ConnectionState.RECONNECTING
        with pytest.raises(AppError) as info:
            await pool.acquire()  # fails at once: a retry is pending
        err = info.value
        assert err.code is ErrorCode.LIBVIRT_CONNECTION_FAILED
        assert err.transient
        assert "lab is unreachable" in err.message
        assert SECRET not in err.message
        assert "admin:***@127.0.0.1" in err.message
        await until(lambda: pool.stats().failures >= 4, "retried in the background")
        seen = [states.get_nowait() for _ in range(states.pending())]
        retrying = [s for s in seen if s is not None and s.state is ConnectionState.RECONNECTING]
        assert retrying
        assert all(s.next_retry_at is not None for s in retrying[1:])
        assert len({s.since for s in retrying}) == 1  # down since the first failure
        assert all(SECRET not in repr(s) for s in seen)
        assert SECRET not in repr(pool)
        assert SECRET not in repr(pool.stats())


async def test_a_bad_password_is_down_not_a_retry_storm_and_never_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """notes/libvirt.md: an <auth> element in a test fleet forces openAuth."""
    caplog.set_level(logging.DEBUG)
    fleet = tmp_path / "auth.xml"
    fleet.write_text(
        f"<node><auth><user password='{SECRET}'>admin</user></auth>"
        "<domain type='test'><name>vm</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain></node>"
    )
    uri = f"test://{fleet}"
    hub = Hub()
    seen: list[object] = []
    hub.subscribe(object)
    wrong = Credentials("admin", "not-the-password")

    def publish(item: object) -> None:
        seen.append(item)
        hub.publish(item)

    pool = LibvirtPool(uri, credentials=wrong, publish=publish)
    async with pool:
        assert pool.connection_state is ConnectionState.DOWN
        with pytest.raises(AppError) as info:
            await pool.acquire()
        assert info.value.code is ErrorCode.UNAUTHORIZED
        assert info.value.libvirt_code == libvirt.VIR_ERR_AUTH_FAILED
        assert not info.value.transient
        failures = pool.stats().failures
        await asyncio.sleep(0.3)
        assert pool.stats().failures == failures  # no retry storm against a wrong password
        down = [s for s in seen if isinstance(s, HostConnection)][-1]
        assert down.state is ConnectionState.DOWN
        assert down.next_retry_at is not None
    right = Credentials("admin", SECRET)
    host = HostConfig(uri, name="auth", credentials=right, interval_s=0.05)
    async with Runtime([host], hub=hub) as rt:
        async with rt.pools["auth"].connection() as b:
            names = await b.call(lambda conn: [d.name() for d in conn.listAllDomains()])
        assert names == ["vm"]
        seen.append(ErrorReport.of(info.value, host="auth"))
        seen.append(repr(rt.pools["auth"]))
        seen.append(repr(host))
    for item in seen:
        assert SECRET not in repr(item)
        assert "not-the-password" not in repr(item)
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert "not-the-password" not in record.getMessage()


async def test_a_fleet_file_that_appears_later_is_picked_up(tmp_path: Path) -> None:
    """A non-transient failure (bad fleet XML) is DOWN, retried slowly, and recovers."""
    fleet = tmp_path / "late.xml"
    hub = Hub()
    states = hub.subscribe(HostConnection)
    pool = LibvirtPool(f"test://{fleet}", settings=settings(down_retry_s=0.2), publish=hub.publish)
    async with pool:
        assert pool.connection_state is ConnectionState.DOWN
        fleet.write_text(
            "<node><domain type='test'><name>vm</name><memory>65536</memory>"
            "<os><type>hvm</type></os></domain></node>"
        )
        await until(lambda: pool.connection_state is ConnectionState.CONNECTED, "connected")
        async with pool.connection() as b:
            assert await lib_version(b) > 0
    seen = [states.get_nowait() for _ in range(states.pending())]
    kinds = [s.state for s in seen if s is not None]
    assert kinds[:2] == [ConnectionState.CONNECTING, ConnectionState.DOWN]
    assert kinds[-2:] == [ConnectionState.CONNECTED, ConnectionState.CLOSED]


async def test_read_only_pools_read_but_cannot_write(make_fleet: FleetFactory) -> None:
    async with LibvirtPool(make_fleet(2, states=(1,)), read_only=True) as pool:
        async with pool.connection() as b:
            assert await b.call(lambda conn: len(conn.listAllDomains())) == 2  # reads
            with pytest.raises(libvirt.libvirtError) as info:
                await b.call(lambda conn: conn.listAllDomains()[0].suspend())
        assert info.value.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED
        assert pool.stats().failures == 0  # a denied write is not a dead connection


# --- dedicated connections ---------------------------------------------------------------------


async def test_a_dedicated_connection_reopens_and_reruns_its_listeners(
    make_fleet: FleetFactory,
) -> None:
    pool = LibvirtPool(make_fleet(3), settings=settings(min_size=2, max_size=3))
    source = pool.dedicated("collector")
    opened: list[int] = []
    source.add_open_listener(lambda conn: opened.append(int(conn.getLibVersion())))
    with pytest.raises(AppError, match="not open yet"):
        async with source.connection():
            pass
    async with pool:
        async with source.connection() as first, pool.connection() as shared:
            assert shared.connection_id != first.connection_id  # never lent to anyone else
        assert len(opened) == 1
        assert (await _fail_dead(source.connection())).connection_id == first.connection_id
        await until(lambda: len(opened) == 2, "reopened in the background")
        async with source.connection() as second:
            assert second.connection_id != first.connection_id
            assert await lib_version(second) > 0
        assert source.opens == 2
    assert source.state is SourceState.CLOSED
    with pytest.raises(AppError, match="closed"):
        async with source.connection():
            pass


async def test_a_failing_open_listener_fails_the_open_clearly(make_fleet: FleetFactory) -> None:
    pool = LibvirtPool(make_fleet(2), settings=settings(reconnect_initial_s=5, reconnect_max_s=5))
    source = pool.dedicated("events")

    def broken(_conn: libvirt.virConnect) -> None:
        raise RuntimeError("listener bug")

    source.add_open_listener(broken)
    async with pool:
        with pytest.raises(AppError, match="listener bug") as info:
            async with source.connection():
                pass
        assert info.value.code is ErrorCode.INTERNAL_ERROR
        with pytest.raises(AppError, match="unreachable"):  # backing off, not hammering
            async with source.connection():
                pass


# --- statistics and the runtime ------------------------------------------------------------------


async def test_stats_are_published_on_change_and_add_up(make_fleet: FleetFactory) -> None:
    hub = Hub()
    sub = hub.subscribe(PoolStats, latest_only=True)
    latest: list[PoolStats] = []

    def newest() -> PoolStats | None:
        item = sub.get_nowait()
        if item is not None:
            latest.append(item)
        return latest[-1] if latest else None

    pool = LibvirtPool(
        make_fleet(2), settings=settings(min_size=1, max_size=3), publish=hub.publish
    )
    async with pool:
        lent = [await pool.acquire() for _ in range(3)]
        await until(lambda: (s := newest()) is not None and s.in_use == 3, "3 lent")
        for borrowed in lent:
            pool.release(borrowed)
        await until(lambda: (s := newest()) is not None and s.idle == 3, "3 idle")
        shown = newest()
        assert shown is not None
        assert shown.size == shown.idle + shown.in_use + shown.dedicated_open
    last = newest()
    assert last is not None
    assert last.state is SourceState.CLOSED
    assert (last.size, last.created, last.destroyed) == (0, 3, 3)


async def test_the_runtime_opens_a_pool_per_host_and_leaves_no_task(
    make_fleet: FleetFactory,
) -> None:
    hub = Hub()
    states = hub.subscribe(HostConnection)
    before = asyncio.all_tasks()
    hosts = [
        HostConfig(make_fleet(3), name="a", interval_s=0.05),
        HostConfig(make_fleet(4), name="b", interval_s=0.05),
    ]
    async with Runtime(hosts, hub=hub) as rt:
        assert set(rt.pools) == {"a", "b"}
        await until(lambda: all(c.last is not None for c in rt.collectors), "both ticked")
        for source in rt.sources:
            assert source.name == "collector"
            assert source.live
        assert {len(c.last.domains) for c in rt.collectors if c.last} == {3, 4}
        # actions borrow shared connections, never the collector's
        collector = rt.pools["a"].dedicated("collector")
        async with collector.connection() as mine, rt.pools["a"].connection() as b:
            assert b.connection_id != mine.connection_id
        assert len(asyncio.all_tasks()) > len(before)
    assert asyncio.all_tasks() == before
    assert all(p.state is SourceState.CLOSED for p in rt.pools.values())
    seen = [states.get_nowait() for _ in range(states.pending())]
    last = {s.host: s.state for s in seen if s is not None}
    assert last == {"a": ConnectionState.CLOSED, "b": ConnectionState.CLOSED}


async def test_the_runtime_starts_with_a_host_down_and_says_so() -> None:
    hub = Hub()
    states = hub.subscribe(HostConnection)
    reports = hub.subscribe(ErrorReport)
    host = HostConfig("qemu+tcp://127.0.0.1:1/system", name="gone", interval_s=0.05)
    before = asyncio.all_tasks()
    async with Runtime([host], hub=hub) as rt:
        assert rt.pools["gone"].connection_state is ConnectionState.RECONNECTING
        report = await asyncio.wait_for(reports.get(), 10)
        assert report.host == "gone"
        assert report.error.code is ErrorCode.LIBVIRT_CONNECTION_FAILED
        assert not rt.sources[0].live
    assert asyncio.all_tasks() == before
    kinds = [s.state for s in (states.get_nowait() for _ in range(states.pending())) if s]
    assert ConnectionState.RECONNECTING in kinds


async def test_two_hosts_with_one_name_are_refused(make_fleet: FleetFactory) -> None:
    hosts = [HostConfig(make_fleet(1), name="x"), HostConfig(make_fleet(1), name="x")]
    with pytest.raises(AppError, match="two hosts are called 'x'"):
        async with Runtime(hosts):
            pass


async def test_runtime_open_timeout_overrides_the_pool_settings(make_fleet: FleetFactory) -> None:
    async with Runtime([HostConfig(make_fleet(1), name="t")], open_timeout_s=3.5) as rt:
        assert rt.pools["t"].settings.open_timeout_s == 3.5
    assert rt.state is SourceState.CLOSED
    with pytest.raises(AppError, match="it opens once"):
        await rt.open()
