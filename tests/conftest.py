"""Shared fixtures: private test-driver fleets and the process-wide libvirt setup."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from virtwatch.core.libvirt.process import prepare_libvirt

FleetFactory = Callable[..., str]


@pytest.fixture(autouse=True, scope="session")
def _libvirt_quiet() -> None:
    prepare_libvirt()


def fleet_xml(count: int, *, states: tuple[int, ...] = (1, 1, 1, 3, 5)) -> str:
    """A test-driver node with `count` domains cycling through `states`."""
    parts = [
        "<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>",
        "<cpu><mhz>2000</mhz><model>t</model><active>8</active><nodes>1</nodes>"
        "<sockets>1</sockets><cores>4</cores><threads>2</threads></cpu>",
        "<memory>33554432</memory>",
    ]
    for i in range(count):
        parts.append(
            f"<domain type='test'><name>vm-{i:04d}</name>"
            f"<uuid>{uuid.UUID(int=i + 1)}</uuid>"
            f"<memory unit='MiB'>{256 * (1 + i % 4)}</memory><vcpu>{1 + i % 4}</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os>"
            f"<test:runstate>{states[i % len(states)]}</test:runstate></domain>"
        )
    parts.append("</node>")
    return "\n".join(parts)


@pytest.fixture
def make_fleet(tmp_path: Path) -> FleetFactory:
    """Write a private fleet XML and return its test:/// URI."""

    def make(count: int = 10, **kw: tuple[int, ...]) -> str:
        path = tmp_path / f"fleet-{count}-{uuid.uuid4().hex[:6]}.xml"
        path.write_text(fleet_xml(count, **kw))
        return f"test://{path}"

    return make


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database's async URL: a SQLite file, then a new PostgreSQL database."""
    from tests.storage.databases import database

    with database(request.param, tmp_path) as url:
        yield url


REAL_COMPONENTS = {
    "qemu": "real QEMU VMs under libvirtd",
    "postgres": "the local PostgreSQL",
    "libvirt": "libvirt's test driver",
}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say per real component how many of its tests ran and how they ended: a run where
    the QEMU tests did not run (or were skipped) must be visible in the summary."""
    # one outcome per test, the worst of its phases (a test that fails, then errors in
    # its teardown, counts once)
    order = ("passed", "skipped", "failed", "error")
    worst: dict[str, tuple[str, set[str]]] = {}
    for outcome in order:
        for report in terminalreporter.stats.get(outcome, []):
            if report.when != "call" and outcome == "passed":
                continue  # a passed setup/teardown is not a test that ran
            markers = {m for m in REAL_COMPONENTS if m in getattr(report, "keywords", {})}
            before = worst.get(report.nodeid)
            if before is None or order.index(outcome) > order.index(before[0]):
                worst[report.nodeid] = (outcome, markers)
    counts: dict[str, dict[str, int]] = {m: {} for m in REAL_COMPONENTS}
    for outcome, markers in worst.values():
        for marker in markers:
            counts[marker][outcome] = counts[marker].get(outcome, 0) + 1
    terminalreporter.section("real components")
    for marker, tally in counts.items():
        ended = ", ".join(f"{n} {o}" for o, n in tally.items()) or "none ran"
        terminalreporter.write_line(f"{marker:<8} ({REAL_COMPONENTS[marker]}): {ended}")


from tests.vms import hypervisor, transient_vm  # noqa: E402  (fixtures for qemu tests)

__all__ = ["FleetFactory", "fleet_xml", "hypervisor", "make_fleet", "store_url", "transient_vm"]
