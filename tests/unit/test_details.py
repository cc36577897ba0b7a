"""Domain details parsed from XML, extra stats per device, and which events clear them."""

from __future__ import annotations

import asyncio

import pytest

from virtwatch.core.collect.details import (
    TAGS_NS,
    clear_details_on_events,
    clears_details,
    parse_domain_xml,
    parse_extra,
)
from virtwatch.core.collect.loader import DataLoader
from virtwatch.core.hub import Hub
from virtwatch.core.records import DomainEvent, EventKind

XML = f"""
<domain type='kvm' id='7'>
  <name>web-01</name>
  <uuid>10000000-0000-4000-8000-000000000001</uuid>
  <title>Web front 1</title>
  <description>nginx &lt;prod&gt; — do not reboot on Fridays</description>
  <metadata>
    <vw:tags xmlns:vw="{TAGS_NS}">web, prod  eu-west</vw:tags>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
    <other:tags xmlns:other="{TAGS_NS}">
      <other:tag>prod</other:tag><other:tag>pci</other:tag>
    </other:tags>
  </metadata>
  <memory unit='GiB'>4</memory>
  <currentMemory unit='MiB'>2048</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web-01.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='volume' device='disk'>
      <source pool='fast' volume='web-01-data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/image'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:dd:ee:ff'/>
      <source bridge='br0'/>
    </interface>
  </devices>
</domain>
"""


def test_everything_an_admin_wants_from_a_definition() -> None:
    d = parse_domain_xml(XML)
    assert d.name == "web-01"
    assert d.uuid == "10000000-0000-4000-8000-000000000001"
    assert d.title == "Web front 1"
    assert d.description == "nginx <prod> — do not reboot on Fridays"
    assert d.tags == ("web", "prod", "eu-west", "pci")
    assert d.metadata_namespaces == (TAGS_NS, "http://libosinfo.org/xmlns/libvirt/domain/1.0")
    assert (d.vcpus, d.memory_kib, d.current_memory_kib) == (2, 4 * 1024**2, 2048 * 1024)
    assert (d.os_type, d.arch, d.machine) == ("hvm", "x86_64", "pc-q35-7.2")
    vda, cdrom, vdb, vdc = d.disks
    assert (vda.target, vda.kind, vda.source, vda.bus, vda.format) == (
        "vda",
        "file",
        "/var/lib/libvirt/images/web-01.qcow2",
        "virtio",
        "qcow2",
    )
    assert cdrom.device == "cdrom"
    assert cdrom.source is None  # an empty drive
    assert cdrom.readonly
    assert vdb.source == "fast/web-01-data"
    assert vdc.source == "rbd:pool/image"
    nat, bridged = d.nics
    assert (nat.mac, nat.kind, nat.source, nat.model, nat.target) == (
        "52:54:00:aa:bb:cc",
        "network",
        "default",
        "virtio",
        "vnet3",
    )
    assert (bridged.source, bridged.target, bridged.model) == ("br0", None, None)


def test_a_minimal_definition() -> None:
    d = parse_domain_xml("<domain><name>x</name></domain>")
    assert (d.name, d.title, d.disks, d.nics, d.tags) == ("x", "", (), (), ())
    assert d.memory_kib is None


@pytest.mark.parametrize("bad", ["", "<domain>", "<network><name>x</name></network>"])
def test_what_is_not_a_definition_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="not"):
        parse_domain_xml(bad)


def test_extra_stats_per_vcpu_disk_nic_and_balloon() -> None:
    rec = {
        "state.state": 1,
        "vcpu.current": 2,
        "vcpu.maximum": 4,
        "vcpu.0.state": 1,
        "vcpu.0.time": 100,
        "vcpu.0.delay": 7,
        "vcpu.1.state": 2,
        "vcpu.1.time": 50,
        "balloon.rss": 1000,
        "balloon.swap_in": 3,
        "block.count": 1,
        "block.0.name": "vda",
        "block.0.rd.bytes": 4096,
        "net.count": 1,
        "net.0.name": "vnet0",
        "net.0.tx.bytes": 9,
    }
    x = parse_extra("u-1", rec, 5.0)
    assert [(v.index, v.state, v.time_ns, v.delay_ns) for v in x.vcpus] == [
        (0, 1, 100, 7),
        (1, 2, 50, None),
    ]
    assert x.blocks[0].rd_bytes == 4096
    assert x.nets[0].tx_bytes == 9
    assert x.balloon == {"rss": 1000, "swap_in": 3}
    assert x.stats.vcpu_delay_ns == 7
    assert x.measured_at == 5.0


def event(kind: EventKind, uuid: str = "u-1", host: str = "h1") -> DomainEvent:
    return DomainEvent(host, uuid, "web-01", kind, "words", 1.0)


def test_which_events_clear_details() -> None:
    for kind in (
        EventKind.LIFECYCLE,
        EventKind.DEVICE_ADDED,
        EventKind.DEVICE_REMOVED,
        EventKind.METADATA_CHANGE,
        EventKind.CONFIG_CHANGE,
    ):
        assert clears_details(event(kind))
    for kind in (EventKind.REBOOT, EventKind.IO_ERROR, EventKind.WATCHDOG, EventKind.SPIKE):
        assert not clears_details(event(kind))


async def test_events_on_the_hub_clear_only_their_vm_on_their_host() -> None:
    calls: list[list[str]] = []

    async def batch(keys: list[str]) -> dict[str, str | BaseException]:
        calls.append(keys)
        return {k: f"details of {k}" for k in keys}

    hub = Hub()
    h1 = DataLoader(batch, name="h1")
    h2 = DataLoader(batch, name="h2")
    task = asyncio.create_task(
        clear_details_on_events(hub.subscribe(DomainEvent), {"h1": h1, "h2": h2})
    )
    await h1.load_many(["u-1", "u-2"])
    await h2.load("u-1")
    hub.publish(event(EventKind.REBOOT))  # changes nothing in the definition
    hub.publish(event(EventKind.METADATA_CHANGE, "u-1", "h1"))
    await asyncio.sleep(0.01)
    await h1.load_many(["u-1", "u-2"])
    await h2.load("u-1")
    hub.close()
    await task
    assert calls == [["u-1", "u-2"], ["u-1"], ["u-1"]]
