"""The collector against real QEMU VMs under libvirtd."""

from __future__ import annotations

import asyncio

import pytest

from tests.vms import QEMU_URI, VmFactory
from virtwatch.core.collect.collector import Collector, CollectorSettings
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.model import DomainState, MemorySource

pytestmark = pytest.mark.qemu


async def test_a_transient_vm_appears_in_the_snapshot(transient_vm: VmFactory) -> None:
    dom = await transient_vm()
    source = SingleConnection(QEMU_URI)
    try:
        # every tick asks for the slow groups too (balloon), not only every 10 s
        settings = CollectorSettings(slow_interval_s=0.1)
        collector = Collector(source, lambda _x: None, settings=settings)
        snap = await collector.tick()
        assert dom.UUIDString() in snap.by_uuid()  # seen on the very first tick
        # right after its start the VM's job can be busy and NOWAIT skips its balloon
        # group (memory unknown, never zero): the memory arrives on a later tick
        for _ in range(20):
            if snap.by_uuid()[dom.UUIDString()].mem_used_kib is not None:
                break
            await asyncio.sleep(0.3)
            collector.force_tick()
            snap = await collector.tick()
    finally:
        await source.close()
    found = snap.by_uuid()[dom.UUIDString()]
    assert found.name == dom.name()
    assert found.state is DomainState.RUNNING
    assert found.state_text == "running: booted"
    assert found.vcpus == 1
    assert found.mem_alloc_kib == 64 * 1024
    assert found.mem_source is MemorySource.RSS
    assert (found.mem_used_kib or 0) > 0
    assert found.started_at is not None
    assert found.started_at <= snap.taken_at
    assert snap.host_sample is not None
    assert snap.host_sample.source == "psutil"


async def test_cpu_time_increases_across_ticks(transient_vm: VmFactory) -> None:
    dom = await transient_vm()
    source = SingleConnection(QEMU_URI)
    try:
        collector = Collector(source, lambda _x: None)
        first = (await collector.tick()).by_uuid()[dom.UUIDString()]
        await asyncio.sleep(1.0)
        second = (await collector.tick()).by_uuid()[dom.UUIDString()]
    finally:
        await source.close()
    assert first.cpu_time_ns is not None
    assert second.cpu_time_ns is not None
    assert second.cpu_time_ns > first.cpu_time_ns
    assert first.cpu_pct is None  # no previous counter: unknown, not zero
    assert second.cpu_pct is not None
    assert 0.0 < second.cpu_pct <= 100.0
    assert second.cpu_host_pct is not None
    assert second.cpu_host_pct <= second.cpu_pct


async def test_a_destroyed_vm_disappears(transient_vm: VmFactory) -> None:
    dom = await transient_vm()
    uuid = dom.UUIDString()
    source = SingleConnection(QEMU_URI)
    try:
        collector = Collector(source, lambda _x: None)
        assert uuid in (await collector.tick()).by_uuid()
        await asyncio.to_thread(dom.destroy)
        assert uuid not in (await collector.tick()).by_uuid()
    finally:
        await source.close()


async def test_snapshot_json_lists_what_virsh_lists(transient_vm: VmFactory) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    await transient_vm()
    await transient_vm()
    virsh = await asyncio.to_thread(
        subprocess.run,
        ["virsh", "-c", QEMU_URI, "list", "--all", "--uuid"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [
            str(Path(sys.executable).with_name("virtwatch")),
            "snapshot",
            "--json",
            "--uri",
            QEMU_URI,
            "--interval",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    listed = {line.strip() for line in virsh.stdout.splitlines() if line.strip()}
    assert {d["uuid"] for d in json.loads(out.stdout)["domains"]} == listed
