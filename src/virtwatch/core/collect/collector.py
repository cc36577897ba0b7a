"""The collector: per host, per tick, ONE bulk stats call (getAllDomainStats, NOWAIT) for
every domain, active and inactive; rates from counters; an immutable Snapshot on the hub.

Cheap stats groups come every tick, expensive ones on a slower cadence (same single
call, more group bits). Ticks never overlap; the blocking work runs in a worker thread
(its own per collector under `run()`, so a hung host never starves another). When a
tick fails or times out, the last good snapshot is republished with `stale=True`,
`error`, `failed_since` and `next_try_at` (its `taken_at` stays: that is its age).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import operator
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import psutil

from virtwatch.core.collect.hostsample import HostSampler, LocalHostSampler, RemoteHostSampler
from virtwatch.core.collect.rates import cpu_percent, disk_io, net_io
from virtwatch.core.config import Config, config_error, validate
from virtwatch.core.config_schema import CollectorSection
from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.connection import ConnectionSource
from virtwatch.core.libvirt.states import decode_state
from virtwatch.core.libvirt.stats import (
    STATS_BALLOON,
    STATS_BLOCK,
    STATS_CPU_TOTAL,
    STATS_INTERFACE,
    STATS_STATE,
    STATS_VCPU,
    BlockCounters,
    NetCounters,
    group_bits,
    group_names,
    has_balloon,
    memory_used,
    parse_record,
    rejected_groups,
    version_text,
)
from virtwatch.core.libvirt.uri import driver_of, is_local, redact_uri
from virtwatch.core.model import (
    DOMAIN_SAMPLE_FIELDS,
    DiskIo,
    DomainSample,
    DomainState,
    HostFacts,
    HostSample,
    MemorySource,
    NetIo,
    Snapshot,
    domain_sample_of,
)

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0
DEFAULT_SLOW_INTERVAL_S = 10.0
DEFAULT_TICK_TIMEOUT_S = 30.0
SHUTDOWN_GRACE_S = 5.0  # how long run() waits, when cancelled, for a call in flight
# daemon-side cost for five QEMU VMs (notes/libvirt.md): STATE 0.2 ms, CPU_TOTAL 5.4,
# VCPU 6.2, BALLOON 6.5, BLOCK 12; the brief puts VCPU (steal) with the cheap ones
FAST_GROUPS = STATS_STATE | STATS_CPU_TOTAL | STATS_VCPU
SLOW_GROUPS = STATS_BALLOON | STATS_BLOCK | STATS_INTERFACE
TICK_GROUPS = FAST_GROUPS | SLOW_GROUPS
QEMU_RUN_DIR = Path("/run/libvirt/qemu")
BulkStats = list[tuple[libvirt.virDomain, dict[str, Any]]]

_NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
_ENFORCE = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ENFORCE_STATS
_REJECTED_ARGS = (
    libvirt.VIR_ERR_INVALID_ARG,
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
)
_INACTIVE_STATES = (int(DomainState.NOSTATE), int(DomainState.SHUTOFF))


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """How often and what to collect. Parsed from `[collector]` by `collector_settings`."""

    interval_s: float = DEFAULT_INTERVAL_S
    slow_interval_s: float = DEFAULT_SLOW_INTERVAL_S  # expensive groups at most this often
    tick_timeout_s: float = DEFAULT_TICK_TIMEOUT_S  # a tick longer than this marks the host stale
    fast_groups: int = FAST_GROUPS
    slow_groups: int = SLOW_GROUPS


def _groups(names: list[str], key: str, path: Path | None) -> int:
    try:
        return group_bits(names)
    except ValueError as err:
        raise config_error(f"collector.{key}", str(err), path) from None


def collector_settings(config: Config) -> CollectorSettings:
    """`[collector]` (the schema's `CollectorSection`) -> CollectorSettings; a bad value
    raises ConfigError naming the key."""
    sec = validate(
        CollectorSection, config.section("collector"), prefix="collector", path=config.path
    )
    return CollectorSettings(
        sec.interval_s,
        sec.slow_interval_s,
        sec.tick_timeout_s,
        _groups(sec.fast_groups, "fast_groups", config.path) | STATS_STATE,
        _groups(sec.slow_groups, "slow_groups", config.path),
    )


# --- per-host memory between ticks ------------------------------------------------------


@dataclass(slots=True)
class _Config:
    """What a domain's definition says (dom.info()), read once per (uuid, state), not per tick.
    Only needed where the bulk call lacks VCPU/BALLOON (the test driver gives STATE only)."""

    state: int
    vcpus: int
    max_mem_kib: int


@dataclass(slots=True)
class _Mem:
    used: int | None
    source: MemorySource
    alloc: int | None
    current: int | None
    at: float


@dataclass(slots=True)
class _Dom:
    """One domain's counters and carried slow-group values, for one run of its QEMU process."""

    uuid: str
    name: str
    domain_id: int
    rec: dict[str, Any] | None = None
    # the last sample's field values, kept while they depend on nothing but the record (no
    # counters): a repeated record then costs one new object with a new measured_at
    reuse: list[Any] | None = None
    config: _Config | None = None
    started_at: float | None = None
    started_known: bool = False
    vcpus: int | None = None
    cpu: tuple[int, float] | None = None  # (cpu.time ns, monotonic)
    delay: tuple[int, float] | None = None  # (sum of vcpu.N.delay ns, monotonic)
    mem: _Mem | None = None
    blocks: tuple[tuple[BlockCounters, ...], float] | None = None
    nets: tuple[tuple[NetCounters, ...], float] | None = None
    disk: DiskIo | None = None
    net: NetIo | None = None


@dataclass(slots=True)
class _Caps:
    """What this host accepts, learned from its refusals and remembered."""

    flags: int = _NOWAIT | _ENFORCE
    unsupported: int = 0


@dataclass(slots=True)
class _HostState:
    facts: HostFacts | None = None
    caps: _Caps = field(default_factory=_Caps)
    # by raw UUID (what virDomainGetUUID gives), in the order libvirt returned them
    doms: dict[bytes, _Dom] = field(default_factory=dict)
    order: list[bytes] = field(default_factory=list)
    # that order -> sorted by (name, uuid), as a function of the list of samples
    sort: Callable[[list[DomainSample]], tuple[DomainSample, ...]] = lambda _s: ()
    last_slow: float | None = None  # monotonic time of the last tick with the slow groups
    relearn: bool = False  # set by the loop after a failure: re-read facts and capabilities
    ticks: int = 0


def _permutation(perm: list[int]) -> Callable[[list[DomainSample]], tuple[DomainSample, ...]]:
    """A function picking items in `perm`'s order into a tuple (itemgetter: no Python loop)."""
    if len(perm) == 1:
        only = perm[0]
        return lambda items: (items[only],)
    if not perm:
        return lambda _items: ()
    pick: Callable[[list[DomainSample]], tuple[DomainSample, ...]] = operator.itemgetter(*perm)
    return pick


def _domain_started_at(name: str) -> float | None:
    """Start time of a local QEMU VM, from its pid file (root-only, local driver only)."""
    try:
        pid = int((QEMU_RUN_DIR / f"{name}.pid").read_text().strip())
        return psutil.Process(pid).create_time()
    except (OSError, ValueError, psutil.Error):
        return None


_MEASURED_AT = DOMAIN_SAMPLE_FIELDS.index("measured_at")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background poll's exception as seen (its tick already reported a timeout)."""
    if not task.cancelled():
        task.exception()


class Collector:
    """Collects one host. `run()` loops until cancelled; `tick()` does one round."""

    def __init__(
        self,
        source: ConnectionSource,
        publish: Callable[[object], None],
        *,
        host: str | None = None,
        interval_s: float | None = None,
        notice: str | None = None,
        settings: CollectorSettings | None = None,
        host_sampler: HostSampler | None = None,
    ) -> None:
        self._source = source
        self._publish = publish
        self.settings = settings or CollectorSettings()
        self.host = host or redact_uri(source.uri)
        self.interval_s = interval_s if interval_s is not None else self.settings.interval_s
        self.notice = notice
        uri = source.uri
        self._local = is_local(uri)
        self._qemu_local = self._local and driver_of(uri) == "qemu"
        if host_sampler is not None:
            self._sampler: HostSampler | None = host_sampler
        elif driver_of(uri) == "test":
            self._sampler = None  # the test driver's host is fictional; psutil would describe ours
        elif self._local:
            self._sampler = LocalHostSampler()
        else:
            self._sampler = RemoteHostSampler()
        self._state = _HostState()
        self._decoded: dict[tuple[int, int], tuple[DomainState, str]] = {}
        self._force = asyncio.Event()
        self._reidentify = False  # a lifecycle event arrived: re-read every name and ID
        self._inflight: asyncio.Task[Snapshot] | None = None
        self._failed_since: float | None = None
        self.last: Snapshot | None = None
        self.failures = 0

    @property
    def slow_interval_s(self) -> float:
        return self.settings.slow_interval_s

    @property
    def tick_timeout_s(self) -> float:
        return self.settings.tick_timeout_s

    def force_tick(self) -> None:
        """Wake the loop now (a lifecycle event arrived); that tick re-reads every domain's
        name and ID, whatever its record says."""
        self._reidentify = True
        self._force.set()

    # --- async shell ---------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every `interval_s` (next tick after the last ends) until cancelled.

        Blocking work runs in a worker thread the connection source counts, so a host
        that hangs holds only that thread. A tick without an answer after
        `answer_after_s` marks the host stale as not answering; one slower than
        `tick_timeout_s` is reported again. Its call is left to finish and no second one
        is started (after twice that, the call's connection is given up and replaced).
        """
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._watched_tick()
                except TimeoutError:
                    self._failed(self._no_answer(self.tick_timeout_s))
                except AppError as err:
                    self._failed(err)
                except Exception as err:  # a bug must not end collection for this host
                    log.exception("collector %s: unexpected error", self.host)
                    self._failed(
                        AppError(
                            ErrorCode.INTERNAL_ERROR,
                            f"collecting {self.host} failed: {err.__class__.__name__}: {err}",
                            "this is a bug in virtwatch; please report it with the log",
                            Severity.ERROR,
                        )
                    )
                remaining = self.interval_s - (time.monotonic() - started)
                if remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await self._force.wait()
                self._force.clear()
        finally:
            task = self._inflight
            if task is not None and not task.done():
                # let the call finish, for a bounded time; cancelling it is safe (the source
                # keeps its connection open until the thread leaves libvirt) but would
                # throw away a snapshot that is about to arrive
                await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_S)
                task.cancel()

    async def tick(self) -> Snapshot:
        """One round: borrow a connection, one bulk stats call, publish a Snapshot.

        Raises AppError on failure (the caller decides; `run()` marks the host stale).
        """
        return await self._tick()

    async def _tick(self) -> Snapshot:
        task = self._inflight
        if task is None or task.done():
            slow = self._want_slow()
            full, self._reidentify = slow or self._reidentify, False
            task = asyncio.ensure_future(self._collect_async(slow, full))
            task.add_done_callback(_retrieve)
            self._inflight = task
        snap = await asyncio.shield(task)  # a timed-out tick leaves the call running, once
        self._failed_since = None
        self.last = snap
        self._publish(snap)
        return snap

    def _want_slow(self) -> bool:
        last = self._state.last_slow
        if last is None:
            return True
        # half an interval of slack, so a 10 s cadence at 2 s ticks is every 5th tick
        return time.monotonic() - last >= self.slow_interval_s - self.interval_s / 2

    async def _collect_async(self, slow: bool, full: bool) -> Snapshot:
        t0 = time.monotonic()
        try:
            async with self._source.connection() as b:
                return await b.call(
                    lambda conn: self._collect(conn, slow, full, t0),
                    timeout_s=2 * self.tick_timeout_s,
                    what="collecting stats",
                )
        except libvirt.libvirtError as err:
            raise from_libvirt(err, uri=self._source.uri, what="collecting stats") from err

    @property
    def answer_after_s(self) -> float:
        """A tick without an answer this long means libvirtd is not answering."""
        return min(self.tick_timeout_s, max(2.5 * self.interval_s, 5.0))

    async def _watched_tick(self) -> None:
        tick = asyncio.ensure_future(self._tick())
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.tick_timeout_s):
                # said again while it lasts: one outage stays one incident, however long
                while not (await asyncio.wait({tick}, timeout=self.answer_after_s))[0]:
                    waited = round(time.monotonic() - started)
                    self._failed(self._no_answer(waited), retry_at=False)
                await tick
        finally:
            tick.cancel()  # the call itself is shielded in `_tick`: it runs on, once

    def _no_answer(self, waited_s: float) -> AppError:
        return AppError(
            ErrorCode.LIBVIRT_NOT_ANSWERING,
            f"libvirtd at {self.host} has not answered for {waited_s:g} s",
            "libvirtd may be hung or overloaded (a stuck storage pool, a slow QEMU "
            "monitor); the last values stay on screen, marked stale, until it answers",
            Severity.ERROR,
            {"host": self.host},
            transient=True,
        )

    def _failed(self, err: AppError, *, retry_at: bool = True) -> None:
        """Report the error; republish the last good snapshot as stale, with its age.
        `retry_at`: say when the next tick is due (not while a call is still waiting)."""
        now = time.time()
        self.failures += 1
        self._state.relearn = True  # the host may come back upgraded or with other limits
        self._publish(ErrorReport.of(err, host=self.host))
        if self._failed_since is None:
            self._failed_since = now
        if self.last is not None:
            self.last = dataclasses.replace(
                self.last,
                stale=True,
                error=err.one_line(),
                failed_since=self._failed_since,
                next_try_at=now + self.interval_s if retry_at else None,
            )
            self._publish(self.last)

    # --- worker thread -------------------------------------------------------------------

    def _facts(self, conn: libvirt.virConnect) -> HostFacts:
        st = self._state
        if st.facts is None:
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
        return st.facts

    def _bulk(self, conn: libvirt.virConnect, groups: int) -> tuple[BulkStats, int, int]:
        """(records, calls made, groups asked). One call, unless the host refuses something:
        then drop exactly what it refused (or NOWAIT, or ENFORCE) and remember it."""
        caps = self._state.caps
        want = groups & ~caps.unsupported
        calls = 0
        while True:
            calls += 1
            try:
                records: BulkStats = conn.getAllDomainStats(want, caps.flags)
                return records, calls, want
            except libvirt.libvirtError as err:
                if err.get_error_code() not in _REJECTED_ARGS:
                    raise
                bits = rejected_groups(str(err.get_error_message() or "")) & want & ~STATS_STATE
                if bits:
                    caps.unsupported |= bits
                    want &= ~bits
                    log.info("%s: stats groups not supported: %s", self.host, group_names(bits))
                elif caps.flags & _NOWAIT:
                    caps.flags &= ~_NOWAIT  # an old daemon (< 4.5): poll without NOWAIT
                elif caps.flags & _ENFORCE:
                    caps.flags &= ~_ENFORCE  # let the daemon skip what it cannot give
                elif want != STATS_STATE:
                    caps.unsupported |= want & ~STATS_STATE
                    want = STATS_STATE
                else:
                    raise

    def _collect(self, conn: libvirt.virConnect, slow: bool, full: bool, t0: float) -> Snapshot:
        st = self._state
        if st.relearn:
            st.facts, st.caps, st.relearn = None, _Caps(), False
            if self._sampler is not None:
                self._sampler.reset()
        facts = self._facts(conn)
        groups = self.settings.fast_groups | STATS_STATE
        if slow:
            groups |= self.settings.slow_groups
        records, calls, asked = self._bulk(conn, groups)
        mono, wall = time.monotonic(), time.time()
        domains = self._domains(records, mono, wall, facts.cpus, full)
        host_sample = self._host_sample(conn)
        if slow:
            st.last_slow = t0
        st.ticks += 1
        return Snapshot(
            host=self.host,
            facts=facts,
            host_sample=host_sample,
            domains=domains,
            taken_at=wall,
            tick=st.ticks,
            duration_s=time.monotonic() - t0,
            stats_calls=calls,
            notice=self.notice,
            groups=group_names(asked),
            unsupported_groups=group_names(st.caps.unsupported),
        )

    def _host_sample(self, conn: libvirt.virConnect) -> HostSample | None:
        if self._sampler is None:
            return None
        try:
            return self._sampler.sample(conn)
        except (OSError, psutil.Error) as err:  # /proc unreadable: unknown, not fatal
            log.warning("host sample of %s failed: %s", self.host, err)
            return None

    def _domains(
        self, records: BulkStats, mono: float, wall: float, host_cpus: int, full: bool
    ) -> tuple[DomainSample, ...]:
        """Samples in (name, uuid) order. A domain whose record repeats the last one's and
        holds no counters (inactive, or a host that gives only the state) is the same run
        under the same name: it costs its UUID and one tuple. Names and IDs are re-read
        for every domain on a `full` tick (the slow cadence, and after a lifecycle event),
        so a rename (only possible while shut off) shows within one slow interval."""
        st = self._state
        before = st.doms
        seen: dict[bytes, _Dom] = {}
        samples: list[DomainSample] = []
        renamed = False
        inactive = _INACTIVE_STATES
        add, new, cls = samples.append, tuple.__new__, DomainSample
        for dom, rec in records:
            raw = dom.UUID()
            m = before.get(raw)
            if not full and m is not None:
                same = m.reuse
                if same is not None and m.rec == rec:  # the hot path: domain_sample_of inlined
                    same[_MEASURED_AT] = wall
                    seen[raw] = m
                    add(new(cls, same))
                    continue
            uuid = m.uuid if m is not None else str(uuidlib.UUID(bytes=raw))
            name = dom.name()
            domain_id = -1 if rec.get("state.state", 0) in inactive else dom.ID()
            if m is None or m.domain_id != domain_id:
                # new, started, stopped or restarted: counters of another QEMU run mean nothing
                m = _Dom(uuid, name, domain_id, config=m.config if m is not None else None)
            elif m.name != name:
                m.name, m.reuse, renamed = name, None, True
            values = m.reuse
            if values is not None and m.rec == rec:
                values[_MEASURED_AT] = wall
                sample = domain_sample_of(values)
            else:
                sample = self._sample(dom, rec, m, uuid, name, mono, wall, host_cpus)
                m.rec = rec
            seen[raw] = m
            add(sample)
        st.doms = seen
        order = list(seen)
        if renamed or order != st.order:
            perm = sorted(range(len(samples)), key=lambda i: (samples[i].name, samples[i].uuid))
            st.sort = _permutation(perm)
            st.order = order
        return st.sort(samples)

    def _decode(self, state: int, reason: int) -> tuple[DomainState, str]:
        key = (state, reason)
        hit = self._decoded.get(key)
        if hit is None:
            hit = self._decoded[key] = decode_state(state, reason)
        return hit

    def _sample(
        self,
        dom: libvirt.virDomain,
        rec: dict[str, Any],
        m: _Dom,
        uuid: str,
        name: str,
        mono: float,
        wall: float,
        host_cpus: int,
    ) -> DomainSample:
        s = parse_record(rec)
        state, text = self._decode(s.state, s.reason)
        active = state.is_active
        if s.vcpus is not None:
            m.vcpus = s.vcpus
        # slow groups: read when this tick asked for them, else carried (with their own
        # measurement time) from the last tick that did; also when NOWAIT skipped a busy VM
        if has_balloon(rec):
            used, source = memory_used(s) if active else (None, "unknown")
            m.mem = _Mem(
                used, MemorySource(source), s.balloon_maximum_kib, s.balloon_current_kib, wall
            )
        vcpus = m.vcpus
        alloc = m.mem.alloc if m.mem is not None else None
        if (vcpus is None or alloc is None) and (m.config is None or m.config.state != s.state):
            # the bulk call lacks these groups: read the definition once per state change
            try:
                info = dom.info()
                m.config = _Config(s.state, int(info[3]), int(info[1]))
            except libvirt.libvirtError:
                m.config = None
        if m.config is not None:
            vcpus = vcpus if vcpus is not None else m.config.vcpus
            alloc = alloc if alloc is not None else m.config.max_mem_kib
        if self._qemu_local and active and not m.started_known:
            m.started_at, m.started_known = _domain_started_at(name), True
        pct = host_pct = delay_pct = None
        counters = False
        if active and s.cpu_time_ns is not None:
            counters = True
            if m.cpu is not None:
                dt = mono - m.cpu[1]
                pct = cpu_percent(m.cpu[0], s.cpu_time_ns, dt, vcpus)
                host_pct = cpu_percent(m.cpu[0], s.cpu_time_ns, dt, host_cpus)
            m.cpu = (s.cpu_time_ns, mono)
        if active and s.vcpu_delay_ns is not None:
            counters = True
            if m.delay is not None:
                delay_pct = cpu_percent(m.delay[0], s.vcpu_delay_ns, mono - m.delay[1], vcpus)
            m.delay = (s.vcpu_delay_ns, mono)
        if s.blocks is not None:
            counters = True
            prev_b, dt_b = (m.blocks[0], mono - m.blocks[1]) if m.blocks else (None, 0.0)
            m.disk = disk_io(prev_b if active else None, s.blocks, dt_b, wall)
            m.blocks = (s.blocks, mono)
        if s.nets is not None:
            counters = True
            prev_n, dt_n = (m.nets[0], mono - m.nets[1]) if m.nets else (None, 0.0)
            m.net = net_io(prev_n if active else None, s.nets, dt_n, wall)
            m.nets = (s.nets, mono)
        mem = m.mem
        sample = DomainSample(
            uuid=uuid,
            name=name,
            state=state,
            reason=s.reason,
            state_text=text,
            domain_id=m.domain_id if m.domain_id >= 0 else None,
            vcpus=vcpus,
            cpu_time_ns=s.cpu_time_ns if active else None,
            cpu_pct=pct,
            cpu_host_pct=host_pct,
            mem_alloc_kib=alloc,
            mem_used_kib=mem.used if mem is not None else None,
            mem_source=mem.source if mem is not None else MemorySource.UNKNOWN,
            started_at=m.started_at if active else None,
            measured_at=wall,
            vcpu_delay_pct=delay_pct,
            mem_current_kib=mem.current if mem is not None else None,
            mem_measured_at=mem.at if mem is not None else None,
            disk=m.disk,
            net=m.net,
        )
        m.reuse = None if counters else [getattr(sample, f) for f in DOMAIN_SAMPLE_FIELDS]
        return sample


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
