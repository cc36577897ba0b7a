from __future__ import annotations

import asyncio

from virtwatch.core.hub import Hub


async def test_latest_only_keeps_the_newest() -> None:
    hub = Hub()
    sub = hub.subscribe(int, latest_only=True)
    for i in range(5):
        hub.publish(i)
    assert await sub.get() == 4
    assert sub.replaced == 4


async def test_backlog_keeps_order_and_counts_drops() -> None:
    hub = Hub()
    sub = hub.subscribe(int, maxsize=3)
    for i in range(5):
        hub.publish(i)
    assert [await sub.get() for _ in range(3)] == [2, 3, 4]
    assert sub.dropped == 2


async def test_routing_by_type() -> None:
    hub = Hub()
    ints = hub.subscribe(int)
    strs = hub.subscribe(str)
    hub.publish(1)
    hub.publish("a")
    assert ints.pending() == 1
    assert strs.pending() == 1


async def test_close_ends_iteration_of_a_waiting_consumer() -> None:
    hub = Hub()
    sub = hub.subscribe(int)
    got: list[int] = []

    async def consume() -> None:
        async for item in sub:
            got.append(item)

    task = asyncio.create_task(consume())
    hub.publish(7)
    await asyncio.sleep(0)
    sub.close()
    await asyncio.wait_for(task, 1)
    assert got == [7]
    hub.publish(8)  # no subscriber left: nothing breaks
    assert sub.pending() == 0
