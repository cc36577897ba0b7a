"""The runtime as a whole on libvirt's test driver: events force ticks, errors become
de-duplicated incidents, actions run as tasks, and nothing is left running."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import FleetFactory
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.model import DomainState, Snapshot
from virtwatch.core.ops.actions import Action, submit_action
from virtwatch.core.records import AuditRecord, DomainEvent, Outcome, TaskState, TaskUpdate
from virtwatch.core.runtime import HostConfig, Runtime

pytestmark = pytest.mark.libvirt


async def test_an_event_forces_a_tick_long_before_the_interval() -> None:
    """test:///default is one node shared by every connection of the process (a fleet
    file gives each connection its own copy, so another connection's change is unseen)."""
    hub = Hub()
    events = hub.subscribe(DomainEvent)
    snaps = hub.subscribe(Snapshot, latest_only=True)
    host = HostConfig("test:///default", name="lab", interval_s=3600)
    async with Runtime([host], hub=hub) as rt:
        await asyncio.wait_for(snaps.get(), 10)
        await asyncio.sleep(0.2)  # let the post-open tick pass
        while snaps.get_nowait() is not None:
            pass
        async with rt.pools["lab"].connection() as b:
            await b.call(lambda conn: conn.lookupByName("test").suspend())
            try:
                event = await asyncio.wait_for(events.get(), 10)
                assert (event.vm_name, event.host) == ("test", "lab")
                forced = await asyncio.wait_for(snaps.get(), 10)  # an hour early
                assert {d.name: d.state for d in forced.domains}["test"] is DomainState.PAUSED
            finally:
                await b.call(lambda conn: conn.lookupByName("test").resume())


async def test_errors_from_parts_become_one_incident(make_fleet: FleetFactory) -> None:
    hub = Hub()
    reports = hub.subscribe(ErrorReport)
    async with Runtime([HostConfig(make_fleet(1), name="lab")], hub=hub) as rt:
        err = AppError(ErrorCode.LIBVIRT_CONNECTION_LOST, "lost", "it reconnects")
        for _ in range(50):
            rt.publish(ErrorReport.of(err, host="lab"))
        first = await asyncio.wait_for(reports.get(), 5)
        assert first.fingerprint
        assert reports.pending() <= 2  # fifty reports, not fifty messages
    folded = [r for r in [first, *iter(reports.get_nowait, None)] if r.fingerprint]
    assert max(r.count for r in folded) == 50


async def test_actions_run_as_tasks_on_the_shared_pool(make_fleet: FleetFactory) -> None:
    hub = Hub()
    updates = hub.subscribe(TaskUpdate)
    audits = hub.subscribe(AuditRecord)
    async with Runtime([HostConfig(make_fleet(2, states=(1,)), name="lab")], hub=hub) as rt:
        handle = submit_action(
            rt.tasks, rt.pools["lab"], Action.PAUSE, "vm-0000", host="lab", publish=rt.publish
        )
        record = await asyncio.wait_for(handle.result(), 30)
    assert record.outcome is Outcome.VERIFIED
    assert (await audits.get()).vm_name == "vm-0000"
    states = [u.state for u in iter(updates.get_nowait, None)]
    assert states[-1] is TaskState.SUCCEEDED


async def test_nothing_is_left_running_after_close(make_fleet: FleetFactory) -> None:
    before = set(asyncio.all_tasks())
    async with Runtime([HostConfig(make_fleet(2), name="lab", interval_s=0.05)]) as rt:
        await asyncio.sleep(0.3)
        assert rt.events["lab"].registered > 0
    await asyncio.sleep(0)
    assert set(asyncio.all_tasks()) - before == set()
    assert rt.events["lab"].registered == 0
