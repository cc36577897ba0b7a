"""VM actions against libvirt's test driver: each verified, each audited once, and the
refusals (missing VM, already there, read-only) clear and final."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import FleetFactory
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.model import DomainState
from virtwatch.core.ops.actions import Action, ActionTimeouts, perform
from virtwatch.core.ops.identity import Actor, current_actor
from virtwatch.core.records import AuditRecord, Outcome

pytestmark = pytest.mark.libvirt

ADMIN = Actor("alice as root", "192.0.2.10")
FAST = ActionTimeouts(poll_s=0.01)


@pytest.fixture
async def source(make_fleet: FleetFactory) -> AsyncIterator[SingleConnection]:
    # vm-0000 running, vm-0001 paused, vm-0002 shut off
    src = SingleConnection(make_fleet(3, states=(1, 3, 5)))
    try:
        yield src
    finally:
        await src.close()


async def state_of(source: SingleConnection, name: str) -> DomainState:
    async with source.connection() as b:
        state, _reason = await b.call(lambda conn: conn.lookupByName(name).state())
    return DomainState(state)


def audits(hub_items: list[object]) -> list[AuditRecord]:
    return [i for i in hub_items if isinstance(i, AuditRecord)]


@pytest.mark.parametrize(
    ("action", "vm", "after"),
    [
        (Action.START, "vm-0002", DomainState.RUNNING),
        (Action.SHUTDOWN, "vm-0000", DomainState.SHUTOFF),
        (Action.FORCE_OFF, "vm-0001", DomainState.SHUTOFF),
        (Action.REBOOT, "vm-0000", DomainState.RUNNING),
        (Action.PAUSE, "vm-0000", DomainState.PAUSED),
        (Action.RESUME, "vm-0001", DomainState.RUNNING),
    ],
)
async def test_each_action_is_verified_and_audited(
    source: SingleConnection, action: Action, vm: str, after: DomainState
) -> None:
    published: list[object] = []
    rec = await perform(
        source, action, vm, host="lab", publish=published.append, actor=ADMIN, timeouts=FAST
    )
    assert rec.outcome is Outcome.VERIFIED
    assert await state_of(source, vm) is after
    assert audits(published) == [rec]  # exactly one audit record, on the hub
    assert rec.host == "lab"
    assert rec.vm_name == vm
    assert rec.vm_uuid
    assert rec.action == action.value
    assert rec.user == "alice as root"
    assert rec.client == "192.0.2.10"
    assert rec.duration_s >= 0
    assert rec.error_code is None
    assert vm in rec.message


async def test_reboot_on_the_test_driver_says_what_verified_means(
    source: SingleConnection,
) -> None:
    rec = await perform(
        source, Action.REBOOT, "vm-0000", host="lab", publish=lambda _x: None, actor=ADMIN
    )
    assert rec.message == (
        "vm-0000 is running: booted after the reboot (this driver reports no reboot event)"
    )


@pytest.mark.parametrize(
    ("action", "vm"),
    [
        (Action.START, "vm-0000"),
        (Action.PAUSE, "vm-0001"),
        (Action.RESUME, "vm-0000"),
        (Action.SHUTDOWN, "vm-0002"),
        (Action.FORCE_OFF, "vm-0002"),
        (Action.REBOOT, "vm-0002"),
        (Action.SHUTDOWN, "vm-0001"),  # paused: ACPI cannot reach the guest
    ],
)
async def test_a_vm_in_the_wrong_state_is_refused_before_acting(
    source: SingleConnection, action: Action, vm: str
) -> None:
    before = await state_of(source, vm)
    published: list[object] = []
    with pytest.raises(AppError) as info:
        await perform(source, action, vm, host="lab", publish=published.append, actor=ADMIN)
    err = info.value
    assert err.code is ErrorCode.MACHINE_INVALID_STATE
    assert not err.transient
    assert err.hint
    assert await state_of(source, vm) is before
    (rec,) = audits(published)
    assert rec.outcome is Outcome.FAILED
    assert rec.error_code == "MACHINE_INVALID_STATE"
    assert rec.message == err.message


async def test_a_missing_vm_is_not_found(source: SingleConnection) -> None:
    published: list[object] = []
    with pytest.raises(AppError) as info:
        await perform(
            source, Action.START, "no-such-vm", host="lab", publish=published.append, actor=ADMIN
        )
    assert info.value.code is ErrorCode.MACHINE_NOT_FOUND
    assert not info.value.transient
    assert "no-such-vm" in info.value.message
    (rec,) = audits(published)
    assert rec.outcome is Outcome.FAILED
    assert rec.vm_uuid == ""
    assert rec.error_code == "MACHINE_NOT_FOUND"


async def test_a_read_only_connection_is_forbidden(make_fleet: FleetFactory) -> None:
    source = SingleConnection(make_fleet(1, states=(1,)), read_only=True)
    published: list[object] = []
    try:
        with pytest.raises(AppError) as info:
            await perform(
                source, Action.PAUSE, "vm-0000", host="lab", publish=published.append, actor=ADMIN
            )
        assert await state_of(source, "vm-0000") is DomainState.RUNNING
    finally:
        await source.close()
    assert info.value.code is ErrorCode.FORBIDDEN
    assert not info.value.transient
    assert info.value.libvirt_code == 29  # VIR_ERR_OPERATION_DENIED, produced by libvirt
    (rec,) = audits(published)
    assert rec.error_code == "FORBIDDEN"


async def test_an_unreachable_host_is_transient_and_audited() -> None:
    source = SingleConnection("qemu+unix:///system?socket=/nonexistent/virtwatch.sock")
    published: list[object] = []
    try:
        with pytest.raises(AppError) as info:
            await perform(
                source, Action.START, "web", host="gone", publish=published.append, actor=ADMIN
            )
    finally:
        await source.close()
    assert info.value.code is ErrorCode.LIBVIRT_CONNECTION_FAILED
    assert info.value.transient  # worth a retry: the host may come back
    (rec,) = audits(published)
    assert rec.outcome is Outcome.FAILED


async def test_without_an_actor_the_process_user_is_recorded(source: SingleConnection) -> None:
    hub = Hub()
    sub = hub.subscribe(AuditRecord)
    rec = await perform(source, Action.PAUSE, "vm-0000", host="lab", publish=hub.publish)
    assert sub.get_nowait() == rec
    assert rec.user == current_actor().user
    assert rec.client == current_actor().client
