"""The export against its published schema (docs/export.schema.json, JSON Schema draft
2020-12): real exports of a real SQLite file, filled the normal way (store writer, rollup,
spike watch), made by `virtwatch export` and by the Timeline screen's `e`, must validate;
and the schema must refuse a document that differs from them in any key or type."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # ships no type information
import pytest
from sqlalchemy import delete, select

from tests.integration.test_timeline_store import (
    DB,
    FACTS,
    HOST,
    MIN,
    RULES,
    T0,
    WEB,
    ev,
    records,
    samples,
    write_all,
)
from virtwatch.cli.main import main
from virtwatch.core.hub import Hub
from virtwatch.core.records import EventKind
from virtwatch.core.triage.spike_watch import SpikeWatch
from virtwatch.core.triage.timeline import TimelineFilter
from virtwatch.core.triage.when import Window
from virtwatch.storage import rollup
from virtwatch.storage.engine import db_url
from virtwatch.storage.export import StoreIncidents
from virtwatch.storage.models import Metric, MetricMinute
from virtwatch.storage.store import Store
from virtwatch.storage.timeline_queries import StoreRollupReader

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "export.schema.json"
ARRAYS = ("count", "avg", "min", "max", "p95")
UNTIL = T0 + 2 * 3600


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Any:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding every kind of record the export carries: lifecycle and I/O
    error events, an error incident, health results and alerts, actions, connection
    changes, spikes (from the spike watch over the stored rollups), a config change, and
    minute rollups of four series, one of them with ten minutes missing."""
    path = tmp_path_factory.mktemp("export-schema") / "history.db"

    async def fill() -> None:
        async with Store(db_url(path)) as store:
            hub = Hub()
            drift = ev(
                DB,
                "db-01",
                "+watchdog i6300esb; memory 64 MiB → 128 MiB",
                T0 + 30 * MIN,
                EventKind.CONFIG_CHANGE,
                fingerprint="b" * 16,
                previous_fingerprint="a" * 16,
            )
            await write_all(store, hub, [*records(), drift], samples())
            await rollup.rollup(store, [HOST], now_ms=UNTIL * 1000)
            watch = SpikeWatch(StoreRollupReader(store), hub.publish, RULES, catch_up_s=UNTIL - T0)
            await write_all(store, hub, list(await watch.judge_new()), [])
            async with store.engine.begin() as conn:
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

    asyncio.run(fill())
    return path


def window(db: Path, since: float = T0, until: float = UNTIL) -> list[str]:
    return ["--db", str(db), "--since", str(since), "--until", str(until)]


@pytest.fixture(scope="module")
def exported(db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`virtwatch export --output FILE` of the whole test window, as a reader parses it."""
    out = tmp_path_factory.mktemp("export") / "ticket.json"
    assert main(["export", *window(db), "--output", str(out)]) == 0
    doc: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return doc


def assert_valid(validator: Any, doc: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}" for e in errors
    )
    for series in doc["metrics"]["series"]:  # what JSON Schema cannot say: n values each
        lengths = {len(series[a]) for a in (*ARRAYS, "ts") if a in series}
        assert lengths == {series["n"]}, (series["vm_name"], series["metric"], lengths)
        if "ts" in series:
            assert series["ts"] == sorted(set(series["ts"]))
            assert series["ts"][0] == series["start"]


def test_the_schema_is_a_valid_draft_2020_12_schema(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"] == {"const": 2}


def test_virtwatch_export_to_a_file_matches_the_schema(
    exported: dict[str, Any], validator: Any
) -> None:
    doc = exported
    assert_valid(validator, doc)
    # every section and every kind of entry was there to be checked
    assert {e["kind"] for e in doc["timeline"]} == {
        "event",
        "error",
        "health",
        "action",
        "spike",
        "config",
    }
    for section in (doc["errors"], doc["audit"], doc["health"]["results"], doc["health"]["alerts"]):
        assert section
    (host,) = doc["hosts"]
    assert host["facts"] is None  # headless: the store does not keep them
    assert host["connection"]
    assert host["vms"]
    series = {(s["vm_name"], s["metric"]): s for s in doc["metrics"]["series"]}
    assert "ts" in series[("db-01", "cpu_pct")]
    assert "ts" not in series[("web-01", "cpu_pct")]
    assert series[(None, "host.cpu_pct")]["vm_uuid"] is None


def test_a_filtered_export_on_stdout_matches_the_schema(
    db: Path, validator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", *window(db), "--vm", "web-01", "--host", HOST]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert_valid(validator, doc)
    assert doc["filter"]["vms"] == ["web-01"]
    assert {s["vm_uuid"] for s in doc["metrics"]["series"]} == {WEB, None}


def test_an_empty_window_matches_the_schema(
    db: Path, validator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", *window(db, T0 - 7200, T0 - 3600)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert_valid(validator, doc)
    assert doc["timeline"] == doc["metrics"]["series"] == doc["hosts"] == []


async def test_the_screens_export_with_host_facts_matches_the_schema(
    db: Path, tmp_path: Path, validator: Any
) -> None:
    # what `e` on the Timeline screen writes: the live hosts' facts, the screen's filter
    flt = TimelineFilter(kinds=frozenset(), text="")
    async with Store(db_url(db), run_migrations=False) as store:
        path, _words = await StoreIncidents(store, generated_by="virtwatch test").export_window(
            Window(T0, UNTIL), flt, facts={HOST: FACTS}, directory=tmp_path
        )
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert_valid(validator, doc)
    (host,) = doc["hosts"]
    assert host["facts"]["cpus"] == FACTS.cpus
    assert "hunter2" not in path.read_text(encoding="utf-8")


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "a top-level key missing": _drop("audit"),
    "an unknown top-level key": lambda d: d.update(extra=1),
    "another schema version": lambda d: d.update(schema_version=3),
    "a window time as text": lambda d: d["window"].update(since=str(d["window"]["since"])),
    "a non-UTC ISO time": lambda d: d.update(generated_at="2026-11-26T10:00:00"),
    "an unknown kind in the filter": lambda d: d["filter"].update(kinds=["incident"]),
    "a timeline entry with an unknown key": lambda d: d["timeline"][0].update(note=""),
    "a timeline entry without its hint": lambda d: d["timeline"][0].pop("hint"),
    "an unknown severity": lambda d: d["timeline"][0].update(severity="fatal"),
    "a detail value that is a number": lambda d: d["timeline"][0]["detail"].update(n=1),
    "an error count of zero": lambda d: d["errors"][0].update(count=0),
    "an unknown error category": lambda d: d["errors"][0].update(category="disk"),
    "a health state as a number": lambda d: d["health"]["results"][0].update(state=2),
    "an alert without its previous state": lambda d: d["health"]["alerts"][0].pop("previous"),
    "an unknown audit outcome": lambda d: d["audit"][0].update(outcome="maybe"),
    "an unknown connection state": lambda d: d["hosts"][0]["connection"][0].update(state="up"),
    "host facts without their CPUs": lambda d: d["hosts"][0].update(facts={"uri": ""}),
    "a series without its p95": lambda d: d["metrics"]["series"][0].pop("p95"),
    "a series value as text": lambda d: d["metrics"]["series"][0]["avg"].__setitem__(0, "1"),
    "a series with a step of 30": lambda d: d["metrics"]["series"][0].update(step=30),
    "the arrays in another order": lambda d: d["metrics"].update(arrays=["avg", "count"]),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_schema_refuses_a_document_that_differs(
    exported: dict[str, Any], validator: Any, mutation: str
) -> None:
    assert validator.is_valid(exported)
    broken = copy.deepcopy(exported)
    MUTATIONS[mutation](broken)
    assert not validator.is_valid(broken), mutation
