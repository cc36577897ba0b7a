"""Config drift: the pure diff of two domain XMLs, and the watcher against the test driver."""

from __future__ import annotations

import asyncio
import uuid

import libvirt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import FleetFactory
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.records import DomainEvent, EventKind
from virtwatch.core.triage.drift import (
    ConfigDrift,
    DriftWatcher,
    diff_domain_xml,
    fingerprint,
    is_trigger,
)

BASE = """
<domain type='kvm'>
  <name>web-01</name>
  <uuid>6f1c1f0e-7a57-4a4c-9a51-6d4f3cc0a001</uuid>
  <title>Web front</title>
  <memory unit='MiB'>2048</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web-01.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:01'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'><target port='0'/></serial>
    <graphics type='vnc' port='-1' autoport='yes'/>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""

# what libvirt says about the same VM while it runs: ids, aliases, labels, vnet, pty, port
LIVE = """
<domain type='kvm' id='7'>
  <name>web-01</name>
  <uuid>6f1c1f0e-7a57-4a4c-9a51-6d4f3cc0a001</uuid>
  <title>Web front</title>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <resource><partition>/machine</partition></resource>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web-01.qcow2' index='1'/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:01'/>
      <source network='default'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <alias name='net0'/>
    </interface>
    <serial type='pty'><source path='/dev/pts/4'/><target port='0'/><alias name='serial0'/></serial>
    <graphics type='vnc' port='5901' autoport='yes'/>
    <memballoon model='virtio'><alias name='balloon0'/></memballoon>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+994</label></seclabel>
</domain>
"""


def swap(xml: str, old: str, new: str) -> str:
    assert old in xml, old
    return xml.replace(old, new)


def test_identical_definitions_do_not_drift() -> None:
    assert diff_domain_xml(BASE, BASE).empty
    assert diff_domain_xml(BASE, BASE).summary() == "no change"


def test_runtime_noise_is_not_drift() -> None:
    assert fingerprint(BASE) == fingerprint(LIVE)
    assert diff_domain_xml(BASE, LIVE).empty


def test_attribute_order_and_whitespace_do_not_matter() -> None:
    reordered = swap(
        BASE, "<target dev='vda' bus='virtio'/>", "<target  bus='virtio'\n dev='vda'/>"
    )
    assert fingerprint(reordered) == fingerprint(BASE)


def test_memory_and_vcpus_are_reported_in_units() -> None:
    new = swap(BASE, "<memory unit='MiB'>2048</memory>", "<memory unit='GiB'>4</memory>")
    new = swap(new, "<currentMemory unit='KiB'>2097152", "<currentMemory unit='KiB'>4194304")
    new = swap(new, "<vcpu placement='static'>2</vcpu>", "<vcpu current='2'>4</vcpu>")
    drift = diff_domain_xml(BASE, new)
    assert drift.memory_kib == (2 * 1024 * 1024, 4 * 1024 * 1024)
    assert drift.current_memory_kib is None  # it follows the maximum: no extra words
    assert drift.vcpus == (2, 4)
    assert drift.current_vcpus is None  # 2 before, 2 now (of a maximum of 4)
    assert drift.summary() == "memory 2 GiB → 4 GiB; vCPUs 2 → 4"
    assert drift.other == ()  # the vcpu element is reported by its own field
    assert drift.detail() == {"memory_kib": "2097152→4194304", "vcpus": "2→4"}


def test_current_memory_and_vcpus_are_reported_when_they_move_alone() -> None:
    new = swap(BASE, "<currentMemory unit='KiB'>2097152", "<currentMemory unit='KiB'>1048576")
    new = swap(new, "<vcpu placement='static'>2</vcpu>", "<vcpu current='1'>2</vcpu>")
    drift = diff_domain_xml(BASE, new)
    assert drift.memory_kib is None
    assert drift.vcpus is None
    assert drift.summary() == "current memory 2 GiB → 1 GiB; current vCPUs 2 → 1"


def test_added_removed_and_changed_devices_are_named() -> None:
    new = swap(
        BASE,
        "<memballoon model='virtio'/>",
        "<watchdog model='i6300esb' action='reset'/>"
        "<disk type='file' device='disk'><source file='/srv/data.img'/>"
        "<target dev='vdb' bus='virtio'/></disk><memballoon model='virtio'/>",
    )
    new = swap(new, "<interface type='network'>", "<interface type='bridge'>")
    new = swap(new, "<source network='default'/>", "<source bridge='br0'/>")
    new = swap(new, "<mac address='52:54:00:aa:bb:01'/>", "<mac address='52:54:00:aa:bb:02'/>")
    new = swap(new, "web-01.qcow2", "web-01-new.qcow2")
    drift = diff_domain_xml(BASE, new)
    assert [d.label for d in drift.added] == [
        "disk vdb (file /srv/data.img)",
        "interface 52:54:00:aa:bb:02 (bridge br0)",
        "watchdog i6300esb",
    ]
    assert [d.label for d in drift.removed] == ["interface 52:54:00:aa:bb:01 (network default)"]
    assert [d.label for d in drift.changed] == [
        "disk vda (file /var/lib/libvirt/images/web-01-new.qcow2)"
    ]
    summary = drift.summary()
    assert summary.startswith("+disk vdb (file /srv/data.img); +interface")
    assert "-interface 52:54:00:aa:bb:01 (network default)" in summary
    assert "~disk vda" in summary


def test_twin_devices_are_told_apart() -> None:
    one = "<input type='mouse' bus='ps2'/>"
    a = swap(BASE, "<memballoon", one + "<memballoon")
    b = swap(BASE, "<memballoon", one + one + "<memballoon")
    drift = diff_domain_xml(a, b)
    assert [d.kind for d in drift.added] == ["input"]
    assert drift.removed == ()


def test_title_metadata_and_other_parts_are_listed() -> None:
    new = swap(BASE, "<title>Web front</title>", "<title>Web front (old)</title>")
    new = swap(new, "</os>", "</os><metadata><app:x xmlns:app='urn:x'>1</app:x></metadata>")
    new = swap(new, "<name>web-01</name>", "<name>web-01-retired</name>")
    new = swap(new, "/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64")
    drift = diff_domain_xml(BASE, new)
    assert drift.other == ("emulator", "metadata", "title")
    assert drift.name == ("web-01", "web-01-retired")
    assert "renamed web-01 → web-01-retired" in drift.summary()


def test_secrets_never_reach_the_diff() -> None:
    with_pw = swap(BASE, "autoport='yes'/>", "autoport='yes' passwd='hunter2'/>")
    other_pw = swap(BASE, "autoport='yes'/>", "autoport='yes' passwd='swordfish'/>")
    drift = diff_domain_xml(with_pw, other_pw)
    assert drift.empty  # a changed password is masked on both sides
    added = diff_domain_xml(BASE, with_pw)
    assert "hunter2" not in repr(added)
    assert "hunter2" not in added.summary()


def test_uris_in_device_sources_are_redacted() -> None:
    net = swap(
        BASE,
        "<memballoon",
        "<disk type='network' device='cdrom'><source protocol='https' "
        "name='https://admin:s3cret@files.example/iso.iso'/><target dev='sda' bus='sata'/>"
        "</disk><memballoon",
    )
    drift = diff_domain_xml(BASE, net)
    assert "s3cret" not in drift.summary()
    assert "admin:***@files.example" in drift.summary()


def test_not_xml_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a domain XML"):
        diff_domain_xml(BASE, "<node/>")
    with pytest.raises(ValueError, match="not a domain XML"):
        fingerprint("<domain")


@given(
    mib=st.integers(min_value=1, max_value=1 << 20),
    unit=st.sampled_from([("KiB", 1 / 1024), ("MiB", 1), ("M", 1), ("GiB", 1024), ("G", 1024)]),
)
def test_memory_units_convert_to_kib(mib: int, unit: tuple[str, float]) -> None:
    name, per_mib = unit
    amount = mib / per_mib
    if amount != int(amount):
        return
    xml = swap(
        BASE, "<memory unit='MiB'>2048</memory>", f"<memory unit='{name}'>{int(amount)}</memory>"
    )
    drift = diff_domain_xml(BASE, xml)
    assert drift.memory_kib == (None if mib == 2048 else (2048 * 1024, mib * 1024))


def test_empty_is_true_only_without_changes() -> None:
    assert ConfigDrift().empty
    assert not ConfigDrift(other=("title",)).empty
    assert not ConfigDrift(vcpus=(1, 2)).empty


def test_triggers_are_define_device_and_metadata_events() -> None:
    def ev(kind: EventKind, **detail: str) -> DomainEvent:
        return DomainEvent("h", "u", "n", kind, "", 0.0, detail)

    assert is_trigger(ev(EventKind.DEVICE_ADDED))
    assert is_trigger(ev(EventKind.DEVICE_REMOVED))
    assert is_trigger(ev(EventKind.METADATA_CHANGE))
    assert is_trigger(ev(EventKind.LIFECYCLE, event="0", detail="1", name="defined"))
    assert is_trigger(ev(EventKind.LIFECYCLE, event="1", detail="0", name="undefined"))
    assert not is_trigger(ev(EventKind.LIFECYCLE, event="2", detail="0", name="started"))
    assert not is_trigger(ev(EventKind.CONFIG_CHANGE))
    assert not is_trigger(ev(EventKind.SPIKE))


# -- the watcher against libvirt's test driver ----------------------------------------------


def _test_domain(name: str, *, memory_mib: int = 256, vcpus: int = 1, extra: str = "") -> str:
    vm_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, name)
    return (
        f"<domain type='test'><name>{name}</name><uuid>{vm_uuid}</uuid>"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>"
        f"<os><type arch='x86_64'>hvm</type></os><devices>{extra}</devices></domain>"
    )


@pytest.mark.libvirt
async def test_the_watcher_publishes_a_change_after_a_redefine(make_fleet: FleetFactory) -> None:
    uri = make_fleet(3)
    hub = Hub()
    seen = hub.subscribe(DomainEvent)
    source = SingleConnection(uri)
    clock = [1000.0]
    watcher = DriftWatcher(source, hub, host="hv-test", interval_s=3600, clock=lambda: clock[0])
    try:
        assert await watcher.scan() == []  # first sight is the baseline
        assert len(watcher.known) == 3
        async with source.connection() as b:
            await b.call(lambda conn: conn.defineXML(_test_domain("extra")).UUIDString())
            assert await watcher.scan() == []  # a new VM is not drift
            bigger = _test_domain(
                "extra",
                memory_mib=512,
                vcpus=2,
                extra="<watchdog model='i6300esb' action='reset'/>",
            )
            await b.call(lambda conn: conn.defineXML(bigger).UUIDString())
        clock[0] = 2000.0
        (event,) = await watcher.scan()
        assert event.kind is EventKind.CONFIG_CHANGE
        assert (event.host, event.vm_name, event.at) == ("hv-test", "extra", 2000.0)
        assert event.summary == (
            "definition changed: +watchdog i6300esb; memory 256 MiB → 512 MiB; vCPUs 1 → 2"
        )
        assert event.detail["vcpus"] == "1→2"
        assert event.detail["previous_fingerprint"] != event.detail["fingerprint"]
        assert seen.get_nowait() == event
        assert await watcher.scan() == []  # nothing new since
        async with source.connection() as b:
            await b.call(lambda conn: conn.lookupByName("extra").undefine())
        await watcher.scan()
        assert len(watcher.known) == 3  # forgotten once gone
    finally:
        await source.close()


@pytest.mark.libvirt
async def test_the_watcher_rescans_a_vm_after_its_define_event(make_fleet: FleetFactory) -> None:
    uri = make_fleet(2)
    hub = Hub()
    changes = hub.subscribe(DomainEvent)
    source = SingleConnection(uri)
    watcher = DriftWatcher(source, hub, host="hv-test", interval_s=3600, debounce_s=0.01)
    task = asyncio.create_task(watcher.run())
    try:
        for _ in range(100):
            if watcher.scans:
                break
            await asyncio.sleep(0.02)

        def read(conn: libvirt.virConnect) -> tuple[str, str]:
            dom = conn.lookupByName("vm-0000")
            return dom.UUIDString(), dom.XMLDesc(0)

        async with source.connection() as b:
            vm_uuid, xml = await b.call(read)
            new = xml.replace("</name>", "</name><description>retired</description>", 1)
            await b.call(lambda conn: conn.defineXML(new).UUIDString())
        # what events.py would publish for the redefine
        hub.publish(
            DomainEvent(
                "hv-test",
                vm_uuid,
                "vm-0000",
                EventKind.LIFECYCLE,
                "defined: updated",
                1.0,
                {"event": "0", "detail": "1", "name": "defined"},
            )
        )
        found = None
        for _ in range(200):
            item = changes.get_nowait()
            if item is not None and item.kind is EventKind.CONFIG_CHANGE:
                found = item
                break
            await asyncio.sleep(0.02)
        assert found is not None
        assert found.vm_uuid == vm_uuid
        assert found.summary == "definition changed: changed: description"
        assert watcher.scans == 2  # the full first scan, then just that VM
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await source.close()


@pytest.mark.libvirt
async def test_a_failing_connection_is_reported_not_raised() -> None:
    from virtwatch.core.incidents import ErrorReport

    hub = Hub()
    reports = hub.subscribe(ErrorReport)
    source = SingleConnection("test:///nonexistent/path/node.xml", open_timeout_s=5)
    watcher = DriftWatcher(source, hub, host="hv-x", interval_s=3600)
    task = asyncio.create_task(watcher.run())
    try:
        report = await asyncio.wait_for(reports.get(), 10)
        assert report.host == "hv-x"
        assert report.error.message
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await source.close()
