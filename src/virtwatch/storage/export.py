"""The incident export: one JSON document holding a window of the store, for a ticket.

Schema `virtwatch.export`, version `EXPORT_SCHEMA_VERSION` (README, "Timeline and
export"): within a version keys are only ever added. Every string is redacted of
credentials (URIs with passwords, keyfile=...) and values under secret-looking keys
are masked, whatever wrote them into the store.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from sqlalchemy import and_, func, or_, select

from virtwatch.core.errors import Severity
from virtwatch.core.model import HostFacts
from virtwatch.core.records import AuditRecord, DomainEvent, EventKind, HealthState, Outcome
from virtwatch.core.timeline import (
    EntryKind,
    TimelineEntry,
    TimelineFilter,
    Window,
    entry_to_dict,
    iso_utc,
)
from virtwatch.core.uri import MASK, redact_text, redact_uri
from virtwatch.storage.models import (
    Audit,
    ErrorLog,
    HealthAlertRow,
    HealthResultRow,
    HostConnectionRow,
    Metric,
)
from virtwatch.storage.store import Store
from virtwatch.storage.timeline import TimelineQueries, TimelineResult

EXPORT_SCHEMA = "virtwatch.export"
EXPORT_SCHEMA_VERSION = 1
METRIC_COLUMNS = ("ts", "count", "sum", "min", "max", "p95")
MAX_RECORDS = 200_000  # per section; beyond it the document says `truncated`
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|credential|keyfile|pkipath", re.I)


class RawJson(str):
    """JSON text the database wrote (a series' minute rows); spliced into the document
    verbatim by `export_json`. `rows` is how many points it holds."""

    rows: int

    def __new__(cls, text: str, rows: int) -> RawJson:
        obj = super().__new__(cls, text)
        obj.rows = rows
        return obj


_SCALARS = (int, float, bool)


def redact_document(value: Any) -> Any:
    """A copy with every string redacted and values under secret-looking keys masked.
    RawJson (numbers only, and big) passes untouched. Repeated strings and keys are
    redacted once (a day of health results repeats the same few hundred)."""
    texts: dict[str, str] = {}
    secret_keys: dict[str, bool] = {}

    def text(v: str) -> str:
        out = texts.get(v)
        if out is None:
            out = texts[v] = redact_text(v)
        return out

    def is_secret(k: str) -> bool:
        hit = secret_keys.get(k)
        if hit is None:
            hit = secret_keys[k] = bool(_SECRET_KEY.search(k))
        return hit

    def walk(v: Any) -> Any:
        if isinstance(v, RawJson):
            return v
        if isinstance(v, str):
            return text(v)
        if isinstance(v, Mapping):
            out: dict[str, Any] = {}
            for k, item in v.items():  # flat rows inline: a day holds ~30k health results
                name = text(k if type(k) is str else str(k))
                kind = type(item)
                if item is None:
                    out[name] = None
                elif is_secret(name):
                    out[name] = MASK
                elif kind is str:
                    out[name] = text(item)
                elif kind in _SCALARS:
                    out[name] = item
                else:
                    out[name] = walk(item)
            return out
        if isinstance(v, (list, tuple)):
            return [walk(item) for item in v]
        return v

    return walk(value)


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


def _times(row: dict[str, Any]) -> dict[str, Any]:
    """`*_ms` columns -> epoch seconds under the name without `_ms` (in place)."""
    for k in [k for k in row if k.endswith("_ms")]:
        v = row.pop(k)
        row[k[:-3]] = None if v is None else v / 1000
    return row


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
    Pass `result` when the timeline of this window and filter is already at hand."""
    flt = flt or TimelineFilter()
    tq = TimelineQueries(store)
    if result is None:
        result = await tq.timeline(window, flt)
    lo, hi = round(window.since * 1000), round(window.until * 1000)
    truncated = result.truncated
    async with store.reader.connect() as conn:

        async def fetch(q: Any) -> list[dict[str, Any]]:
            nonlocal truncated
            rows = [dict(r._mapping) for r in await conn.execute(q)]
            truncated |= len(rows) > MAX_RECORDS
            return rows[:MAX_RECORDS]

        vms = result.vms()
        if flt.vms:  # the VMs asked for, even when nothing happened to them
            catalogue = await conn.execute(
                select(Metric.host, Metric.vm_uuid, Metric.vm_name)
                .distinct()
                .where(
                    or_(Metric.vm_uuid.in_(sorted(flt.vms)), Metric.vm_name.in_(sorted(flt.vms)))
                )
            )
            for host, uuid, name in catalogue:
                if uuid and (host, uuid, name) not in vms:
                    vms.append((host, uuid, name))
        hosts = sorted({*result.hosts(), *(h for h, _, _ in vms), *flt.hosts})
        if flt.hosts:
            hosts = [h for h in hosts if h in flt.hosts]
            vms = [v for v in vms if v[0] in flt.hosts]
        vm_keys = sorted({n for _, _, n in vms} | {u for _, u, _ in vms})

        e = ErrorLog
        where_err: list[Any] = [e.last_at_ms >= lo, e.first_at_ms < hi]
        if flt.hosts:
            where_err.append(e.host.in_(sorted(flt.hosts)))
        if flt.vms:  # that VM's errors, and the host-level ones around it
            where_err.append(or_(e.vm.is_(None), e.vm.in_(vm_keys)))
        errors = []
        for row in await fetch(
            _rows_query(e, _ERROR_COLS, *where_err, order=("first_at_ms", "id"))
        ):
            row["severity"] = _label(Severity, row["severity"])
            row["context"] = dict(row["context"] or {})
            row["closed"] = bool(row["closed"])
            errors.append(_times(row))

        h = HealthResultRow
        where_h: list[Any] = [h.at_ms >= lo, h.at_ms < hi]
        if hosts:
            where_h.append(or_(h.host.is_(None), h.host.in_(hosts)))
        results = []
        for row in await fetch(_rows_query(h, _RESULT_COLS, *where_h, order=("at_ms", "id"))):
            row["state"] = _label(HealthState, row["state"])
            row["raw_state"] = _label(HealthState, row["raw_state"])
            results.append(_times(row))

        a = HealthAlertRow
        where_a: list[Any] = [a.at_ms >= lo, a.at_ms < hi]
        if hosts:
            where_a.append(or_(a.host.is_(None), a.host.in_(hosts)))
        alerts = []
        for row in await fetch(_rows_query(a, _ALERT_COLS, *where_a, order=("at_ms", "id"))):
            row["previous"] = _label(HealthState, row["previous"])
            row["current"] = _label(HealthState, row["current"])
            alerts.append(_times(row))

        u = Audit
        where_u: list[Any] = [u.started_at_ms >= lo, u.started_at_ms < hi]
        if flt.hosts:
            where_u.append(u.host.in_(sorted(flt.hosts)))
        if flt.vms:
            where_u.append(or_(u.vm_uuid.in_(vm_keys), u.vm_name.in_(vm_keys)))
        audit = [
            _times(row)
            for row in await fetch(
                _rows_query(u, _AUDIT_COLS, *where_u, order=("started_at_ms", "id"))
            )
        ]

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
        for row in await fetch(
            _rows_query(
                c,
                ("host", "state", "message", "at_ms"),
                c.at_ms >= lo,
                c.at_ms < hi,
                order=("at_ms", "id"),
            )
        ):
            connections.setdefault(row["host"], []).append(
                {"at": row["at_ms"] / 1000, "state": row["state"], "message": row["message"]}
            )

    keys = [(hh, uu) for hh, uu, _ in vms] + [(hh, "") for hh in hosts]
    series = [
        {
            "host": s.host,
            "vm_uuid": s.vm_uuid or None,
            "vm_name": s.vm_name or None,
            "metric": s.metric,
            "points": RawJson(points, rows),
        }
        for s, rows, points in await tq.minute_series_json(window.since, window.until, keys)
    ]
    at = time.time() if now is None else now
    doc = {
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
        "truncated": truncated,
        "hosts": [
            {
                "host": hh,
                "uri": uris.get(hh),
                "facts": _facts(facts[hh]) if facts and hh in facts else None,
                "connection": connections.get(hh, []),
                "vms": [{"uuid": uu, "name": n} for hhh, uu, n in vms if hhh == hh],
            }
            for hh in hosts
        ],
        "timeline": [entry_to_dict(entry) for entry in result.entries],
        "errors": errors,
        "health": {"results": results, "alerts": alerts},
        "audit": audit,
        "metrics": {"resolution": "minute", "columns": list(METRIC_COLUMNS), "series": series},
    }
    redacted: dict[str, Any] = redact_document(doc)
    return redacted


def export_json(doc: Mapping[str, Any]) -> str:
    """The document as compact JSON, the database's series text spliced in verbatim.
    (`json.dumps` in one shot: only that path uses the C encoder.)"""
    raws: list[RawJson] = []
    nonce = secrets.token_hex(8)

    def hole(v: Any) -> Any:
        if isinstance(v, RawJson):
            raws.append(v)
            return f"\x00{nonce}:{len(raws) - 1}\x00"
        return v

    metrics = doc.get("metrics")
    if isinstance(metrics, Mapping) and isinstance(metrics.get("series"), list):
        series = [{k: hole(v) for k, v in s.items()} for s in metrics["series"]]
        doc = {**doc, "metrics": {**metrics, "series": series}}

    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if not raws:
        return text
    holes = re.compile(r'"\\u0000' + nonce + r':(\d+)\\u0000"')
    return holes.sub(lambda m: raws[int(m.group(1))], text)


def parse_export(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document as a reader of the file sees it (series points as lists)."""
    parsed: dict[str, Any] = json.loads(export_json(doc))
    return parsed


def dump_export(doc: Mapping[str, Any], out: IO[str]) -> None:
    out.write(export_json(doc))
    out.write("\n")


def write_export(doc: Mapping[str, Any], path: Path) -> Path:
    """Write `doc` to `path`, readable by its owner only (it names users and VMs)."""
    path = path.expanduser()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            dump_export(doc, fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def default_export_name(window: Window) -> str:
    """virtwatch-export-20261126T1000Z-20261126T1100Z.json"""

    def stamp(t: float) -> str:
        return iso_utc(t).replace("+00:00", "Z").replace("-", "").replace(":", "")[:-3] + "Z"

    return f"virtwatch-export-{stamp(window.since)}-{stamp(window.until)}.json"


def summarize(doc: Mapping[str, Any]) -> Sequence[str]:
    """A few words for a toast or stderr: what went into the document."""
    series = doc["metrics"]["series"]
    points = sum(
        s["points"].rows if isinstance(s["points"], RawJson) else len(s["points"]) for s in series
    )
    return [
        f"{len(doc['timeline'])} timeline entries, {len(doc['errors'])} errors, "
        f"{len(doc['audit'])} actions, {len(doc['health']['results'])} health results",
        f"{len(series)} metric series ({points} minutes) of {len(doc['hosts'])} host(s)",
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
        doc = await build_export(
            self._store, window, flt, facts=facts, generated_by=self._generated_by
        )
        target = (directory or Path.cwd()) / default_export_name(window)
        path = await asyncio.to_thread(write_export, doc, target)
        return path, summarize(doc)

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
        out = []
        async with self._store.reader.connect() as conn:
            for r in await conn.execute(q):
                try:
                    outcome = Outcome(r.outcome)
                except ValueError:
                    outcome = Outcome.FAILED
                out.append(
                    AuditRecord(
                        r.host,
                        r.vm_uuid,
                        r.vm_name,
                        r.action,
                        r.user,
                        r.client,
                        outcome,
                        r.started_at_ms / 1000,
                        r.duration_s,
                        r.message,
                        r.error_code,
                    )
                )
        return out
