"""The collector against real QEMU VMs with a qcow2 disk and a NIC, so block and interface
counters are real: one guest loops reading and writing its disk (a 44-byte boot sector),
the other network-boots on an isolated libvirt network and sends DHCP. Every rate is
checked across ticks: present, never negative, and above zero where the guest is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from tests.vms import QEMU_URI, unique_name
from virtwatch.core.collect.collector import Collector, CollectorSettings
from virtwatch.core.collect.hostsample import RemoteHostSampler
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.model import DomainSample, DomainState, MemorySource, Snapshot

pytestmark = pytest.mark.qemu

# x86 real mode, loaded at 0x7c00 by the BIOS: forever { int 13h read sector 2 to 0x8000;
# int 13h write it to sector 3 } (assembled with `as --32`, .code16; see the module doc)
#   xor ax,ax; mov ds/es/ss,ax; mov sp,0x7c00; mov bl,dl
#   loop: mov dl,bl; mov si,0x8000; push bx; mov bx,si
#         mov ax,0x0201; mov cx,2; xor dh,dh; int 13h
#         mov ax,0x0301; mov cx,3; xor dh,dh; int 13h; pop bx; jmp loop
DISK_LOOP = bytes.fromhex(
    "31c08ed88ec08ed0bc007c88d388dabe00805389f3b80102b9020030f6cd13b80103b9030030f6cd135bebe1"
)


@dataclass(frozen=True)
class IoGuests:
    disk_busy: str  # uuid of the guest looping on its disk
    net_busy: str  # uuid of the guest network-booting


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def image_dir() -> Iterator[Path]:
    """A directory QEMU (running as libvirt-qemu) can reach, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="vwio-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _network_xml(name: str, bridge: str, subnet: int) -> str:
    return f"""
<network>
  <name>{name}</name>
  <bridge name='{bridge}'/>
  <ip address='10.254.{subnet}.1' netmask='255.255.255.0'>
    <dhcp><range start='10.254.{subnet}.10' end='10.254.{subnet}.50'/></dhcp>
  </ip>
</network>"""


def _vm_xml(name: str, image: Path, network: str, boot: str) -> str:
    return f"""
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='{boot}'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{image}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='{network}'/>
      <model type='virtio'/>
    </interface>
    <memballoon model='none'/>
  </devices>
</domain>"""


@pytest.fixture
async def io_guests(hypervisor: None, image_dir: Path) -> AsyncIterator[IoGuests]:
    """An isolated network with DHCP and two guests on it; all destroyed in finally."""
    blank = image_dir / "blank.qcow2"
    _qemu_img("create", "-f", "qcow2", str(blank), "16M")
    raw = bytearray(8 * 512)
    raw[: len(DISK_LOOP)] = DISK_LOOP
    raw[510:512] = b"\x55\xaa"
    (image_dir / "loop.raw").write_bytes(bytes(raw))
    looping = image_dir / "loop.qcow2"
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(image_dir / "loop.raw"), str(looping))
    _qemu_img("resize", "-q", str(looping), "16M")
    conn = libvirt.open(QEMU_URI)
    net: libvirt.virNetwork | None = None
    doms: list[libvirt.virDomain] = []
    try:
        net_name = unique_name("vwnet")
        for _attempt in range(5):  # a subnet another network already uses: pick another
            bridge = f"vw{uuid.uuid4().hex[:8]}"
            try:
                net = conn.networkCreateXML(_network_xml(net_name, bridge, random.randint(2, 250)))
                break
            except libvirt.libvirtError:
                continue
        assert net is not None, "could not create an isolated test network"
        disk_vm = conn.createXML(_vm_xml(unique_name(), looping, net_name, "hd"), 0)
        doms.append(disk_vm)
        net_vm = conn.createXML(_vm_xml(unique_name(), blank, net_name, "network"), 0)
        doms.append(net_vm)
        yield IoGuests(disk_vm.UUIDString(), net_vm.UUIDString())
    finally:
        for dom in doms:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
        if net is not None:
            with contextlib.suppress(libvirt.libvirtError):
                net.destroy()
        conn.close()


def _rates(d: DomainSample) -> list[float | None]:
    assert d.disk is not None
    assert d.net is not None
    return [
        d.disk.rd_bps,
        d.disk.wr_bps,
        d.disk.rd_iops,
        d.disk.wr_iops,
        d.net.rx_bps,
        d.net.tx_bps,
        d.net.rx_pps,
        d.net.tx_pps,
        d.net.errs_ps,
        d.net.drops_ps,
    ]


async def test_block_and_interface_rates_are_real(io_guests: IoGuests) -> None:
    source = SingleConnection(QEMU_URI)
    every_tick = CollectorSettings(slow_interval_s=0.1)  # the slow groups on every tick
    snaps: list[Snapshot] = []
    try:
        collector = Collector(source, lambda _x: None, interval_s=0.5, settings=every_tick)
        async with asyncio.timeout(90):
            while True:
                snaps.append(await collector.tick())
                seen = [s.by_uuid() for s in snaps[1:]]
                disk_busy = any(
                    (d := s[io_guests.disk_busy]).disk is not None and (d.disk.wr_bps or 0) > 0
                    for s in seen
                )
                net_busy = any(
                    (d := s[io_guests.net_busy]).net is not None and (d.net.tx_pps or 0) > 0
                    for s in seen
                )
                if len(snaps) >= 4 and disk_busy and net_busy:
                    break
                await asyncio.sleep(0.5)
    finally:
        await source.close()

    for snap in snaps:
        assert snap.stats_calls == 1  # QEMU supports every group: one call per tick
        assert snap.unsupported_groups == ()
        assert {"block", "interface", "balloon", "vcpu"} <= set(snap.groups)

    # a VM whose job is busy right after its start can be skipped by NOWAIT (its block
    # values unknown, not zero): judge from the first tick that knew both guests' counters
    def known(snap: Snapshot) -> bool:
        return all(
            (d := snap.by_uuid()[g]).disk is not None and d.disk.rd_bytes is not None
            for g in (io_guests.disk_busy, io_guests.net_busy)
        )

    snaps = snaps[next(i for i, snap in enumerate(snaps) if known(snap)) :]
    assert len(snaps) >= 2
    first = snaps[0].by_uuid()
    for guest in (io_guests.disk_busy, io_guests.net_busy):
        d = first[guest]
        assert d.disk is not None
        assert d.net is not None
        assert d.disk.devices == ("vda",)
        assert d.net.devices[0].startswith(("vnet", "vw", "tap"))
        assert d.disk.capacity_bytes == 16 * 1024 * 1024
    previous: dict[str, DomainSample] = {}
    for snap in snaps[1:]:
        for guest in (io_guests.disk_busy, io_guests.net_busy):
            d = snap.by_uuid()[guest]
            assert d.state is DomainState.RUNNING
            assert d.mem_source is MemorySource.RSS  # no balloon device: the host's view
            assert (d.mem_used_kib or 0) > 0
            assert d.vcpu_delay_pct is not None
            assert 0 <= d.vcpu_delay_pct <= 100
            assert d.disk is not None
            assert d.net is not None
            assert d.disk.measured_at == d.measured_at == snap.taken_at
            for rate in _rates(d):
                assert rate is not None
                assert rate >= 0
            before = previous.get(guest)
            if before is not None and before.disk is not None and before.net is not None:
                for attr in ("rd_bytes", "wr_bytes", "rd_reqs", "wr_reqs"):
                    assert getattr(d.disk, attr) >= getattr(before.disk, attr)
                assert (d.net.tx_pkts or 0) >= (before.net.tx_pkts or 0)
            previous[guest] = d
    last = snaps[-1].by_uuid()
    looping = last[io_guests.disk_busy]
    assert looping.disk is not None
    assert (looping.disk.rd_reqs or 0) > 0
    assert (looping.disk.wr_bytes or 0) > 0
    assert (looping.cpu_pct or 0) > 0
    booting = last[io_guests.net_busy]
    assert booting.net is not None
    assert (booting.net.tx_pkts or 0) > 0  # DHCP discovers of the boot ROM


async def test_the_slow_groups_are_carried_with_their_own_time(io_guests: IoGuests) -> None:
    source = SingleConnection(QEMU_URI)
    try:
        collector = Collector(
            source, lambda _x: None, settings=CollectorSettings(slow_interval_s=3600)
        )
        full = await collector.tick()
        await asyncio.sleep(0.3)
        cheap = await collector.tick()
    finally:
        await source.close()
    assert "block" in full.groups
    assert cheap.groups == ("state", "cpu_total", "vcpu")
    d = cheap.by_uuid()[io_guests.disk_busy]
    assert d.disk is not None
    assert d.disk.measured_at == full.taken_at < d.measured_at == cheap.taken_at
    assert d.mem_measured_at == full.taken_at
    assert d.cpu_pct is not None  # the cheap groups still give rates every tick


async def test_a_host_sample_from_libvirt_as_a_remote_host_gets_it(hypervisor: None) -> None:
    source = SingleConnection(QEMU_URI)
    try:
        collector = Collector(source, lambda _x: None, host_sampler=RemoteHostSampler())
        await collector.tick()
        await asyncio.sleep(0.3)
        snap = await collector.tick()
    finally:
        await source.close()
    hs = snap.host_sample
    assert hs is not None
    assert hs.source == "libvirt"
    assert hs.cpu_pct is not None
    assert 0 <= hs.cpu_pct <= 100
    assert hs.mem_total_kib is not None
    assert hs.mem_used_kib is not None
    assert 0 < hs.mem_used_kib < hs.mem_total_kib
    assert hs.cpus == snap.facts.cpus
