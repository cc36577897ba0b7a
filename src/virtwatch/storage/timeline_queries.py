"""The store side of the timeline: a window's domain events (lifecycle, spikes, config
changes), errors, health transitions, admin actions and connection changes as timeline
entries — one time-indexed query per source — and `StoreRollupReader`, the port through
which the spike watch reads the minute rollups.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Double, and_, cast, func, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql import ColumnElement

from virtwatch.core.errors import Severity
from virtwatch.core.records import (
    EventKind,
)
from virtwatch.core.triage.causes import CAUSE_LOOKBACK_S
from virtwatch.core.triage.entries import TimelineEntry
from virtwatch.core.triage.spike_watch import EdgeKey, Series
from virtwatch.core.triage.spikes import MinuteAggregate
from virtwatch.core.triage.timeline import (
    TimelineFilter,
    build_timeline,
    entry_from_audit,
    entry_from_connection,
    entry_from_event,
    entry_from_health,
    error_entry,
)
from virtwatch.core.triage.when import Window
from virtwatch.storage.models import (
    Audit,
    DomainEventRow,
    ErrorLog,
    HealthAlertRow,
    HostConnectionRow,
    Metric,
    MetricMinute,
    RollupState,
)
from virtwatch.storage.rows import (
    alert_from_row,
    audit_from_row,
    connection_from_row,
    event_from_row,
)
from virtwatch.storage.store import Store

MAX_ROWS_PER_SOURCE = 50_000  # a flood beyond this marks the result truncated
IDS_PER_QUERY = 500  # metric ids in one IN list


def _ms(t: float) -> int:
    return math.floor(t * 1000)


def _severity(value: int) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        return Severity.ERROR  # written by a newer virtwatch: err on the loud side


@dataclass(frozen=True, slots=True)
class TimelineResult:
    window: Window
    filter: TimelineFilter
    entries: tuple[TimelineEntry, ...]
    truncated: bool  # some source had more than MAX_ROWS_PER_SOURCE rows in the window

    def vms(self) -> list[tuple[str, str, str]]:
        """(host, vm_uuid, vm_name) of every VM the entries mention, in first-seen order."""
        seen: dict[tuple[str, str], str] = {}
        for e in self.entries:
            if e.vm_uuid and e.host is not None:
                seen.setdefault((e.host, e.vm_uuid), e.vm_name or "")
        return [(h, u, n) for (h, u), n in seen.items()]

    def hosts(self) -> list[str]:
        return sorted({e.host for e in self.entries if e.host is not None})


class TimelineQueries:
    """Read-only queries over an open Store (its reader engine)."""

    def __init__(self, store: Store, *, max_rows: int = MAX_ROWS_PER_SOURCE) -> None:
        self._store = store
        self._max_rows = max_rows

    async def _rows(self, q: Any) -> tuple[Sequence[Any], bool]:
        async with self._store.reader.connect() as conn:
            rows = (await conn.execute(q.limit(self._max_rows + 1))).all()
        return rows[: self._max_rows], len(rows) > self._max_rows

    async def timeline(
        self,
        window: Window,
        flt: TimelineFilter | None = None,
        *,
        lookback_s: float = CAUSE_LOOKBACK_S,
        disk_paths: Mapping[str, Sequence[str]] | None = None,
    ) -> TimelineResult:
        """Every entry of the window that passes `flt`, oldest first, with hints.

        Rows from `lookback_s` before the window (and each health check's last state
        before that) are read too, so a cause just before the window still hints."""
        flt = flt or TimelineFilter()
        lo, hi = _ms(window.since - lookback_s), _ms(window.until)
        entries: list[TimelineEntry] = []
        truncated = False
        for fetch in (self._events, self._audit, self._alerts, self._connections):
            got, cut = await fetch(lo, hi, flt)
            entries += got
            truncated |= cut
        got, cut = await self._errors(lo, hi, flt)
        entries += got
        truncated |= cut
        context = await self._health_before(lo, flt)
        out = build_timeline(entries, window, flt, context=context, disk_paths=disk_paths)
        return TimelineResult(window, flt, tuple(out), truncated)

    # ---- one source each ---------------------------------------------------------------

    @staticmethod
    def _host_clause(col: Any, flt: TimelineFilter) -> list[ColumnElement[bool]]:
        return [col.in_(sorted(flt.hosts))] if flt.hosts else []

    @staticmethod
    def _vm_clause(uuid_col: Any, name_col: Any, flt: TimelineFilter) -> list[ColumnElement[bool]]:
        if not flt.vms:
            return []
        names = sorted(flt.vms)
        return [or_(uuid_col.in_(names), name_col.in_(names))]

    async def _events(
        self, lo: int, hi: int, flt: TimelineFilter
    ) -> tuple[list[TimelineEntry], bool]:
        d = DomainEventRow
        q = (
            select(d.id, d.host, d.vm_uuid, d.vm_name, d.kind, d.summary, d.detail, d.at_ms)
            .where(
                d.at_ms >= lo,
                d.at_ms < hi,
                *self._host_clause(d.host, flt),
                *self._vm_clause(d.vm_uuid, d.vm_name, flt),
            )
            .order_by(d.at_ms, d.id)
        )
        rows, cut = await self._rows(q)
        return [entry_from_event(event_from_row(r), key=f"event:{r.id}") for r in rows], cut

    async def _audit(
        self, lo: int, hi: int, flt: TimelineFilter
    ) -> tuple[list[TimelineEntry], bool]:
        a = Audit
        q = (
            select(
                a.id,
                a.host,
                a.vm_uuid,
                a.vm_name,
                a.action,
                a.user,
                a.client,
                a.outcome,
                a.started_at_ms,
                a.duration_s,
                a.message,
                a.error_code,
            )
            .where(
                a.started_at_ms >= lo,
                a.started_at_ms < hi,
                *self._host_clause(a.host, flt),
                *self._vm_clause(a.vm_uuid, a.vm_name, flt),
            )
            .order_by(a.started_at_ms, a.id)
        )
        rows, cut = await self._rows(q)
        return [entry_from_audit(audit_from_row(r), key=f"audit:{r.id}") for r in rows], cut

    async def _alerts(
        self, lo: int, hi: int, flt: TimelineFilter
    ) -> tuple[list[TimelineEntry], bool]:
        h = HealthAlertRow
        q = (
            select(h.id, h.check, h.subject, h.previous, h.current, h.message, h.host, h.at_ms)
            .where(h.at_ms >= lo, h.at_ms < hi, *self._host_clause(h.host, flt))
            .order_by(h.at_ms, h.id)
        )
        rows, cut = await self._rows(q)
        return [entry_from_health(alert_from_row(r), key=f"alert:{r.id}") for r in rows], cut

    async def _health_before(self, lo: int, flt: TimelineFilter) -> list[TimelineEntry]:
        """Each check's last transition before `lo`: its state as the window opens."""
        h = HealthAlertRow
        latest = (
            select(h.check, h.subject, h.host, func.max(h.at_ms).label("at_ms"))
            .where(h.at_ms < lo, *self._host_clause(h.host, flt))
            .group_by(h.check, h.subject, h.host)
            .subquery("latest")
        )
        q = (
            select(h.id, h.check, h.subject, h.previous, h.current, h.message, h.host, h.at_ms)
            .join(
                latest,
                and_(
                    h.check == latest.c.check,
                    h.subject == latest.c.subject,
                    h.host.is_not_distinct_from(latest.c.host),
                    h.at_ms == latest.c.at_ms,
                ),
            )
            .order_by(h.at_ms, h.id)
        )
        rows, _cut = await self._rows(q)
        return [entry_from_health(alert_from_row(r), key=f"alert:{r.id}") for r in rows]

    async def _connections(
        self, lo: int, hi: int, flt: TimelineFilter
    ) -> tuple[list[TimelineEntry], bool]:
        c = HostConnectionRow
        q = (
            select(c.id, c.host, c.uri, c.state, c.message, c.since_ms, c.next_retry_at_ms, c.at_ms)
            .where(c.at_ms >= lo, c.at_ms < hi, *self._host_clause(c.host, flt))
            .order_by(c.at_ms, c.id)
        )
        rows, cut = await self._rows(q)
        return [
            entry_from_connection(connection_from_row(r), key=f"conn:{r.id}") for r in rows
        ], cut

    async def _errors(
        self, lo: int, hi: int, flt: TimelineFilter
    ) -> tuple[list[TimelineEntry], bool]:
        """Incidents seen in the window (first seen before it and still going count too).
        Not narrowed by VM here: a host's errors may explain a VM's entry."""
        e = ErrorLog
        q = (
            select(
                e.id,
                e.code,
                e.severity,
                e.message,
                e.hint,
                e.context,
                e.host,
                e.vm,
                e.count,
                e.first_at_ms,
                e.last_at_ms,
            )
            .where(e.last_at_ms >= lo, e.first_at_ms < hi, *self._host_clause(e.host, flt))
            .order_by(e.first_at_ms, e.id)
        )
        rows, cut = await self._rows(q)
        out = [
            error_entry(
                code=code,
                severity=_severity(sev),
                message=msg,
                hint=hint,
                context={str(k): str(v) for k, v in (ctx or {}).items()},
                host=host,
                vm_name=vm,
                count=count,
                first_at=first / 1000,
                last_at=last / 1000,
                key=f"error:{rid}",
            )
            for rid, code, sev, msg, hint, ctx, host, vm, count, first, last in rows
        ]
        return out, cut


class StoreRollupReader:
    """`RollupReader` (core/triage/spike_watch.py) over the store's minute rollups."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ids: dict[Series, int] = {}

    async def minute_watermarks(self) -> Mapping[str, int]:
        async with self._store.reader.connect() as conn:
            rows = await conn.execute(
                select(RollupState.host, RollupState.watermark_ms).where(
                    RollupState.tier == "minute"
                )
            )
            return {host: int(wm) // 1000 for host, wm in rows}

    async def series(self, host: str) -> Sequence[Series]:
        async with self._store.reader.connect() as conn:
            rows = await conn.execute(
                select(Metric.id, Metric.vm_uuid, Metric.vm_name, Metric.name).where(
                    Metric.host == host
                )
            )
            out = []
            for mid, uuid, name, metric in rows:
                s = Series(host, uuid, metric, name)
                self._ids[s] = mid
                out.append(s)
        return out

    async def minute_rows(
        self, since: int, until: int, series: Collection[Series]
    ) -> Mapping[Series, Sequence[MinuteAggregate]]:
        for host in {s.host for s in series if s not in self._ids}:
            await self.series(host)
        by_id = {self._ids[s]: s for s in series if s in self._ids}
        out: dict[Series, list[MinuteAggregate]] = {}
        ids = sorted(by_id)
        t = MetricMinute
        async with self._store.reader.connect() as conn:
            for i in range(0, len(ids), IDS_PER_QUERY):
                result = await conn.execute(
                    select(t.metric_id, t.ts_ms, t.count, t.sum, t.min, t.max, t.p95)
                    .where(
                        t.metric_id.in_(ids[i : i + IDS_PER_QUERY]),
                        t.ts_ms >= since * 1000,
                        t.ts_ms < until * 1000,
                    )
                    .order_by(t.metric_id, t.ts_ms)
                )
                for mid, ts, n, total, lo, hi, p95 in result:
                    out.setdefault(by_id[mid], []).append(
                        MinuteAggregate(ts // 1000, n, total, lo, hi, p95)
                    )
        return out

    async def minute_means(
        self, since: int, until: int, series: Collection[Series]
    ) -> Mapping[Series, tuple[Sequence[int], Sequence[float]]]:
        """Each series' minute starts and means as two JSON arrays the database writes
        (in its own thread) and `json.loads` reads: a day of 900 series is ~1.3 M
        minutes, which as Python row objects would hold the event loop for seconds."""
        for host in {s.host for s in series if s not in self._ids}:
            await self.series(host)
        by_id = {self._ids[s]: s for s in series if s in self._ids}
        if not by_id:
            return {}
        t = MetricMinute
        where = (
            t.metric_id.in_(sorted(by_id)),
            t.ts_ms >= since * 1000,
            t.ts_ms < until * 1000,
            t.count > 0,
        )
        ts, mean = t.ts_ms // 1000, t.sum / cast(t.count, Double)
        async with self._store.reader.connect() as conn:
            if conn.dialect.name == "postgresql":
                q: Any = (
                    select(
                        t.metric_id,
                        func.json_agg(aggregate_order_by(ts, t.ts_ms)),
                        func.json_agg(aggregate_order_by(mean, t.ts_ms)),
                    )
                    .where(*where)
                    .group_by(t.metric_id)
                )
            else:  # rows reach the aggregate in key order: (metric_id, ts_ms)
                ordered = (
                    select(t.metric_id, ts.label("ts"), mean.label("mean"))
                    .where(*where)
                    .order_by(t.metric_id, t.ts_ms)
                    .subquery("ordered")
                )
                o = ordered.c
                q = select(
                    o.metric_id, func.json_group_array(o.ts), func.json_group_array(o.mean)
                ).group_by(o.metric_id)
            out: dict[Series, tuple[Sequence[int], Sequence[float]]] = {}
            for mid, ts_text, mean_text in await conn.execute(q):
                # SQLite writes 15 significant digits: a mean may differ from the pure
                # function's in its last bit, far below any threshold's margin
                starts = json.loads(ts_text) if isinstance(ts_text, str) else ts_text
                means = json.loads(mean_text) if isinstance(mean_text, str) else mean_text
                out[by_id[mid]] = (starts, means)
        return out

    async def stored_spikes(self, host: str, since: int, until: int) -> Collection[EdgeKey]:
        d = DomainEventRow
        async with self._store.reader.connect() as conn:
            rows = await conn.execute(
                select(d.vm_uuid, d.detail).where(
                    d.kind == EventKind.SPIKE.value,
                    d.host == host,
                    d.at_ms >= since * 1000,
                    d.at_ms <= until * 1000,
                )
            )
            out: set[EdgeKey] = set()
            for uuid, detail in rows:
                det = dict(detail or {})
                try:
                    start = int(det.get("start", ""))
                except ValueError:
                    continue
                if since <= start < until:
                    out.add((host, uuid, det.get("metric", ""), det.get("phase", ""), start))
        return out
