from __future__ import annotations

from virtwatch.core.stats import memory_used, parse_record, version_text


def test_full_record() -> None:
    s = parse_record(
        {
            "state.state": 1,
            "state.reason": 1,
            "cpu.time": 5_000_000,
            "vcpu.current": 2,
            "balloon.current": 2048,
            "balloon.maximum": 4096,
            "balloon.rss": 1500,
        }
    )
    assert (s.state, s.reason, s.cpu_time_ns, s.vcpus) == (1, 1, 5_000_000, 2)
    assert memory_used(s) == (1500, "rss")


def test_missing_keys_are_none_not_zero() -> None:
    s = parse_record({"state.state": 5, "state.reason": 2})
    assert s.cpu_time_ns is None
    assert s.vcpus is None
    assert s.rss_kib is None
    assert memory_used(s) == (None, "unknown")


def test_guest_view_preferred_when_the_balloon_reports_it() -> None:
    s = parse_record({"balloon.available": 4000, "balloon.usable": 3000, "balloon.rss": 9})
    assert memory_used(s) == (1000, "guest")


def test_wrongly_typed_values_are_ignored() -> None:
    s = parse_record({"state.state": 1, "cpu.time": "oops", "vcpu.current": True})
    assert s.cpu_time_ns is None
    assert s.vcpus is None


def test_version_text() -> None:
    assert version_text(9000000) == "9.0.0"
    assert version_text(7002022) == "7.2.22"
    assert version_text(0) == "?"
