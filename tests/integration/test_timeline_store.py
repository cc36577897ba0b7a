"""The timeline and the export over a real database (SQLite file, then PostgreSQL):
records and samples go in through the store writer and the rollup job, spikes come out
of the spike watch over the stored rollups and are stored as events."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.model import HostFacts
from virtwatch.core.records import (
    AuditRecord,
    ConnectionState,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthResult,
    HealthState,
    HostConnection,
    Outcome,
)
from virtwatch.core.triage.entries import EntryKind
from virtwatch.core.triage.spike_watch import Series, SpikeWatch
from virtwatch.core.triage.spikes import SpikeRules
from virtwatch.core.triage.timeline import TimelineFilter
from virtwatch.core.triage.when import Window, clock_time
from virtwatch.storage import rollup
from virtwatch.storage.export import (
    EXPORT_SCHEMA,
    EXPORT_SCHEMA_VERSION,
    METRIC_ARRAYS,
    build_export,
    default_export_name,
    export_to,
    summarize,
    write_window,
)
from virtwatch.storage.export_json import dump_export, parse_export, write_export
from virtwatch.storage.minutes import rounded
from virtwatch.storage.models import DomainEventRow, HostConnectionRow, Metric, MetricMinute
from virtwatch.storage.redaction import redact_document
from virtwatch.storage.rows import SampleRow
from virtwatch.storage.store import Store
from virtwatch.storage.timeline_queries import StoreRollupReader, TimelineQueries
from virtwatch.storage.writer import StoreWriter

T0 = 1_795_000_000 - 1_795_000_000 % 3600  # an hour boundary
MIN = 60
HOST = "hv1"
WEB = "10000000-0000-4000-8000-000000000001"
DB = "10000000-0000-4000-8000-000000000002"
SECRET_URI = "qemu+tcp://admin:hunter2@hv1.example/system"
RULES = SpikeRules(hold_s=2 * MIN, window_s=3600, min_baseline_s=20 * MIN, refresh_s=5 * MIN)


@dataclass(frozen=True)
class Scenario:
    store: Store
    spikes: list[DomainEvent]


def samples() -> list[SampleRow]:
    """90 minutes at 10 s: web-01 idles at ~10 % and spikes to 95 % at minutes 60-64."""
    out = []
    for i in range(90 * 6):
        ts = T0 + i * 10
        minute = i // 6
        web = 95.0 if 60 <= minute < 65 else 10.0 + (i % 3)
        out.append(SampleRow(HOST, WEB, "web-01", "cpu_pct", ts * 1000, web))
        out.append(SampleRow(HOST, DB, "db-01", "cpu_pct", ts * 1000, 20.0))
        out.append(SampleRow(HOST, WEB, "web-01", "mem_alloc_kib", ts * 1000, 65536.0))
        out.append(SampleRow(HOST, "", "", "host.cpu_pct", ts * 1000, 30.0 + (i % 2)))
    return out


def ev(uuid: str, name: str, summary: str, at: float, kind: EventKind, **d: str) -> DomainEvent:
    return DomainEvent(HOST, uuid, name, kind, summary, at, d)


def records() -> list[object]:
    t = float(T0)
    leak = AppError(
        ErrorCode.LIBVIRT_CONNECTION_LOST,
        f"cannot reach {SECRET_URI}: connection reset",
        "libvirtd restarted?",
        Severity.CRITICAL,
        {"uri": SECRET_URI},
    )
    return [
        HostConnection(HOST, SECRET_URI, ConnectionState.CONNECTED, t, t),
        ev(WEB, "web-01", "started: booted", t + 5 * MIN, EventKind.LIFECYCLE, event="2"),
        HealthResult(
            "host.disk",
            "/var/lib/libvirt",
            HealthState.CRIT,
            HealthState.CRIT,
            99.2,
            "%",
            85.0,
            95.0,
            "99.2 % used",
            t + 70 * MIN,
            HOST,
        ),
        HealthAlert(
            "host.disk",
            "/var/lib/libvirt",
            HealthState.OK,
            HealthState.CRIT,
            "99.2 % used",
            t + 70 * MIN,
            HOST,
        ),
        ev(
            WEB,
            "web-01",
            "I/O error on vda (/var/lib/libvirt/images/web.qcow2): no space left on device; "
            "guest paused",
            t + 71 * MIN,
            EventKind.IO_ERROR,
            reason="enospc",
        ),
        ev(WEB, "web-01", "suspended: I/O error", t + 71 * MIN + 0.5, EventKind.LIFECYCLE),
        AuditRecord(
            HOST,
            WEB,
            "web-01",
            "resume",
            "alice",
            "10.0.0.5",
            Outcome.FAILED,
            t + 72 * MIN,
            0.2,
            "resume failed: I/O error persists",
            "MACHINE_OPERATION_FAILED",
        ),
        ErrorReport(leak, HOST, None, t + 74 * MIN, count=3, first_at=t + 73 * MIN),
        AuditRecord(
            HOST,
            WEB,
            "web-01",
            "force_off",
            "alice",
            "10.0.0.5",
            Outcome.VERIFIED,
            t + 80 * MIN,
            1.1,
            "stopped",
        ),
        ev(WEB, "web-01", "stopped: destroyed", t + 80 * MIN + 1, EventKind.LIFECYCLE),
        ev(DB, "db-01", "suspended: by admin", t + 85 * MIN, EventKind.LIFECYCLE),
        HealthAlert(
            "host.disk",
            "/var/lib/libvirt",
            HealthState.CRIT,
            HealthState.OK,
            "40 % used",
            t + 88 * MIN,
            HOST,
        ),
    ]


async def write_all(store: Store, hub: Hub, items: list[object], rows: list[SampleRow]) -> None:
    writer = StoreWriter(store, hub, maintenance=False)
    writer.add_samples(rows)
    for item in items:
        writer.add_record(item)  # type: ignore[arg-type]
    await writer.flush()


@pytest.fixture
async def scenario(store_url: str) -> AsyncIterator[Scenario]:
    hub = Hub()
    async with Store(store_url) as store:
        await write_all(store, hub, records(), samples())
        await rollup.rollup(store, [HOST], now_ms=(T0 + 2 * 3600) * 1000)
        watch = SpikeWatch(StoreRollupReader(store), hub.publish, RULES, catch_up_s=2 * 3600)
        found = await watch.judge_new()
        await write_all(store, hub, list(found), [])
        yield Scenario(store, found)


# -- spikes ---------------------------------------------------------------------------------


async def test_spikes_come_from_the_stored_rollups_and_are_stored_as_events(
    scenario: Scenario,
) -> None:
    assert [(e.vm_name, e.detail["metric"], e.detail["phase"]) for e in scenario.spikes] == [
        ("web-01", "cpu_pct", "start"),
        ("web-01", "cpu_pct", "end"),
    ]
    start, end = scenario.spikes
    assert start.at == T0 + 60 * MIN
    assert end.at == T0 + 65 * MIN
    assert float(start.detail["peak"]) == 95.0
    assert float(start.detail["baseline_p95"]) == pytest.approx(12.0, abs=1.0)
    async with scenario.store.reader.connect() as conn:
        stored = (
            await conn.execute(
                select(func.count()).where(DomainEventRow.kind == EventKind.SPIKE.value)
            )
        ).scalar_one()
    assert stored == 2


async def test_a_restarted_watch_does_not_store_a_spike_twice(scenario: Scenario) -> None:
    again: list[object] = []
    watch = SpikeWatch(StoreRollupReader(scenario.store), again.append, RULES, catch_up_s=2 * 3600)
    assert await watch.judge_new() == []
    assert again == []
    assert watch.judged_until == {HOST: T0 + 119 * MIN}  # the rollup's bound: now - grace


async def test_the_reader_serves_the_catalogue_and_minute_rows(scenario: Scenario) -> None:
    reader = StoreRollupReader(scenario.store)
    assert await reader.minute_watermarks() == {HOST: T0 + 119 * MIN}
    catalogue = await reader.series(HOST)
    assert {(s.vm_uuid, s.metric) for s in catalogue} == {
        (WEB, "cpu_pct"),
        (DB, "cpu_pct"),
        (WEB, "mem_alloc_kib"),
        ("", "host.cpu_pct"),
    }
    web = Series(HOST, WEB, "cpu_pct")
    rows = (await reader.minute_rows(T0 + 59 * MIN, T0 + 62 * MIN, [web]))[web]
    assert [(r.ts, r.count, r.mean) for r in rows] == [
        (T0 + 59 * MIN, 6, 11.0),
        (T0 + 60 * MIN, 6, 95.0),
        (T0 + 61 * MIN, 6, 95.0),
    ]
    stored = await reader.stored_spikes(HOST, T0, T0 + 90 * MIN)
    assert stored == {
        (HOST, WEB, "cpu_pct", "start", T0 + 60 * MIN),
        (HOST, WEB, "cpu_pct", "end", T0 + 60 * MIN),
    }


# -- the timeline ---------------------------------------------------------------------------


async def test_the_timeline_is_one_ordered_stream_with_hints(scenario: Scenario) -> None:
    result = await TimelineQueries(scenario.store).timeline(Window(T0, T0 + 2 * 3600))
    got = [(e.at - T0, e.kind, e.vm_name, e.title.split(":")[0]) for e in result.entries]
    assert got == [
        (0.0, EntryKind.EVENT, None, "connection to hv1"),
        (5 * MIN, EntryKind.EVENT, "web-01", "started"),
        (60 * MIN, EntryKind.SPIKE, "web-01", "CPU spike"),
        (65 * MIN, EntryKind.SPIKE, "web-01", "CPU spike over after 5 min"),
        (70 * MIN, EntryKind.HEALTH, None, "host.disk /var/lib/libvirt"),
        (
            71 * MIN,
            EntryKind.EVENT,
            "web-01",
            "I/O error on vda (/var/lib/libvirt/images/web.qcow2)",
        ),
        (71 * MIN + 0.5, EntryKind.EVENT, "web-01", "suspended"),
        (72 * MIN, EntryKind.ACTION, "web-01", "resume by alice from 10.0.0.5"),
        (73 * MIN, EntryKind.ERROR, None, "LIBVIRT_CONNECTION_LOST x3"),
        (80 * MIN, EntryKind.ACTION, "web-01", "force_off by alice from 10.0.0.5"),
        (80 * MIN + 1, EntryKind.EVENT, "web-01", "stopped"),
        (85 * MIN, EntryKind.EVENT, "db-01", "suspended"),
        (88 * MIN, EntryKind.HEALTH, None, "host.disk /var/lib/libvirt"),
    ]
    assert not result.truncated
    by_title = {e.title: e for e in result.entries}
    disk = "host disk /var/lib/libvirt was crit at that moment: 99.2 % used"
    assert by_title["suspended: I/O error"].hint == disk
    assert by_title["suspended: I/O error"].severity is Severity.ERROR
    stopped = by_title["stopped: destroyed"]
    assert stopped.hint == f"force_off by alice from 10.0.0.5 at {clock_time(T0 + 80 * MIN)}"
    resume = next(e for e in result.entries if e.kind is EntryKind.ACTION)
    assert resume.severity is Severity.ERROR
    assert resume.hint.startswith("last event before it: suspended: I/O error")
    error = next(e for e in result.entries if e.kind is EntryKind.ERROR)
    assert (error.until, error.severity) == (T0 + 74 * MIN, Severity.CRITICAL)
    assert "hunter2" not in error.title
    assert "admin:***@hv1.example" in error.title


async def test_filters_narrow_the_stream(scenario: Scenario) -> None:
    tq = TimelineQueries(scenario.store)
    window = Window(T0, T0 + 2 * 3600)

    async def kinds_of(flt: TimelineFilter) -> list[tuple[EntryKind, str | None]]:
        return [(e.kind, e.vm_name) for e in (await tq.timeline(window, flt)).entries]

    db_only = await kinds_of(TimelineFilter(vms=frozenset({"db-01"})))
    assert db_only == [(EntryKind.EVENT, "db-01")]
    by_uuid = await kinds_of(TimelineFilter(vms=frozenset({DB})))
    assert by_uuid == db_only
    spikes = await kinds_of(TimelineFilter(kinds=frozenset({EntryKind.SPIKE})))
    assert spikes == [(EntryKind.SPIKE, "web-01")] * 2
    loud = await kinds_of(TimelineFilter(min_severity=Severity.ERROR))
    assert [k for k, _ in loud] == [
        EntryKind.HEALTH,
        EntryKind.EVENT,
        EntryKind.EVENT,
        EntryKind.ACTION,
        EntryKind.ERROR,
    ]
    assert await kinds_of(TimelineFilter(hosts=frozenset({"elsewhere"}))) == []
    text = await kinds_of(TimelineFilter(text="no space"))
    assert text == [(EntryKind.EVENT, "web-01")]


async def test_a_vm_filtered_window_still_learns_of_the_host_disk(scenario: Scenario) -> None:
    # the window opens after the disk went critical: its state comes from before
    flt = TimelineFilter(vms=frozenset({"web-01"}), kinds=frozenset({EntryKind.EVENT}))
    result = await TimelineQueries(scenario.store).timeline(
        Window(T0 + 71 * MIN, T0 + 72 * MIN), flt, lookback_s=0
    )
    assert [e.title for e in result.entries][1] == "suspended: I/O error"
    assert result.entries[1].hint.startswith("host disk /var/lib/libvirt was crit")


async def test_a_past_window_does_not_recompute_history(scenario: Scenario) -> None:
    # the rollups age out (retention); the spikes stay, because they are stored events
    async with scenario.store.engine.begin() as conn:
        await conn.execute(delete(MetricMinute))
    result = await TimelineQueries(scenario.store).timeline(
        Window(T0, T0 + 2 * 3600), TimelineFilter(kinds=frozenset({EntryKind.SPIKE}))
    )
    assert len(result.entries) == 2


async def test_a_flood_is_cut_and_says_so(scenario: Scenario) -> None:
    result = await TimelineQueries(scenario.store, max_rows=3).timeline(Window(T0, T0 + 7200))
    assert result.truncated


# -- the export -----------------------------------------------------------------------------

FACTS = HostFacts(
    uri=SECRET_URI,
    hostname="hv1.example",
    driver="QEMU",
    libvirt_version="9.0.0",
    hypervisor_version="7.2.0",
    cpus=16,
    memory_kib=64 * 1024 * 1024,
)


async def test_the_export_document_and_its_schema(scenario: Scenario) -> None:
    window = Window(T0, T0 + 2 * 3600)
    doc = await build_export(
        scenario.store, window, facts={HOST: FACTS}, now=T0 + 3 * 3600, generated_by="vw test"
    )
    assert set(doc) == {
        "schema",
        "schema_version",
        "generated_at",
        "generated_by",
        "window",
        "filter",
        "truncated",
        "hosts",
        "timeline",
        "errors",
        "health",
        "audit",
        "metrics",
    }
    assert (doc["schema"], doc["schema_version"]) == (EXPORT_SCHEMA, EXPORT_SCHEMA_VERSION)
    assert doc["window"]["since"] == T0
    assert doc["window"]["until_iso"].endswith("+00:00")
    assert doc["filter"] == {
        "hosts": [],
        "vms": [],
        "kinds": [],
        "min_severity": "info",
        "text": "",
    }
    assert doc["truncated"] is False
    (host,) = doc["hosts"]
    assert host["host"] == HOST
    assert host["uri"] == "qemu+tcp://admin:***@hv1.example/system"
    assert host["facts"]["hostname"] == "hv1.example"
    assert host["facts"]["uri"] == "qemu+tcp://admin:***@hv1.example/system"
    assert host["connection"] == [{"at": float(T0), "state": "connected", "message": ""}]
    assert {v["name"] for v in host["vms"]} == {"web-01", "db-01"}
    assert len(doc["timeline"]) == 13
    entry = doc["timeline"][6]
    assert set(entry) == {
        "at",
        "at_iso",
        "kind",
        "severity",
        "title",
        "host",
        "vm_uuid",
        "vm_name",
        "key",
        "until",
        "hint",
        "detail",
    }
    assert entry["hint"].startswith("host disk /var/lib/libvirt was crit")
    (error,) = doc["errors"]
    assert (error["code"], error["count"], error["severity"]) == (
        "LIBVIRT_CONNECTION_LOST",
        3,
        "critical",
    )
    assert [r["check"] for r in doc["health"]["results"]] == ["host.disk"]
    assert [(a["previous"], a["current"]) for a in doc["health"]["alerts"]] == [
        ("ok", "crit"),
        ("crit", "ok"),
    ]
    assert [(a["action"], a["outcome"]) for a in doc["audit"]] == [
        ("resume", "failed"),
        ("force_off", "verified"),
    ]
    out = io.StringIO()
    dump_export(doc, out)
    assert out.getvalue().endswith("}\n")
    on_disk = json.loads(out.getvalue())  # the arrays as the database wrote them, spliced in
    assert on_disk == parse_export(doc)
    assert {k: v for k, v in on_disk.items() if k != "metrics"} == {
        k: v for k, v in doc.items() if k != "metrics"
    }
    metrics = on_disk["metrics"]
    assert (metrics["resolution"], metrics["step"]) == ("minute", 60)
    assert metrics["arrays"] == list(METRIC_ARRAYS) == ["count", "avg", "min", "max", "p95"]
    names = [(s["vm_name"], s["metric"]) for s in metrics["series"]]
    assert names == [  # the host's own first, then VMs by name
        (None, "host.cpu_pct"),
        ("db-01", "cpu_pct"),
        ("web-01", "cpu_pct"),
        ("web-01", "mem_alloc_kib"),
    ]
    web = metrics["series"][2]
    assert (web["host"], web["vm_uuid"]) == (HOST, WEB)
    assert (web["start"], web["step"], web["n"]) == (T0, 60, 90)  # no minute missing: no ts
    assert "ts" not in web
    assert {len(web[a]) for a in METRIC_ARRAYS} == {90}
    at = 60  # the spike's first minute, 6 samples of 95 %
    assert [web[a][at] for a in METRIC_ARRAYS] == [6, 95.0, 95.0, 95.0, 95.0]
    assert [web[a][59] for a in METRIC_ARRAYS] == [6, 11.0, 10.0, 12.0, 12.0]
    assert summarize(doc)[1] == "4 metric series (360 minutes) of 1 host(s)"


async def test_the_export_arrays_line_up_with_the_stored_minutes(scenario: Scenario) -> None:
    doc = parse_export(await build_export(scenario.store, Window(T0, T0 + 2 * 3600)))
    series = {(s["vm_uuid"], s["metric"]): s for s in doc["metrics"]["series"]}
    async with scenario.store.reader.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    Metric.vm_uuid,
                    Metric.name,
                    MetricMinute.ts_ms,
                    MetricMinute.count,
                    MetricMinute.sum,
                    MetricMinute.min,
                    MetricMinute.max,
                    MetricMinute.p95,
                )
                .join(Metric, Metric.id == MetricMinute.metric_id)
                .order_by(MetricMinute.metric_id, MetricMinute.ts_ms)
            )
        ).all()
    assert {(u or None, m) for u, m, *_ in rows} == {
        (s["vm_uuid"], s["metric"]) for s in series.values()
    }
    for uuid, metric, ts_ms, count, total, lo, hi, p95 in rows:
        s = series[(uuid or None, metric)]
        i = (ts_ms // 1000 - s["start"]) // s["step"]
        stored = [count, rounded(total / count), rounded(lo), rounded(hi), rounded(p95)]
        assert [s[a][i] for a in METRIC_ARRAYS] == stored, (metric, ts_ms)


async def test_the_streamed_export_is_the_same_document(scenario: Scenario, tmp_path: Path) -> None:
    window = Window(T0, T0 + 2 * 3600)
    kw: dict[str, Any] = {"facts": {HOST: FACTS}, "generated_by": "vw test"}
    doc = await build_export(scenario.store, window, now=T0 + 3 * 3600, **kw)
    out = io.StringIO()
    words = await export_to(scenario.store, window, out, now=T0 + 3 * 3600, **kw)
    assert out.getvalue().endswith("}\n")
    assert json.loads(out.getvalue()) == parse_export(doc)
    assert words == summarize(doc)
    # to a file: private, and (but for the time it was made) the same again
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "ticket.json"
    assert await write_window(scenario.store, window, path, **kw) == words
    assert path.stat().st_mode & 0o777 == 0o600
    on_disk = json.loads(path.read_text())
    assert on_disk["generated_at"] != doc["generated_at"]
    on_disk["generated_at"] = doc["generated_at"]
    assert on_disk == parse_export(doc)
    assert os.listdir(tmp_path / "out") == ["ticket.json"]  # the temporary one is gone


async def test_a_failed_export_leaves_no_file(scenario: Scenario, tmp_path: Path) -> None:
    async with scenario.store.engine.begin() as conn:
        await conn.execute(text("DROP TABLE metric_minute"))
    (tmp_path / "out").mkdir()
    with pytest.raises(DBAPIError):
        await write_window(scenario.store, Window(T0, T0 + 3600), tmp_path / "out" / "t.json")
    assert os.listdir(tmp_path / "out") == []


async def test_secrets_never_reach_the_export(scenario: Scenario, tmp_path: Path) -> None:
    # a row written by something that did not redact: the export still masks it
    async with scenario.store.engine.begin() as conn:
        await conn.execute(
            insert(HostConnectionRow).values(
                host=HOST,
                uri=SECRET_URI,
                state="down",
                message=f"lost {SECRET_URI}",
                since_ms=(T0 + 60) * 1000,
                next_retry_at_ms=None,
                at_ms=(T0 + 60) * 1000,
            )
        )
    doc = await build_export(scenario.store, Window(T0, T0 + 7200), facts={HOST: FACTS})
    path = write_export(doc, tmp_path / "incident.json")
    text = path.read_text()
    assert "hunter2" not in text
    assert "admin:***@hv1.example" in text
    assert path.stat().st_mode & 0o777 == 0o600
    assert redact_document({"password": "x", "nested": [{"token": "y", "ok": SECRET_URI}]}) == {
        "password": "***",
        "nested": [{"token": "***", "ok": "qemu+tcp://admin:***@hv1.example/system"}],
    }


async def test_a_vm_export_holds_that_vm_and_its_host(scenario: Scenario) -> None:
    doc = await build_export(
        scenario.store, Window(T0, T0 + 2 * 3600), TimelineFilter(vms=frozenset({"db-01"}))
    )
    assert [e["vm_name"] for e in doc["timeline"]] == ["db-01"]
    assert doc["audit"] == []
    assert [e["vm"] for e in doc["errors"]] == [None]  # host-level errors stay: context
    series = {(s["vm_name"], s["metric"]) for s in doc["metrics"]["series"]}
    assert series == {("db-01", "cpu_pct"), (None, "host.cpu_pct")}
    assert doc["filter"]["vms"] == ["db-01"]


async def test_a_quiet_vm_still_gets_its_metrics(scenario: Scenario) -> None:
    # nothing happened to db-01 in the first half hour: its minutes are context all the same
    quiet = Window(T0, T0 + 30 * MIN)
    for flt in (TimelineFilter(vms=frozenset({"db-01"})), None):
        doc = await build_export(scenario.store, quiet, flt)
        assert "db-01" not in {e["vm_name"] for e in doc["timeline"]}
        series = {(s["vm_name"], s["metric"]): s for s in parse_export(doc)["metrics"]["series"]}
        assert series[("db-01", "cpu_pct")]["n"] == 30
        (host,) = doc["hosts"]
        assert {"uuid": DB, "name": "db-01"} in host["vms"]
    assert set(series) == {
        (None, "host.cpu_pct"),
        ("db-01", "cpu_pct"),
        ("web-01", "cpu_pct"),
        ("web-01", "mem_alloc_kib"),
    }


async def test_a_host_export_holds_that_host_only(scenario: Scenario) -> None:
    window = Window(T0, T0 + 2 * 3600)
    elsewhere = await build_export(scenario.store, window, TimelineFilter(hosts=frozenset({"hv9"})))
    assert elsewhere["metrics"]["series"] == []
    assert elsewhere["timeline"] == []
    here = await build_export(scenario.store, window, TimelineFilter(hosts=frozenset({HOST})))
    assert len(here["metrics"]["series"]) == 4


async def test_minutes_missing_from_a_series_are_listed(scenario: Scenario) -> None:
    async with scenario.store.engine.begin() as conn:
        mid = (
            await conn.execute(
                select(Metric.id).where(Metric.vm_uuid == DB, Metric.name == "cpu_pct")
            )
        ).scalar_one()
        await conn.execute(
            delete(MetricMinute).where(
                MetricMinute.metric_id == mid,
                MetricMinute.ts_ms >= (T0 + 10 * MIN) * 1000,
                MetricMinute.ts_ms < (T0 + 20 * MIN) * 1000,
            )
        )
    doc = parse_export(await build_export(scenario.store, Window(T0, T0 + 2 * 3600)))
    db, web = (
        next(s for s in doc["metrics"]["series"] if (s["vm_name"], s["metric"]) == (vm, "cpu_pct"))
        for vm in ("db-01", "web-01")
    )
    assert "ts" not in web
    minutes = [m for m in range(90) if not 10 <= m < 20]
    assert db["n"] == len(db["ts"]) == len(db["avg"]) == 80
    assert db["ts"] == [T0 + m * MIN for m in minutes]
    assert db["start"] == T0
    assert set(db["avg"]) == {20.0}


def test_default_export_name() -> None:
    name = default_export_name(Window(T0, T0 + 3600))
    assert name == "virtwatch-export-20261118T1100Z-20261118T1200Z.json"
