"""The real `virtwatch` binary: snapshot JSON and failures as one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FleetFactory

pytestmark = pytest.mark.libvirt

BIN = str(Path(sys.executable).with_name("virtwatch"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60, env=env)


def test_snapshot_json_lists_every_domain(make_fleet: FleetFactory) -> None:
    out = run("snapshot", "--json", "--uri", make_fleet(7), "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1
    assert [d["name"] for d in doc["domains"]] == [f"vm-{i:04d}" for i in range(7)]
    first = doc["domains"][0]
    for key in (
        "uuid",
        "state",
        "state_text",
        "vcpus",
        "cpu_pct",
        "mem_used_kib",
        "mem_alloc_kib",
        "uptime_s",
    ):
        assert key in first


@pytest.mark.parametrize(
    "uri",
    [
        "bogus:///nowhere",
        "qemu+unix:///system?socket=/nonexistent/sock",
        "qemu://[bad",
        "bogus://nowhere.invalid/system",  # the remote driver, TLS without a CA file
        # ssh's two lines of stderr, one quoting the keyfile
        "qemu+ssh://u:pw@nowhere.invalid/system?keyfile=/nonexistent/k",
    ],
)
def test_a_bad_uri_is_one_clear_line_and_non_zero(uri: str) -> None:
    out = run("snapshot", "--json", "--uri", uri)
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("virtwatch: ")
    assert "Traceback" not in out.stderr
    assert "—" in lines[0]  # a hint follows the message
    assert "/nonexistent/k" not in out.stderr
    assert ":pw@" not in out.stderr


def test_credentials_never_reach_the_error_line() -> None:
    out = run("snapshot", "--json", "--uri", "qemu+tcp://admin:hunter2@127.0.0.1:1/system")
    assert out.returncode != 0
    assert "hunter2" not in out.stderr
    assert "admin:***@" in out.stderr


def test_the_dashboard_flags_are_listed_without_the_command_word() -> None:
    out = run("--help")
    assert out.returncode == 0
    for flag in ("--uri", "--db", "--interval", "--config", "--refresh", "--read-only"):
        assert flag in out.stdout


def test_bad_arguments_are_usage_errors() -> None:
    out = run("snapshot", "--json", "--interval", "-1")
    assert out.returncode == 2
    assert "positive" in out.stderr
