"""Health checks against libvirt's test driver (real pool, event stream and collector),
an unreachable URI, and `virtwatch health` end to end with exit codes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.conftest import FleetFactory
from virtwatch.cli.main import main
from virtwatch.core.config import Config
from virtwatch.core.health.checks import CATALOGUE, HostProbes, collector_probes, host_checks
from virtwatch.core.health.monitor import HealthMonitor, HealthRegistry, health_settings
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.libvirt.events import DomainEventStream
from virtwatch.core.model import Snapshot
from virtwatch.core.records import HealthResult, HealthState
from virtwatch.core.runtime import HostConfig, Runtime
from virtwatch.storage.engine import db_url
from virtwatch.storage.queries import Queries
from virtwatch.storage.store import Store

pytestmark = pytest.mark.libvirt

OK, CRIT = HealthState.OK, HealthState.CRIT


async def test_the_standard_checks_of_a_live_runtime(make_fleet: FleetFactory) -> None:
    hub = Hub()
    published = hub.subscribe(HealthResult)
    snaps = hub.subscribe(Snapshot)
    settings = health_settings(Config({}), CATALOGUE)
    host = HostConfig(make_fleet(10), name="hv", interval_s=0.05)
    async with Runtime([host], hub=hub) as rt:
        pool = rt.pools["hv"]
        collector = rt.collectors[0]
        async with DomainEventStream(pool.dedicated("events"), hub.publish, host="hv") as events:
            await asyncio.wait_for(snaps.get(), 10)
            sample, snapshot = collector_probes("hv", lambda: collector.last)
            probes = HostProbes("hv", source=pool, pool=pool, events=events, snapshot=snapshot)
            checks = host_checks(settings, probes)
            results = await HealthMonitor(HealthRegistry(checks), hub.publish, settings).run_once()
    by_check: dict[str, list[HealthResult]] = {}
    for r in results:
        by_check.setdefault(r.check, []).append(r)
    # the test driver gives no vCPU delay, so vm.steal has nothing to read
    assert set(by_check) == {"libvirt.reachable", "pool.saturation", "events.alive", "vm.stale"}
    assert all(r.state is OK for r in results), [r for r in results if r.state is not OK]
    reach = by_check["libvirt.reachable"][0]
    assert reach.unit == "ms"
    assert reach.value is not None
    assert reach.host == "hv"
    assert {r.subject for r in by_check["vm.stale"]} == {
        f"vm-{i:04d}" for i in range(10) if i % 5 in (0, 1, 2)
    }
    assert published.pending() == len(results)
    assert sample is not None


async def test_an_unreachable_host_is_critical_and_its_password_stays_secret() -> None:
    settings = health_settings(Config({}), CATALOGUE)
    uri = "qemu+tcp://admin:s3cret@127.0.0.1:1/system"
    source = SingleConnection(uri, open_timeout_s=5)
    try:
        checks = host_checks(settings, HostProbes("far", source=source))
        (r,) = await HealthMonitor(HealthRegistry(checks), lambda _x: None, settings).run_once()
    finally:
        await source.close()
    assert r.state is CRIT
    assert r.check == "libvirt.reachable"
    assert r.message.startswith("unreachable:")
    assert "s3cret" not in r.message


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_virtwatch_health_json_exits_0_when_all_is_well(
    make_fleet: FleetFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, "")
    code, out, err = run_cli(capsys, "health", "--uri", make_fleet(5), "--config", cfg, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "ok"
    assert doc["exit_code"] == 0
    checks = {r["check"] for r in doc["results"]}
    assert {"libvirt.reachable", "pool.saturation", "events.alive", "vm.stale"} <= checks
    assert not any(c.startswith("host.") for c in checks)  # the test driver's host is fictional


@pytest.mark.parametrize(
    ("limits", "expected"),
    [("warn = 0.0\ncrit = 1e9", 1), ("warn = 0.0\ncrit = 0.0", 2)],
)
def test_virtwatch_health_exit_codes_follow_the_configured_thresholds(
    make_fleet: FleetFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    limits: str,
    expected: int,
) -> None:
    cfg = write_config(tmp_path, f'[health.checks."libvirt.reachable"]\n{limits}\n')
    code, out, _err = run_cli(capsys, "health", "--uri", make_fleet(3), "--config", cfg)
    assert code == expected
    line = next(x for x in out.splitlines() if "libvirt.reachable" in x)
    assert line.startswith("warn" if expected == 1 else "crit")


def test_a_bad_threshold_is_one_line_naming_the_key(
    make_fleet: FleetFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, '[health.checks."host.disk"]\nwarn = 97\ncrit = 90\n')
    code, out, err = run_cli(capsys, "health", "--uri", make_fleet(3), "--config", cfg)
    assert code == 3  # Nagios UNKNOWN: a bad config is not a critical host
    assert out == ""
    assert err.count("\n") == 1
    assert "'health.checks.\"host.disk\".warn'" in err
    assert "must not be above crit (90)" in err
    assert "Traceback" not in err


def test_virtwatch_health_with_a_database_checks_it_and_stores_the_run(
    make_fleet: FleetFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, "")
    db = tmp_path / "v.db"
    started = time.time()
    code, out, err = run_cli(
        capsys, "health", "--uri", make_fleet(3), "--config", cfg, "--db", str(db), "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    store_result = next(r for r in doc["results"] if r["check"] == "store.writable")
    assert store_result["state"] == "ok"

    async def stored() -> list[HealthResult]:
        async with Store(db_url(db)) as store:
            return await Queries(store).health_history(started - 1, time.time() + 1)

    rows = asyncio.run(stored())
    assert {r.check for r in rows} >= {"libvirt.reachable", "vm.stale", "store.writable"}
