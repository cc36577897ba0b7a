"""SVG snapshots of every screen at 80x24 and 160x48, with fixed data and a frozen
clock. Each docstring says what the image must show."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.tui.scenes import build_app, dashboard, then

SnapCompare = Callable[..., bool]
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
DASHBOARD_SIZES = [
    *SIZES[:1],
    pytest.param((120, 40), id="120x40"),
    *SIZES[1:],
    pytest.param((200, 60), id="200x60"),
]


@pytest.mark.parametrize("size", DASHBOARD_SIZES)
def test_dashboard(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """Header, one line for hv-07 at every size: qemu:///system, connected, 'VMs 8/12
    running', CPU and MEM figures; from 120 columns also hv-07.example.net and the
    gauges' bars, and at 160 and 200 also libvirt 9.0.0 and QEMU 7.2.22; then hv-08
    reconnecting with its retry and the ssh message. Machines: 12 VMs by name ▲, the
    literal '[bold red]x[/]' first, CPU with sparklines, 'shut off' dimmed; at 120x40
    every column up to Uptime, with short labels (Mem used/alloc, Disk rd/wr, Net rx/tx)
    and web-01's 'running ✖ start fai…' cut; at 160 and 200 the long labels and nothing
    cut; at 80x24 State cut to 18 ('shut off: shut do…') and the columns from Memory on
    off to the right. Performance: host CPU/MEM sparklines, top CPU (build-runner).
    Health: 2 alerts banner, host.disk crit first. Errors: three rows, the hostile
    message shown as typed. Below 180 columns the three small panes sit side by side
    under the table; at 200x60 they form a column to its right with Errors below."""
    app, hub = build_app()
    assert snap_compare(app, terminal_size=size, run_before=dashboard(hub))


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_two_hosts_filtered(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """Two hosts: a Host column appears; the filter box reads 'web' and the table holds
    only web-01 (both hosts) and web-02; the pane subtitle says '3 of 15 · /web'."""
    app, hub = build_app()
    scene = then(dashboard(hub, hosts=2), "slash", "w", "e", "b")
    assert snap_compare(app, terminal_size=size, run_before=scene)


@pytest.mark.parametrize("size", SIZES)
def test_machines_maximised(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """'z' maximised the Machines pane: it fills the screen below nothing but the footer;
    rows are sorted by CPU descending (build-runner 97.9% first, 'CPU % ▼')."""
    app, hub = build_app()
    scene = then(dashboard(hub), "o", "o", "o", "O", "z")
    assert snap_compare(app, terminal_size=size, run_before=scene)


@pytest.mark.parametrize("size", SIZES)
def test_confirm_shutdown(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """A dialog over the dashboard: 'Shutdown this VM?' naming web-01 on qemu:///system,
    buttons 'Shutdown (y)' and 'Cancel (n)' with Cancel focused."""
    app, hub = build_app()
    scene = then(dashboard(hub), "d", select="web-01")
    assert snap_compare(app, terminal_size=size, run_before=scene)


@pytest.mark.parametrize("size", SIZES)
def test_force_off_typed_count(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """Three marked VMs (web-01, web-02, cache-01): 'Force off these 3 VMs?', the
    power-cut warning, 'Type 3 to confirm' and an empty input."""
    app, hub = build_app()

    async def scene(pilot: object) -> None:
        from textual.pilot import Pilot

        assert isinstance(pilot, Pilot)
        await dashboard(hub)(pilot)
        table = app.dashboard.machines
        for name in ("web-01", "web-02", "cache-01"):
            key = next(k for k, c in table.shown().items() if c[2] == name)
            table.toggle_mark(key)
        await pilot.press("F")
        for _ in range(4):
            await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=scene)


@pytest.mark.parametrize("size", SIZES)
def test_vm_detail(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """web-01's detail: facts (running: booted, up 3h12m, uuid, vCPU 2, memory), recent
    rows (start failed, events started/stopped, reboot verified by alice@10.0.0.5,
    MACHINE_INVALID_STATE); the definition box saying 'device figures: not available
    here' (no live details source in this scene) above the definition; four plots (CPU %,
    Memory, Disk, Network) over 5 min from memory with vertical event markers; the span bar
    with '1 5 min' highlighted."""
    app, hub = build_app()
    scene = then(dashboard(hub), "enter", select="web-01")
    assert snap_compare(app, terminal_size=size, run_before=scene)


@pytest.mark.parametrize("size", SIZES)
def test_tasks(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """Tasks: running 'shutdown web-02' first, then 'start backup' retrying 2/3 'in 2s'
    with 'TIMEOUT: job lock held', then the succeeded health task and the failed force
    off; subtitle '2 running · 2 finished'; footer shows 'c Cancel task'."""
    app, hub = build_app()
    scene = then(dashboard(hub), "t")
    assert snap_compare(app, terminal_size=size, run_before=scene)


@pytest.mark.parametrize("size", SIZES)
def test_error_record(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """The full record of LIBVIRT_CONNECTION_LOST: severity critical, host qemu:///system,
    the message, the hint in green, count 42, first and last seen in UTC, libvirt code
    1 domain 7, and the context keys."""
    app, hub = build_app()
    scene = then(dashboard(hub), "tab", "tab", "tab", "down", "enter")
    assert snap_compare(app, terminal_size=size, run_before=scene)


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """Help over the dashboard: sections Everywhere, Tables, Dashboard, Machines pane
    (Start ... Resume, Mark, Sort), Health pane, Errors pane, each key in cyan."""
    app, hub = build_app()
    scene = then(dashboard(hub), "question_mark")
    assert snap_compare(app, terminal_size=size, run_before=scene)


@pytest.mark.parametrize("size", SIZES)
def test_read_only_dashboard(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """With --read-only the footer offers no action keys (no Start, Shutdown, Force off);
    everything else is as on the normal dashboard."""
    app, hub = build_app(read_only=True)
    assert snap_compare(app, terminal_size=size, run_before=dashboard(hub))
