"""The hypervisor host's own load, as a HostSample.

Local host: psutil and /proc/pressure. Remote URI: libvirt's node calls (getInfo,
getCPUStats, getMemoryStats, else getFreeMemory), since psutil sees only this machine.
A sampler keeps the previous counters between calls; parsing and rates are pure.
Both samplers block (they read /proc or talk to libvirt): call them in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import libvirt
import psutil

from virtwatch.core.collect.rates import (
    MAX_BYTES_PER_S,
    MAX_EVENTS_PER_S,
    busy_percent,
    counter_rate,
)
from virtwatch.core.model import HostSample, MountUsage, Pressure

PSI_ROOT = Path("/proc/pressure")
SYS_NET = Path("/sys/class/net")
PSI_RESOURCES = ("cpu", "memory", "io")
# devices libvirt (or the kernel, for VMs and containers) creates: their traffic is the
# guests', counted per VM, and summing them with the uplink would count it twice
_VIRTUAL_NIC_PREFIXES = ("lo", "vnet", "virbr", "tap", "macvtap", "ifb", "veth", "docker")
# always 100 % full or not real storage: never worth an alert
_SKIP_FSTYPES = frozenset({"squashfs", "iso9660", "udf", "tmpfs", "devtmpfs"})


class HostSampler(Protocol):
    """Something that measures one host. Blocking: run it in a worker thread."""

    source: str

    def sample(self, conn: libvirt.virConnect | None) -> HostSample: ...

    def reset(self) -> None:
        """Forget previous counters and cached facts (after the host failed a tick)."""


# --- pure parts -----------------------------------------------------------------------


def parse_psi(resource: str, text: str) -> Pressure | None:
    """The text of /proc/pressure/<resource> -> Pressure; None when there is no 'some' line.

    some avg10=0.03 avg60=0.16 avg300=0.25 total=11427830
    full avg10=0.00 avg60=0.00 avg300=0.00 total=0
    """
    rows: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        kind, _, rest = line.strip().partition(" ")
        if kind in ("some", "full"):
            fields = dict(part.split("=", 1) for part in rest.split() if "=" in part)
            rows[kind] = fields
    some = rows.get("some")
    if some is None:
        return None
    try:
        full = rows.get("full")
        return Pressure(
            resource=resource,
            some_avg10=float(some["avg10"]),
            some_avg60=float(some["avg60"]),
            some_avg300=float(some["avg300"]),
            some_total_us=int(some["total"]),
            full_avg10=float(full["avg10"]) if full else None,
            full_avg60=float(full["avg60"]) if full else None,
            full_avg300=float(full["avg300"]) if full else None,
            full_total_us=int(full["total"]) if full else None,
        )
    except (KeyError, ValueError):
        return None


class CpuSplit(NamedTuple):
    busy: float
    total: float


def cpu_split(times: Mapping[str, float]) -> CpuSplit:
    """psutil cpu_times as a dict -> (busy, total) seconds.

    On Linux 'guest' and 'guest_nice' are already inside 'user' and 'nice': leave them
    out of the total (as psutil's own cpu_percent does). Idle and iowait are not busy.
    """
    total = sum(v for k, v in times.items() if k not in ("guest", "guest_nice"))
    idle = times.get("idle", 0.0) + times.get("iowait", 0.0)
    return CpuSplit(total - idle, total)


def libvirt_cpu_split(stats: Mapping[str, int]) -> CpuSplit:
    """virNodeGetCPUStats (kernel, user, idle, iowait in ns; or utilization) -> CpuSplit."""
    total = float(sum(int(v) for k, v in stats.items() if k != "utilization"))
    idle = float(int(stats.get("idle", 0)) + int(stats.get("iowait", 0)))
    return CpuSplit(total - idle, total)


def host_nics(names: Iterable[str], physical: Collection[str]) -> list[str]:
    """The NICs whose traffic is the host's own: physical ones if any are known, else every
    interface that is not loopback nor a device libvirt or a container runtime made."""
    names = list(names)
    real = [n for n in names if n in physical]
    if real:
        return real
    return [n for n in names if not n.startswith(_VIRTUAL_NIC_PREFIXES)]


def mount_usage(
    partitions: Iterable[tuple[str, str, str]], usage: Mapping[str, tuple[int, int, int]]
) -> tuple[MountUsage, ...]:
    """(device, mountpoint, fstype) + {mountpoint: (total, used, free)} -> MountUsage, one per
    mount point, skipping filesystems that are full by design (squashfs, ISO images)."""
    out: list[MountUsage] = []
    seen: set[str] = set()
    for device, mount, fstype in partitions:
        if fstype in _SKIP_FSTYPES or mount in seen or mount not in usage:
            continue
        total, used, free = usage[mount]
        if total <= 0:
            continue
        seen.add(mount)
        pct = 100.0 * used / (used + free) if used + free > 0 else 0.0
        out.append(MountUsage(mount, device, fstype, total, used, free, pct))
    return tuple(out)


# --- samplers ---------------------------------------------------------------------------


class _Counters(NamedTuple):
    mono: float
    cpu: CpuSplit
    cores: tuple[CpuSplit, ...]
    disk: Any  # psutil sdiskio or None
    net: tuple[int, int, int, int] | None  # rx bytes, tx bytes, errs, drops


class LocalHostSampler:
    """This machine via psutil. The first sample has no rates (nothing to compare with)."""

    source = "psutil"

    def __init__(self, *, psi_root: Path = PSI_ROOT, sys_net: Path = SYS_NET) -> None:
        self._psi_root = psi_root
        self._sys_net = sys_net
        self._prev: _Counters | None = None
        self._physical: frozenset[str] | None = None

    def reset(self) -> None:
        self._prev = None

    def _physical_nics(self, names: Iterable[str]) -> frozenset[str]:
        if self._physical is None:
            self._physical = frozenset(n for n in names if (self._sys_net / n / "device").exists())
        return self._physical

    def _net(self) -> tuple[int, int, int, int] | None:
        per = psutil.net_io_counters(pernic=True)
        if not per:
            return None
        chosen = host_nics(per, self._physical_nics(per))
        rx = tx = errs = drops = 0
        for n in chosen:
            c = per[n]
            rx += c.bytes_recv
            tx += c.bytes_sent
            errs += c.errin + c.errout
            drops += c.dropin + c.dropout
        return rx, tx, errs, drops

    def _mounts(self) -> tuple[MountUsage, ...]:
        parts = [(p.device, p.mountpoint, p.fstype) for p in psutil.disk_partitions(all=False)]
        usage: dict[str, tuple[int, int, int]] = {}
        for _dev, mount, fstype in parts:
            if fstype in _SKIP_FSTYPES or mount in usage:
                continue
            try:
                u = psutil.disk_usage(mount)
            except OSError:  # a mount that vanished or that we may not stat
                continue
            usage[mount] = (u.total, u.used, u.free)
        return mount_usage(parts, usage)

    def psi(self) -> tuple[Pressure, ...]:
        out = []
        for resource in PSI_RESOURCES:
            try:
                text = (self._psi_root / resource).read_text()
            except OSError:  # no PSI in this kernel (or disabled): unknown, not zero
                continue
            p = parse_psi(resource, text)
            if p is not None:
                out.append(p)
        return tuple(out)

    def sample(self, conn: libvirt.virConnect | None = None) -> HostSample:
        cores = tuple(cpu_split(t._asdict()) for t in psutil.cpu_times(percpu=True))
        cpu = cpu_split(psutil.cpu_times()._asdict())
        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        load = psutil.getloadavg()
        disk = psutil.disk_io_counters(perdisk=False)
        net = self._net()
        mounts = self._mounts()
        psi = self.psi()
        mono, wall = time.monotonic(), time.time()
        cur = _Counters(mono, cpu, cores, disk, net)
        prev, self._prev = self._prev, cur
        dt = mono - prev.mono if prev is not None else 0.0

        def rate(a: int | None, b: int | None, ceiling: float) -> float | None:
            return counter_rate(a, b, dt, max_rate=ceiling) if prev is not None else None

        per_core: tuple[float | None, ...] = ()
        if prev is not None and len(prev.cores) == len(cores):
            per_core = tuple(busy_percent(p, c) for p, c in zip(prev.cores, cores, strict=True))
        pd = prev.disk if prev is not None else None
        pn = prev.net if prev is not None else None
        return HostSample(
            cpu_pct=busy_percent(prev.cpu, cpu) if prev is not None else None,
            mem_total_kib=vm.total // 1024,
            mem_used_kib=(vm.total - vm.available) // 1024,
            source=self.source,
            measured_at=wall,
            cpus=len(cores),
            cpu_per_core_pct=per_core,
            mem_available_kib=vm.available // 1024,
            swap_total_kib=sw.total // 1024,
            swap_used_kib=sw.used // 1024,
            load1=load[0],
            load5=load[1],
            load15=load[2],
            mounts=mounts,
            disk_read_bps=rate(_a(pd, "read_bytes"), _a(disk, "read_bytes"), MAX_BYTES_PER_S),
            disk_write_bps=rate(_a(pd, "write_bytes"), _a(disk, "write_bytes"), MAX_BYTES_PER_S),
            disk_read_iops=rate(_a(pd, "read_count"), _a(disk, "read_count"), MAX_EVENTS_PER_S),
            disk_write_iops=rate(_a(pd, "write_count"), _a(disk, "write_count"), MAX_EVENTS_PER_S),
            net_rx_bps=rate(_i(pn, 0), _i(net, 0), MAX_BYTES_PER_S),
            net_tx_bps=rate(_i(pn, 1), _i(net, 1), MAX_BYTES_PER_S),
            net_errs_ps=rate(_i(pn, 2), _i(net, 2), MAX_EVENTS_PER_S),
            net_drops_ps=rate(_i(pn, 3), _i(net, 3), MAX_EVENTS_PER_S),
            psi=psi,
        )


def _a(obj: object, attr: str) -> int | None:
    value = getattr(obj, attr, None) if obj is not None else None
    return value if isinstance(value, int) else None


def _i(row: Sequence[int] | None, index: int) -> int | None:
    return row[index] if row is not None else None


def _unsupported(err: libvirt.libvirtError) -> bool:
    return err.get_error_code() in (
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        libvirt.VIR_ERR_INVALID_ARG,
    )


class RemoteHostSampler:
    """A host behind a libvirt URI: CPU and memory from libvirt's node calls.

    Per-core CPU, swap, load, mounts, disk/network rates and PSI are not offered by
    libvirt: they stay None/empty ("unknown"). A call the driver does not support is
    remembered and not made again (the test driver has no getMemoryStats).
    """

    source = "libvirt"

    def __init__(self) -> None:
        self._prev_cpu: CpuSplit | None = None
        self._info: tuple[int, int] | None = None  # (cpus, memory KiB)
        self._no_cpu_stats = False
        self._no_mem_stats = False

    def reset(self) -> None:
        self._prev_cpu = None
        self._info = None

    def sample(self, conn: libvirt.virConnect | None) -> HostSample:
        if conn is None:
            raise ValueError("a remote host sample needs a libvirt connection")
        if self._info is None:
            info = conn.getInfo()
            self._info = (int(info[2]), int(info[1]) * 1024)
        cpus, total_kib = self._info
        cpu_pct = None
        if not self._no_cpu_stats:
            try:
                cur = libvirt_cpu_split(conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0))
                cpu_pct = busy_percent(self._prev_cpu, cur)
                self._prev_cpu = cur
            except libvirt.libvirtError as err:
                if not _unsupported(err):
                    raise
                self._no_cpu_stats = True
        used = available = None
        if not self._no_mem_stats:
            try:
                m = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
                total_kib = int(m.get("total", total_kib))
                available = int(m.get("free", 0)) + int(m.get("buffers", 0))
                available += int(m.get("cached", 0))
            except libvirt.libvirtError as err:
                if not _unsupported(err):
                    raise
                self._no_mem_stats = True
        if available is None:
            available = int(conn.getFreeMemory()) // 1024
        used = max(0, total_kib - available)
        return HostSample(
            cpu_pct=cpu_pct,
            mem_total_kib=total_kib,
            mem_used_kib=used,
            source=self.source,
            measured_at=time.time(),
            cpus=cpus,
            mem_available_kib=available,
        )
