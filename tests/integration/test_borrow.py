"""The borrow model (issue #11) against libvirt's test driver: a connection is closed only
when no thread is inside a call on it, one thread at a time is inside, a call past its
deadline leaves the connection suspect and replaced, and the stress script survives."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import libvirt
import pytest

from tests.conftest import FleetFactory
from tests.waiting import WAIT_S, until
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.libvirt import connection as connection_module
from virtwatch.core.libvirt.calls import closed_connection_error, is_dead_error
from virtwatch.core.libvirt.connection import SingleConnection, open_guarded
from virtwatch.core.libvirt.pool import LibvirtPool
from virtwatch.core.libvirt.pool_policy import PoolSettings

pytestmark = pytest.mark.libvirt
ROOT = Path(__file__).resolve().parents[2]
URI = "test:///default"


def wait_for(event: threading.Event) -> None:
    assert event.wait(WAIT_S), "the test's call was never released"


async def test_teardown_waits_for_the_thread_inside_a_call() -> None:
    guard = await open_guarded(URI)
    inside, release = threading.Event(), threading.Event()

    def slow(conn: libvirt.virConnect) -> int:
        inside.set()
        wait_for(release)
        return int(conn.getLibVersion())  # the connection is still whole here

    worker = asyncio.create_task(asyncio.to_thread(guard.run, slow))
    await asyncio.to_thread(wait_for, inside)
    await asyncio.to_thread(guard.teardown)  # asked to close under the call: deferred
    assert guard.closing
    assert guard.busy == 1
    assert guard.conn._o is not None  # libvirt-python drops its pointer on close
    with pytest.raises(AppError) as refused:  # no new call starts on a closing connection
        guard.run(lambda conn: conn.getLibVersion())
    assert is_dead_error(refused.value)
    release.set()
    assert await worker > 0
    assert guard.busy == 0
    assert guard.conn._o is None  # the last thread out closed it


async def test_one_thread_at_a_time_inside_libvirt() -> None:
    guard = await open_guarded(URI)
    inside = 0
    peak = 0
    lock = threading.Lock()

    def call(conn: libvirt.virConnect) -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        conn.listAllDomains(0)
        time.sleep(0.01)
        with lock:
            inside -= 1

    await asyncio.gather(*(asyncio.to_thread(guard.run, call) for _ in range(8)))
    assert peak == 1
    await asyncio.to_thread(guard.teardown)


async def test_a_waiter_for_its_turn_does_not_call_a_connection_that_began_closing() -> None:
    guard = await open_guarded(URI)
    inside, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def first(conn: libvirt.virConnect) -> None:
        inside.set()
        wait_for(release)
        calls.append("first")

    def second(conn: libvirt.virConnect) -> None:
        calls.append("second")

    a = asyncio.create_task(asyncio.to_thread(guard.run, first))
    await asyncio.to_thread(wait_for, inside)
    b = asyncio.create_task(asyncio.to_thread(guard.run, second))
    # the second thread is counted while it waits for its turn
    await until(lambda: guard.busy == 2, "two calls inside", step_s=0.01)
    await asyncio.to_thread(guard.teardown)
    release.set()
    await a
    with pytest.raises(AppError) as refused:
        await b
    assert refused.value.code is closed_connection_error(URI).code
    assert calls == ["first"]
    assert guard.conn._o is None


async def test_a_call_past_its_deadline_leaves_the_connection_suspect_and_replaced() -> None:
    release = threading.Event()
    settings = PoolSettings(min_size=1, max_size=2, check_after_idle_s=60)
    async with LibvirtPool(URI, settings=settings) as pool:
        async with pool.connection() as b:
            first = b.connection_id
            with pytest.raises(AppError) as late:
                await b.call(lambda conn: wait_for(release), timeout_s=0.2, what="a test call")
            assert late.value.code is ErrorCode.LIBVIRT_NOT_ANSWERING
            assert "did not answer within 0.2 s (a test call)" in late.value.message
            assert b.suspect
            with pytest.raises(AppError) as again:  # nothing queues behind a hung call
                await b.call(lambda conn: conn.getLibVersion())
            assert again.value.code is ErrorCode.LIBVIRT_NOT_ANSWERING
        for _ in range(3):  # never lent again
            async with pool.connection() as other:
                assert other.connection_id != first
                assert await other.call(lambda conn: conn.getLibVersion()) > 0
        release.set()


async def test_cancelled_mid_call_is_suspect_cancelled_between_calls_is_not() -> None:
    release = threading.Event()
    async with LibvirtPool(URI, settings=PoolSettings(min_size=1, max_size=2)) as pool:
        async with pool.connection() as b:
            task = asyncio.create_task(b.call(lambda conn: wait_for(release)))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert b.suspect
        release.set()
        async with pool.connection() as b:
            assert await b.call(lambda conn: conn.getLibVersion()) > 0
            task = asyncio.create_task(asyncio.sleep(10))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not b.suspect


async def test_calls_return_plain_data_and_die_with_their_borrow() -> None:
    async with LibvirtPool(URI, settings=PoolSettings(min_size=1, max_size=2)) as pool:
        async with pool.connection() as b:
            with pytest.raises(AppError, match="returned a libvirt object"):
                await b.call(lambda conn: conn.lookupByName("test"))
            with pytest.raises(AppError, match="returned a libvirt object"):
                await b.call(lambda conn: conn.listAllDomains(0))
            assert await b.call(lambda conn: conn.lookupByName("test").name()) == "test"
        with pytest.raises(AppError, match="after its borrow ended"):
            await b.call(lambda conn: conn.getLibVersion())


async def test_pool_close_waits_for_a_call_whose_borrower_was_cancelled() -> None:
    release = threading.Event()
    pool = await LibvirtPool(URI, settings=PoolSettings(min_size=1, max_size=2)).open()
    returned = threading.Event()

    def slow(conn: libvirt.virConnect) -> None:
        wait_for(release)
        conn.getLibVersion()
        returned.set()

    async def borrower() -> None:
        async with pool.connection() as b:
            await b.call(slow)

    task = asyncio.create_task(borrower())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    closing = asyncio.create_task(pool.close(grace_s=5))
    await asyncio.sleep(0.2)
    assert not closing.done()  # the thread is still inside libvirt
    release.set()
    await asyncio.wait_for(closing, 5)
    assert returned.is_set()


async def test_single_connection_replaces_a_suspect_connection_and_closes_without_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection_module, "CLOSE_WAIT_S", 0.3)
    release = threading.Event()
    source = SingleConnection(URI, call_timeout_s=0.2)
    try:
        async with source.connection() as b:
            first = b.connection_id
            with pytest.raises(AppError):
                await b.call(lambda conn: wait_for(release))
        async with source.connection() as b:
            assert b.connection_id != first
            async with asyncio.timeout(5):
                hung = asyncio.create_task(b.call(lambda conn: wait_for(release), timeout_s=60))
                await asyncio.sleep(0.05)
                started = time.monotonic()
                await source.close()  # a call still inside: close() gives up after its wait
                assert time.monotonic() - started < 2
    finally:
        release.set()
    await hung


@pytest.mark.parametrize("seconds", [20])
def test_stress_hundreds_of_borrowers_with_deadlines_cancels_and_teardowns(
    make_fleet: FleetFactory, seconds: int
) -> None:
    """scripts/borrow_stress.py under -X dev and faulthandler, on a 300-VM private fleet
    (calls long enough to be torn down under); MALLOC_PERTURB_ poisons freed memory, so a
    use after free shows instead of passing by luck."""
    uri = make_fleet(300)
    env = {**os.environ, "MALLOC_PERTURB_": "165", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-X", "dev", "-X", "faulthandler", "scripts/borrow_stress.py"]
    out = subprocess.run(
        [*cmd, uri, "--seconds", str(seconds), "--min-under-call", "5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3 * seconds + 120,
    )
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-4000:]}"
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    # floors that hold on a loaded machine: the point is that every path was taken
    assert summary["ok"] > 100, summary
    assert summary["deadline"] > 50, summary
    assert summary["cancelled"] > 20, summary
    assert summary["teardown"] > 20, summary
    assert summary["teardown.under_call"] >= 5, summary
    assert summary["created"] > summary["teardown"] // 2, summary  # torn down, replaced
