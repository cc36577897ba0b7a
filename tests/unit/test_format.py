from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.tui.format import (
    RATE_WIDTH,
    UNKNOWN,
    fmt_age,
    fmt_duration,
    fmt_figures,
    fmt_kib,
    fmt_mem,
    fmt_mem_short,
    fmt_pct,
    fmt_pct_short,
    fmt_rate,
    fmt_rate_short,
)


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


@pytest.mark.parametrize(
    ("bps", "short", "wide"),
    [
        (None, UNKNOWN, UNKNOWN),
        (float("nan"), UNKNOWN, UNKNOWN),
        (float("inf"), UNKNOWN, UNKNOWN),
        (0, "0", "0 B/s"),
        (-5, "0", "0 B/s"),  # a counter that went back is no traffic, not a negative rate
        (0.3, "<1", "<1 B/s"),  # something moved: never '0'
        (0.6, "1", "1 B/s"),
        (999, "999", "999 B/s"),
        (999.6, "1.0K", "1.0 KB/s"),
        (1500, "1.5K", "1.5 KB/s"),
        (9_999, "10K", "10.0 KB/s"),
        (80_000, "80K", "80.0 KB/s"),
        (99_960, "100K", "100 KB/s"),
        (999_499, "999K", "999 KB/s"),
        (999_999, "1.0M", "1.0 MB/s"),  # never '1000K'
        (1_230_000, "1.2M", "1.2 MB/s"),
        (123_456_789, "123M", "123 MB/s"),
        (1e12, "1.0T", "1.0 TB/s"),
        (999.4e18, "999E", "999400000 TB/s"),
    ],
)
def test_rates_short_and_wide(bps: float | None, short: str, wide: str) -> None:
    assert fmt_rate_short(bps) == short
    assert fmt_rate(bps) == wide


_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


@given(st.floats(0, 1e12) | st.floats(0, 999.4e18) | st.integers(0, 10**7))
def test_a_short_rate_fits_its_width_and_says_the_rate_it_was_given(bps: float) -> None:
    text = fmt_rate_short(bps)
    assert 1 <= len(text) <= RATE_WIDTH
    if bps == 0:
        assert text == "0"
        return
    if text == "<1":
        assert 0 < bps <= 0.5  # rounds to 0 (a tie rounds to even)
        return
    m = re.fullmatch(r"(\d+)(\.\d)?([KMGTPE]?)", text)
    assert m is not None, text
    figure = float(m.group(1) + (m.group(2) or ""))
    assert 0 < figure < 1000  # never '1000K': that is '1.0M'
    assert m.group(1) != "0"  # never '0.5K': that is '500'
    assert (m.group(2) is not None) == (figure < 10 and m.group(3) != "")
    scale = _SUFFIX[m.group(3)]
    step = 0.1 if m.group(2) else 1.0  # the last digit shown
    # what it says is the rate rounded to its last digit (float formatting may round a
    # tie either way)
    assert abs(figure * scale - bps) <= step * scale / 2 * (1 + 1e-9)


@given(
    st.one_of(st.none(), st.floats(0, 1e12)),
    st.one_of(st.none(), st.floats(0, 1e12)),
)
def test_a_pair_of_short_figures_lines_up(a: float | None, b: float | None) -> None:
    text = fmt_figures(fmt_rate_short(a), fmt_rate_short(b))
    if a is None and b is None:
        assert text == UNKNOWN
    else:  # the same width on every row: right-aligned, the figures line up
        assert len(text) == 2 * RATE_WIDTH + 1
        first, second = text[:RATE_WIDTH].strip(), text[RATE_WIDTH + 1 :].strip()
        assert (first, second) == (fmt_rate_short(a), fmt_rate_short(b))


@pytest.mark.parametrize(
    ("used", "alloc", "text"),
    [
        (None, None, UNKNOWN),
        (None, 2 << 20, f"{UNKNOWN}/2.0 GiB"),
        (5, None, f"5 KiB/{UNKNOWN}"),
        (900 << 10, 2 << 20, "0.9/2.0 GiB"),
        (14000 << 10, 16 << 20, "13.7/16.0 GiB"),
        (60 << 10, 64 << 10, "60.0/64.0 MiB"),
        (3 << 20, 2 << 20, "3.0/2.0 GiB"),  # RSS above the allocation says so
        (30 << 10, 64 << 20, "30.0 MiB/64.0 GiB"),  # not '0.0/64.0 GiB'
        (0, 2 << 20, "0.0/2.0 GiB"),
        (100 << 20, 150 << 20, "100/150 GiB"),
    ],
)
def test_memory_short_says_the_unit_once(used: int | None, alloc: int | None, text: str) -> None:
    assert fmt_mem_short(used, alloc) == text


_KIB = {"KiB": 1, "MiB": 1024, "GiB": 1024**2, "TiB": 1024**3, "PiB": 1024**4}


@given(st.integers(0, 2**50), st.integers(1, 2**50))
def test_memory_short_never_hides_a_unit_or_a_used_figure(used: int, alloc: int) -> None:
    text = fmt_mem_short(used, alloc)
    m = re.fullmatch(r"([\d.]+)( [KMGTP]iB)?/([\d.]+) ([KMGTP]iB)", text)
    assert m is not None, text
    unit = _KIB[m.group(4)]
    assert math.isclose(float(m.group(3)) * unit, alloc, rel_tol=0.06, abs_tol=unit / 2)
    used_unit = _KIB[m.group(2).strip()] if m.group(2) else unit
    shown = float(m.group(1)) * used_unit
    assert abs(shown - used) <= used_unit / 2 + used * 0.06  # its figure, rounded
    assert used == 0 or shown > 0  # a used figure that is not 0 never reads as 0


def test_short_percentages_leave_the_sign_to_the_label() -> None:
    assert fmt_pct_short(None) == UNKNOWN
    assert fmt_pct_short(12.5) == " 12.5"
    assert fmt_pct_short(100.0) == "100.0"
    assert len(fmt_pct_short(0.0)) == len(fmt_pct_short(99.94))
