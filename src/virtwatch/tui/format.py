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


_RATE_UNITS = ("B/s", "KB/s", "MB/s", "GB/s", "TB/s")
_BARS = "▁▂▃▄▅▆▇█"


def fmt_rate(bps: float | None) -> str:
    """Bytes per second in decimal units: 1500 -> '1.5 KB/s'."""
    if bps is None:
        return UNKNOWN
    value = max(0.0, float(bps))
    unit = 0
    while value >= 1000 and unit < len(_RATE_UNITS) - 1:
        value /= 1000
        unit += 1
    if unit == 0 or value >= 100:
        return f"{value:.0f} {_RATE_UNITS[unit]}"
    return f"{value:.1f} {_RATE_UNITS[unit]}"


def fmt_pair(a: str, b: str) -> str:
    """Two figures of one cell ('read / write'); both unknown is one '—'."""
    if a == UNKNOWN and b == UNKNOWN:
        return UNKNOWN
    return f"{a} / {b}"


def sparkline(values: list[float], width: int, *, top: float | None = None) -> str:
    """The newest `width` values as block characters, right-aligned; scale 0..top
    (default: the largest value shown, at least 1)."""
    if width <= 0:
        return ""
    tail = values[-width:]
    if not tail:
        return " " * width
    hi = top if top is not None else max(max(tail), 1.0)
    scale = (len(_BARS) - 1) / (hi if hi > 0 else 1.0)
    last = len(_BARS) - 1
    bars = _BARS
    # NaN draws as the floor; values are clamped to 0..top
    out = "".join(
        bars[min(last, max(0, int(v * scale + 0.5)))] if v == v else bars[0] for v in tail
    )
    return " " * (width - len(tail)) + out


def gauge(pct: float | None, width: int) -> str:
    """A bar of `width` cells filled to `pct` percent (eighths for the partial cell)."""
    if width <= 0:
        return ""
    if pct is None:
        return "·" * width
    frac = min(1.0, max(0.0, pct / 100.0))
    eighths = round(frac * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part else ""
    return ("█" * full + partial).ljust(width, " ")[:width]
