"""The timeline model: records into entries, order, windows, filters, hints, times in words."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.records import (
    AuditRecord,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthState,
    Outcome,
)
from virtwatch.core.triage.causes import add_hints
from virtwatch.core.triage.entries import EntryKind, TimelineEntry, entry_to_dict, ordered
from virtwatch.core.triage.timeline import (
    TimelineFilter,
    build_timeline,
    entry_from_audit,
    entry_from_error,
    entry_from_event,
    entry_from_health,
    event_severity,
    health_transitions,
    parse_kinds,
    parse_severity,
)
from virtwatch.core.triage.when import Window, clock_time, parse_when

T = 1_795_000_000.0
VM = "10000000-0000-4000-8000-000000000001"


def event(
    summary: str, at: float, kind: EventKind = EventKind.LIFECYCLE, **detail: str
) -> DomainEvent:
    return DomainEvent("hv1", VM, "web-01", kind, summary, at, detail)


def audit(action: str, at: float, outcome: Outcome = Outcome.VERIFIED, **kw: str) -> AuditRecord:
    return AuditRecord(
        "hv1",
        VM,
        "web-01",
        action,
        "alice",
        kw.get("client"),
        outcome,
        at,
        1.25,
        kw.get("message", ""),
        kw.get("code"),
    )


def health(
    check: str, subject: str, prev: HealthState, cur: HealthState, at: float, msg: str = ""
) -> HealthAlert:
    return HealthAlert(check, subject, prev, cur, msg, at, "hv1")


# -- records -> entries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("summary", "kind", "severity"),
    [
        ("started: booted", EventKind.LIFECYCLE, Severity.INFO),
        ("suspended: by admin", EventKind.LIFECYCLE, Severity.INFO),
        ("suspended: I/O error", EventKind.LIFECYCLE, Severity.ERROR),
        ("suspended: watchdog", EventKind.LIFECYCLE, Severity.WARNING),
        ("stopped: destroyed", EventKind.LIFECYCLE, Severity.WARNING),
        ("stopped: crashed", EventKind.LIFECYCLE, Severity.ERROR),
        ("stopped: emulator failed", EventKind.LIFECYCLE, Severity.ERROR),
        ("crashed: panicked", EventKind.LIFECYCLE, Severity.ERROR),
        (
            "I/O error on vda: no space left on device; guest paused",
            EventKind.IO_ERROR,
            Severity.ERROR,
        ),
        ("watchdog fired: guest reset", EventKind.WATCHDOG, Severity.WARNING),
        ("definition changed: vCPUs 1 → 2", EventKind.CONFIG_CHANGE, Severity.INFO),
    ],
)
def test_event_severity_follows_the_decoded_reason(
    summary: str, kind: EventKind, severity: Severity
) -> None:
    assert event_severity(event(summary, T, kind)) is severity


def test_spike_start_warns_and_its_end_informs() -> None:
    start = entry_from_event(
        event("CPU spike", T, EventKind.SPIKE, phase="start", end=str(T + 300))
    )
    end = entry_from_event(event("CPU spike over", T + 300, EventKind.SPIKE, phase="end"))
    assert (start.kind, start.severity, start.until) == (EntryKind.SPIKE, Severity.WARNING, T + 300)
    assert (end.kind, end.severity, end.until) == (EntryKind.SPIKE, Severity.INFO, None)


def test_entries_from_each_record_kind() -> None:
    cfg = entry_from_event(
        event("definition changed: +watchdog", T, EventKind.CONFIG_CHANGE), key="event:9"
    )
    assert (cfg.kind, cfg.key, cfg.detail["event_kind"]) == (
        EntryKind.CONFIG,
        "event:9",
        "config_change",
    )
    err = AppError(
        ErrorCode.MACHINE_NOT_FOUND, "no VM 'x'", "check the name", Severity.WARNING, {"vm": "x"}
    )
    rep = ErrorReport(err, "hv1", "x", T + 50, count=12, first_at=T)
    e = entry_from_error(rep, key="error:1")
    assert (e.at, e.until, e.severity) == (T, T + 50, Severity.WARNING)
    assert e.title == "MACHINE_NOT_FOUND x12: no VM 'x'"
    assert e.detail == {
        "code": "MACHINE_NOT_FOUND",
        "count": "12",
        "hint": "check the name",
        "context.vm": "x",
    }
    single = entry_from_error(ErrorReport(err, "hv1", None, T))
    assert (single.until, single.title) == (None, "MACHINE_NOT_FOUND: no VM 'x'")
    h = entry_from_health(
        health("host.disk", "/var", HealthState.OK, HealthState.CRIT, T, "97 % used")
    )
    assert h.title == "host.disk /var: ok → crit (97 % used)"
    assert (h.kind, h.severity, h.vm_uuid) == (EntryKind.HEALTH, Severity.CRITICAL, None)
    a = entry_from_audit(audit("force_off", T, client="10.0.0.5", message="stopped"))
    assert a.title == "force_off by alice from 10.0.0.5: verified in 1.2 s — stopped"
    assert (a.kind, a.severity, a.until) == (EntryKind.ACTION, Severity.INFO, T + 1.25)
    failed = entry_from_audit(audit("start", T, Outcome.FAILED, code="MACHINE_INVALID_STATE"))
    assert (failed.severity, failed.detail["code"]) == (Severity.ERROR, "MACHINE_INVALID_STATE")


def test_entry_to_dict_is_plain_json() -> None:
    d = entry_to_dict(entry_from_event(event("started: booted", T)))
    assert d["at_iso"] == "2026-11-18T11:06:40+00:00"
    assert d["kind"] == "event"
    assert d["severity"] == "info"
    assert d["vm_name"] == "web-01"
    assert d["hint"] is None


def test_health_results_become_transitions() -> None:
    rows = [
        ("host.disk", "/var", "hv1", HealthState.OK, "50 %", T),
        ("host.disk", "/var", "hv1", HealthState.OK, "60 %", T + 10),
        ("host.disk", "/", "hv1", HealthState.WARN, "85 %", T + 15),
        ("host.disk", "/var", "hv1", HealthState.CRIT, "97 %", T + 20),
        ("host.disk", "/var", "hv1", HealthState.CRIT, "98 %", T + 30),
        ("host.disk", "/var", "hv1", HealthState.OK, "40 %", T + 40),
    ]
    got = health_transitions(rows)
    assert [(a.subject, a.previous, a.current, a.at) for a in got] == [
        ("/var", HealthState.OK, HealthState.CRIT, T + 20),
        ("/var", HealthState.CRIT, HealthState.OK, T + 40),
    ]


# -- order, window, filter ------------------------------------------------------------------


def entry(
    at: float,
    kind: EntryKind = EntryKind.EVENT,
    key: str = "",
    *,
    severity: Severity = Severity.INFO,
    title: str = "t",
    host: str | None = None,
    vm_uuid: str | None = None,
    vm_name: str | None = None,
    until: float | None = None,
) -> TimelineEntry:
    return TimelineEntry(at, kind, severity, title, host, vm_uuid, vm_name, key, until)


def test_causes_sort_before_effects_at_one_instant() -> None:
    got = ordered(
        [
            entry(T, EntryKind.EVENT, "event:2"),
            entry(T, EntryKind.ACTION, "audit:1"),
            entry(T - 1, EntryKind.HEALTH, "health:1"),
            entry(T, EntryKind.EVENT, "event:1"),
        ]
    )
    assert [e.key for e in got] == ["health:1", "audit:1", "event:1", "event:2"]


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.sampled_from(list(EntryKind)), st.integers(0, 9)),
        max_size=40,
    )
)
def test_order_is_total_and_stable(spec: list[tuple[int, EntryKind, int]]) -> None:
    entries = [entry(T + at, kind, f"k{i}:{n}") for i, (at, kind, n) in enumerate(spec)]
    once = ordered(entries)
    assert ordered(reversed(entries)) == once
    assert all(a.at <= b.at for a, b in itertools.pairwise(once))


def test_window_keeps_spans_that_overlap_it() -> None:
    w = Window(T, T + 100)
    assert w.contains(entry(T))
    assert not w.contains(entry(T + 100))  # the end is exclusive
    assert not w.contains(entry(T - 1))
    assert w.contains(entry(T - 50, until=T + 5))  # an error first seen earlier, still going
    assert not w.contains(entry(T - 50, until=T - 1))
    assert Window.last(900, T).since == T - 900
    with pytest.raises(AppError, match="ends"):
        Window(T, T)


def test_filters_by_host_vm_kind_severity_and_text() -> None:
    a = entry(
        T,
        EntryKind.EVENT,
        host="hv1",
        vm_uuid=VM,
        vm_name="web-01",
        title="stopped: crashed",
        severity=Severity.ERROR,
    )
    b = entry(
        T, EntryKind.HEALTH, host="hv2", title="host.cpu hv2: ok → warn", severity=Severity.WARNING
    )
    c = entry(T, EntryKind.ACTION, host="hv1", vm_uuid="u2", vm_name="db", title="pause by bob")
    everything = [a, b, c]

    def keep(f: TimelineFilter) -> list[TimelineEntry]:
        return [e for e in everything if f.matches(e)]

    assert keep(TimelineFilter()) == everything
    assert keep(TimelineFilter(hosts=frozenset({"hv1"}))) == [a, c]
    assert keep(TimelineFilter(vms=frozenset({"web-01"}))) == [a]
    assert keep(TimelineFilter(vms=frozenset({VM}))) == [a]
    assert keep(TimelineFilter(kinds=frozenset({EntryKind.HEALTH, EntryKind.ACTION}))) == [b, c]
    assert keep(TimelineFilter(min_severity=Severity.WARNING)) == [a, b]
    assert keep(TimelineFilter(text="CRASHED")) == [a]
    f = TimelineFilter(
        hosts=frozenset({"hv1"}),
        kinds=frozenset({EntryKind.EVENT}),
        min_severity=Severity.ERROR,
        text="x",
    )
    assert f.describe() == "host hv1; kind event; severity ≥ error; text “x”"
    assert TimelineFilter().describe() == "everything"
    assert f.to_dict()["kinds"] == ["event"]


def test_parsing_kinds_and_severities() -> None:
    assert parse_kinds(["event,spike", "error"]) == {
        EntryKind.EVENT,
        EntryKind.SPIKE,
        EntryKind.ERROR,
    }
    assert parse_severity("Warning") is Severity.WARNING
    with pytest.raises(AppError, match="unknown kind 'bogus'"):
        parse_kinds(["bogus"])
    with pytest.raises(AppError, match="unknown severity"):
        parse_severity("loud")


def test_build_timeline_dedupes_orders_and_filters_after_hinting() -> None:
    disk = entry_from_health(
        health(
            "host.disk", "/var/lib/libvirt", HealthState.OK, HealthState.CRIT, T - 3600, "99 % used"
        ),
        key="health:1",
    )
    paused = entry_from_event(event("suspended: I/O error", T), key="event:1")
    got = build_timeline(
        [paused, paused, disk],
        Window(T - 60, T + 60),
        TimelineFilter(vms=frozenset({"web-01"})),
    )
    assert [e.key for e in got] == ["event:1"]  # the health row is out of window and host-level
    assert got[0].hint == "host disk /var/lib/libvirt was crit at that moment: 99 % used"


# -- hints ----------------------------------------------------------------------------------


def test_io_error_pause_is_joined_to_the_full_disk_that_holds_the_vm() -> None:
    entries = [
        entry_from_health(
            health("host.disk", "/", HealthState.OK, HealthState.WARN, T - 100, "88 %"), key="h:1"
        ),
        entry_from_health(
            health("host.disk", "/srv/vms", HealthState.OK, HealthState.CRIT, T - 50, "100 % used"),
            key="h:2",
        ),
        entry_from_event(
            event(
                "I/O error on vda (/srv/vms/web.qcow2): no space left on device; guest paused",
                T,
                EventKind.IO_ERROR,
            ),
            key="e:1",
        ),
        entry_from_event(event("suspended: I/O error", T), key="e:2"),
    ]
    hinted = add_hints(ordered(entries), disk_paths={VM: ["/srv/vms/web.qcow2"]})
    assert hinted[2].hint == "the host disk holding it /srv/vms was crit at that moment: 100 % used"
    assert hinted[3].hint == hinted[2].hint
    # without knowing where its disk lives: the worst bad disk on the host
    assert (
        add_hints(ordered(entries))[3].hint
        == "host disk /srv/vms was crit at that moment: 100 % used"
    )


def test_a_disk_that_recovered_before_the_pause_is_no_hint() -> None:
    entries = ordered(
        [
            entry_from_health(
                health("host.disk", "/var", HealthState.OK, HealthState.CRIT, T - 100), key="h:1"
            ),
            entry_from_health(
                health("host.disk", "/var", HealthState.CRIT, HealthState.OK, T - 50), key="h:2"
            ),
            entry_from_event(event("suspended: I/O error", T), key="e:1"),
        ]
    )
    assert add_hints(entries)[2].hint == ""


def test_the_state_before_the_window_comes_from_context() -> None:
    before = entry_from_health(
        health("host.disk", "/var", HealthState.OK, HealthState.CRIT, T - 7200), key="h:0"
    )
    paused = entry_from_event(event("suspended: I/O error", T), key="e:1")
    assert add_hints([paused])[0].hint == ""
    assert add_hints([paused], context=[before])[0].hint == "host disk /var was crit at that moment"


def test_io_error_joined_to_a_no_space_error_when_no_check_saw_it() -> None:
    err = AppError(
        ErrorCode.RESOURCE_EXHAUSTED,
        "No space left on device writing /var/x",
        severity=Severity.ERROR,
    )
    entries = ordered(
        [
            entry_from_error(ErrorReport(err, "hv1", None, T - 30), key="error:1"),
            entry_from_event(event("suspended: I/O error", T), key="e:1"),
        ]
    )
    hint = add_hints(entries)[1].hint
    reported = "RESOURCE_EXHAUSTED: No space left on device writing /var/x"
    assert hint == f"the host reported '{reported}' at {clock_time(T - 30)}"


def test_crash_joined_to_host_memory_and_a_recent_spike() -> None:
    entries = ordered(
        [
            entry_from_event(
                event("memory used spike: 1.9 GiB", T - 300, EventKind.SPIKE, phase="start"),
                key="e:1",
            ),
            entry_from_health(
                health("host.memory", "hv1", HealthState.OK, HealthState.CRIT, T - 60, "98 % used"),
                key="h:1",
            ),
            entry_from_event(event("stopped: crashed", T), key="e:2"),
        ]
    )
    hint = add_hints(entries)[2].hint
    assert hint == (
        "host host.memory was crit (98 % used): the OOM killer may have ended QEMU; "
        f"after memory used spike: 1.9 GiB at {clock_time(T - 300)}"
    )


def test_lifecycle_events_are_joined_to_the_action_that_caused_them() -> None:
    entries = ordered(
        [
            entry_from_audit(audit("force_off", T - 2, client="10.0.0.5"), key="audit:1"),
            entry_from_event(event("stopped: destroyed", T), key="e:1"),
            entry_from_event(event("started: booted", T + 10), key="e:2"),  # nobody here started it
        ]
    )
    hinted = add_hints(entries)
    assert hinted[1].hint == f"force_off by alice from 10.0.0.5 at {clock_time(T - 2)}"
    assert hinted[2].hint == ""


def test_an_action_long_before_is_not_the_cause() -> None:
    entries = ordered(
        [
            entry_from_audit(audit("pause", T - 600), key="audit:1"),
            entry_from_event(event("suspended: by admin", T), key="e:1"),
        ]
    )
    assert add_hints(entries)[1].hint == ""


def test_a_failed_action_is_joined_to_the_state_the_vm_was_in() -> None:
    entries = ordered(
        [
            entry_from_event(event("started: booted", T - 100), key="e:1"),
            entry_from_audit(
                audit("start", T, Outcome.FAILED, code="MACHINE_INVALID_STATE"), key="audit:1"
            ),
        ]
    )
    assert (
        add_hints(entries)[1].hint
        == f"last event before it: started: booted at {clock_time(T - 100)}"
    )


def test_a_spike_is_joined_to_a_host_check_that_was_bad_then() -> None:
    entries = ordered(
        [
            entry_from_health(
                health("host.cpu", "hv1", HealthState.OK, HealthState.WARN, T + 30, "91 %"),
                key="h:1",
            ),
            entry_from_event(
                event("CPU spike", T, EventKind.SPIKE, phase="start", end=str(T + 120)), key="e:1"
            ),
        ]
    )
    spike = next(e for e in add_hints(entries) if e.kind is EntryKind.SPIKE)
    assert spike.hint == "host host.cpu hv1 was warn at the same time"


# -- time in words --------------------------------------------------------------------------

UTC2 = timezone(timedelta(hours=2))
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("15m", NOW - 900),
        ("2h ago", NOW - 7200),
        ("1d", NOW - 86400),
        ("90 s", NOW - 90),
        ("1w", NOW - 604800),
        ("13:30", datetime(2026, 11, 26, 13, 30, tzinfo=UTC2).timestamp()),
        ("14:30", datetime(2026, 11, 25, 14, 30, tzinfo=UTC2).timestamp()),  # future: yesterday
        ("2026-11-26T10:00", datetime(2026, 11, 26, 10, 0, tzinfo=UTC2).timestamp()),
        ("2026-11-26T10:00:00+00:00", datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()),
        ("2026-11-26 09:15", datetime(2026, 11, 26, 9, 15, tzinfo=UTC2).timestamp()),
        ("1795000000", 1795000000.0),
    ],
)
def test_parse_when(text: str, expected: float) -> None:
    assert parse_when(text, NOW, UTC2) == expected


@pytest.mark.parametrize("text", ["yesterday", "25:00", "", "12", "-5m"])
def test_unreadable_times_are_a_clear_error(text: str) -> None:
    with pytest.raises(AppError, match="cannot read the time") as info:
        parse_when(text, NOW, UTC2)
    assert "15m" in info.value.hint


def test_clock_time_in_a_zone() -> None:
    assert clock_time(NOW, UTC2) == "14:00:00"
