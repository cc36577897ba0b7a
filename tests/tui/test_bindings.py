"""The ports bound to real things: actions through a real TaskRunner on libvirt's
test driver, stored history from a real SQLite file, definitions through the core's
details loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.canned import HOST, NOW, audit_records, domain_events
from tests.conftest import FleetFactory
from tests.waiting import until
from virtwatch.core.errors import AppError
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.ops.actions import Action
from virtwatch.core.ops.tasks import TaskRunner
from virtwatch.core.records import AuditRecord, Outcome, TaskState, TaskUpdate
from virtwatch.core.runtime import HostConfig, Runtime
from virtwatch.storage.engine import db_url
from virtwatch.storage.queries import Queries
from virtwatch.storage.rows import SampleRow
from virtwatch.storage.store import Store
from virtwatch.tui.bindings import DetailsService, RunnerActions, StoredHistory
from virtwatch.tui.ports import VmRef


async def wait_for_audit(seen: list[object], n: int) -> list[AuditRecord]:
    def audits() -> list[AuditRecord]:
        return [x for x in seen if isinstance(x, AuditRecord)]

    await until(lambda: len(audits()) >= n, f"{n} audit records", seen=lambda: seen)
    return audits()


@pytest.mark.libvirt
async def test_runner_actions_start_a_vm_and_audit_it(make_fleet: FleetFactory) -> None:
    uri = make_fleet(3, states=(5,))
    seen: list[object] = []
    source = SingleConnection(uri)
    try:
        async with TaskRunner(seen.append) as runner:
            sink = RunnerActions(runner, {"lab": source}, seen.append)
            sink.request(
                Action.START,
                [VmRef("lab", "u1", "vm-0000"), VmRef("lab", "u2", "vm-0001")],
            )
            sink.request(Action.PAUSE, [VmRef("elsewhere", "u9", "vm-0002")])
            audits = await wait_for_audit(seen, 2)
    finally:
        await source.close()
    assert sorted((a.vm_name, a.action, a.outcome) for a in audits) == [
        ("vm-0000", "start", Outcome.VERIFIED),
        ("vm-0001", "start", Outcome.VERIFIED),
    ]
    kinds = {(u.kind, u.state) for u in seen if isinstance(u, TaskUpdate)}
    assert ("action.start", TaskState.SUCCEEDED) in kinds
    [unknown] = [r for r in seen if isinstance(r, ErrorReport)]
    assert unknown.error.message == "pause vm-0002: no connection to host elsewhere"


async def test_stored_history_reads_series_events_and_audit(tmp_path: Path) -> None:
    uuid = "10000000-0000-4000-8000-000000000001"
    async with Store(db_url(tmp_path / "h.db")) as store:
        rows = [
            SampleRow(HOST, uuid, "web-01", "cpu_pct", int((NOW - 60 + i) * 1000), float(i))
            for i in range(60)
        ]
        await store.write(rows, [*audit_records(), *domain_events()])
        hist = StoredHistory(Queries(store))
        pts = await hist.series(HOST, uuid, "cpu_pct", NOW - 120, NOW + 1)
        assert len(pts) == 60
        assert pts[0] == (NOW - 60, 0.0)
        assert pts[-1] == (NOW - 1, 59.0)
        events = await hist.vm_events(HOST, uuid, NOW - 3600, NOW + 1)
        assert [e.summary for e in events] == ["stopped: shut down", "started: booted"]
        audit = await hist.vm_audit(HOST, uuid, NOW - 3600, NOW + 1)
        assert [(a.action, a.outcome) for a in audit] == [
            ("reboot", Outcome.VERIFIED),
            ("start", Outcome.FAILED),
        ]


@pytest.mark.libvirt
async def test_details_service_reads_definitions(make_fleet: FleetFactory) -> None:
    hub = Hub()
    uri = make_fleet(2, states=(1,))
    async with (
        Runtime([HostConfig(uri, name="lab", interval_s=0.1)], hub=hub) as rt,
        DetailsService(rt.pools, hub) as details,
    ):
        await until(lambda: rt.collectors[0].last is not None, "the first snapshot")
        snap = rt.collectors[0].last
        assert snap is not None
        got = await details.details("lab", snap.domains[0].uuid)
        assert got.name == "vm-0000"
        assert got.vcpus == 1
        with pytest.raises(AppError, match="no details loader for host nowhere"):
            await details.details("nowhere", snap.domains[0].uuid)
