"""`virtwatch timeline` and `virtwatch export` against a database filled the normal way."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.integration.test_timeline_store import (
    HOST,
    MIN,
    T0,
    WEB,
    ev,
    records,
    samples,
)
from virtwatch.cli.main import main
from virtwatch.core.hub import Hub
from virtwatch.core.records import EventKind
from virtwatch.storage import rollup
from virtwatch.storage.engine import db_url
from virtwatch.storage.store import Store
from virtwatch.storage.writer import StoreWriter

HOSTILE = "evil\x1b[2J\x1b[31m-vm"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "history.db"

    async def fill() -> None:
        async with Store(db_url(path)) as store:
            writer = StoreWriter(store, Hub(), maintenance=False)
            writer.add_samples(samples())
            for item in records():
                writer.add_record(item)  # type: ignore[arg-type]
            writer.add_record(
                ev(WEB, HOSTILE, "started: booted", T0 + 100 * MIN, EventKind.LIFECYCLE)
            )
            await writer.flush()
            await rollup.rollup(store, [HOST], now_ms=(T0 + 7200) * 1000)

    asyncio.run(fill())
    return path


def window(db: Path, *extra: str) -> list[str]:
    return ["--db", str(db), "--since", str(T0), "--until", str(T0 + 7200), *extra]


def test_timeline_prints_one_line_per_entry_oldest_first(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["timeline", *window(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# 12 entries, everything"
    lines = out[1:]
    assert len(lines) == 12
    assert "connection to hv1: connected" in lines[0]
    paused = next(line for line in lines if "suspended: I/O error" in line)
    assert "ERROR  event   hv1  web-01  suspended: I/O error" in paused
    assert "[hint: host disk /var/lib/libvirt was crit at that moment: 99.2 % used]" in paused
    assert "hunter2" not in "\n".join(lines)
    hostile = lines[-1]
    assert "\x1b" not in hostile
    assert "evil\\x1b[2J\\x1b[31m-vm" in hostile


def test_timeline_filters_and_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["timeline", *window(db, "--vm", "web-01", "--kind", "action,event", "--json")])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["schema"], doc["schema_version"]) == ("virtwatch.timeline", 1)
    assert doc["filter"]["vms"] == ["web-01"]
    assert [(e["kind"], e["title"].split(":")[0]) for e in doc["entries"]] == [
        ("event", "started"),
        ("event", "I/O error on vda (/var/lib/libvirt/images/web.qcow2)"),
        ("event", "suspended"),
        ("action", "resume by alice from 10.0.0.5"),
        ("action", "force_off by alice from 10.0.0.5"),
        ("event", "stopped"),
    ]
    assert main(["timeline", *window(db, "--severity", "critical", "--json")]) == 0
    loud = json.loads(capsys.readouterr().out)["entries"]
    assert [e["kind"] for e in loud] == ["health", "error"]


def test_export_writes_a_private_file_without_secrets(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ticket.json"
    assert main(["export", *window(db, "--output", str(out))]) == 0
    note = capsys.readouterr().err
    assert note.startswith(f"virtwatch: wrote {out}: 12 timeline entries, 1 errors")
    text = out.read_text()
    assert "hunter2" not in text
    doc = json.loads(text)
    assert (doc["schema"], doc["schema_version"]) == ("virtwatch.export", 2)
    cpu = next(
        s for s in doc["metrics"]["series"] if (s["vm_name"], s["metric"]) == ("web-01", "cpu_pct")
    )
    assert (cpu["step"], cpu["n"], len(cpu["avg"]), cpu["max"][60]) == (60, 90, 90, 95.0)
    assert doc["generated_by"].startswith("virtwatch ")
    assert out.stat().st_mode & 0o777 == 0o600


def test_export_to_stdout_of_one_vm(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", *window(db, "--vm", "db-01")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["vm_name"] for e in doc["timeline"]] == ["db-01"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--since", "yesterday-ish"], "cannot read the time 'yesterday-ish'"),
        (["--since", "1h", "--until", "2h"], "ends"),
        (["--since", "1h", "--kind", "bogus"], "unknown kind 'bogus'"),
        (["--since", "1h", "--severity", "loud"], "unknown severity 'loud'"),
    ],
)
def test_bad_input_is_one_clear_line(
    db: Path, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["timeline", "--db", str(db), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err


def test_a_missing_database_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--db", str(tmp_path / "none.db"), "--since", "1h"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("virtwatch: no database at ")
    assert "virtwatch record" in err
    assert not (tmp_path / "none.db").exists()
