"""The connection pool against libvirtd (qemu:///system): the same concurrency scenarios
as on the test driver, over real RPC connections with keepalive and close callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.test_pool import (
    scenario_acquire_timeout,
    scenario_cancel_mid_acquire,
    scenario_cancel_mid_use,
    scenario_fifo,
    scenario_many_borrowers,
)
from tests.vms import QEMU_URI, VmFactory
from tests.waiting import until
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.pool import LibvirtPool
from virtwatch.core.libvirt.pool_policy import PoolSettings
from virtwatch.core.records import ConnectionState, HostConnection

pytestmark = pytest.mark.qemu


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
async def test_scenario_against_libvirtd(
    hypervisor: None, scenario: Callable[[str], Awaitable[None]]
) -> None:
    await scenario(QEMU_URI)


async def test_borrowers_drive_real_vms_while_the_collector_keeps_its_own_connection(
    transient_vm: VmFactory,
) -> None:
    """Actions on shared connections, the collector's calls on its dedicated one: under
    load the two never share a connection, and every VM call succeeds."""
    names = [(await transient_vm()).name() for _ in range(2)]
    hub = Hub()
    states = hub.subscribe(HostConnection)
    pool = LibvirtPool(QEMU_URI, settings=PoolSettings(min_size=2, max_size=4), publish=hub.publish)
    collector = pool.dedicated("collector")
    async with pool:
        async with collector.connection() as mine:
            dedicated = mine  # kept: its connection_id stays this connection's
        lent: set[int] = set()

        async def act(name: str) -> int:
            async with pool.connection() as b:
                lent.add(b.connection_id)
                state, _reason = await b.call(lambda conn: conn.lookupByName(name).state())
                return int(state)

        async def poll() -> int:
            async with collector.connection() as b:
                return await b.call(lambda conn: len(conn.getAllDomainStats(1, 0)))

        results = await asyncio.gather(
            *(act(names[i % 2]) for i in range(60)), *(poll() for _ in range(20))
        )
        assert all(r >= 1 for r in results)
        assert dedicated.connection_id not in lent
        assert len(lent) <= 3  # max 4, one of them dedicated
        stats = pool.stats()
        assert (stats.failures, stats.timeouts, stats.in_use) == (0, 0, 0)
        await until(lambda: pool.connection_state is ConnectionState.CONNECTED, "connected")
    kinds = [s.state for s in (states.get_nowait() for _ in range(states.pending())) if s]
    assert kinds == [ConnectionState.CONNECTING, ConnectionState.CONNECTED, ConnectionState.CLOSED]
