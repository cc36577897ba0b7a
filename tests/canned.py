"""Canned snapshots for UI tests and the screenshot script (fixed data, fixed clock)."""

from __future__ import annotations

from uuid import NAMESPACE_DNS, uuid5

from virtwatch.core.libvirt.states import decode_state
from virtwatch.core.model import (
    DomainSample,
    DomainState,
    HostFacts,
    HostSample,
    MemorySource,
    Snapshot,
)

NOW = 1_795_000_000.0  # frozen clock for screens


def domain(
    name: str,
    state: int = 1,
    reason: int = 1,
    *,
    vcpus: int = 2,
    cpu: float | None = 12.5,
    used_mib: int | None = 900,
    alloc_mib: int = 2048,
    up_s: float | None = 3 * 3600 + 12 * 60,
    uuid: str | None = None,
) -> DomainSample:
    st, text = decode_state(state, reason)
    active = st.is_active
    return DomainSample(
        uuid=uuid or str(uuid5(NAMESPACE_DNS, name)),
        name=name,
        state=st,
        reason=reason,
        state_text=text,
        domain_id=7 if active else None,
        vcpus=vcpus,
        cpu_time_ns=123_000_000_000 if active else None,
        cpu_pct=cpu if active else None,
        cpu_host_pct=cpu / 8 if (cpu is not None and active) else None,
        mem_alloc_kib=alloc_mib * 1024,
        mem_used_kib=used_mib * 1024 if (used_mib is not None and active) else None,
        mem_source=MemorySource.RSS if active else MemorySource.UNKNOWN,
        started_at=(NOW - up_s) if (up_s is not None and st is DomainState.RUNNING) else None,
        measured_at=NOW,
    )


FACTS = HostFacts(
    uri="qemu:///system",
    hostname="hv-07.example.net",
    driver="QEMU",
    libvirt_version="9.0.0",
    hypervisor_version="7.2.22",
    cpus=16,
    memory_kib=64 * 1024 * 1024,
)


def fleet_snapshot(*, tick: int = 1, notice: str | None = None, taken_at: float = NOW) -> Snapshot:
    """A dozen VMs in mixed states, one with a hostile name."""
    doms = (
        domain("web-01", cpu=23.4, uuid="10000000-0000-4000-8000-000000000001"),
        domain("web-02", cpu=19.0, uuid="10000000-0000-4000-8000-000000000002"),
        domain(
            "db-primary",
            vcpus=8,
            cpu=61.2,
            used_mib=14000,
            alloc_mib=16384,
            uuid="10000000-0000-4000-8000-000000000003",
        ),
        domain(
            "db-replica",
            vcpus=8,
            cpu=8.3,
            used_mib=12100,
            alloc_mib=16384,
            uuid="10000000-0000-4000-8000-000000000004",
        ),
        domain(
            "cache-01",
            cpu=2.1,
            used_mib=3900,
            alloc_mib=4096,
            uuid="10000000-0000-4000-8000-000000000005",
        ),
        domain(
            "build-runner", vcpus=4, cpu=97.9, up_s=340, uuid="10000000-0000-4000-8000-000000000006"
        ),
        domain(
            "staging-api", state=3, reason=5, cpu=0.0, uuid="10000000-0000-4000-8000-000000000007"
        ),
        domain("backup", state=5, reason=1, uuid="10000000-0000-4000-8000-000000000008"),
        domain(
            "legacy-crm",
            state=5,
            reason=3,
            vcpus=1,
            alloc_mib=1024,
            uuid="10000000-0000-4000-8000-000000000009",
        ),
        domain(
            "[bold red]x[/]",
            cpu=0.4,
            used_mib=60,
            alloc_mib=64,
            vcpus=1,
            uuid="10000000-0000-4000-8000-000000000010",
        ),
        domain(
            "win2022-rdp", vcpus=4, cpu=None, up_s=None, uuid="10000000-0000-4000-8000-000000000011"
        ),
        domain(
            "laptop-image",
            state=7,
            reason=0,
            cpu=None,
            used_mib=None,
            uuid="10000000-0000-4000-8000-000000000012",
        ),
    )
    return Snapshot(
        host="qemu:///system",
        facts=FACTS,
        host_sample=HostSample(
            cpu_pct=31.5,
            mem_total_kib=64 * 1024 * 1024,
            mem_used_kib=41 * 1024 * 1024,
            source="psutil",
            measured_at=NOW,
        ),
        domains=tuple(sorted(doms, key=lambda d: d.name)),
        taken_at=taken_at,
        tick=tick,
        duration_s=0.004,
        notice=notice,
    )


# --- the dashboard's other panes (issue 6): fixed records at the frozen clock ---------

from virtwatch.core.collect.history import MetricHistory  # noqa: E402
from virtwatch.core.errors import AppError, ErrorCode, Severity  # noqa: E402
from virtwatch.core.incidents import ErrorReport  # noqa: E402
from virtwatch.core.records import (  # noqa: E402
    AuditRecord,
    ConnectionState,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthResult,
    HealthState,
    HostConnection,
    Outcome,
    TaskState,
    TaskUpdate,
)

HOST = "qemu:///system"
HOST2 = "hv-08"
FACTS2 = HostFacts(
    uri="qemu+ssh://admin@hv-08.example.net/system",
    hostname="hv-08.example.net",
    driver="QEMU",
    libvirt_version="9.0.0",
    hypervisor_version="7.2.22",
    cpus=8,
    memory_kib=32 * 1024 * 1024,
)


def second_host_snapshot(*, taken_at: float = NOW) -> Snapshot:
    """A small remote host: three VMs, one of them also named web-01."""
    doms = (
        domain("web-01", cpu=44.0, uuid="20000000-0000-4000-8000-000000000001"),
        domain("mail", vcpus=2, cpu=3.5, uuid="20000000-0000-4000-8000-000000000002"),
        domain("ci-worker", state=3, reason=1, uuid="20000000-0000-4000-8000-000000000003"),
    )
    return Snapshot(
        host=HOST2,
        facts=FACTS2,
        host_sample=HostSample(
            cpu_pct=12.0,
            mem_total_kib=32 * 1024 * 1024,
            mem_used_kib=9 * 1024 * 1024,
            source="libvirt",
            measured_at=taken_at,
        ),
        domains=tuple(sorted(doms, key=lambda d: d.name)),
        taken_at=taken_at,
        tick=1,
        duration_s=0.02,
    )


def _wave(i: int, base: float, amp: float, period: int) -> float:
    # a deterministic wobble (no randomness, so snapshots are stable)
    phase = (i % period) / period
    tri = 1 - abs(2 * phase - 1)
    return max(0.0, base + amp * (2 * tri - 1))


def filled_history(*, points: int = 150, step_s: float = 2.0) -> MetricHistory:
    """Rings holding `points` ticks of the fleet, ending at NOW, CPU and memory moving."""
    history = MetricHistory(fine_points=points)
    base = fleet_snapshot()
    import dataclasses

    for i in range(points):
        t = NOW - (points - 1 - i) * step_s
        doms = tuple(
            d._replace(
                cpu_pct=None
                if d.cpu_pct is None
                else min(100.0, _wave(i + k * 7, d.cpu_pct, 15.0, 40 + k)),
                mem_used_kib=None
                if d.mem_used_kib is None
                else int(d.mem_used_kib * (0.9 + 0.1 * _wave(i, 0.5, 0.5, 60))),
                measured_at=t,
            )
            for k, d in enumerate(base.domains)
        )
        hs = base.host_sample
        assert hs is not None
        host = dataclasses.replace(hs, cpu_pct=_wave(i, 31.5, 20.0, 50), measured_at=t)
        history.record(dataclasses.replace(base, domains=doms, host_sample=host, taken_at=t))
    return history


def health_results() -> list[HealthResult]:
    def r(
        check: str,
        subject: str,
        state: HealthState,
        value: float | None,
        unit: str,
        warn: float | None,
        crit: float | None,
        message: str,
        ago: float,
    ) -> HealthResult:
        return HealthResult(
            check, subject, state, state, value, unit, warn, crit, message, NOW - ago, HOST
        )

    return [
        r("libvirt.reachable", HOST, HealthState.OK, 3.0, "ms", 500, 2000, "answers", 4),
        r("host.cpu", "hv-07", HealthState.OK, 31.5, "%", 85, 95, "31.5% busy", 2),
        r("host.memory", "hv-07", HealthState.WARN, 88.0, "%", 85, 95, "88% used", 2),
        r("host.disk", "/var/lib/libvirt", HealthState.CRIT, 97.2, "%", 85, 95, "97% full", 30),
        r("pool.saturation", HOST, HealthState.OK, 20.0, "%", 80, 95, "2 of 10 in use", 5),
        r("store.writable", "virtwatch.db", HealthState.OK, 0.4, "s", 5, 30, "lag 0.4 s", 1),
    ]


def health_alerts() -> list[HealthAlert]:
    return [
        HealthAlert(
            "host.memory", "hv-07", HealthState.OK, HealthState.WARN, "88% used", NOW - 300, HOST
        ),
        HealthAlert(
            "host.disk",
            "/var/lib/libvirt",
            HealthState.WARN,
            HealthState.CRIT,
            "97% full",
            NOW - 30,
            HOST,
        ),
    ]


def error_reports() -> list[ErrorReport]:
    lost = AppError(
        ErrorCode.LIBVIRT_CONNECTION_LOST,
        "collecting stats: client socket is closed",
        "libvirtd dropped the connection; virtwatch reconnects on its own",
        Severity.CRITICAL,
        {"uri": HOST, "libvirt_code": "1", "libvirt_domain": "7"},
        transient=True,
        libvirt_code=1,
        libvirt_domain=7,
    )
    invalid = AppError(
        ErrorCode.MACHINE_INVALID_STATE,
        "start: [bold red]domain is already running[/]",
        "the VM is not in a state that allows this; check its current state",
        Severity.WARNING,
        {"vm": "web-01"},
    )
    slow = AppError(
        ErrorCode.DATABASE_ERROR,
        "writing 1200 samples took 4.2 s",
        "check the disk holding the database",
        Severity.INFO,
    )
    return [
        ErrorReport(lost, HOST, None, NOW - 95, f"LOST|{HOST}||", 42, NOW - 600),
        ErrorReport(invalid, HOST, "web-01", NOW - 40, f"INV|{HOST}|web-01|", 1, NOW - 40),
        ErrorReport(slow, None, None, NOW - 200, "DB|||", 3, NOW - 900),
    ]


def task_updates() -> list[TaskUpdate]:
    return [
        TaskUpdate(
            "t-1",
            "shutdown web-02",
            "action.shutdown",
            TaskState.RUNNING,
            1,
            3,
            NOW - 5,
            NOW - 5,
            host=HOST,
            vm_name="web-02",
        ),
        TaskUpdate(
            "t-2",
            "start backup",
            "action.start",
            TaskState.RETRYING,
            2,
            3,
            NOW - 3,
            NOW - 12,
            next_try_at=NOW + 2,
            error_code="TIMEOUT",
            message="job lock held",
            host=HOST,
            vm_name="backup",
        ),
        TaskUpdate(
            "t-3",
            "health.host_cpu",
            "health.host_cpu",
            TaskState.SUCCEEDED,
            1,
            1,
            NOW - 60,
            NOW - 61,
        ),
        TaskUpdate(
            "t-4",
            "force off legacy-crm",
            "action.force_off",
            TaskState.FAILED,
            1,
            1,
            NOW - 400,
            NOW - 402,
            error_code="FORBIDDEN",
            message="read-only connection",
            host=HOST,
            vm_name="legacy-crm",
        ),
    ]


def audit_records() -> list[AuditRecord]:
    uuid = "10000000-0000-4000-8000-000000000001"
    return [
        AuditRecord(
            HOST, uuid, "web-01", "reboot", "alice", "10.0.0.5", Outcome.VERIFIED, NOW - 240, 7.4
        ),
        AuditRecord(
            HOST,
            uuid,
            "web-01",
            "start",
            "alice",
            None,
            Outcome.FAILED,
            NOW - 40,
            0.1,
            "domain is already running",
            "MACHINE_INVALID_STATE",
        ),
    ]


def domain_events() -> list[DomainEvent]:
    uuid = "10000000-0000-4000-8000-000000000001"
    return [
        DomainEvent(HOST, uuid, "web-01", EventKind.LIFECYCLE, "stopped: shut down", NOW - 236),
        DomainEvent(HOST, uuid, "web-01", EventKind.LIFECYCLE, "started: booted", NOW - 233),
        DomainEvent(
            HOST,
            "10000000-0000-4000-8000-000000000007",
            "staging-api",
            EventKind.IO_ERROR,
            "paused: I/O error",
            NOW - 120,
        ),
    ]


def host_connections() -> list[HostConnection]:
    return [
        HostConnection(HOST, HOST, ConnectionState.CONNECTED, NOW, NOW - 3600),
        HostConnection(
            HOST2,
            "qemu+ssh://admin@hv-08.example.net/system",
            ConnectionState.RECONNECTING,
            NOW,
            NOW - 50,
            next_retry_at=NOW + 8,
            message="ssh: connect to host hv-08.example.net port 22: Connection refused",
        ),
    ]


def all_records() -> list[object]:
    """Every canned record, in the order a real run would publish them."""
    return [
        *host_connections(),
        *health_results(),
        *health_alerts(),
        *error_reports(),
        *task_updates(),
        *audit_records(),
        *domain_events(),
    ]


# --- the collector's newer fields (issue 4): opt-in, so existing screens stay as they are --

import dataclasses  # noqa: E402

from virtwatch.core.model import DiskIo, MountUsage, NetIo, Pressure  # noqa: E402


def with_io(
    d: DomainSample,
    *,
    disk_bps: tuple[float, float] = (1_200_000.0, 350_000.0),
    net_bps: tuple[float, float] = (80_000.0, 25_000.0),
    steal_pct: float = 1.5,
    slow_age_s: float = 4.0,
) -> DomainSample:
    """`d` with disk/network rates, steal and memory measured `slow_age_s` before its tick
    (the collector reads those groups on a slower cadence and says when)."""
    at = d.measured_at - slow_age_s
    rd, wr = disk_bps
    rx, tx = net_bps
    return d._replace(
        vcpu_delay_pct=steal_pct,
        mem_current_kib=d.mem_alloc_kib,
        mem_measured_at=at,
        disk=DiskIo(
            ("vda",), 9 * 10**9, 4 * 10**9, 300_000, 120_000,
            rd, wr, rd / 4096, wr / 4096, 40 * 1024**3, 12 * 1024**3, at,
        ),
        net=NetIo(
            ("vnet3",), 7 * 10**9, 2 * 10**9, 6 * 10**6, 3 * 10**6, 0, 0, 12, 0,
            rx, tx, rx / 800, tx / 800, 0.0, 0.0, at,
        ),
    )  # fmt: skip


GIB = 1024**3


def full_host_sample(*, measured_at: float = NOW) -> HostSample:
    """A local host sample with everything psutil and /proc/pressure give."""
    return HostSample(
        cpu_pct=31.5,
        mem_total_kib=64 * 1024 * 1024,
        mem_used_kib=41 * 1024 * 1024,
        source="psutil",
        measured_at=measured_at,
        cpus=16,
        cpu_per_core_pct=tuple(float(10 + 5 * (i % 8)) for i in range(16)),
        mem_available_kib=23 * 1024 * 1024,
        swap_total_kib=8 * 1024 * 1024,
        swap_used_kib=256 * 1024,
        load1=5.2,
        load5=4.8,
        load15=4.1,
        mounts=(
            MountUsage("/", "/dev/nvme0n1p2", "ext4", 200 * GIB, 61 * GIB, 129 * GIB, 32.1),
            MountUsage(
                "/var/lib/libvirt/images", "/dev/md0", "xfs", 4096 * GIB, 3072 * GIB, 1024 * GIB, 75
            ),
        ),
        disk_read_bps=48_000_000.0,
        disk_write_bps=21_000_000.0,
        disk_read_iops=900.0,
        disk_write_iops=450.0,
        net_rx_bps=12_500_000.0,
        net_tx_bps=3_100_000.0,
        net_errs_ps=0.0,
        net_drops_ps=0.0,
        psi=(
            Pressure("cpu", 2.1, 3.4, 2.8, 10**9),
            Pressure("memory", 0.0, 0.1, 0.1, 10**7, 0.0, 0.0, 0.0, 10**6),
            Pressure("io", 1.2, 0.9, 0.7, 10**8, 0.4, 0.3, 0.2, 10**7),
        ),
    )  # fmt: skip


def stale_snapshot(*, age_s: float = 95.0) -> Snapshot:
    """The fleet's last good snapshot as the collector republishes it when the host stops
    answering: same values and `taken_at`, marked stale with the error and retry time."""
    snap = fleet_snapshot(taken_at=NOW - age_s)
    return dataclasses.replace(
        snap,
        stale=True,
        error="qemu:///system did not answer within 30 s — the host or libvirtd may be "
        "overloaded or hung; its last values stay on screen, marked stale",
        failed_since=NOW - age_s + 30,
        next_try_at=NOW + 2,
    )
