"""Config drift: what changed between two definitions of a VM, and a watcher that notices.

`diff_domain_xml(old, new)` is pure: added/removed/changed devices, memory and vCPU
changes, and the other top-level parts that differ, after dropping what libvirt changes
by itself at runtime (ids, aliases, security labels, vnet names, pty paths, ports).
`DriftWatcher` fingerprints each VM's definition periodically and when libvirt reports
a define/device/metadata event, and publishes a CONFIG_CHANGE DomainEvent per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import libvirt

from virtwatch.core.errors import AppError, from_libvirt
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.connection import ConnectionSource
from virtwatch.core.libvirt.uri import MASK, redact_text
from virtwatch.core.records import DomainEvent, EventKind

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
DEFAULT_DEBOUNCE_S = 0.5

_UNITS = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "kb": 1000 / 1024,
    "k": 1,
    "kib": 1,
    "mb": 1000**2 / 1024,
    "m": 1024,
    "mib": 1024,
    "gb": 1000**3 / 1024,
    "g": 1024**2,
    "gib": 1024**2,
    "tb": 1000**4 / 1024,
    "t": 1024**3,
    "tib": 1024**3,
}
# attributes that carry secrets if a caller ever asked libvirt for a SECURE dump
_SECRET_ATTRS = frozenset({"passwd", "password"})
# top-level parts reported by their own field, not as "other"
_OWN_FIELDS = frozenset({"devices", "memory", "currentMemory", "vcpu", "name", "uuid"})


# -- normalising ----------------------------------------------------------------------------


def _strip_runtime(root: ET.Element) -> None:
    """Drop what libvirt changes by itself while a VM runs, so it never reads as drift."""
    root.attrib.pop("id", None)
    for parent in root.iter():
        for child in list(parent):
            tag = child.tag
            if tag == "seclabel" or (
                tag == "alias" and not child.get("name", "").startswith("ua-")
            ):
                parent.remove(child)
            elif tag == "target" and parent.tag == "interface":
                child.attrib.pop("dev", None)
                if not child.attrib:
                    parent.remove(child)
            elif tag == "partition" and parent.tag == "resource":
                parent.remove(child)
        for attr in list(parent.attrib):
            if attr in _SECRET_ATTRS:
                parent.set(attr, MASK)
        if parent.tag in ("source", "backingStore"):
            parent.attrib.pop("index", None)
        if parent.tag == "graphics" and parent.get("autoport") == "yes":
            for attr in ("port", "tlsPort", "websocket"):
                parent.attrib.pop(attr, None)
        if parent.tag in ("serial", "console", "parallel", "channel"):
            parent.attrib.pop("tty", None)
            if parent.get("type") == "pty":
                for src in parent.findall("source"):
                    src.attrib.pop("path", None)
                    if not src.attrib:
                        parent.remove(src)
    for tag in ("memory", "currentMemory", "maxMemory"):
        elem = root.find(tag)
        kib = _kib(elem)
        if elem is not None and kib is not None:  # one spelling: 2048 MiB == 2097152 KiB
            elem.text, elem.attrib["unit"] = str(kib), "KiB"
    resource = root.find("resource")
    if resource is not None and len(resource) == 0 and not resource.attrib:
        root.remove(resource)


def _parse(xml: str) -> ET.Element:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise ValueError(f"not a domain XML: {err}") from err
    if root.tag != "domain":
        raise ValueError(f"not a domain XML: root element is <{root.tag}>")
    _strip_runtime(root)
    return root


def _canon(elem: ET.Element) -> str:
    """Canonical text of an element: attribute order and whitespace do not matter."""
    return ET.canonicalize(ET.tostring(elem, encoding="unicode"), strip_text=True)


def fingerprint(xml: str) -> str:
    """sha256 of a definition after runtime noise is dropped: equal iff no drift."""
    return hashlib.sha256(_canon(_parse(xml)).encode()).hexdigest()


# -- reading a definition -------------------------------------------------------------------


def _kib(elem: ET.Element | None) -> int | None:
    if elem is None or not (elem.text or "").strip():
        return None
    try:
        value = float((elem.text or "").strip())
    except ValueError:
        return None
    scale = _UNITS.get(elem.get("unit", "KiB").lower())
    return None if scale is None else round(value * scale)


def _vcpus(root: ET.Element) -> tuple[int | None, int | None]:
    """(maximum, current) vCPUs."""
    elem = root.find("vcpu")
    if elem is None:
        return None, None
    try:
        maximum = int((elem.text or "").strip())
    except ValueError:
        return None, None
    current = elem.get("current")
    return maximum, int(current) if current and current.isdigit() else maximum


@dataclass(frozen=True, slots=True, order=True)
class DeviceRef:
    """One device, named the way an admin would: kind and its identifying key."""

    kind: str  # disk, interface, controller, watchdog, ...
    key: str  # vda, 52:54:00:12:34:56, usb 0, ...
    label: str  # "disk vda (file /var/lib/libvirt/images/web.qcow2)"

    def __str__(self) -> str:
        return self.label


def _first_attrs(elem: ET.Element | None, *names: str) -> str:
    if elem is None:
        return ""
    return " ".join(v for n in names if (v := elem.get(n)))


def _device_key(dev: ET.Element) -> tuple[str, str]:
    """(key, extra words for the label)."""
    tag = dev.tag
    target = dev.find("target")
    source = dev.find("source")
    if tag == "disk":
        src = _first_attrs(source, "file", "dev", "name", "volume", "dir")
        words = " ".join(w for w in (dev.get("type", ""), src) if w)
        return _first_attrs(target, "dev") or src, words
    if tag == "interface":
        mac = _first_attrs(dev.find("mac"), "address")
        src = _first_attrs(source, "network", "bridge", "dev", "portgroup")
        return mac or dev.get("type", ""), " ".join(w for w in (dev.get("type", ""), src) if w)
    if tag == "controller":
        return _first_attrs(dev, "type", "index"), dev.get("model", "")
    if tag == "filesystem":
        return _first_attrs(target, "dir"), _first_attrs(source, "dir", "file", "name")
    if tag in ("serial", "console", "parallel", "channel"):
        return _first_attrs(target, "type", "port", "name") or dev.get("type", ""), dev.get(
            "type", ""
        )
    if tag == "input":
        return _first_attrs(dev, "type", "bus"), ""
    if tag == "hostdev":
        addr = source.find("address") if source is not None else None
        key = " ".join(
            f"{k}={v}" for k, v in sorted((addr.attrib if addr is not None else {}).items())
        )
        return key or dev.get("type", ""), dev.get("type", "")
    if tag == "graphics":
        return dev.get("type", ""), ""
    model = dev.find("model")
    return _first_attrs(dev, "model", "type") or _first_attrs(model, "type", "name"), ""


def _devices(root: ET.Element) -> dict[str, tuple[DeviceRef, str]]:
    """Devices by a unique key -> (ref, canonical text). Same-key twins get #2, #3."""
    out: dict[str, tuple[DeviceRef, str]] = {}
    devices = root.find("devices")
    if devices is None:
        return out
    for dev in devices:
        if dev.tag == "emulator":
            continue
        key, words = _device_key(dev)
        unique = f"{dev.tag}:{key}"
        n = 2
        while unique in out:
            unique = f"{dev.tag}:{key}#{n}"
            n += 1
        label = " ".join(w for w in (dev.tag, key) if w)
        if words and words != key:
            label += f" ({words})"
        out[unique] = (DeviceRef(dev.tag, key, redact_text(label)), _canon(dev))
    return out


def _others(root: ET.Element) -> dict[str, str]:
    parts: dict[str, list[str]] = {}
    for child in root:
        if child.tag not in _OWN_FIELDS:
            parts.setdefault(child.tag, []).append(_canon(child))
    emulator = root.find("devices/emulator")
    if emulator is not None:
        parts["emulator"] = [_canon(emulator)]
    return {tag: "".join(texts) for tag, texts in parts.items()}


# -- the diff -------------------------------------------------------------------------------


Change = tuple[int | None, int | None]


@dataclass(frozen=True, slots=True)
class ConfigDrift:
    """What changed from one definition to the next. `empty` when nothing did."""

    added: tuple[DeviceRef, ...] = ()
    removed: tuple[DeviceRef, ...] = ()
    changed: tuple[DeviceRef, ...] = ()
    memory_kib: Change | None = None  # maximum memory (old, new)
    current_memory_kib: Change | None = None
    vcpus: Change | None = None  # maximum vCPUs
    current_vcpus: Change | None = None
    name: tuple[str, str] | None = None
    other: tuple[str, ...] = ()  # top-level parts that differ: title, metadata, os, cpu, ...

    @property
    def empty(self) -> bool:
        return not (
            self.added
            or self.removed
            or self.changed
            or self.memory_kib
            or self.current_memory_kib
            or self.vcpus
            or self.current_vcpus
            or self.name
            or self.other
        )

    def summary(self) -> str:
        """One line for the timeline: '+watchdog i6300esb; memory 64 MiB → 128 MiB; ...'."""
        parts = [f"+{d}" for d in self.added]
        parts += [f"-{d}" for d in self.removed]
        parts += [f"~{d}" for d in self.changed]
        if self.name:
            parts.append(f"renamed {self.name[0]} → {self.name[1]}")
        if self.memory_kib:
            parts.append(f"memory {_mem(self.memory_kib[0])} → {_mem(self.memory_kib[1])}")
        if self.current_memory_kib:
            a, b = self.current_memory_kib
            parts.append(f"current memory {_mem(a)} → {_mem(b)}")
        if self.vcpus:
            parts.append(f"vCPUs {_num(self.vcpus[0])} → {_num(self.vcpus[1])}")
        if self.current_vcpus:
            a, b = self.current_vcpus
            parts.append(f"current vCPUs {_num(a)} → {_num(b)}")
        if self.other:
            parts.append("changed: " + ", ".join(self.other))
        return "; ".join(parts) if parts else "no change"

    def detail(self) -> dict[str, str]:
        """Plain strings for the stored event (empty parts are left out)."""
        out: dict[str, str] = {}
        for key, refs in (("added", self.added), ("removed", self.removed)):
            if refs:
                out[key] = "; ".join(d.label for d in refs)
        if self.changed:
            out["changed"] = "; ".join(d.label for d in self.changed)
        for key, change in (
            ("memory_kib", self.memory_kib),
            ("current_memory_kib", self.current_memory_kib),
            ("vcpus", self.vcpus),
            ("current_vcpus", self.current_vcpus),
        ):
            if change:
                out[key] = f"{_num(change[0])}→{_num(change[1])}"
        if self.name:
            out["name"] = f"{self.name[0]}→{self.name[1]}"
        if self.other:
            out["other"] = ",".join(self.other)
        return out


def _num(v: int | None) -> str:
    return "?" if v is None else str(v)


def _mem(kib: int | None) -> str:
    if kib is None:
        return "?"
    if kib % (1024 * 1024) == 0:
        return f"{kib // (1024 * 1024)} GiB"
    if kib % 1024 == 0:
        return f"{kib // 1024} MiB"
    return f"{kib} KiB"


def _change(a: int | None, b: int | None) -> Change | None:
    return None if a == b else (a, b)


def diff_domain_xml(old: str, new: str) -> ConfigDrift:
    """What changed from `old` to `new` (two `<domain>` XMLs). Raises ValueError on non-XML."""
    a, b = _parse(old), _parse(new)
    da, db = _devices(a), _devices(b)
    added = tuple(sorted(db[k][0] for k in db.keys() - da.keys()))
    removed = tuple(sorted(da[k][0] for k in da.keys() - db.keys()))
    changed = tuple(sorted(db[k][0] for k in da.keys() & db.keys() if da[k][1] != db[k][1]))
    (va, ca), (vb, cb) = _vcpus(a), _vcpus(b)
    ma, mb = _kib(a.find("memory")), _kib(b.find("memory"))
    cma, cmb = _kib(a.find("currentMemory")), _kib(b.find("currentMemory"))
    # "current" is worth a word only when it is not just following the maximum
    current_mem = None if (cma in (None, ma) and cmb in (None, mb)) else _change(cma, cmb)
    current_cpus = None if (ca == va and cb == vb) else _change(ca, cb)
    name_a, name_b = a.findtext("name", ""), b.findtext("name", "")
    oa, ob = _others(a), _others(b)
    other = tuple(sorted(t for t in oa.keys() | ob.keys() if oa.get(t) != ob.get(t)))
    return ConfigDrift(
        added=added,
        removed=removed,
        changed=changed,
        memory_kib=_change(ma, mb),
        current_memory_kib=current_mem,
        vcpus=_change(va, vb),
        current_vcpus=current_cpus,
        name=None if name_a == name_b else (name_a, name_b),
        other=other,
    )


def drift_event(
    host: str,
    vm_uuid: str,
    vm_name: str,
    drift: ConfigDrift,
    *,
    at: float,
    old_fp: str,
    new_fp: str,
) -> DomainEvent:
    detail = drift.detail()
    detail["fingerprint"] = new_fp
    detail["previous_fingerprint"] = old_fp
    return DomainEvent(
        host=host,
        vm_uuid=vm_uuid,
        vm_name=vm_name,
        kind=EventKind.CONFIG_CHANGE,
        summary=f"definition changed: {drift.summary()}",
        at=at,
        detail=detail,
    )


# -- the watcher ----------------------------------------------------------------------------

# libvirt events after which a VM's definition may differ
_TRIGGERS = frozenset({EventKind.DEVICE_ADDED, EventKind.DEVICE_REMOVED, EventKind.METADATA_CHANGE})
_DEFINE_EVENTS = frozenset(
    {str(libvirt.VIR_DOMAIN_EVENT_DEFINED), str(libvirt.VIR_DOMAIN_EVENT_UNDEFINED)}
)


def is_trigger(event: DomainEvent) -> bool:
    """Does this event mean the VM's definition may have changed?"""
    if event.kind in _TRIGGERS:
        return True
    if event.kind is EventKind.LIFECYCLE:  # events.py: detail event=0 defined, 1 undefined
        return event.detail.get("event") in _DEFINE_EVENTS
    return False


Definitions = dict[str, tuple[str, str]]  # uuid -> (name, xml)


def _fetch_blocking(conn: libvirt.virConnect, uuids: Collection[str] | None) -> Definitions:
    """Each VM's definition (the persistent one when there is one). Never VIR_DOMAIN_XML_SECURE."""
    if uuids is None:
        doms = conn.listAllDomains(0)
    else:
        doms = []
        for u in uuids:
            with contextlib.suppress(libvirt.libvirtError):  # undefined meanwhile
                doms.append(conn.lookupByUUIDString(u))
    out: Definitions = {}
    for dom in doms:
        with contextlib.suppress(libvirt.libvirtError):  # vanished between list and read
            out[dom.UUIDString()] = (dom.name(), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return out


class DriftWatcher:
    """Watches one host's VM definitions; publishes a CONFIG_CHANGE event for each change.

    The first sight of a VM is its baseline (no event): drift is change seen while watching.
    """

    def __init__(
        self,
        source: ConnectionSource,
        hub: Hub,
        *,
        host: str,
        interval_s: float = DEFAULT_INTERVAL_S,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        clock: Callable[[], float] = time.time,
        report: Callable[[object], None] | None = None,
    ) -> None:
        self._source = source
        self._hub = hub
        # errors go where the runtime's parts send theirs (its reporter folds them into
        # incidents: a scan failing in an outage joins the host's one incident)
        self._report = report or hub.publish
        self.host = host
        self._interval_s = interval_s
        self._debounce_s = debounce_s
        self._clock = clock
        self._known: dict[str, tuple[str, str]] = {}  # uuid -> (fingerprint, xml)
        self._events = hub.subscribe(DomainEvent, maxsize=1000)
        self.scans = 0
        self.published = 0

    @property
    def known(self) -> Mapping[str, tuple[str, str]]:
        return self._known

    async def scan(self, uuids: Collection[str] | None = None) -> list[DomainEvent]:
        """Read definitions (all VMs, or `uuids`), compare, publish and return the changes."""
        async with self._source.connection() as b:
            defs = await b.call(
                lambda conn: _fetch_blocking(conn, uuids), what="reading VM definitions"
            )
        self.scans += 1
        at = self._clock()
        found: list[DomainEvent] = []
        for uuid, (name, xml) in defs.items():
            try:
                fp = fingerprint(xml)
            except ValueError as err:
                log.warning("skipping an unreadable definition of %s: %s", uuid, err)
                continue
            before = self._known.get(uuid)
            self._known[uuid] = (fp, xml)
            if before is None or before[0] == fp:
                continue
            drift = diff_domain_xml(before[1], xml)
            if drift.empty:  # differs only in ways we do not report (e.g. element order)
                continue
            event = drift_event(self.host, uuid, name, drift, at=at, old_fp=before[0], new_fp=fp)
            found.append(event)
        if uuids is None:  # a full scan also forgets VMs that are gone
            for gone in self._known.keys() - defs.keys():
                del self._known[gone]
        else:
            for gone in set(uuids) - defs.keys():
                self._known.pop(gone, None)
        for event in found:
            self._hub.publish(event)
            self.published += 1
        return found

    async def _scan_reporting(self, uuids: Collection[str] | None) -> None:
        try:
            await self.scan(uuids)
        except AppError as err:
            self._report(ErrorReport.of(err, host=self.host))
        except libvirt.libvirtError as err:
            self._report(
                ErrorReport.of(
                    from_libvirt(err, uri=self._source.uri, what="reading VM definitions"),
                    host=self.host,
                )
            )

    async def run(self) -> None:
        """Scan now, then every interval and shortly after each trigger event, until cancelled."""
        try:
            await self._scan_reporting(None)
            next_full = self._clock() + self._interval_s
            while True:
                timeout = max(0.0, next_full - self._clock())
                try:
                    event = await asyncio.wait_for(self._events.get(), timeout)
                except TimeoutError:
                    await self._scan_reporting(None)
                    next_full = self._clock() + self._interval_s
                    continue
                except StopAsyncIteration:
                    return
                if event.host != self.host or not is_trigger(event):
                    continue
                pending = {event.vm_uuid}
                await asyncio.sleep(self._debounce_s)  # a burst of device events -> one read
                while (more := self._events.get_nowait()) is not None:
                    if more.host == self.host and is_trigger(more):
                        pending.add(more.vm_uuid)
                await self._scan_reporting(pending)
        finally:
            self._events.close()
