"""`virtwatch record` runs the health checks in the background: every run is stored,
a state change is stored as an alert, thresholds come from the config file."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FleetFactory
from virtwatch.core.records import HealthState
from virtwatch.storage.engine import db_url
from virtwatch.storage.queries import Queries
from virtwatch.storage.store import Store

pytestmark = pytest.mark.libvirt

BIN = str(Path(sys.executable).with_name("virtwatch"))


async def test_the_recorder_stores_health_runs_and_alerts(
    make_fleet: FleetFactory, tmp_path: Path
) -> None:
    config_home = tmp_path / "config"
    (config_home / "virtwatch").mkdir(parents=True)
    # every borrow counts: a saturation of 0 % is already "warn", so an alert must follow
    (config_home / "virtwatch" / "config.toml").write_text(
        '[health]\nhold = 1\n[health.checks."pool.saturation"]\nwarn = 0.0\ncrit = 1000.0\n'
    )
    db = tmp_path / "v.db"
    started = time.time()
    proc = await asyncio.create_subprocess_exec(
        BIN,
        "record",
        "--uri",
        make_fleet(5),
        "--db",
        str(db),
        "--name",
        "hv",
        "--interval",
        "0.2",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "XDG_CONFIG_HOME": str(config_home)},
    )
    assert proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"recording" in line, line
        await asyncio.sleep(2.5)  # the first runs happen at start; the writer flushes each 1 s
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        code = await proc.wait()
    assert code == 0, rest

    async with Store(db_url(db)) as store:
        q = Queries(store)
        runs = await q.health_history(started - 1, time.time() + 1)
        alerts = await q.health_alerts(started - 1, time.time() + 1)
    checks = {r.check for r in runs}
    assert {"libvirt.reachable", "pool.saturation", "vm.stale", "store.writable"} <= checks
    assert all(r.host == "hv" for r in runs if r.check != "store.writable")
    saturation = [r for r in runs if r.check == "pool.saturation"]
    assert saturation[0].state is HealthState.WARN
    assert saturation[0].warn == 0.0
    assert any(a.check == "pool.saturation" and a.current is HealthState.WARN for a in alerts)
