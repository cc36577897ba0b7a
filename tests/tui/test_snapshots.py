"""SVG snapshots of the dashboard with fixed data and a frozen clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from tests.canned import NOW, fleet_snapshot
from virtwatch.core.hub import Hub
from virtwatch.tui.app import VirtwatchApp

SnapCompare = Callable[..., bool]


def build_app() -> tuple[VirtwatchApp, Hub]:
    hub = Hub()
    return VirtwatchApp(hub, clock=lambda: NOW), hub


def test_dashboard_table(snap_compare: SnapCompare) -> None:
    """The header names hv-07.example.net, libvirt 9.0.0, QEMU 7.2.22,
    8 of 12 VMs
    running, host CPU 31.5%; the table lists 12 VMs sorted by name with decoded states
    ('paused: I/O error' for staging-api, 'shut off: crashed' for legacy-crm), uptimes for
    running VMs, '—' where a value is unknown (win2022-rdp's CPU), and the VM literally
    named '[bold red]x[/]' shown as those characters, not as red bold text."""
    app, hub = build_app()

    async def publish(pilot: Pilot[Any]) -> None:
        hub.publish(fleet_snapshot())
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 30), run_before=publish)
