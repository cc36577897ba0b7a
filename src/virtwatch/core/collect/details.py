"""Per-VM details for the screens that show a few VMs at a time, loaded in batches.

`parse_domain_xml` (pure) reads a definition: title, description, disks, NICs (MAC,
network), metadata tags. `details_loader` fetches definitions through a DataLoader
(cached until the VM's define/device/metadata events clear it: `clear_details_on_events`);
`extra_stats_loader` fetches live per-device stats with ONE domainListGetStats per batch.
Tags: any element in the namespace TAGS_NS under <metadata>, its text split on commas or
whitespace, or its <tag> children (`virsh metadata VM --uri TAGS_NS --key vw --set
'<tags>web, prod</tags>'`).
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import libvirt

from virtwatch.core.collect.loader import DEFAULT_CACHE_SIZE, BatchFn, DataLoader
from virtwatch.core.collect.rates import MAX_BYTES_PER_S, MAX_EVENTS_PER_S, counter_rate
from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt
from virtwatch.core.hub import Subscription
from virtwatch.core.libvirt.calls import is_connection_dead
from virtwatch.core.libvirt.connection import ConnectionSource
from virtwatch.core.libvirt.stats import (
    MAX_VCPUS,
    STATS_BALLOON,
    STATS_BLOCK,
    STATS_CPU_TOTAL,
    STATS_INTERFACE,
    STATS_STATE,
    STATS_VCPU,
    BlockCounters,
    DomainStats,
    NetCounters,
    parse_record,
)
from virtwatch.core.libvirt.uri import redact_uri
from virtwatch.core.records import DomainEvent, EventKind

TAGS_NS = "https://virtwatch.dev/xmlns/tags/1"
EXTRA_GROUPS = (
    STATS_STATE | STATS_CPU_TOTAL | STATS_BALLOON | STATS_VCPU | STATS_INTERFACE | STATS_BLOCK
)
# events after which a cached definition may be wrong: (un)define and start/stop (the live
# XML names devices), device hot(un)plug, metadata edits, drift found by comparison
DETAIL_EVENT_KINDS = frozenset(
    {
        EventKind.LIFECYCLE,
        EventKind.DEVICE_ADDED,
        EventKind.DEVICE_REMOVED,
        EventKind.METADATA_CHANGE,
        EventKind.CONFIG_CHANGE,
    }
)
_TAG_SPLIT = re.compile(r"[,\s]+")


@dataclass(frozen=True, slots=True)
class DiskInfo:
    target: str  # vda, sdb
    device: str  # disk, cdrom, floppy, lun
    kind: str  # file, block, network, volume, dir
    source: str | None  # path, device, pool/volume or protocol:name; None: empty drive
    bus: str | None
    format: str | None  # qcow2, raw
    readonly: bool


@dataclass(frozen=True, slots=True)
class NicInfo:
    mac: str | None
    kind: str  # network, bridge, direct, user, ethernet, ...
    source: str | None  # network name, bridge, or host device
    model: str | None
    target: str | None  # host-side device (vnet3) while the VM runs


@dataclass(frozen=True, slots=True)
class DomainDetails:
    uuid: str
    name: str
    title: str
    description: str
    disks: tuple[DiskInfo, ...]
    nics: tuple[NicInfo, ...]
    tags: tuple[str, ...]
    metadata_namespaces: tuple[str, ...]  # every namespace under <metadata>, in order
    os_type: str | None
    arch: str | None
    machine: str | None
    vcpus: int | None
    memory_kib: int | None
    current_memory_kib: int | None


_UNIT_KIB = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "k": 1,
    "kib": 1,
    "kb": 1000 / 1024,
    "m": 1024,
    "mib": 1024,
    "mb": 1000**2 / 1024,
    "g": 1024**2,
    "gib": 1024**2,
    "gb": 1000**3 / 1024,
    "t": 1024**3,
    "tib": 1024**3,
    "tb": 1000**4 / 1024,
}


def _kib(el: ET.Element | None) -> int | None:
    if el is None or not (el.text or "").strip():
        return None
    try:
        value = int((el.text or "").strip())
    except ValueError:
        return None
    factor = _UNIT_KIB.get((el.get("unit") or "KiB").lower())
    return None if factor is None else int(value * factor)


def _int(el: ET.Element | None) -> int | None:
    try:
        return int((el.text or "").strip()) if el is not None else None
    except ValueError:
        return None


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _disk(el: ET.Element) -> DiskInfo:
    kind = el.get("type", "file")
    src = el.find("source")
    source = None
    if src is not None:
        if kind == "volume":
            pool, vol = src.get("pool"), src.get("volume")
            source = f"{pool}/{vol}" if pool and vol else pool or vol
        elif kind == "network":
            proto, name = src.get("protocol"), src.get("name")
            source = f"{proto}:{name}" if proto and name else name
        else:
            source = src.get("file") or src.get("dev") or src.get("dir") or src.get("name")
    target = el.find("target")
    driver = el.find("driver")
    return DiskInfo(
        target=target.get("dev", "?") if target is not None else "?",
        device=el.get("device", "disk"),
        kind=kind,
        source=source,
        bus=target.get("bus") if target is not None else None,
        format=driver.get("type") if driver is not None else None,
        readonly=el.find("readonly") is not None,
    )


def _nic(el: ET.Element) -> NicInfo:
    mac, src, model, target = (el.find(t) for t in ("mac", "source", "model", "target"))
    source = None
    if src is not None:
        source = src.get("network") or src.get("bridge") or src.get("dev") or src.get("name")
    return NicInfo(
        mac=mac.get("address") if mac is not None else None,
        kind=el.get("type", "?"),
        source=source,
        model=model.get("type") if model is not None else None,
        target=target.get("dev") if target is not None else None,
    )


def _tags(metadata: ET.Element | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if metadata is None:
        return (), ()
    tags: list[str] = []
    namespaces: list[str] = []
    for child in metadata:
        ns = child.tag[1:].split("}", 1)[0] if child.tag.startswith("{") else ""
        if ns and ns not in namespaces:
            namespaces.append(ns)
        if ns != TAGS_NS:
            continue
        texts = [c.text or "" for c in child if c.tag == f"{{{TAGS_NS}}}tag"] or [child.text or ""]
        for text in texts:
            tags.extend(t for t in _TAG_SPLIT.split(text) if t and t not in tags)
    return tuple(tags), tuple(namespaces)


def parse_domain_xml(xml: str) -> DomainDetails:
    """A libvirt domain definition -> DomainDetails. Raises ValueError when it is not one."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise ValueError(f"not XML: {err}") from None
    if root.tag != "domain":
        raise ValueError(f"not a domain definition (root <{root.tag}>)")
    devices = root.find("devices")
    os_type = root.find("os/type")
    tags, namespaces = _tags(root.find("metadata"))
    return DomainDetails(
        uuid=_text(root.find("uuid")),
        name=_text(root.find("name")),
        title=_text(root.find("title")),
        description=_text(root.find("description")),
        disks=tuple(_disk(d) for d in devices.findall("disk")) if devices is not None else (),
        nics=tuple(_nic(n) for n in devices.findall("interface")) if devices is not None else (),
        tags=tags,
        metadata_namespaces=namespaces,
        os_type=_text(os_type) or None,
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        vcpus=_int(root.find("vcpu")),
        memory_kib=_kib(root.find("memory")),
        current_memory_kib=_kib(root.find("currentMemory")),
    )


# --- live extra stats ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VcpuStats:
    index: int
    state: int | None  # virVcpuState: 0 offline, 1 running, 2 blocked
    time_ns: int | None
    wait_ns: int | None
    delay_ns: int | None


@dataclass(frozen=True, slots=True)
class ExtraStats:
    """Everything the bulk call knows about one VM, per device, at `measured_at`."""

    uuid: str
    measured_at: float
    stats: DomainStats  # totals as the collector parses them
    vcpus: tuple[VcpuStats, ...]
    blocks: tuple[BlockCounters, ...]
    nets: tuple[NetCounters, ...]
    balloon: Mapping[str, int]  # every balloon.* value the guest reports, KiB or counts
    raw: Mapping[str, Any] = field(default_factory=dict)


def parse_extra(uuid: str, rec: Mapping[str, Any], measured_at: float) -> ExtraStats:
    """One stats record -> ExtraStats (pure)."""
    s = parse_record(rec)
    count = min(max(s.vcpus or 0, s.vcpu_maximum or 0), MAX_VCPUS)
    vcpus = []
    for i in range(count):
        p = f"vcpu.{i}."
        if p + "state" not in rec and p + "time" not in rec:
            continue
        vcpus.append(
            VcpuStats(
                i,
                *(
                    v if type(v := rec.get(p + k)) is int else None
                    for k in ("state", "time", "wait", "delay")
                ),
            )
        )
    balloon = {
        k.split(".", 1)[1]: v for k, v in rec.items() if k.startswith("balloon.") and type(v) is int
    }
    return ExtraStats(
        uuid=uuid,
        measured_at=measured_at,
        stats=s,
        vcpus=tuple(vcpus),
        blocks=s.blocks or (),
        nets=s.nets or (),
        balloon=balloon,
        raw=dict(rec),
    )


@dataclass(frozen=True, slots=True)
class VcpuFigure:
    index: int
    state: int | None
    busy_pct: float | None  # of one host CPU, between the two samples


@dataclass(frozen=True, slots=True)
class DiskFigure:
    name: str
    path: str | None
    rd_bps: float | None
    wr_bps: float | None
    rd_iops: float | None
    wr_iops: float | None
    capacity: int | None  # bytes
    allocation: int | None


@dataclass(frozen=True, slots=True)
class NicFigure:
    name: str
    rx_bps: float | None
    tx_bps: float | None
    rx_pps: float | None
    tx_pps: float | None
    errors: int | None  # rx + tx, cumulative
    drops: int | None


@dataclass(frozen=True, slots=True)
class DeviceFigures:
    """Per-vCPU, per-disk and per-NIC figures of one VM: rates between two ExtraStats of
    it (None before the second, or across a counter reset)."""

    measured_at: float
    vcpus: tuple[VcpuFigure, ...]
    disks: tuple[DiskFigure, ...]
    nics: tuple[NicFigure, ...]


def _sum(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def device_figures(prev: ExtraStats | None, cur: ExtraStats) -> DeviceFigures:
    """Rates from two samples of one VM's per-device counters (pure)."""
    dt = cur.measured_at - prev.measured_at if prev is not None else 0.0
    old_vcpus = {v.index: v for v in prev.vcpus} if prev is not None else {}
    old_blocks = {b.name: b for b in prev.blocks} if prev is not None else {}
    old_nets = {n.name: n for n in prev.nets} if prev is not None else {}

    def rate(old: int | None, new: int | None, ceiling: float) -> float | None:
        return counter_rate(old, new, dt, max_rate=ceiling)

    vcpus = []
    for v in cur.vcpus:
        was = old_vcpus.get(v.index)
        ns_per_s = rate(was.time_ns if was else None, v.time_ns, 1e9 * 1.05)
        vcpus.append(
            VcpuFigure(v.index, v.state, None if ns_per_s is None else min(100.0, ns_per_s / 1e7))
        )
    disks = []
    for b in cur.blocks:
        o = old_blocks.get(b.name)
        disks.append(
            DiskFigure(
                b.name,
                b.path,
                rate(o.rd_bytes if o else None, b.rd_bytes, MAX_BYTES_PER_S),
                rate(o.wr_bytes if o else None, b.wr_bytes, MAX_BYTES_PER_S),
                rate(o.rd_reqs if o else None, b.rd_reqs, MAX_EVENTS_PER_S),
                rate(o.wr_reqs if o else None, b.wr_reqs, MAX_EVENTS_PER_S),
                b.capacity,
                b.allocation,
            )
        )
    nics = []
    for n in cur.nets:
        o2 = old_nets.get(n.name)
        nics.append(
            NicFigure(
                n.name,
                rate(o2.rx_bytes if o2 else None, n.rx_bytes, MAX_BYTES_PER_S),
                rate(o2.tx_bytes if o2 else None, n.tx_bytes, MAX_BYTES_PER_S),
                rate(o2.rx_pkts if o2 else None, n.rx_pkts, MAX_EVENTS_PER_S),
                rate(o2.tx_pkts if o2 else None, n.tx_pkts, MAX_EVENTS_PER_S),
                _sum(n.rx_errs, n.tx_errs),
                _sum(n.rx_drop, n.tx_drop),
            )
        )
    return DeviceFigures(cur.measured_at, tuple(vcpus), tuple(disks), tuple(nics))


# --- batch functions and loaders ----------------------------------------------------------


def _not_found(uuid: str, uri: str) -> AppError:
    return AppError(
        ErrorCode.MACHINE_NOT_FOUND,
        f"no VM with UUID {uuid} on {redact_uri(uri)}",
        "it was undefined or lives on another host; refresh the list",
        Severity.WARNING,
        {"uuid": uuid},
    )


def _fetch_details(
    conn: libvirt.virConnect, uuids: list[str], uri: str
) -> dict[str, DomainDetails | BaseException]:
    doms = {d.UUIDString(): d for d in conn.listAllDomains(0)}  # one call for the batch
    out: dict[str, DomainDetails | BaseException] = {}
    for uuid in uuids:
        dom = doms.get(uuid)
        if dom is None:
            out[uuid] = _not_found(uuid, uri)
            continue
        try:
            out[uuid] = parse_domain_xml(dom.XMLDesc(0))  # libvirt has no bulk XML call
        except libvirt.libvirtError as err:
            if is_connection_dead(err):
                raise  # the whole batch fails, and the source learns the connection died
            out[uuid] = from_libvirt(err, uri=uri, what="reading the definition", vm=dom.name())
        except ValueError as err:
            out[uuid] = AppError(
                ErrorCode.EXTERNAL_SERVICE_ERROR,
                f"the definition of {dom.name()} cannot be read: {err}",
                "libvirt returned something unexpected; check `virsh dumpxml`",
            )
    return out


def _fetch_extra(
    conn: libvirt.virConnect, uuids: list[str], uri: str, groups: int
) -> dict[str, ExtraStats | BaseException]:
    wanted = set(uuids)
    doms = [d for d in conn.listAllDomains(0) if d.UUIDString() in wanted]
    flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
    records: list[tuple[libvirt.virDomain, dict[str, Any]]] = []
    if doms:
        try:
            records = conn.domainListGetStats(doms, groups, flags)
        except libvirt.libvirtError as err:
            if err.get_error_code() not in (
                libvirt.VIR_ERR_INVALID_ARG,
                libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
            ):
                raise
            records = conn.domainListGetStats(doms, groups, 0)  # an old daemon: no NOWAIT
    now = time.time()
    out: dict[str, ExtraStats | BaseException] = {}
    for dom, rec in records:
        uuid = dom.UUIDString()
        out[uuid] = parse_extra(uuid, rec, now)
    for uuid in uuids:
        if uuid not in out:
            out[uuid] = _not_found(uuid, uri)
    return out


def details_batch(source: ConnectionSource) -> BatchFn[str, DomainDetails]:
    """Definitions of many VMs (by UUID): one listAllDomains + one XMLDesc per VM."""

    async def batch(uuids: list[str]) -> dict[str, DomainDetails | BaseException]:
        try:
            async with source.connection() as b:
                return await b.call(
                    lambda conn: _fetch_details(conn, uuids, source.uri),
                    what="reading VM definitions",
                )
        except libvirt.libvirtError as err:
            raise from_libvirt(err, uri=source.uri, what="reading VM definitions") from err

    return batch


def extra_stats_batch(
    source: ConnectionSource, *, groups: int = EXTRA_GROUPS
) -> BatchFn[str, ExtraStats]:
    """Live stats of many VMs (by UUID): one listAllDomains + ONE domainListGetStats."""

    async def batch(uuids: list[str]) -> dict[str, ExtraStats | BaseException]:
        try:
            async with source.connection() as b:
                return await b.call(
                    lambda conn: _fetch_extra(conn, uuids, source.uri, groups),
                    what="reading VM stats",
                )
        except libvirt.libvirtError as err:
            raise from_libvirt(err, uri=source.uri, what="reading VM stats") from err

    return batch


def details_loader(
    source: ConnectionSource, *, cache_size: int = DEFAULT_CACHE_SIZE
) -> DataLoader[str, DomainDetails]:
    """Cached by UUID until cleared (wire `clear_details_on_events` to the hub)."""
    return DataLoader(details_batch(source), name="details", cache_size=cache_size)


def extra_stats_loader(source: ConnectionSource) -> DataLoader[str, ExtraStats]:
    """Never cached (live values): loads in one tick share one call."""
    return DataLoader(extra_stats_batch(source), name="extra-stats", cache_size=0)


def clears_details(event: DomainEvent) -> bool:
    """Whether `event` may have changed what a cached definition says."""
    return event.kind in DETAIL_EVENT_KINDS


async def clear_details_on_events(
    events: Subscription[DomainEvent], loaders: Mapping[str, DataLoader[str, Any]]
) -> None:
    """Run until the subscription closes: clear the VM's cached details (in the loader of
    the event's host, by host name) on each event that may have changed them."""
    async for event in events:
        loader = loaders.get(event.host)
        if loader is not None and clears_details(event):
            loader.clear(event.vm_uuid)
