"""The collector: one bulk stats call per host per tick, rates from counters,
an immutable Snapshot published on the hub. Ticks never overlap; blocking libvirt
calls run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import psutil

from virtwatch.core.connection import ConnectionSource
from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt
from virtwatch.core.model import (
    DomainSample,
    HostFacts,
    HostSample,
    MemorySource,
    Snapshot,
)
from virtwatch.core.rates import cpu_percent
from virtwatch.core.reports import ErrorReport
from virtwatch.core.states import decode_state
from virtwatch.core.stats import (
    STATS_BALLOON,
    STATS_CPU_TOTAL,
    STATS_STATE,
    STATS_VCPU,
    DomainStats,
    memory_used,
    parse_record,
    version_text,
)
from virtwatch.core.uri import driver_of, is_local, redact_uri

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0
TICK_GROUPS = STATS_STATE | STATS_CPU_TOTAL | STATS_BALLOON | STATS_VCPU
QEMU_RUN_DIR = Path("/run/libvirt/qemu")
BulkStats = list[tuple[libvirt.virDomain, dict[str, object]]]


@dataclass(slots=True)
class _Config:
    """What a domain's definition says, fetched once per (uuid, state) not per tick."""

    state: int
    vcpus: int
    max_mem_kib: int


@dataclass(slots=True)
class _PolledDomain:
    uuid: str
    name: str
    domain_id: int | None
    stats: DomainStats
    config: _Config | None
    started_at: float | None


@dataclass(slots=True)
class _Poll:
    facts: HostFacts
    domains: list[_PolledDomain]
    host_cpu_ns: tuple[int, int] | None  # (busy, total) cumulative, remote hosts only
    host_mem: tuple[int, int] | None  # (total, used) KiB, remote hosts only
    wall: float
    mono: float
    stats_calls: int


@dataclass(slots=True)
class _State:
    """Per-host memory between ticks: previous counters and cached definitions."""

    configs: dict[str, _Config] = field(default_factory=dict)
    started: dict[tuple[str, int], float | None] = field(default_factory=dict)
    facts: HostFacts | None = None
    facts_conn: int | None = None
    nowait: bool = True


def _domain_started_at(name: str) -> float | None:
    """Start time of a local QEMU VM, from its pid file (root-only, local driver only)."""
    try:
        pid = int((QEMU_RUN_DIR / f"{name}.pid").read_text().strip())
        return psutil.Process(pid).create_time()
    except (OSError, ValueError, psutil.Error):
        return None


class Collector:
    """Collects one host. `run()` loops until cancelled; `tick()` does one round."""

    def __init__(
        self,
        source: ConnectionSource,
        publish: Callable[[object], None],
        *,
        host: str | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        notice: str | None = None,
    ) -> None:
        self._source = source
        self._publish = publish
        self.host = host or redact_uri(source.uri)
        self.interval_s = interval_s
        self.notice = notice
        self._state = _State()
        self._local = is_local(source.uri)
        self._qemu_local = self._local and driver_of(source.uri) == "qemu"
        self._prev_cpu: dict[str, tuple[int, float]] = {}
        self._prev_host_cpu: tuple[int, int] | None = None
        self._force = asyncio.Event()
        self._ticks = 0
        self.last: Snapshot | None = None
        if self._local and not source.uri.startswith("test:"):
            psutil.cpu_percent(None)  # prime: the first call has no interval to measure

    def force_tick(self) -> None:
        """Wake the loop now (a lifecycle event arrived)."""
        self._force.set()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except AppError as err:
                self._publish(ErrorReport.of(err, host=self.host))
            remaining = self.interval_s - (time.monotonic() - started)
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._force.wait()
            self._force.clear()

    async def tick(self) -> Snapshot:
        """One round: borrow a connection, one bulk stats call, publish a Snapshot."""
        t0 = time.monotonic()
        async with self._source.connection() as conn:
            try:
                poll = await asyncio.to_thread(self._poll, conn)
            except libvirt.libvirtError as err:
                raise from_libvirt(err, uri=self._source.uri, what="collecting stats") from err
        snap = self._build(poll, time.monotonic() - t0)
        self.last = snap
        self._publish(snap)
        return snap

    # --- worker thread ---------------------------------------------------------

    def _facts(self, conn: libvirt.virConnect) -> HostFacts:
        st = self._state
        if st.facts is None or st.facts_conn != id(conn):
            info = conn.getInfo()
            st.facts = HostFacts(
                uri=redact_uri(self._source.uri),
                hostname=conn.getHostname(),
                driver=conn.getType(),
                libvirt_version=version_text(conn.getLibVersion()),
                hypervisor_version=version_text(conn.getVersion()),
                cpus=int(info[2]),
                memory_kib=int(info[1]) * 1024,
            )
            st.facts_conn = id(conn)
        return st.facts

    def _bulk(self, conn: libvirt.virConnect) -> BulkStats:
        flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT if self._state.nowait else 0
        try:
            records: BulkStats = conn.getAllDomainStats(TICK_GROUPS, flags)
            return records
        except libvirt.libvirtError as err:
            if flags and err.get_error_code() in (
                libvirt.VIR_ERR_INVALID_ARG,
                libvirt.VIR_ERR_NO_SUPPORT,
                libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
            ):
                self._state.nowait = False  # an old daemon: poll without NOWAIT from now on
                fallback: BulkStats = conn.getAllDomainStats(TICK_GROUPS, 0)
                return fallback
            raise

    def _poll(self, conn: libvirt.virConnect) -> _Poll:
        facts = self._facts(conn)
        records = self._bulk(conn)
        wall, mono = time.time(), time.monotonic()
        st = self._state
        seen: set[str] = set()
        out: list[_PolledDomain] = []
        for dom, rec in records:
            uuid = dom.UUIDString()
            seen.add(uuid)
            stats = parse_record(rec)
            name = dom.name()
            raw_id = dom.ID()
            domain_id = raw_id if raw_id >= 0 else None
            config = st.configs.get(uuid)
            if (stats.vcpus is None or stats.balloon_maximum_kib is None) and (
                config is None or config.state != stats.state
            ):
                # the driver's bulk call lacks these groups: read the definition once per
                # state change, not every tick
                try:
                    info = dom.info()
                    config = _Config(stats.state, int(info[3]), int(info[1]))
                    st.configs[uuid] = config
                except libvirt.libvirtError:
                    config = None
            started_at = None
            if self._qemu_local and domain_id is not None:
                key = (uuid, domain_id)
                if key not in st.started:
                    st.started[key] = _domain_started_at(name)
                started_at = st.started[key]
            out.append(_PolledDomain(uuid, name, domain_id, stats, config, started_at))
        for gone in set(st.configs) - seen:
            del st.configs[gone]
        st.started = {k: v for k, v in st.started.items() if k[0] in seen}
        host_cpu = host_mem = None
        if not self._local:
            host_cpu, host_mem = self._remote_host(conn)
        return _Poll(facts, out, host_cpu, host_mem, wall, mono, 1)

    @staticmethod
    def _remote_host(
        conn: libvirt.virConnect,
    ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        cpu = mem = None
        with contextlib.suppress(libvirt.libvirtError):
            c = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
            total = sum(int(v) for v in c.values())
            cpu = (total - int(c.get("idle", 0)) - int(c.get("iowait", 0)), total)
        with contextlib.suppress(libvirt.libvirtError):
            m = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
            total_kib = int(m.get("total", 0))
            free = int(m.get("free", 0)) + int(m.get("buffers", 0)) + int(m.get("cached", 0))
            mem = (total_kib, max(0, total_kib - free))
        return cpu, mem

    # --- event loop ---------------------------------------------------------------

    def _host_sample(self, poll: _Poll) -> HostSample | None:
        if self._source.uri.startswith("test:"):
            return None  # the test driver's host is fictional; psutil would describe ours
        if self._local:
            vm = psutil.virtual_memory()
            return HostSample(
                cpu_pct=psutil.cpu_percent(None),
                mem_total_kib=vm.total // 1024,
                mem_used_kib=(vm.total - vm.available) // 1024,
                source="psutil",
                measured_at=poll.wall,
            )
        cpu_pct = None
        if poll.host_cpu_ns is not None:
            prev, self._prev_host_cpu = self._prev_host_cpu, poll.host_cpu_ns
            if prev is not None and poll.host_cpu_ns[1] > prev[1]:
                busy = poll.host_cpu_ns[0] - prev[0]
                cpu_pct = max(0.0, min(100.0, 100.0 * busy / (poll.host_cpu_ns[1] - prev[1])))
        total, used = poll.host_mem if poll.host_mem else (None, None)
        return HostSample(cpu_pct, total, used, "libvirt", poll.wall)

    def _build(self, poll: _Poll, duration_s: float) -> Snapshot:
        self._ticks += 1
        prev_cpu = self._prev_cpu
        next_cpu: dict[str, tuple[int, float]] = {}
        host_cpus = poll.facts.cpus
        domains: list[DomainSample] = []
        for d in poll.domains:
            s = d.stats
            state, text = decode_state(s.state, s.reason)
            vcpus = s.vcpus if s.vcpus is not None else (d.config.vcpus if d.config else None)
            alloc = s.balloon_maximum_kib
            if alloc is None and d.config is not None:
                alloc = d.config.max_mem_kib
            used, source = memory_used(s) if state.is_active else (None, "unknown")
            pct = host_pct = None
            if s.cpu_time_ns is not None and state.is_active:
                next_cpu[d.uuid] = (s.cpu_time_ns, poll.mono)
                before = prev_cpu.get(d.uuid)
                if before is not None:
                    dt = poll.mono - before[1]
                    pct = cpu_percent(before[0], s.cpu_time_ns, dt, vcpus)
                    host_pct = cpu_percent(before[0], s.cpu_time_ns, dt, host_cpus)
            domains.append(
                DomainSample(
                    uuid=d.uuid,
                    name=d.name,
                    state=state,
                    reason=s.reason,
                    state_text=text,
                    domain_id=d.domain_id,
                    vcpus=vcpus,
                    cpu_time_ns=s.cpu_time_ns,
                    cpu_pct=pct,
                    cpu_host_pct=host_pct,
                    mem_alloc_kib=alloc,
                    mem_used_kib=used,
                    mem_source=MemorySource(source),
                    started_at=d.started_at,
                    measured_at=poll.wall,
                )
            )
        self._prev_cpu = next_cpu
        domains.sort(key=lambda x: (x.name, x.uuid))
        return Snapshot(
            host=self.host,
            facts=poll.facts,
            host_sample=self._host_sample(poll),
            domains=tuple(domains),
            taken_at=poll.wall,
            tick=self._ticks,
            duration_s=duration_s,
            stats_calls=poll.stats_calls,
            notice=self.notice,
        )


def connection_error(uri: str, err: Exception) -> AppError:
    """Wrap anything unexpected from a connection attempt as an AppError (never a traceback)."""
    if isinstance(err, AppError):
        return err
    if isinstance(err, libvirt.libvirtError):
        return from_libvirt(err, uri=uri, what=f"cannot connect to {redact_uri(uri)}")
    return AppError(
        ErrorCode.LIBVIRT_CONNECTION_FAILED,
        f"cannot connect to {redact_uri(uri)}: {err}",
        "check the URI and that libvirtd is running",
        Severity.CRITICAL,
    )
