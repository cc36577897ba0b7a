"""Records to rows and back: what the store writes reads back as the same record, and a
state or kind this version does not know reads as the nearest one it does."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

from tests.canned import audit_records, domain_events, health_alerts, host_connections
from virtwatch.core.records import ConnectionState, EventKind, HealthState, Outcome
from virtwatch.storage.rows import (
    alert_from_row,
    alert_row,
    audit_from_row,
    audit_row,
    connection_from_row,
    connection_row,
    event_from_row,
    event_row,
)


def stored(row: dict[str, Any], **changed: object) -> SimpleNamespace:
    """A row as a query returns it: the columns as attributes."""
    return SimpleNamespace(**{**row, **changed})


def test_each_record_reads_back_as_it_was_written() -> None:
    for e in domain_events():
        assert event_from_row(stored(event_row(e))) == e
    for a in audit_records():
        assert audit_from_row(stored(audit_row(a))) == a
    for h in health_alerts():
        assert alert_from_row(stored(alert_row(h))) == h
    for c in host_connections():
        assert connection_from_row(stored(connection_row(c))) == c


def test_what_a_newer_virtwatch_wrote_reads_as_the_nearest_known_value() -> None:
    e = domain_events()[0]
    assert event_from_row(stored(event_row(e), kind="teleported")).kind is EventKind.LIFECYCLE
    a = audit_records()[0]
    assert audit_from_row(stored(audit_row(a), outcome="half-done")).outcome is Outcome.FAILED
    h = health_alerts()[0]
    back = alert_from_row(stored(alert_row(h), previous=99, current=-5))
    assert (back.previous, back.current) == (HealthState.UNKNOWN, HealthState.UNKNOWN)
    assert dataclasses.replace(back, previous=h.previous, current=h.current) == h
    c = host_connections()[0]
    state = connection_from_row(stored(connection_row(c), state="sleeping")).state
    assert state is ConnectionState.DEGRADED
