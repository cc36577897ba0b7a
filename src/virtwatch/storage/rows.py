"""What each hub record becomes as a table row, and what a row reads back as: pure
conversions, no I/O.

Times become integer epoch milliseconds; text that may carry a URI is redacted;
values that are unknown or not finite are never stored (no invented zeros). Read back,
a state or kind this version does not know (a newer virtwatch wrote it) becomes the
nearest one it does, so that one row never hides the others.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.uri import redact_text
from virtwatch.core.model import Snapshot
from virtwatch.core.records import (
    AuditRecord,
    ConnectionState,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthResult,
    HealthState,
    HostConnection,
    Outcome,
    TaskUpdate,
)

E = TypeVar("E", bound=enum.Enum)

# every record kind the store keeps besides samples, in the order a flush writes them
Record = (
    ErrorReport
    | HealthResult
    | HealthAlert
    | DomainEvent
    | TaskUpdate
    | AuditRecord
    | HostConnection
)
RECORD_TYPES: tuple[type, ...] = (
    ErrorReport,
    HealthResult,
    HealthAlert,
    DomainEvent,
    TaskUpdate,
    AuditRecord,
    HostConnection,
)
# kept in preference to samples when the buffer is full
PRIORITY_TYPES: tuple[type, ...] = (ErrorReport, HealthResult, HealthAlert)


class SampleRow(NamedTuple):
    """One measured value on its way to the database (a tuple: cheap to build). The
    collector keeps tracking a NamedTuple, so the writer holds them as plain tuples."""

    host: str
    vm_uuid: str  # "" for the host itself
    vm_name: str
    metric: str
    ts_ms: int
    value: float


def ms(t: float) -> int:
    """Epoch seconds -> epoch milliseconds."""
    return round(t * 1000)


def ms_or_none(t: float | None) -> int | None:
    return None if t is None else ms(t)


def _finite(value: float | int | None) -> bool:
    return value is not None and math.isfinite(value)


def rows_from_snapshot(snap: Snapshot) -> list[SampleRow]:
    """The values of one snapshot worth keeping, as rows. Unknown values are not invented.

    A stale snapshot (the host stopped answering; its last values republished) gives no
    rows: they were stored when measured. Values the collector reads on its slow cadence
    (memory, disk, network) are stored on the tick that measured them, not carried ones.
    """
    if snap.stale:
        return []
    ts = ms(snap.taken_at)
    rows: list[SampleRow] = []
    hs = snap.host_sample
    if hs is not None:
        psi = {p.resource: p.some_avg10 for p in hs.psi}
        for metric, value in (
            ("host.cpu_pct", hs.cpu_pct),
            ("host.mem_used_kib", hs.mem_used_kib),
            ("host.swap_used_kib", hs.swap_used_kib),
            ("host.load1", hs.load1),
            ("host.disk_read_bps", hs.disk_read_bps),
            ("host.disk_write_bps", hs.disk_write_bps),
            ("host.net_rx_bps", hs.net_rx_bps),
            ("host.net_tx_bps", hs.net_tx_bps),
            ("host.psi_cpu_some", psi.get("cpu")),
            ("host.psi_memory_some", psi.get("memory")),
            ("host.psi_io_some", psi.get("io")),
        ):
            if value is not None and _finite(value):
                rows.append(SampleRow(snap.host, "", "", metric, ts, float(value)))
    for d in snap.domains:
        fresh_mem = d.mem_measured_at is None or d.mem_measured_at == d.measured_at
        disk = d.disk if d.disk is not None and d.disk.measured_at == d.measured_at else None
        net = d.net if d.net is not None and d.net.measured_at == d.measured_at else None
        for metric, v in (
            ("cpu_pct", d.cpu_pct),
            ("vcpu_delay_pct", d.vcpu_delay_pct),
            ("mem_used_kib", d.mem_used_kib if fresh_mem else None),
            ("mem_alloc_kib", d.mem_alloc_kib if fresh_mem else None),
            ("disk_rd_bps", disk.rd_bps if disk else None),
            ("disk_wr_bps", disk.wr_bps if disk else None),
            ("disk_rd_iops", disk.rd_iops if disk else None),
            ("disk_wr_iops", disk.wr_iops if disk else None),
            ("net_rx_bps", net.rx_bps if net else None),
            ("net_tx_bps", net.tx_bps if net else None),
            ("net_errs_ps", net.errs_ps if net else None),
            ("net_drops_ps", net.drops_ps if net else None),
        ):
            if v is not None and _finite(v):
                rows.append(SampleRow(snap.host, d.uuid, d.name, metric, ts, float(v)))
    return rows


def _text(value: str | None) -> str:
    return redact_text(value) if value else ""


def _opt_text(value: str | None) -> str | None:
    return redact_text(value) if value else value


def _detail(values: Mapping[str, object]) -> dict[str, Any]:
    return {str(k): redact_text(str(v)) for k, v in values.items()}


def fingerprint_of(report: ErrorReport) -> str:
    """The reporter's fingerprint, or its recipe when absent (one recipe: core's)."""
    return report.incident_key[0][:512]


def error_row(report: ErrorReport) -> dict[str, Any]:
    err = report.error
    last = ms(report.at)
    first = ms(report.first_at) if report.first_at is not None else last
    return {
        "fingerprint": fingerprint_of(report),
        "code": str(err.code),
        "category": str(err.code.category),
        "severity": int(err.severity),
        "message": _text(err.message),
        "hint": _text(err.hint),
        "context": _detail(err.context),
        "host": _opt_text(report.host),
        "vm": report.vm,
        "cause": _text(getattr(err, "cause_text", "")),
        "count": max(1, report.count),
        "first_at_ms": min(first, last),
        "last_at_ms": max(first, last),
        "closed": bool(getattr(report, "closed", False)),
    }


def merge_error_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (fingerprint, first_at_ms): the latest report of an incident wins
    (counts are cumulative: the larger is kept, never a sum), so one INSERT never
    touches a key twice."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["fingerprint"], row["first_at_ms"])
        old = merged.get(key)
        if old is None:
            merged[key] = row
        else:
            newer = row if row["last_at_ms"] >= old["last_at_ms"] else old
            merged[key] = {
                **newer,
                "count": max(old["count"], row["count"]),
                "last_at_ms": max(old["last_at_ms"], row["last_at_ms"]),
            }
    return list(merged.values())


def event_row(ev: DomainEvent) -> dict[str, Any]:
    return {
        "host": _text(ev.host),
        "vm_uuid": ev.vm_uuid,
        "vm_name": ev.vm_name,
        "kind": str(ev.kind),
        "summary": _text(ev.summary),
        "detail": _detail(ev.detail),
        "at_ms": ms(ev.at),
    }


def task_row(t: TaskUpdate) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "name": t.name,
        "kind": t.kind,
        "state": str(t.state),
        "attempt": t.attempt,
        "max_attempts": t.max_attempts,
        "at_ms": ms(t.at),
        "started_at_ms": ms_or_none(t.started_at),
        "next_try_at_ms": ms_or_none(t.next_try_at),
        "error_code": t.error_code,
        "message": _text(t.message),
        "host": _opt_text(t.host),
        "vm_name": t.vm_name,
    }


def audit_row(a: AuditRecord) -> dict[str, Any]:
    return {
        "host": _text(a.host),
        "vm_uuid": a.vm_uuid,
        "vm_name": a.vm_name,
        "action": a.action,
        "user": a.user,
        "client": a.client,
        "outcome": str(a.outcome),
        "started_at_ms": ms(a.started_at),
        "duration_s": a.duration_s if math.isfinite(a.duration_s) else 0.0,
        "message": _text(a.message),
        "error_code": a.error_code,
    }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def health_row(h: HealthResult) -> dict[str, Any]:
    return {
        "check": h.check,
        "subject": h.subject,
        "state": int(h.state),
        "raw_state": int(h.raw_state),
        "value": _finite_or_none(h.value),
        "unit": h.unit,
        "warn": _finite_or_none(h.warn),
        "crit": _finite_or_none(h.crit),
        "message": _text(h.message),
        "host": _opt_text(h.host),
        "at_ms": ms(h.at),
    }


def alert_row(a: HealthAlert) -> dict[str, Any]:
    return {
        "check": a.check,
        "subject": a.subject,
        "previous": int(a.previous),
        "current": int(a.current),
        "message": _text(a.message),
        "host": _opt_text(a.host),
        "at_ms": ms(a.at),
    }


def connection_row(c: HostConnection) -> dict[str, Any]:
    return {
        "host": _text(c.host),
        "uri": redact_text(c.uri),
        "state": str(c.state),
        "message": _text(c.message),
        "since_ms": ms(c.since),
        "next_retry_at_ms": ms_or_none(c.next_retry_at),
        "at_ms": ms(c.at),
    }


# ---- rows read back (any row with the table's column names as attributes) -------------


def seconds_or_none(t_ms: int | None) -> float | None:
    """Epoch milliseconds (or none) -> epoch seconds."""
    return None if t_ms is None else t_ms / 1000


def event_from_row(r: Any) -> DomainEvent:
    return DomainEvent(
        r.host,
        r.vm_uuid,
        r.vm_name,
        _known(EventKind, r.kind, EventKind.LIFECYCLE),
        r.summary,
        r.at_ms / 1000,
        dict(r.detail or {}),
    )


def audit_from_row(r: Any) -> AuditRecord:
    return AuditRecord(
        r.host,
        r.vm_uuid,
        r.vm_name,
        r.action,
        r.user,
        r.client,
        _known(Outcome, r.outcome, Outcome.FAILED),
        r.started_at_ms / 1000,
        r.duration_s,
        r.message,
        r.error_code,
    )


def alert_from_row(r: Any) -> HealthAlert:
    return HealthAlert(
        r.check,
        r.subject,
        _known(HealthState, r.previous, HealthState.UNKNOWN),
        _known(HealthState, r.current, HealthState.UNKNOWN),
        r.message,
        r.at_ms / 1000,
        r.host,
    )


def connection_from_row(r: Any) -> HostConnection:
    return HostConnection(
        r.host,
        r.uri,
        _known(ConnectionState, r.state, ConnectionState.DEGRADED),
        r.at_ms / 1000,
        r.since_ms / 1000,
        seconds_or_none(r.next_retry_at_ms),
        r.message,
    )


def _known(kind: type[E], value: object, otherwise: E) -> E:
    try:
        return kind(value)
    except ValueError:
        return otherwise
