"""The health checks virtwatch runs, with the defaults an admin would expect.

`CATALOGUE` names every check and its default thresholds (validated config refers to
it); the functions build check bodies from what the runtime has: a connection source,
a pool, an event stream, the store writer, a host sample, the latest snapshot. Each
dependency is a small Protocol, so core never imports storage. Readings are pure
functions of those values (`*_readings`); the async bodies only fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import libvirt

from virtwatch.core.collect.collector import Collector
from virtwatch.core.errors import AppError, as_app_error
from virtwatch.core.health.monitor import (
    Check,
    CheckFn,
    CheckInfo,
    HealthSettings,
    Reading,
    Thresholds,
    judge,
    worst,
)
from virtwatch.core.libvirt.connection import ConnectionSource
from virtwatch.core.libvirt.eventloop import LibvirtEventThread
from virtwatch.core.libvirt.uri import driver_of
from virtwatch.core.model import DomainState, HostSample, Snapshot
from virtwatch.core.records import HealthState
from virtwatch.core.runtime import Runtime

# name -> defaults. Units: % of capacity unless said; thresholds: warn, crit (higher = worse)
CATALOGUE: tuple[CheckInfo, ...] = (
    CheckInfo(
        "libvirt.reachable",
        "ms",
        Thresholds(1000.0, 5000.0),
        interval_s=30,
        timeout_s=15,
        description="libvirtd answers a cheap call on a pooled connection (round trip)",
    ),
    CheckInfo(
        "pool.saturation",
        "%",
        Thresholds(80.0, 100.0),
        interval_s=15,
        timeout_s=5,
        description="shared connections in use plus waiters, of the pool's shared capacity",
    ),
    CheckInfo(
        "events.alive",
        "callbacks",
        Thresholds(None, None),
        interval_s=30,
        timeout_s=5,
        description="the domain event stream is open with callbacks registered",
    ),
    CheckInfo(
        "store.writable",
        "s",
        Thresholds(10.0, 60.0),
        interval_s=30,
        timeout_s=5,
        description="the database accepts writes; value: age of the oldest unwritten row",
    ),
    CheckInfo("host.cpu", "%", Thresholds(85.0, 95.0), description="host CPU busy"),
    CheckInfo("host.memory", "%", Thresholds(90.0, 95.0), description="host memory in use"),
    CheckInfo("host.swap", "%", Thresholds(50.0, 80.0), description="host swap in use"),
    CheckInfo(
        "host.disk", "%", Thresholds(85.0, 95.0), interval_s=60, description="space used per mount"
    ),
    CheckInfo("host.load", "per core", Thresholds(1.0, 2.0), description="5-minute load per CPU"),
    CheckInfo(
        "host.psi.cpu",
        "%",
        Thresholds(20.0, 50.0),
        description="time some task waited for a CPU (PSI some avg60)",
    ),
    CheckInfo(
        "host.psi.memory",
        "%",
        Thresholds(5.0, 15.0),
        description="time all tasks stalled on memory (PSI full avg60)",
    ),
    CheckInfo(
        "host.psi.io",
        "%",
        Thresholds(10.0, 30.0),
        description="time all tasks stalled on I/O (PSI full avg60)",
    ),
    CheckInfo(
        "vm.stale",
        "s",
        Thresholds(60.0, 300.0),
        per_vm=True,
        description="age of a running VM's oldest value (a hung QEMU job stops its stats)",
    ),
    CheckInfo(
        "vm.steal",
        "%",
        Thresholds(10.0, 30.0),
        per_vm=True,
        description="vCPU time a running VM waited for a host CPU (steal)",
    ),
)
CATALOGUE_BY_NAME = {c.name: c for c in CATALOGUE}
HOST_CHECKS = (
    "host.cpu",
    "host.memory",
    "host.swap",
    "host.disk",
    "host.load",
    "host.psi.cpu",
    "host.psi.memory",
    "host.psi.io",
)
# hosts another process records, named in the store check's message (then a count)
MAX_ELSEWHERE = 3


# --- what the checks read: small ports ------------------------------------------------


class PoolUsage(Protocol):
    """What saturation needs from a pool's stats (core.pool.PoolStats has it)."""

    @property
    def in_use(self) -> int: ...

    @property
    def waiters(self) -> int: ...

    @property
    def max_size(self) -> int: ...

    @property
    def dedicated(self) -> int: ...

    @property
    def timeouts(self) -> int: ...


class PoolProbe(Protocol):
    def stats(self) -> PoolUsage: ...


class EventStreamProbe(Protocol):
    """What liveness needs from an event stream (core.events.DomainEventStream has it)."""

    @property
    def state(self) -> str: ...

    @property
    def registered(self) -> int: ...


class WriterStatus(Protocol):
    """What the store check needs (storage's WriterStats has it)."""

    @property
    def state(self) -> str: ...  # "running", "failing", "closed", "unstarted"

    @property
    def lag_s(self) -> float: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def failing_since(self) -> float | None: ...

    @property
    def dropped_samples(self) -> int: ...

    @property
    def dropped_records(self) -> int: ...

    @property
    def recorded_elsewhere(self) -> Sequence[str]: ...  # hosts another process records


class StoreProbe(Protocol):
    """storage's StoreWriter: `stats()` says whether it writes and how far behind it is."""

    def stats(self) -> WriterStatus: ...


HostSampleFn = Callable[[], Awaitable[HostSample | None]]
SnapshotFn = Callable[[], Snapshot | None]


# --- readings (pure) --------------------------------------------------------------------


def pool_readings(host: str, s: PoolUsage) -> list[Reading]:
    shared = max(1, s.max_size - s.dedicated)
    pct = 100.0 * (s.in_use + s.waiters) / shared
    msg = f"{s.in_use} of {shared} shared connections in use, {s.waiters} waiting"
    if s.timeouts:
        msg += f"; {s.timeouts} borrows timed out so far"
    return [Reading(host, round(pct, 1), msg)]


def event_readings(host: str, stream: EventStreamProbe, thread_alive: bool) -> list[Reading]:
    state = str(stream.state)
    n = stream.registered
    if state != "open":
        return [Reading(host, float(n), f"the event stream is {state}", HealthState.CRIT)]
    if not thread_alive:
        return [Reading(host, float(n), "libvirt's event thread is not running", HealthState.CRIT)]
    if n == 0:
        return [
            Reading(host, 0.0, "no event callbacks registered (reconnecting?)", HealthState.CRIT)
        ]
    return [Reading(host, float(n), f"{n} event callbacks registered", HealthState.OK)]


def store_readings(subject: str, st: WriterStatus, limits: Thresholds, now: float) -> list[Reading]:
    state = str(st.state)
    lag = round(st.lag_s, 3)
    if state == "failing":
        since = now - (st.failing_since or now)
        return [
            Reading(
                subject,
                lag,
                f"the database refuses writes since {since:.0f} s: {st.last_error or '?'}",
                HealthState.CRIT,
            )
        ]
    if state != "running":
        return [Reading(subject, None, f"the store writer is {state}", HealthState.UNKNOWN)]
    dropped = st.dropped_samples + st.dropped_records
    msg = f"writable, {lag:.1f} s behind"
    if elsewhere := st.recorded_elsewhere:  # e.g. "hv1 is recorded by virtwatch record (...)"
        more = len(elsewhere) - MAX_ELSEWHERE
        msg += "; " + "; ".join(elsewhere[:MAX_ELSEWHERE])
        msg += f"; and {more} more hosts recorded elsewhere" if more > 0 else ""
    if not dropped:
        return [Reading(subject, lag, msg)]
    state_now = worst([judge(lag, limits), HealthState.WARN])
    return [Reading(subject, lag, f"{msg}; {dropped} rows dropped (buffer full)", state_now)]


def host_readings(name: str, host: str, hs: HostSample | None) -> list[Reading]:
    """The readings of host check `name` from one HostSample (nothing: not measured there)."""
    if hs is None:
        return [Reading(host, None, "no host sample yet", HealthState.UNKNOWN)]
    if name == "host.cpu":
        if hs.cpu_pct is None:
            return [Reading(host, None, "CPU not measured yet", HealthState.UNKNOWN)]
        return [Reading(host, round(hs.cpu_pct, 1), f"CPU {hs.cpu_pct:.0f}% busy")]
    if name == "host.memory":
        if not hs.mem_total_kib or hs.mem_used_kib is None:
            return []
        pct = 100.0 * hs.mem_used_kib / hs.mem_total_kib
        return [Reading(host, round(pct, 1), f"memory {pct:.0f}% used")]
    if name == "host.swap":
        if hs.swap_total_kib is None or hs.swap_used_kib is None:
            return []
        if hs.swap_total_kib == 0:
            return [Reading(host, None, "no swap configured", HealthState.OK)]
        pct = 100.0 * hs.swap_used_kib / hs.swap_total_kib
        return [Reading(host, round(pct, 1), f"swap {pct:.0f}% used")]
    if name == "host.disk":
        return [
            Reading(m.mount, round(m.used_pct, 1), f"{m.mount} ({m.device}) {m.used_pct:.0f}% used")
            for m in hs.mounts
        ]
    if name == "host.load":
        if hs.load5 is None or not hs.cpus:
            return []
        per_core = hs.load5 / hs.cpus
        return [
            Reading(host, round(per_core, 2), f"load {hs.load5:.2f} over {hs.cpus} CPUs (5 min)")
        ]
    if name.startswith("host.psi."):
        resource = name.rsplit(".", 1)[1]
        p = hs.pressure(resource)
        if p is None:
            return []
        if resource == "cpu":
            return [Reading(host, p.some_avg60, f"some task waited for CPU {p.some_avg60}%")]
        if p.full_avg60 is None:
            return []
        return [Reading(host, p.full_avg60, f"all tasks stalled on {resource} {p.full_avg60}%")]
    raise ValueError(f"not a host check: {name}")


def vm_stale_readings(host: str, snap: Snapshot | None, now: float) -> list[Reading]:
    """A stale host: one reading for the host (its data's age). Else one per running VM:
    the age of its oldest value (state, memory, disk, network each carry their time)."""
    if snap is None:
        return [Reading(host, None, "no snapshot yet", HealthState.UNKNOWN)]
    if snap.stale:
        age = snap.age_s(now)
        return [
            Reading(host, round(age, 1), f"no data from the host for {age:.0f} s: {snap.error}")
        ]
    out = []
    for d in snap.domains:
        if d.state is not DomainState.RUNNING:
            continue
        times = [d.measured_at, d.mem_measured_at]
        times += [x.measured_at for x in (d.disk, d.net) if x is not None]
        oldest = min(t for t in times if t is not None)
        age = max(0.0, now - oldest)
        out.append(Reading(d.name, round(age, 1), f"oldest value {age:.0f} s old", vm=d.name))
    return out


def vm_steal_readings(snap: Snapshot | None) -> list[Reading]:
    if snap is None or snap.stale:
        return []
    return [
        Reading(
            d.name,
            round(d.vcpu_delay_pct, 2),
            f"vCPUs waited {d.vcpu_delay_pct:.1f}% of the time for a host CPU",
            vm=d.name,
        )
        for d in snap.domains
        if d.state is DomainState.RUNNING and d.vcpu_delay_pct is not None
    ]


# --- check bodies -------------------------------------------------------------------------


def reachable(source: ConnectionSource, host: str, *, timeout_s: float) -> CheckFn:
    """A cheap call (getLibVersion) on a borrowed connection; no answer is CRIT."""

    async def run() -> list[Reading]:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s), source.connection() as b:
                await b.call(lambda conn: conn.getLibVersion(), what="getLibVersion")
        except TimeoutError:
            msg = f"no answer within {timeout_s:g} s (from the host, or no free connection)"
            return [Reading(host, None, msg, HealthState.CRIT)]
        except (AppError, libvirt.libvirtError) as err:
            app = as_app_error(err, uri=source.uri, what="health probe")
            return [Reading(host, None, f"unreachable: {app.message}", HealthState.CRIT)]
        ms = (time.monotonic() - started) * 1000
        return [Reading(host, round(ms, 1), f"answered in {ms:.0f} ms")]

    return run


def _now_readings(fn: Callable[[], list[Reading]]) -> CheckFn:
    async def run() -> list[Reading]:
        return fn()

    return run


@dataclass(frozen=True, slots=True)
class HostProbes:
    """What one host offers to health checks; None leaves the matching checks out."""

    name: str
    source: ConnectionSource | None = None
    pool: PoolProbe | None = None
    events: EventStreamProbe | None = None
    host_sample: HostSampleFn | None = None
    snapshot: SnapshotFn | None = None


def host_checks(
    settings: HealthSettings, probes: HostProbes, *, clock: Callable[[], float] = time.time
) -> list[Check]:
    """Every check `probes` make possible for one host, configured by `settings`."""
    host = probes.name
    out: list[Check] = []
    if probes.source is not None:
        timeout = settings.info("libvirt.reachable").timeout_s * 0.8  # CRIT before UNKNOWN
        body = reachable(probes.source, host, timeout_s=timeout)
        out.append(settings.check("libvirt.reachable", body, host=host))
    if probes.pool is not None:
        pool = probes.pool
        out.append(
            settings.check(
                "pool.saturation",
                _now_readings(lambda: pool_readings(host, pool.stats())),
                host=host,
            )
        )
    if probes.events is not None:
        stream = probes.events
        out.append(
            settings.check(
                "events.alive",
                _now_readings(
                    lambda: event_readings(host, stream, LibvirtEventThread.is_running())
                ),
                host=host,
            )
        )
    if probes.host_sample is not None:
        for name in HOST_CHECKS:
            out.append(settings.check(name, _sampled(name, host, probes.host_sample), host=host))
    if probes.snapshot is not None:
        snap_fn = probes.snapshot
        out.append(
            settings.check(
                "vm.stale",
                _now_readings(lambda: vm_stale_readings(host, snap_fn(), clock())),
                host=host,
            )
        )
        out.append(
            settings.check(
                "vm.steal", _now_readings(lambda: vm_steal_readings(snap_fn())), host=host
            )
        )
    return out


def _sampled(name: str, host: str, sample: HostSampleFn) -> CheckFn:
    async def run() -> list[Reading]:
        return host_readings(name, host, await sample())

    return run


def store_check(
    settings: HealthSettings,
    store: StoreProbe,
    *,
    subject: str = "database",
    clock: Callable[[], float] = time.time,
) -> Check:
    limits = settings.info("store.writable").thresholds
    return settings.check(
        "store.writable",
        _now_readings(lambda: store_readings(subject, store.stats(), limits, clock())),
    )


class SharedSample:
    """One host sample shared by the host checks that run together: a fetch in flight is
    joined, a result younger than `max_age_s` reused (eight checks, one /proc read)."""

    def __init__(self, fetch: HostSampleFn, *, max_age_s: float = 5.0) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._value: HostSample | None = None
        self._at = 0.0
        self._inflight: asyncio.Task[HostSample | None] | None = None

    async def __call__(self) -> HostSample | None:
        if self._value is not None and time.monotonic() - self._at < self._max_age_s:
            return self._value
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._refresh())
        return await asyncio.shield(self._inflight)

    async def _refresh(self) -> HostSample | None:
        value = await self._fetch()
        self._value, self._at = value, time.monotonic()
        return value


def collector_probes(
    name: str, last: Callable[[], Snapshot | None]
) -> tuple[HostSampleFn, SnapshotFn]:
    """Host sample and snapshot from a collector's latest snapshot (no extra sampling)."""

    async def sample() -> HostSample | None:
        snap = last()
        return snap.host_sample if snap is not None else None

    return sample, last


def runtime_checks(
    settings: HealthSettings,
    runtime: Runtime,
    *,
    events: Mapping[str, EventStreamProbe] | None = None,
    store: StoreProbe | None = None,
) -> list[Check]:
    """Every standard check for an open Runtime: per host reachability and pool saturation
    (its pool), event liveness (`events` by host label), host and VM checks (its
    collector's latest snapshot; none for the test driver's fictional host), and the
    store's writability when a writer is given."""
    out: list[Check] = []
    for host in runtime.hosts:
        collector = next(c for c in runtime.collectors if c.host == host.label)
        pool = runtime.pools[host.label]
        sample, snapshot = collector_probes(host.label, _last_of(collector))
        probes = HostProbes(
            host.label,
            source=pool,
            pool=pool,
            events=(events or {}).get(host.label),
            host_sample=None if driver_of(host.uri) == "test" else sample,
            snapshot=snapshot,
        )
        out += host_checks(settings, probes)
    if store is not None:
        out.append(store_check(settings, store))
    return out


def _last_of(collector: Collector) -> SnapshotFn:
    return lambda: collector.last
