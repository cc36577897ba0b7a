"""`virtwatch record` against the real hypervisor: lifecycle events, config drift and
samples of a live VM land in the database; SIGTERM flushes and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vms import QEMU_URI, diskless_xml, unique_name
from tests.waiting import until

pytestmark = pytest.mark.qemu

BIN = str(Path(sys.executable).with_name("virtwatch"))


def virsh(*args: str) -> None:
    subprocess.run(["virsh", "-c", QEMU_URI, *args], check=True, capture_output=True, timeout=60)


def rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


async def wait_for_rows(db: Path, sql: str, *params: object) -> None:
    def found() -> bool:
        with contextlib.suppress(sqlite3.Error):  # the recorder may not have made it yet
            return bool(rows(db, sql, *params))
        return False

    await until(found, f"rows for: {sql} {params}", step_s=0.3)


async def test_record_stores_events_drift_and_samples(hypervisor: None, tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    name = unique_name("vwrec")
    xml = tmp_path / "vm.xml"
    xml.write_text(diskless_xml(name))
    await asyncio.to_thread(virsh, "define", str(xml))
    proc = await asyncio.create_subprocess_exec(
        BIN, "record", "--uri", QEMU_URI, "--db", str(db), "--name", "local",
        "--interval", "0.5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_for_rows(db, "select 1 from metric where vm_name = ?", name)
        await asyncio.to_thread(virsh, "start", name)
        await wait_for_rows(
            db,
            "select 1 from domain_event where vm_name = ? and kind = 'lifecycle'",
            name,
        )
        # redefine with more memory: the define event makes the drift watcher rescan
        dumped = await asyncio.to_thread(
            subprocess.run,
            ["virsh", "-c", QEMU_URI, "dumpxml", "--inactive", name],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        grown = re.sub(r"<memory unit='KiB'>\d+</memory>", "<memory unit='KiB'>98304</memory>",
                       dumped.stdout)  # fmt: skip
        grown = re.sub(r"<currentMemory unit='KiB'>\d+</currentMemory>",
                       "<currentMemory unit='KiB'>98304</currentMemory>", grown)  # fmt: skip
        assert grown != dumped.stdout
        xml.write_text(grown)
        await asyncio.to_thread(virsh, "define", str(xml))
        await wait_for_rows(
            db,
            "select summary from domain_event where vm_name = ? and kind = 'config_change'",
            name,
        )
        await wait_for_rows(
            db,
            "select 1 from metric_sample s join metric m on m.id = s.metric_id "
            "where m.vm_name = ? and m.name = 'cpu_pct'",
            name,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        for cleanup in (("destroy", name), ("undefine", name)):
            with contextlib.suppress(subprocess.CalledProcessError):
                await asyncio.to_thread(virsh, *cleanup)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    drift = rows(
        db, "select summary from domain_event where vm_name = ? and kind = 'config_change'", name
    )
    assert any("memory" in str(s).lower() for (s,) in drift), drift
