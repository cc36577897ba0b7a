"""The headless recorder as a real process: SIGKILL mid-ingest loses nothing that was
committed; SIGTERM flushes and exits 0; two recorders on different hosts share one
database that one reader sees whole; `db stats` reports it."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import FleetFactory
from tests.waiting import until
from virtwatch.core.hub import Hub
from virtwatch.core.records import DomainEvent, EventKind
from virtwatch.core.runtime import HostConfig, Runtime
from virtwatch.storage.engine import db_url
from virtwatch.storage.lease import WriterRole
from virtwatch.storage.models import DomainEventRow, Metric, MetricSample
from virtwatch.storage.queries import Queries, Resolution
from virtwatch.storage.rows import Record
from virtwatch.storage.store import Sample, Store
from virtwatch.storage.writer import StoreWriter

pytestmark = pytest.mark.libvirt

BIN = str(Path(sys.executable).with_name("virtwatch"))
Key = tuple[str, str, str, int]  # host, vm uuid, metric, ts_ms
PER_TICK_MIN = 4  # samples of one tick of a 4-VM test fleet, at least


async def start_recorder(
    uri: str, db: str, *, name: str, interval: float = 0.05
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        BIN,
        "record",
        "--uri",
        uri,
        "--db",
        db,
        "--name",
        name,
        "--interval",
        str(interval),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def committed(store: Store) -> set[Key]:
    """Every sample another connection can see: committed by definition."""
    q = select(Metric.host, Metric.vm_uuid, Metric.name, MetricSample.ts_ms).join(Metric)
    async with store.reader.connect() as conn:
        return {(h, u, m, int(t)) for h, u, m, t in await conn.execute(q)}


async def test_sigkill_mid_ingest_loses_nothing_committed(
    store_url: str, make_fleet: FleetFactory
) -> None:
    uri = make_fleet(400)
    seen: set[Key] = set()
    for round_ in range(3):
        proc = await start_recorder(uri, store_url, name="hv-kill")
        try:
            async with Store(store_url) as store:
                target = len(seen) + 2000
                observed = seen

                async def writing(
                    store: Store = store, target: int = target, observed: set[Key] = observed
                ) -> bool:
                    observed.update(await committed(store))
                    return len(observed) >= target

                await until(writing, what="the recorder is writing")
                seen = observed | await committed(store)  # the last look, then at once:
        finally:
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        if store_url.startswith("sqlite"):
            path = store_url.split(":///", 1)[1]
            con = sqlite3.connect(path)
            try:
                assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            finally:
                con.close()
        async with Store(store_url) as store:  # reopening recovers the WAL if needed
            after = await committed(store)
        missing = seen - after
        assert not missing, f"round {round_}: {len(missing)} committed rows lost"
        seen = after


async def test_two_recorders_share_one_database_and_stop_cleanly(
    store_url: str, make_fleet: FleetFactory
) -> None:
    """One recorder per hypervisor into the same database (PostgreSQL for a team; a
    SQLite file works too); SIGTERM makes each flush, say how much it wrote, exit 0."""
    fleets = {"hv-a": make_fleet(30), "hv-b": make_fleet(45)}
    procs = {name: await start_recorder(uri, store_url, name=name) for name, uri in fleets.items()}
    try:
        async with Store(store_url) as store:

            async def both_recording() -> bool:
                hosts = {h for h, *_ in await Queries(store).metric_names()}
                return hosts == set(fleets)

            await until(both_recording, what="both hosts in the catalogue")
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            outputs = {name: await proc.communicate() for name, proc in procs.items()}
            for name, proc in procs.items():
                _out, err = outputs[name]
                assert proc.returncode == 0, err.decode()
                assert b"Traceback" not in err
            keys = await committed(store)
            for name, (_out, err) in outputs.items():
                written = int(err.decode().rsplit("stopped; ", 1)[1].split(" samples")[0])
                assert written == sum(1 for k in keys if k[0] == name) > 0
            names = await Queries(store).metric_names()
            assert {u for h, u, _n, _m in names if h == "hv-a"} != set()
            vms = {h: {n for hh, _u, n, _m in names if hh == h} for h in fleets}
            assert len(vms["hv-a"]) == 30
            assert len(vms["hv-b"]) == 45
            # the dashboard's view of both: latest raw values of many VMs in one query
            uuids = sorted({u for _h, u, _n, _m in names})
            latest = await Queries(store).latest(uuids, resolution=Resolution.RAW)
            assert set(latest) == set(uuids)
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    stats = await asyncio.create_subprocess_exec(
        BIN, "db", "stats", "--json", "--db", store_url, stdout=asyncio.subprocess.PIPE
    )
    out, _err = await stats.communicate()
    assert stats.returncode == 0
    doc = json.loads(out)
    assert doc["tables"]["metric_sample"]["rows"] == len(keys)
    assert doc["tables"]["metric"]["rows"] == 75


def test_a_bad_storage_setting_is_one_line_naming_the_key(
    tmp_path: Path, make_fleet: FleetFactory
) -> None:
    import subprocess

    config = tmp_path / "config.toml"
    config.write_text("[storage]\nraw_hours = 0\n")
    out = subprocess.run(
        [
            BIN,
            "record",
            "--uri",
            make_fleet(2),
            "--db",
            str(tmp_path / "v.db"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "storage.raw_hours" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_db_upgrade_says_what_it_did_and_stats_needs_a_database(tmp_path: Path) -> None:
    import subprocess

    from virtwatch.storage.migrate import head_revision

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)

    db = str(tmp_path / "new.db")
    first = run("db", "upgrade", "--db", db)
    assert first.returncode == 0, first.stderr
    assert f"from revision (empty) to {head_revision()}" in first.stdout
    again = run("db", "upgrade", "--db", db)
    assert f"is up to date (revision {head_revision()})" in again.stdout
    stats = run("db", "stats", "--db", db)
    assert stats.returncode == 0
    assert "metric_sample" in stats.stdout
    missing = run("db", "stats", "--db", str(tmp_path / "nothing.db"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("virtwatch: no database at ")
    assert not (tmp_path / "nothing.db").exists()


def written_by(err: bytes) -> int:
    """The samples a recorder says it wrote when it stops."""
    return int(err.decode().rsplit("stopped; ", 1)[1].split(" samples")[0])


async def test_a_recorder_and_a_dashboard_on_one_database_keep_one_copy(
    tmp_path: Path, make_fleet: FleetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard (an in-process runtime and dashboard-role writer) watches host h alone,
    then `virtwatch record` for the same host starts on the same SQLite file, takes h
    over and stops; the dashboard takes h back. Each metric's stored samples are then
    the dashboard's, the recorder's, then the dashboard's again: none of the dashboard's
    falls inside the span the recorder wrote (a second copy would). The lifecycle event
    the dashboard's stream sees while the recorder writes h is the recorder's to store."""
    interval = 1.0
    uri, db, name = make_fleet(4), db_url(tmp_path / "shared.db"), "hv-shared"
    hub = Hub()
    async with Store(db) as store:
        mine: set[tuple[str, str, int]] = set()  # (vm, metric, ts) the dashboard wrote
        write = store.write

        async def write_and_note(samples: Sequence[Sample], records: Sequence[Record] = ()) -> int:
            written = await write(samples, records)
            mine.update((s[1], s[3], s[4]) for s in samples)
            return written

        monkeypatch.setattr(store, "write", write_and_note)
        dashboard = StoreWriter(store, hub, role=WriterRole.DASHBOARD, maintenance=False)
        host = HostConfig(uri, name=name, read_only=True, interval_s=interval)
        async with dashboard, Runtime([host], hub=hub):
            await until(lambda: dashboard.samples_written > 0, what="the dashboard writes h")
            proc = await start_recorder(uri, db, name=name, interval=interval)
            try:

                def recorder_writes() -> bool:
                    others = dashboard.stats().others
                    return bool(others) and others[0].role == "recorder" and others[0].writing

                await until(recorder_writes, timeout_s=60, what="the recorder took h over")
                left = dashboard.stats().not_written_samples
                seen = DomainEvent(
                    name, "u1", "vm-0000", EventKind.LIFECYCLE, "paused", time.time()
                )
                hub.publish(seen)
                await until(
                    lambda: (
                        dashboard.stats().not_written_records >= 1
                        and dashboard.stats().not_written_samples > left + 3 * PER_TICK_MIN
                    ),
                    what="the dashboard leaves h to the recorder for a few ticks",
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                _out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            before = dashboard.samples_written
            await until(
                lambda: dashboard.stats().leads == (name,) and dashboard.samples_written > before,
                what="the dashboard writes h again once the recorder stopped",
            )
        q = (
            select(Metric.vm_uuid, Metric.name, MetricSample.ts_ms)
            .join(Metric)
            .where(Metric.host == name)
        )
        async with store.reader.connect() as conn:
            rows = (await conn.execute(q)).all()
            events = (
                await conn.execute(
                    select(DomainEventRow.summary).where(DomainEventRow.host == name)
                )
            ).all()
    assert written_by(err) > 0
    assert dashboard.stats().not_written_samples > 0
    # (not ==: a collector's first two snapshots may share a millisecond, one row kept)
    assert len(rows) <= written_by(err) + dashboard.samples_written
    recorders: dict[tuple[str, str], list[int]] = {}
    for vm, metric, ts in rows:
        if (vm, metric, ts) not in mine:
            recorders.setdefault((vm, metric), []).append(int(ts))
    assert recorders  # the recorder wrote h for a while
    for (vm, metric), times in recorders.items():
        inside = [t for v, m, t in mine if (v, m) == (vm, metric) and min(times) < t < max(times)]
        assert inside == [], f"{vm} {metric}: the dashboard also wrote moments the recorder had"
        assert any(v == vm and m == metric and t > max(times) for v, m, t in mine)
    assert ("paused",) not in events  # the recorder's to store; it did not see it
