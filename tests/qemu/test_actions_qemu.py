"""VM actions on real QEMU VMs under libvirtd: every action and its outcome check, the
ACPI requests a diskless guest ignores, refusals without retries, and the real
`virtwatch vm` binary."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.vms import QEMU_URI, VmFactory, diskless_xml, unique_name
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.model import DomainState
from virtwatch.core.ops.actions import (
    Action,
    ActionNotVerified,
    ActionTimeouts,
    perform,
    submit_action,
)
from virtwatch.core.ops.identity import Actor
from virtwatch.core.ops.tasks import TaskRunner
from virtwatch.core.records import AuditRecord, Outcome, TaskState, TaskUpdate

pytestmark = pytest.mark.qemu

BIN = str(Path(sys.executable).with_name("virtwatch"))
ADMIN = Actor("alice", "198.51.100.4")
SHORT = ActionTimeouts(shutdown_s=3.0, reboot_s=3.0)  # a diskless guest ignores ACPI
DefinedFactory = Callable[[], Coroutine[Any, Any, str]]


@pytest.fixture
async def source(hypervisor: None) -> AsyncIterator[SingleConnection]:
    src = SingleConnection(QEMU_URI)
    try:
        yield src
    finally:
        await src.close()


@pytest.fixture
async def defined_vm(hypervisor: None) -> AsyncIterator[DefinedFactory]:
    """Persistent (defined, shut off) diskless VMs: start needs one. Undefined in finally."""
    conn = libvirt.open(QEMU_URI)
    made: list[str] = []

    async def define() -> str:
        name = unique_name("vwact")
        made.append(name)
        await asyncio.to_thread(conn.defineXML, diskless_xml(name))
        return name

    try:
        yield define
    finally:
        for name in made:
            with contextlib.suppress(libvirt.libvirtError):
                dom = conn.lookupByName(name)
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
                dom.undefine()
        conn.close()


def state_of(dom: libvirt.virDomain) -> DomainState:
    return DomainState(dom.state()[0])


async def act(
    source: SingleConnection,
    action: Action,
    name: str,
    published: list[object],
    timeouts: ActionTimeouts = SHORT,
) -> AuditRecord:
    return await perform(
        source,
        action,
        name,
        host="qemu",
        publish=published.append,
        actor=ADMIN,
        timeouts=timeouts,
    )


def audits(items: list[object]) -> list[AuditRecord]:
    return [i for i in items if isinstance(i, AuditRecord)]


async def test_start_pause_resume_force_off_are_verified(
    source: SingleConnection, defined_vm: DefinedFactory
) -> None:
    name = await defined_vm()
    published: list[object] = []
    started = await act(source, Action.START, name, published)
    paused = await act(source, Action.PAUSE, name, published)
    resumed = await act(source, Action.RESUME, name, published)
    off = await act(source, Action.FORCE_OFF, name, published)
    assert [r.outcome for r in (started, paused, resumed, off)] == [Outcome.VERIFIED] * 4
    assert started.message == f"{name} is running: booted"
    assert paused.message == f"{name} is paused: by admin"
    assert resumed.message == f"{name} is running: unpaused"
    assert off.message == f"{name} is shut off: destroyed by admin"
    assert audits(published) == [started, paused, resumed, off]
    assert {r.vm_uuid for r in audits(published)} != {""}
    assert all(r.user == "alice" and r.client == "198.51.100.4" for r in audits(published))
    async with source.connection() as b:
        assert await b.call(lambda conn: state_of(conn.lookupByName(name))) is DomainState.SHUTOFF


async def test_force_off_of_a_transient_vm_verifies_it_is_gone(
    source: SingleConnection, transient_vm: VmFactory
) -> None:
    dom = await transient_vm()
    rec = await act(source, Action.FORCE_OFF, dom.name(), [])
    assert rec.outcome is Outcome.VERIFIED
    assert rec.message == f"{dom.name()} is shut off and gone (transient VM)"


async def test_acpi_shutdown_ignored_by_a_diskless_guest_is_reported_as_ignored(
    source: SingleConnection, transient_vm: VmFactory
) -> None:
    dom = await transient_vm()
    published: list[object] = []
    with pytest.raises(ActionNotVerified) as info:
        await act(source, Action.SHUTDOWN, dom.name(), published)
    rec = info.value.record
    assert rec is not None
    assert rec.outcome is Outcome.IGNORED
    assert rec.message == (
        f"{dom.name()} ignored the ACPI shutdown: still running: booted after 3 s"
    )
    assert rec.duration_s >= SHORT.shutdown_s
    assert rec.error_code == "MACHINE_OPERATION_FAILED"
    assert audits(published) == [rec]
    assert not info.value.transient
    assert "force-off" in info.value.hint
    assert await asyncio.to_thread(state_of, dom) is DomainState.RUNNING


async def test_acpi_reboot_ignored_by_a_diskless_guest_is_reported_as_ignored(
    source: SingleConnection, transient_vm: VmFactory
) -> None:
    dom = await transient_vm()
    before = dom.ID()
    with pytest.raises(ActionNotVerified) as info:
        await act(source, Action.REBOOT, dom.name(), [])
    assert info.value.record is not None
    assert info.value.record.outcome is Outcome.IGNORED
    assert (
        info.value.message
        == f"{dom.name()} did not reboot within 3 s: the guest ignored the request"
    )
    assert await asyncio.to_thread(state_of, dom) is DomainState.RUNNING
    assert dom.ID() == before


async def test_a_reboot_that_happens_is_verified_by_its_event(
    source: SingleConnection, transient_vm: VmFactory
) -> None:
    """A diskless guest cannot honour ACPI, so the test plays the guest: it resets the VM
    (what a guest's own reboot looks like to QEMU) until the action has seen a reboot."""
    dom = await transient_vm()
    before = dom.ID()

    async def guest_reboots() -> None:
        while True:
            await asyncio.to_thread(dom.reset, 0)
            await asyncio.sleep(0.5)

    resets = asyncio.create_task(guest_reboots())
    try:
        rec = await act(source, Action.REBOOT, dom.name(), [], ActionTimeouts(reboot_s=30.0))
    finally:
        resets.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resets
    assert rec.outcome is Outcome.VERIFIED
    assert rec.message == (
        f"{dom.name()} rebooted (domain ID {before} unchanged); it is running: booted"
    )
    assert dom.ID() == before


async def test_refusals_are_clear_and_audited(
    source: SingleConnection, transient_vm: VmFactory, defined_vm: DefinedFactory
) -> None:
    running = await transient_vm()
    off = await defined_vm()
    cases = [
        (Action.START, running.name(), ErrorCode.MACHINE_INVALID_STATE),
        (Action.RESUME, running.name(), ErrorCode.MACHINE_INVALID_STATE),
        (Action.SHUTDOWN, off, ErrorCode.MACHINE_INVALID_STATE),
        (Action.PAUSE, off, ErrorCode.MACHINE_INVALID_STATE),
        (Action.FORCE_OFF, unique_name("vwmissing"), ErrorCode.MACHINE_NOT_FOUND),
    ]
    for action, name, code in cases:
        published: list[object] = []
        with pytest.raises(AppError) as info:
            await act(source, action, name, published)
        assert info.value.code is code, (action, info.value)
        assert not info.value.transient
        (rec,) = audits(published)
        assert rec.outcome is Outcome.FAILED
        assert rec.error_code == code.value
    await asyncio.to_thread(running.suspend)
    with pytest.raises(AppError, match="already paused") as again:
        await act(source, Action.PAUSE, running.name(), [])
    assert again.value.code is ErrorCode.MACHINE_INVALID_STATE


async def test_a_read_only_connection_is_forbidden(transient_vm: VmFactory) -> None:
    dom = await transient_vm()
    source = SingleConnection(QEMU_URI, read_only=True)
    published: list[object] = []
    try:
        with pytest.raises(AppError) as info:
            await act(source, Action.PAUSE, dom.name(), published)
    finally:
        await source.close()
    assert info.value.code is ErrorCode.FORBIDDEN
    assert info.value.libvirt_code == libvirt.VIR_ERR_OPERATION_DENIED
    assert not info.value.transient
    assert audits(published)[0].error_code == "FORBIDDEN"
    assert await asyncio.to_thread(state_of, dom) is DomainState.RUNNING


async def test_a_refusal_through_the_task_runner_is_not_retried(
    source: SingleConnection, transient_vm: VmFactory
) -> None:
    dom = await transient_vm()
    published: list[object] = []
    async with TaskRunner(published.append) as runner:
        missing = submit_action(
            runner,
            source,
            Action.PAUSE,
            unique_name("vwmissing"),
            host="qemu",
            publish=published.append,
            actor=ADMIN,
        )
        running = submit_action(
            runner,
            source,
            Action.START,
            dom.name(),
            host="qemu",
            publish=published.append,
            actor=ADMIN,
        )
        for handle, code in (
            (missing, ErrorCode.MACHINE_NOT_FOUND),
            (running, ErrorCode.MACHINE_INVALID_STATE),
        ):
            with pytest.raises(AppError) as info:
                await handle.result()
            assert info.value.code is code
            assert handle.state is TaskState.FAILED
            assert handle.attempt == 1  # one attempt: no retry storm
    updates = [u for u in published if isinstance(u, TaskUpdate)]
    assert not [u for u in updates if u.state is TaskState.RETRYING]
    assert len(audits(published)) == 2  # one audit row per attempt
    assert {u.kind for u in updates} == {"action.pause", "action.start"}


async def test_a_verified_action_through_the_task_runner_succeeds(
    source: SingleConnection, transient_vm: VmFactory
) -> None:
    dom = await transient_vm()
    published: list[object] = []
    async with TaskRunner(published.append) as runner:
        handle = submit_action(
            runner, source, Action.PAUSE, dom.name(), host="qemu", publish=published.append
        )
        rec = await handle.result()
    assert handle.state is TaskState.SUCCEEDED
    assert handle.name == f"pause {dom.name()}"
    assert rec.outcome is Outcome.VERIFIED
    assert audits(published) == [rec]


async def test_cancelling_an_action_records_cancelled(
    source: SingleConnection, transient_vm: VmFactory
) -> None:
    dom = await transient_vm()
    published: list[object] = []
    running = asyncio.Event()

    def publish(item: object) -> None:
        published.append(item)
        if isinstance(item, TaskUpdate) and item.state is TaskState.RUNNING:
            running.set()

    async with TaskRunner(publish) as runner:
        handle = submit_action(
            runner,
            source,
            Action.SHUTDOWN,
            dom.name(),
            host="qemu",
            publish=publish,
            actor=ADMIN,
            timeouts=ActionTimeouts(shutdown_s=600.0),
        )
        await running.wait()
        await asyncio.sleep(0.5)  # most likely inside the wait for the guest by now
        assert handle.cancel()
        with pytest.raises(AppError):
            await handle.result()
    assert handle.state is TaskState.CANCELLED
    (rec,) = audits(published)
    assert rec.outcome is Outcome.CANCELLED


# --- the real binary ---------------------------------------------------------------


def run_vm(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN, "vm", *args, "--uri", QEMU_URI, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def audit_rows(db: Path) -> list[tuple[str, str, str, str | None]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT vm_name, action, outcome, error_code FROM audit ORDER BY id"
        ).fetchall()
    return [(str(a), str(b), str(c), d) for a, b, c, d in rows]


async def test_the_vm_command_exits_by_outcome(
    tmp_path: Path, transient_vm: VmFactory, defined_vm: DefinedFactory
) -> None:
    dom = await transient_vm()
    name = dom.name()
    off = await defined_vm()
    missing = unique_name("vwmissing")
    db = tmp_path / "audit.db"

    paused = await asyncio.to_thread(run_vm, "pause", name, db=db)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith(f"{name} is paused: by admin (pause verified in ")
    assert await asyncio.to_thread(state_of, dom) is DomainState.PAUSED

    resumed = await asyncio.to_thread(run_vm, "resume", name, db=db)
    assert resumed.returncode == 0, resumed.stderr

    ignored = await asyncio.to_thread(run_vm, "shutdown", name, "--timeout", "2", db=db)
    assert ignored.returncode == 1
    lines = ignored.stderr.strip().splitlines()
    assert len(lines) == 1, ignored.stderr
    assert lines[0].startswith(f"virtwatch: {name} ignored the ACPI shutdown")
    assert " — " in lines[0]  # a hint follows

    started = await asyncio.to_thread(run_vm, "start", off, db=db)
    assert started.returncode == 0, started.stderr
    off_now = await asyncio.to_thread(run_vm, "force-off", off, db=db)
    assert off_now.returncode == 0, off_now.stderr

    for args, words in (
        (("start", name), "already running"),
        (("force-off", missing), "not found"),
    ):
        failed = await asyncio.to_thread(run_vm, *args, db=db)
        assert failed.returncode == 2
        (line,) = failed.stderr.strip().splitlines()
        assert line.startswith("virtwatch: ")
        assert words in line.lower()
        assert "Traceback" not in failed.stderr

    assert audit_rows(db) == [
        (name, "pause", "verified", None),
        (name, "resume", "verified", None),
        (name, "shutdown", "ignored", "MACHINE_OPERATION_FAILED"),
        (off, "start", "verified", None),
        (off, "force_off", "verified", None),
        (name, "start", "failed", "MACHINE_INVALID_STATE"),
        (missing, "force_off", "failed", "MACHINE_NOT_FOUND"),
    ]
