from __future__ import annotations

import pytest

from virtwatch.tui.format import UNKNOWN, fmt_age, fmt_duration, fmt_kib, fmt_mem, fmt_pct


@pytest.mark.parametrize(
    ("kib", "text"),
    [
        (None, UNKNOWN),
        (512, "512 KiB"),
        (1536, "1.5 MiB"),
        (2 * 1024 * 1024, "2.0 GiB"),
        (150 * 1024 * 1024, "150 GiB"),
    ],
)
def test_fmt_kib(kib: int | None, text: str) -> None:
    assert fmt_kib(kib) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, UNKNOWN),
        (5, "5s"),
        (65, "1m05s"),
        (700, "11m"),
        (3 * 3600 + 720, "3h12m"),
        (26 * 3600, "1d02h"),
        (-3, "0s"),
    ],
)
def test_fmt_duration(seconds: float | None, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_unknown_is_not_zero() -> None:
    assert fmt_pct(None) == UNKNOWN
    assert fmt_pct(0.0).strip() == "0.0%"
    assert fmt_mem(None, None) == UNKNOWN
    assert fmt_mem(None, 1024) == f"{UNKNOWN} / 1.0 MiB"


def test_fmt_age() -> None:
    assert fmt_age(0.2) == "now"
    assert fmt_age(12) == "12s ago"
