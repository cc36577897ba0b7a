"""The incident export: one JSON document holding a window of the store, for a ticket.

Schema `virtwatch.export`, version `EXPORT_SCHEMA_VERSION` (README, "Timeline and
export"): within a version keys are only ever added. Every string is redacted of
credentials (URIs with passwords, keyfile=...) and values under secret-looking keys
are masked, whatever wrote them into the store.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from virtwatch.core.model import HostFacts
from virtwatch.core.timeline import TimelineFilter, Window, entry_to_dict, iso_utc
from virtwatch.core.uri import MASK, redact_text, redact_uri
from virtwatch.storage.queries import Queries
from virtwatch.storage.store import Store
from virtwatch.storage.timeline import TimelineQueries, TimelineResult

EXPORT_SCHEMA = "virtwatch.export"
EXPORT_SCHEMA_VERSION = 1
METRIC_COLUMNS = ("ts", "count", "sum", "min", "max", "p95")
MAX_RECORDS = 200_000  # per section; beyond it the document says `truncated`
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|credential|keyfile|pkipath", re.I)


def redact_document(value: Any, *, key: str = "") -> Any:
    """A copy with every string redacted and secret-looking keys masked. Lists under a
    `points` key hold numbers only and are passed through untouched (they are big)."""
    if isinstance(value, str):
        return MASK if key and _SECRET_KEY.search(key) else redact_text(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = redact_text(str(k))
            if _SECRET_KEY.search(name) and v is not None:
                out[name] = MASK
            elif name == "points":
                out[name] = v
            else:
                out[name] = redact_document(v, key=name)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_document(v, key=key) for v in value]
    return value


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
    q = Queries(store)
    if result is None:
        result = await tq.timeline(window, flt)
    vms = result.vms()
    if flt.vms:  # the VMs asked for, even when nothing happened to them
        for host, uuid, name, _metric in await q.metric_names():
            if uuid and (uuid in flt.vms or name in flt.vms) and (host, uuid, name) not in vms:
                vms.append((host, uuid, name))
    hosts = sorted({*result.hosts(), *(h for h, _, _ in vms), *flt.hosts})
    if flt.hosts:
        hosts = [h for h in hosts if h in flt.hosts]
        vms = [v for v in vms if v[0] in flt.hosts]
    vm_names = {n for _, _, n in vms} | {u for _, u, _ in vms}
    truncated = result.truncated

    errors = []
    for e in await q.errors(window.since, window.until, limit=MAX_RECORDS):
        if flt.hosts and e.host not in flt.hosts:
            continue
        if flt.vms and e.vm is not None and e.vm not in vm_names:
            continue
        errors.append(
            {
                "id": e.id,
                "code": str(e.code),
                "category": e.category,
                "severity": e.severity.label,
                "message": e.message,
                "hint": e.hint,
                "context": e.context,
                "cause": e.cause,
                "host": e.host,
                "vm": e.vm,
                "count": e.count,
                "first_at": e.first_at,
                "last_at": e.last_at,
                "closed": e.closed,
            }
        )
    truncated |= len(errors) >= MAX_RECORDS
    errors.sort(key=lambda r: (r["first_at"], r["id"]))

    results = []
    host_list: list[str | None] = list(hosts) or [None]
    for h in host_list:
        for r in await q.health_history(window.since, window.until, host=h, limit=MAX_RECORDS):
            results.append(
                {
                    "check": r.check,
                    "subject": r.subject,
                    "host": r.host,
                    "state": r.state.label,
                    "raw_state": r.raw_state.label,
                    "value": r.value,
                    "unit": r.unit,
                    "warn": r.warn,
                    "crit": r.crit,
                    "message": r.message,
                    "at": r.at,
                }
            )
    truncated |= len(results) >= MAX_RECORDS
    alerts = [
        {
            "check": a.check,
            "subject": a.subject,
            "host": a.host,
            "previous": a.previous.label,
            "current": a.current.label,
            "message": a.message,
            "at": a.at,
        }
        for a in await q.health_alerts(window.since, window.until, limit=MAX_RECORDS)
        if not hosts or a.host in hosts or a.host is None
    ]
    audit = [
        {
            "host": a.host,
            "vm_uuid": a.vm_uuid,
            "vm_name": a.vm_name,
            "action": a.action,
            "user": a.user,
            "client": a.client,
            "outcome": a.outcome.value,
            "started_at": a.started_at,
            "duration_s": a.duration_s,
            "message": a.message,
            "error_code": a.error_code,
        }
        for a in await q.audit(window.since, window.until, limit=MAX_RECORDS)
        if (not flt.hosts or a.host in flt.hosts)
        and (not flt.vms or a.vm_uuid in vm_names or a.vm_name in vm_names)
    ]
    connections: dict[str, list[dict[str, object]]] = {}
    uris: dict[str, str] = {}
    for c in await q.connections(0, window.until, limit=MAX_RECORDS):
        uris[c.host] = c.uri  # the latest known before the window ends
        if c.at >= window.since:
            connections.setdefault(c.host, []).append(
                {"at": c.at, "state": c.state.value, "message": c.message}
            )
    keys = [(h, u) for h, u, _ in vms] + [(h, "") for h in hosts]
    series = [
        {
            "host": s.host,
            "vm_uuid": s.vm_uuid or None,
            "vm_name": s.vm_name or None,
            "metric": s.metric,
            "points": points,
        }
        for s, points in await tq.minute_series(window.since, window.until, keys)
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
                "host": h,
                "uri": uris.get(h),
                "facts": _facts(facts[h]) if facts and h in facts else None,
                "connection": connections.get(h, []),
                "vms": [{"uuid": u, "name": n} for hh, u, n in vms if hh == h],
            }
            for h in hosts
        ],
        "timeline": [entry_to_dict(e) for e in result.entries],
        "errors": errors,
        "health": {"results": results, "alerts": alerts},
        "audit": audit,
        "metrics": {"resolution": "minute", "columns": list(METRIC_COLUMNS), "series": series},
    }
    redacted: dict[str, Any] = redact_document(doc)
    return redacted


def dump_export(doc: Mapping[str, Any], out: IO[str]) -> None:
    """Compact JSON (the C encoder; an indented dump of a day of minutes is ~10x slower)."""
    json.dump(doc, out, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
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
    points = sum(len(s["points"]) for s in series)
    return [
        f"{len(doc['timeline'])} timeline entries, {len(doc['errors'])} errors, "
        f"{len(doc['audit'])} actions, {len(doc['health']['results'])} health results",
        f"{len(series)} metric series ({points} minutes) of {len(doc['hosts'])} host(s)",
    ]
