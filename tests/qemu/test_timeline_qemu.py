"""A recorded incident against a real QEMU VM under libvirtd: define, start, pause,
resume, a resume that fails, a redefinition (config drift), force off — through the
real event stream, verified actions and the store writer — with CPU spikes injected
through the store's normal write path at chosen timestamps (a diskless VM cannot be
made busy on demand). Then the timeline's order, filters and contents, and the export."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import libvirt
import pytest

from tests.vms import QEMU_URI, diskless_xml, unique_name
from tests.waiting import until
from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.libvirt.events import DomainEventStream
from virtwatch.core.ops.actions import Action, perform
from virtwatch.core.ops.identity import Actor
from virtwatch.core.triage.drift import DriftWatcher
from virtwatch.core.triage.entries import EntryKind, TimelineEntry
from virtwatch.core.triage.spike_watch import SpikeWatch
from virtwatch.core.triage.spikes import SpikeRules
from virtwatch.core.triage.timeline import TimelineFilter
from virtwatch.core.triage.when import Window, clock_time
from virtwatch.storage import rollup
from virtwatch.storage.engine import db_url
from virtwatch.storage.export import EXPORT_SCHEMA, EXPORT_SCHEMA_VERSION, build_export
from virtwatch.storage.export_json import parse_export
from virtwatch.storage.rows import SampleRow
from virtwatch.storage.store import Store
from virtwatch.storage.timeline_queries import StoreRollupReader, TimelineQueries
from virtwatch.storage.writer import StoreWriter

pytestmark = pytest.mark.qemu

HOST = "qemu-incident"
WAIT_S = 60.0  # a bound so a stuck test fails instead of hanging; not a timing
ACTOR = Actor("ops-alice", "192.0.2.7")
MIN = 60


def bigger(name: str, uuid: str) -> str:
    """The same VM (name and uuid) with twice the memory and vCPUs: `virsh edit`."""
    xml = diskless_xml(name).replace(
        f"<name>{name}</name>", f"<name>{name}</name><uuid>{uuid}</uuid>"
    )
    xml = xml.replace("<memory unit='MiB'>64</memory>", "<memory unit='MiB'>128</memory>")
    return xml.replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>")


def injected(uuid: str, name: str, start: int) -> list[SampleRow]:
    """Three hours of CPU at 10 s: ~5 % with a 5-minute burst at 90 % 2 h 10 min in."""
    rows = []
    for i in range(3 * 360):
        ts = start + i * 10
        burst = 130 * MIN <= ts - start < 135 * MIN
        value = 90.0 if burst else 4.0 + (i % 3)
        rows.append(SampleRow(HOST, uuid, name, "cpu_pct", ts * 1000, value))
    return rows


def titles(entries: Sequence[TimelineEntry]) -> list[str]:
    return [e.title for e in entries]


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """`wanted` appears in `seen` in this order (other entries may sit between)."""
    it = iter(seen)
    return all(any(w == s for s in it) for w in wanted)


async def test_a_recorded_incident_reads_back_as_one_timeline(
    hypervisor: None, tmp_path: Path
) -> None:
    name = unique_name("vwtl")
    hub = Hub()
    events_src = SingleConnection(QEMU_URI)  # callbacks live on their own connection
    actions_src = SingleConnection(QEMU_URI)
    drift_src = SingleConnection(QEMU_URI)
    conn = libvirt.open(QEMU_URI)
    heard: list[str] = []  # the lifecycle events' summaries, as they reach the hub

    def hear(item: object) -> None:
        summary = getattr(item, "summary", None)
        if isinstance(summary, str):
            heard.append(summary)
        hub.publish(item)

    try:
        async with (
            Store(db_url(tmp_path / "incident.db")) as store,
            StoreWriter(store, hub, maintenance=False) as writer,
            DomainEventStream(events_src, hear, host=HOST),
        ):
            tq = TimelineQueries(store)
            watcher = DriftWatcher(drift_src, hub, host=HOST, interval_s=5, debounce_s=0.2)
            drift = asyncio.create_task(watcher.run())
            try:
                t_begin = time.time()
                dom = await asyncio.to_thread(conn.defineXML, diskless_xml(name))
                uuid = dom.UUIDString()

                async def act(action: Action) -> None:
                    await perform(
                        actions_src, action, name, host=HOST, publish=hub.publish, actor=ACTOR
                    )

                await act(Action.START)
                await act(Action.PAUSE)
                await act(Action.RESUME)
                # the failed resume's hint names the last event before it: let the resume's
                # own event arrive first (a loaded machine can deliver it after the verify)
                await until(
                    lambda: "resumed: unpaused" in heard, "the resume's event", timeout_s=WAIT_S
                )
                with pytest.raises(AppError) as refused:
                    await act(Action.RESUME)  # it is running: refused, audited as failed
                assert refused.value.code is ErrorCode.MACHINE_INVALID_STATE
                await until(
                    lambda: uuid in watcher.known, "the watcher saw the VM", timeout_s=WAIT_S
                )
                await asyncio.to_thread(conn.defineXML, bigger(name, uuid))
                await until(lambda: watcher.published, "the drift was noticed", timeout_s=WAIT_S)
                await act(Action.FORCE_OFF)

                # spikes: samples at chosen times, through the writer, rolled up, judged
                # ending two minutes ago: every injected minute is past the rollup's grace
                start = int(t_begin) - int(t_begin) % 60 - 3 * 3600 - 2 * MIN
                writer.add_samples(injected(uuid, name, start))
                await writer.flush()
                await rollup.rollup(store, [HOST], now_ms=int(time.time() * 1000))
                watch = SpikeWatch(
                    StoreRollupReader(store), hub.publish, SpikeRules(), catch_up_s=4 * 3600
                )
                spikes = await watch.judge_new()
                assert [s.detail["phase"] for s in spikes] == ["start", "end"]
                window = Window(start, time.time() + 1)
                mine = TimelineFilter(vms=frozenset({uuid}))

                async def stored_titles() -> list[str]:
                    return titles(list((await tq.timeline(window, mine)).entries))

                last: list[str] = []

                async def landed() -> bool:
                    last[:] = await stored_titles()
                    return "stopped: destroyed" in last and any(
                        t.startswith("CPU spike over") for t in last
                    )

                await until(
                    landed,
                    "the stop and the spike stored",
                    timeout_s=WAIT_S,
                    step_s=0.2,
                    seen=lambda: last,
                )
            finally:
                drift.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drift

            # -- the timeline of this VM: order and contents --------------------------
            result = await tq.timeline(window, mine)
            entries = list(result.entries)
            assert entries == sorted(entries, key=lambda e: e.sort_key)
            assert all(e.vm_uuid == uuid for e in entries)
            seen = titles(entries)
            spike_start = next(e for e in entries if e.kind is EntryKind.SPIKE)
            assert spike_start.at == start + 130 * MIN
            assert spike_start.title == (
                "CPU spike: 90.0 % against its usual 5.0 % (24 h p95), held 2 min"
            )
            assert in_order(
                seen,
                [
                    spike_start.title,
                    "CPU spike over after 5 min: peak 90.0 %, usual 5.0 %",
                    "defined: added",
                    "started: booted",
                    "suspended: by admin",
                    "resumed: unpaused",
                    "defined: updated",
                    "definition changed: memory 64 MiB → 128 MiB; vCPUs 1 → 2",
                    "stopped: destroyed",
                ],
            ), seen
            actions = [e for e in entries if e.kind is EntryKind.ACTION]
            assert [(a.detail["action"], a.detail["outcome"]) for a in actions] == [
                ("start", "verified"),
                ("pause", "verified"),
                ("resume", "verified"),
                ("resume", "failed"),
                ("force_off", "verified"),
            ]
            assert all(a.detail["user"] == "ops-alice" for a in actions)
            assert all(a.detail["client"] == "192.0.2.7" for a in actions)
            failed = actions[3]
            assert failed.severity is Severity.ERROR
            assert failed.detail["code"] == "MACHINE_INVALID_STATE"
            assert failed.hint.startswith("last event before it: resumed: unpaused at ")
            by_title = {e.title: e for e in entries}
            destroyed = by_title["stopped: destroyed"]
            assert destroyed.severity is Severity.WARNING
            expected_hint = f"force_off by ops-alice from 192.0.2.7 at {clock_time(actions[4].at)}"
            assert destroyed.hint == expected_hint
            paused = by_title["suspended: by admin"]
            assert (
                paused.hint == f"pause by ops-alice from 192.0.2.7 at {clock_time(actions[1].at)}"
            )
            config = next(e for e in entries if e.kind is EntryKind.CONFIG)
            assert config.detail["memory_kib"] == "65536→131072"
            assert config.detail["vcpus"] == "1→2"
            # each action precedes the event it caused
            for action, effect in (
                (actions[0], "started: booted"),
                (actions[1], "suspended: by admin"),
                (actions[4], "stopped: destroyed"),
            ):
                assert seen.index(action.title) < seen.index(effect)

            # -- filters ----------------------------------------------------------------
            only = await tq.timeline(
                window, TimelineFilter(vms=frozenset({name}), kinds=frozenset({EntryKind.SPIKE}))
            )
            assert [e.detail["phase"] for e in only.entries] == ["start", "end"]
            loud = await tq.timeline(
                window, TimelineFilter(vms=frozenset({uuid}), min_severity=Severity.WARNING)
            )
            assert [(e.kind, e.title) for e in loud.entries] == [
                (EntryKind.SPIKE, spike_start.title),
                (EntryKind.ACTION, failed.title),
                (EntryKind.EVENT, "stopped: destroyed"),
            ]
            elsewhere = await tq.timeline(window, TimelineFilter(hosts=frozenset({"other"})))
            assert elsewhere.entries == ()
            everything = await tq.timeline(window)  # other tests' VMs may show up too
            assert in_order(titles(list(everything.entries)), seen)

            # -- the export ---------------------------------------------------------------
            doc = await build_export(store, window, mine, generated_by="qemu test")
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).destroy()
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).undefine()
        conn.close()
        for src in (events_src, actions_src, drift_src):
            await src.close()
    assert (doc["schema"], doc["schema_version"]) == (EXPORT_SCHEMA, EXPORT_SCHEMA_VERSION)
    assert [e["title"] for e in doc["timeline"]] == seen
    assert [(a["action"], a["outcome"], a["user"]) for a in doc["audit"]] == [
        (a.detail["action"], a.detail["outcome"], "ops-alice") for a in actions
    ]
    (host,) = doc["hosts"]
    assert host["host"] == HOST
    assert host["vms"] == [{"uuid": uuid, "name": name}]
    (series,) = parse_export(doc)["metrics"]["series"]
    assert (series["vm_uuid"], series["metric"]) == (uuid, "cpu_pct")
    # every injected minute, none missing: the minute starts are start + i * step
    assert (series["start"], series["step"], series["n"]) == (start, 60, 180)
    assert "ts" not in series
    assert all(len(series[a]) == 180 for a in ("count", "avg", "min", "max", "p95"))
    burst = [i for i, peak in enumerate(series["max"]) if peak == 90.0]
    assert burst == list(range(130, 135))
    assert series["avg"][:3] == [5.0, 5.0, 5.0]  # 4, 5, 6 % every 10 s
    assert series["count"][130] == 6
