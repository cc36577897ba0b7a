"""The incident export: one JSON document holding a window of the store, for a ticket.

Schema `virtwatch.export`, version `EXPORT_SCHEMA_VERSION` (docs/export-schema.md, and as
a JSON Schema docs/export.schema.json):
within a version keys are only ever added. Metrics are columns (storage/minutes.py):
one object per series, minute starts encoded once, one array per aggregate. Every
string is redacted of credentials (URIs with passwords, keyfile=...) and values under
secret-looking keys are masked, whatever wrote them into the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from sqlalchemy import and_, func, or_, select

from virtwatch.core.atomic_file import AtomicFile
from virtwatch.core.errors import Severity
from virtwatch.core.libvirt.uri import redact_uri
from virtwatch.core.model import HostFacts
from virtwatch.core.records import AuditRecord, DomainEvent, EventKind, HealthState
from virtwatch.core.triage.entries import EntryKind, TimelineEntry, entry_to_dict
from virtwatch.core.triage.timeline import TimelineFilter
from virtwatch.core.triage.when import Window, iso_utc
from virtwatch.storage.export_json import _around_series, _series_pieces
from virtwatch.storage.minutes import (
    ARRAYS,
    STEP_S,
    ColumnsFailed,
    ColumnsJob,
    MinuteColumns,
    catalogue,
)
from virtwatch.storage.models import (
    Audit,
    ErrorLog,
    HealthAlertRow,
    HealthResultRow,
    HostConnectionRow,
)
from virtwatch.storage.redaction import RawJson, Redactor
from virtwatch.storage.rows import audit_from_row, seconds_or_none
from virtwatch.storage.store import Store
from virtwatch.storage.timeline_queries import TimelineQueries, TimelineResult

EXPORT_SCHEMA = "virtwatch.export"
EXPORT_SCHEMA_VERSION = 2  # 2: metrics as columns (1: one [ts, count, sum, ...] per minute)
METRIC_ARRAYS = ARRAYS
MAX_RECORDS = 200_000  # per section; beyond it the document says `truncated`


def _facts(f: HostFacts) -> dict[str, object]:
    return {
        "uri": redact_uri(f.uri),
        "hostname": f.hostname,
        "driver": f.driver,
        "libvirt_version": f.libvirt_version,
        "hypervisor_version": f.hypervisor_version,
        "cpus": f.cpus,
        "memory_kib": f.memory_kib,
    }


def _rows_query(model: Any, cols: Sequence[str], *where: Any, order: Sequence[str]) -> Any:
    table = model.__table__
    return (
        select(*(table.c[c] for c in cols))
        .where(*where)
        .order_by(*(table.c[c] for c in order))
        .limit(MAX_RECORDS + 1)
    )


_ERROR_COLS = (
    "id", "code", "category", "severity", "message", "hint", "context", "cause", "host",
    "vm", "count", "first_at_ms", "last_at_ms", "closed",
)  # fmt: skip
_RESULT_COLS = (
    "check", "subject", "host", "state", "raw_state", "value", "unit", "warn", "crit",
    "message", "at_ms",
)  # fmt: skip
_ALERT_COLS = ("check", "subject", "host", "previous", "current", "message", "at_ms")
_AUDIT_COLS = (
    "host", "vm_uuid", "vm_name", "action", "user", "client", "outcome", "started_at_ms",
    "duration_s", "message", "error_code",
)  # fmt: skip


def _names(cols: Sequence[str]) -> list[str]:
    """Column names as the document has them: `*_ms` columns become epoch seconds."""
    return [c[:-3] if c.endswith("_ms") else c for c in cols]


_LABELS: dict[tuple[Any, int], str] = {}


def _label(enum_type: Any, value: int) -> str:
    key = (enum_type, value)
    out = _LABELS.get(key)
    if out is None:
        try:
            out = str(enum_type(value).label)
        except ValueError:
            out = str(value)
        _LABELS[key] = out
    return out


def _series_doc(c: MinuteColumns, red: Redactor) -> dict[str, Any]:
    s = c.series
    doc: dict[str, Any] = red.value(
        {
            "host": s.host,
            "vm_uuid": s.vm_uuid or None,
            "vm_name": s.vm_name or None,
            "metric": s.metric,
            "start": c.start,
            "step": STEP_S,
            "n": c.n,
        }
    )
    if c.ts is not None:
        doc["ts"] = RawJson(c.ts)
    for name, text in zip(ARRAYS, c.arrays, strict=True):
        doc[name] = RawJson(text)
    return doc


class _Export:
    """One export under way: the document without its series (redacted), and the job
    reading the series on both reader connections (`series()` yields them in order)."""

    def __init__(self, doc: dict[str, Any], job: ColumnsJob, red: Redactor) -> None:
        self.doc = doc
        self._job = job
        self._red = red
        self._workers: list[asyncio.Task[None]] = []

    def work_on(self, store: Store) -> None:
        """One more reader connection takes chunks of the series."""

        async def work() -> None:
            async with store.reader.connect() as conn:
                await self._job.work(conn)

        self._workers.append(asyncio.create_task(work()))

    async def series(self) -> AsyncIterator[dict[str, Any]]:
        try:
            async for columns in self._job.stream():
                yield _series_doc(columns, self._red)
        except ColumnsFailed:
            for worker in self._workers:
                if worker.done():
                    await worker  # the failed one's own error (a database error...)
            raise
        for worker in self._workers:
            await worker

    async def stop(self) -> None:
        for worker in self._workers:
            if not worker.done():
                worker.cancel()
        for worker in self._workers:  # a worker's error is `series()`'s to raise, not this
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker


async def _start(
    store: Store,
    window: Window,
    flt: TimelineFilter | None,
    facts: Mapping[str, HostFacts] | None,
    now: float | None,
    generated_by: str,
    result: TimelineResult | None,
) -> _Export:
    """Start reading the series on one reader connection, assemble the rest of the
    document meanwhile on the other, then put that one on the series too."""
    flt = flt or TimelineFilter()
    async with store.reader.connect() as conn:
        chosen = await catalogue(
            conn, hosts=flt.hosts, vms=flt.vms, window=(window.since, window.until)
        )
    red = Redactor()
    export = _Export({}, ColumnsJob(window.since, window.until, chosen), red)
    export.work_on(store)
    try:
        if result is None:
            result = await TimelineQueries(store).timeline(window, flt)
        records = await _records(store, window, flt, result, chosen, red)
    except BaseException:
        await export.stop()
        raise
    export.work_on(store)

    vms: dict[tuple[str, str], str] = {(h, u): n for h, u, n in result.vms()}
    for s in chosen.values():
        if s.vm_uuid:
            vms.setdefault((s.host, s.vm_uuid), s.vm_name)
    hosts = sorted({*result.hosts(), *(s.host for s in chosen.values()), *flt.hosts})
    if flt.hosts:
        hosts = [h for h in hosts if h in flt.hosts]
    at = time.time() if now is None else now
    export.doc = red.value(
        {
            "schema": EXPORT_SCHEMA,
            "schema_version": EXPORT_SCHEMA_VERSION,
            "generated_at": iso_utc(at),
            "generated_by": generated_by,
            "window": {
                "since": window.since,
                "until": window.until,
                "since_iso": iso_utc(window.since),
                "until_iso": iso_utc(window.until),
            },
            "filter": flt.to_dict(),
            "truncated": records["truncated"] or result.truncated,
            "hosts": [
                {
                    "host": hh,
                    "uri": records["uris"].get(hh),
                    "facts": _facts(facts[hh]) if facts and hh in facts else None,
                    "connection": records["connections"].get(hh, []),
                    "vms": [{"uuid": uu, "name": n} for (h2, uu), n in vms.items() if h2 == hh],
                }
                for hh in hosts
            ],
            "timeline": [entry_to_dict(entry) for entry in result.entries],
            "errors": records["errors"],
            "health": {"results": records["results"], "alerts": records["alerts"]},
            "audit": records["audit"],
            "metrics": {
                "resolution": "minute",
                "step": STEP_S,
                "arrays": list(ARRAYS),
                "series": [],
            },
        }
    )
    return export


async def build_export(
    store: Store,
    window: Window,
    flt: TimelineFilter | None = None,
    *,
    facts: Mapping[str, HostFacts] | None = None,
    now: float | None = None,
    generated_by: str = "virtwatch",
    result: TimelineResult | None = None,
) -> dict[str, Any]:
    """The export document of `window` (already redacted). `facts` are the live hosts'
    facts when the caller has them (the screen does; the store does not keep them).
    Pass `result` when the timeline of this window and filter is already at hand.
    (`export_to` writes the same document without holding its series in memory.)

    Metrics: every series of the hosts in scope with minutes in the window (with a VM
    filter those VMs' and their hosts'), the arrays as JSON text the database wrote."""
    export = await _start(store, window, flt, facts, now, generated_by, result)
    try:
        series = [s async for s in export.series()]
    finally:
        await export.stop()
    export.doc["metrics"]["series"] = series
    return export.doc


async def export_to(
    store: Store,
    window: Window,
    out: IO[str],
    flt: TimelineFilter | None = None,
    *,
    facts: Mapping[str, HostFacts] | None = None,
    now: float | None = None,
    generated_by: str = "virtwatch",
) -> Sequence[str]:
    """Write the export document of `window` to `out` as `build_export` makes it, each
    series as soon as the database has written it (never the whole document in memory);
    returns `summarize`'s words."""
    export = await _start(store, window, flt, facts, now, generated_by, None)
    try:
        head, tail = _around_series(export.doc)
        out.write(head)
        n = minutes = 0
        async for series in export.series():
            if n:
                out.write(",")
            for piece in _series_pieces(series):
                out.write(piece)
            n += 1
            minutes += int(series["n"])
        out.write(tail)
        out.write("\n")
    finally:
        await export.stop()
    return _summary(export.doc, n, minutes)


async def write_window(
    store: Store,
    window: Window,
    path: Path,
    flt: TimelineFilter | None = None,
    *,
    facts: Mapping[str, HostFacts] | None = None,
    generated_by: str = "virtwatch",
) -> Sequence[str]:
    """`export_to` a file readable by its owner only (it names users and VMs), replaced
    whole: a failed export leaves no half file."""
    async with AtomicFile(path) as fh:
        return await export_to(store, window, fh, flt, facts=facts, generated_by=generated_by)


async def _records(
    store: Store,
    window: Window,
    flt: TimelineFilter,
    result: TimelineResult,
    chosen: Mapping[int, Any],
    red: Redactor,
) -> dict[str, Any]:
    """The window's errors, health, audit and connections (redacted rows)."""
    lo, hi = round(window.since * 1000), round(window.until * 1000)
    truncated = False
    # the hosts and VMs the records are narrowed to (none: every host)
    scope: list[str] = sorted(flt.hosts)
    vm_keys: list[str] = []
    if flt.vms:
        vms = {(s.host, s.vm_uuid, s.vm_name) for s in chosen.values() if s.vm_uuid}
        vms |= set(result.vms())
        vm_keys = sorted({n for _, _, n in vms} | {u for _, u, _ in vms} | flt.vms)
        if not scope:
            scope = sorted({h for h, _, _ in vms} | set(result.hosts()))
    async with store.reader.connect() as conn:

        async def fetch(q: Any) -> list[Any]:
            nonlocal truncated
            rows: list[Any] = list((await conn.execute(q)).all())
            truncated |= len(rows) > MAX_RECORDS
            return rows[:MAX_RECORDS]

        e = ErrorLog
        where_err: list[Any] = [e.last_at_ms >= lo, e.first_at_ms < hi]
        if flt.hosts:
            where_err.append(e.host.in_(sorted(flt.hosts)))
        if flt.vms:  # that VM's errors, and the host-level ones around it
            where_err.append(or_(e.vm.is_(None), e.vm.in_(vm_keys)))
        errors = red.rows(
            _names(_ERROR_COLS),
            (
                (rid, code, cat, _label(Severity, sev), msg, hint, dict(ctx or {}), cause, host,
                 vm, count, seconds_or_none(first), seconds_or_none(last), bool(closed))
                for rid, code, cat, sev, msg, hint, ctx, cause, host, vm, count, first, last, closed
                in await fetch(_rows_query(e, _ERROR_COLS, *where_err, order=("first_at_ms", "id")))
            ),
        )  # fmt: skip

        h = HealthResultRow
        where_h: list[Any] = [h.at_ms >= lo, h.at_ms < hi]
        if scope:
            where_h.append(or_(h.host.is_(None), h.host.in_(scope)))
        states = {s.value: str(s.label) for s in HealthState}  # a day has ~30,000 results
        results = red.rows(
            _names(_RESULT_COLS),
            (
                (check, subject, host, states.get(state) or _label(HealthState, state),
                 states.get(raw) or _label(HealthState, raw), value, unit, warn, crit, msg,
                 at_ms / 1000)
                for check, subject, host, state, raw, value, unit, warn, crit, msg, at_ms
                in await fetch(_rows_query(h, _RESULT_COLS, *where_h, order=("at_ms", "id")))
            ),
        )  # fmt: skip

        a = HealthAlertRow
        where_a: list[Any] = [a.at_ms >= lo, a.at_ms < hi]
        if scope:
            where_a.append(or_(a.host.is_(None), a.host.in_(scope)))
        alerts = red.rows(
            _names(_ALERT_COLS),
            (
                (check, subject, host, _label(HealthState, prev), _label(HealthState, cur), msg,
                 at_ms / 1000)
                for check, subject, host, prev, cur, msg, at_ms
                in await fetch(_rows_query(a, _ALERT_COLS, *where_a, order=("at_ms", "id")))
            ),
        )  # fmt: skip

        u = Audit
        where_u: list[Any] = [u.started_at_ms >= lo, u.started_at_ms < hi]
        if flt.hosts:
            where_u.append(u.host.in_(sorted(flt.hosts)))
        if flt.vms:
            where_u.append(or_(u.vm_uuid.in_(vm_keys), u.vm_name.in_(vm_keys)))
        audit = red.rows(
            _names(_AUDIT_COLS),
            (
                (*row[:7], row[7] / 1000, *row[8:])
                for row in await fetch(
                    _rows_query(u, _AUDIT_COLS, *where_u, order=("started_at_ms", "id"))
                )
            ),
        )

        c = HostConnectionRow
        latest = (
            select(c.host, func.max(c.at_ms).label("at_ms"))
            .where(c.at_ms < hi)
            .group_by(c.host)
            .subquery("latest")
        )
        uris = {
            host: uri
            for host, uri in await conn.execute(
                select(c.host, c.uri).join(
                    latest, and_(c.host == latest.c.host, c.at_ms == latest.c.at_ms)
                )
            )
        }
        connections: dict[str, list[dict[str, object]]] = {}
        for host, state, message, at_ms in await fetch(
            _rows_query(
                c,
                ("host", "state", "message", "at_ms"),
                c.at_ms >= lo,
                c.at_ms < hi,
                order=("at_ms", "id"),
            )
        ):
            connections.setdefault(host, []).append(
                {"at": at_ms / 1000, "state": state, "message": message}
            )
    return {
        "truncated": truncated,
        "errors": errors,
        "results": results,
        "alerts": alerts,
        "audit": audit,
        "uris": uris,
        "connections": connections,
    }


def default_export_name(window: Window) -> str:
    """virtwatch-export-20261126T1000Z-20261126T1100Z.json"""

    def stamp(t: float) -> str:
        return iso_utc(t).replace("+00:00", "Z").replace("-", "").replace(":", "")[:-3] + "Z"

    return f"virtwatch-export-{stamp(window.since)}-{stamp(window.until)}.json"


def summarize(doc: Mapping[str, Any]) -> Sequence[str]:
    """A few words for a toast or stderr: what went into the document."""
    series = doc["metrics"]["series"]
    return _summary(doc, len(series), sum(int(s["n"]) for s in series))


def _summary(doc: Mapping[str, Any], series: int, minutes: int) -> Sequence[str]:
    return [
        f"{len(doc['timeline'])} timeline entries, {len(doc['errors'])} errors, "
        f"{len(doc['audit'])} actions, {len(doc['health']['results'])} health results",
        f"{series} metric series ({minutes} minutes) of {len(doc['hosts'])} host(s)",
    ]


class StoreIncidents:
    """The store's history as the screens ask for it: a window's timeline, its export
    to a file, and one VM's events and actions (the detail screen's TimelineSource)."""

    def __init__(self, store: Store, *, generated_by: str = "virtwatch") -> None:
        self._store = store
        self._queries = TimelineQueries(store)
        self._generated_by = generated_by

    async def window_entries(
        self, window: Window, flt: TimelineFilter
    ) -> tuple[Sequence[TimelineEntry], bool]:
        result = await self._queries.timeline(window, flt)
        return result.entries, result.truncated

    async def export_window(
        self,
        window: Window,
        flt: TimelineFilter,
        *,
        facts: Mapping[str, HostFacts] | None = None,
        directory: Path | None = None,
    ) -> tuple[Path, Sequence[str]]:
        """Write the window's export next to `directory` (default: the current one);
        returns the file and a few words on what went in."""
        target = (directory or Path.cwd()) / default_export_name(window)
        words = await write_window(
            self._store, window, target, flt, facts=facts, generated_by=self._generated_by
        )
        return target, words

    async def vm_events(
        self, host: str, vm_uuid: str, since: float, until: float
    ) -> Sequence[DomainEvent]:
        flt = TimelineFilter(hosts=frozenset({host}), vms=frozenset({vm_uuid}))
        entries, _cut = await self.window_entries(Window(since, until), flt)
        out = []
        for e in entries:
            if e.kind in (EntryKind.EVENT, EntryKind.SPIKE, EntryKind.CONFIG):
                kind = e.detail.get("event_kind", EventKind.LIFECYCLE.value)
                try:
                    ek = EventKind(kind)
                except ValueError:
                    ek = EventKind.LIFECYCLE
                detail = {k: v for k, v in e.detail.items() if k != "event_kind"}
                out.append(DomainEvent(host, vm_uuid, e.vm_name or "", ek, e.title, e.at, detail))
        return out

    async def vm_audit(
        self, host: str, vm_uuid: str, since: float, until: float
    ) -> Sequence[AuditRecord]:
        u = Audit
        q = (
            select(*(u.__table__.c[c] for c in _AUDIT_COLS))
            .where(
                u.host == host,
                u.vm_uuid == vm_uuid,
                u.started_at_ms >= round(since * 1000),
                u.started_at_ms < round(until * 1000),
            )
            .order_by(u.started_at_ms, u.id)
            .limit(MAX_RECORDS)
        )
        async with self._store.reader.connect() as conn:
            return [audit_from_row(r) for r in await conn.execute(q)]
