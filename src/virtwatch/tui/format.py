"""Formatting numbers for narrow terminal cells. Pure; '—' means unknown, never zero."""

from __future__ import annotations

UNKNOWN = "—"
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def fmt_kib(kib: int | float | None) -> str:
    """1536 -> '1.5 MiB'. Precision shrinks as numbers grow so cells stay narrow."""
    if kib is None:
        return UNKNOWN
    value = float(kib)
    unit = 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0 or value >= 100:
        return f"{value:.0f} {_UNITS[unit]}"
    return f"{value:.1f} {_UNITS[unit]}"


def fmt_mem(used: int | None, alloc: int | None) -> str:
    if used is None and alloc is None:
        return UNKNOWN
    if used is None:
        return f"{UNKNOWN} / {fmt_kib(alloc)}"
    return f"{fmt_kib(used)} / {fmt_kib(alloc)}"


def fmt_pct(pct: float | None) -> str:
    if pct is None:
        return UNKNOWN
    return f"{pct:5.1f}%"


def fmt_duration(seconds: float | None) -> str:
    """Compact: '45s', '12m', '3h12m', '4d3h'."""
    if seconds is None:
        return UNKNOWN
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s" if m < 10 else f"{m}m"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def fmt_age(seconds: float) -> str:
    return "now" if seconds < 1.5 else f"{fmt_duration(seconds)} ago"
