"""Formatting numbers for narrow terminal cells. Pure; '—' means unknown, never zero."""

from __future__ import annotations

import math

UNKNOWN = "—"
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def _kib_figure(kib: float, unit: int) -> str:
    """`kib` in `_UNITS[unit]`: whole KiB, one decimal below 100, none from there."""
    value = float(kib) / 1024**unit
    if unit == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def _kib_unit(kib: float) -> int:
    value, unit = abs(float(kib)), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return unit


def fmt_kib(kib: int | float | None) -> str:
    """1536 -> '1.5 MiB'. Precision shrinks as numbers grow so cells stay narrow."""
    if kib is None:
        return UNKNOWN
    unit = _kib_unit(kib)
    return f"{_kib_figure(kib, unit)} {_UNITS[unit]}"


def fmt_mem(used: int | None, alloc: int | None) -> str:
    if used is None and alloc is None:
        return UNKNOWN
    if used is None:
        return f"{UNKNOWN} / {fmt_kib(alloc)}"
    return f"{fmt_kib(used)} / {fmt_kib(alloc)}"


def fmt_mem_short(used: int | None, alloc: int | None) -> str:
    """Used / allocated with the allocation's unit said once: '13.7/16.0 GiB',
    '0.9/2.0 GiB', '—/2.0 GiB'. A used figure that would round to 0 in that unit
    without being 0 keeps its own: '30 MiB/64.0 GiB'."""
    if alloc is None:
        return UNKNOWN if used is None else f"{fmt_kib(used)}/{UNKNOWN}"
    unit = _kib_unit(alloc)
    total = f"{_kib_figure(alloc, unit)} {_UNITS[unit]}"
    if used is None:
        return f"{UNKNOWN}/{total}"
    figure = _kib_figure(used, unit)
    if used and not figure.strip("0."):  # '0', '0.0': it is not nothing
        return f"{fmt_kib(used)}/{total}"
    return f"{figure}/{total}"


def fmt_pct(pct: float | None) -> str:
    if pct is None:
        return UNKNOWN
    return f"{pct:5.1f}%"


def fmt_pct_short(pct: float | None) -> str:
    """A percentage without its sign (the column's label says '%'): ' 12.5', '100.0'."""
    if pct is None:
        return UNKNOWN
    return f"{pct:5.1f}"


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
_SI = ("", "K", "M", "G", "T", "P", "E")  # decimal: each is 1000 of the one before
RATE_WIDTH = 4  # the most cells `fmt_rate_short` takes for any rate below 999.5 EB/s
_BARS = "▁▂▃▄▅▆▇█"


def _rate_parts(value: float) -> tuple[str, str]:
    """(figure, unit) for a non-negative rate in bytes per second: the smallest unit whose
    rounded figure stays under 1000 (999,999 is '1.0' MB/s, never '1000' KB/s); whole
    bytes, else one decimal below 100. Lengths, not parsing, tell how it rounded."""
    last = len(_RATE_UNITS) - 1
    for i, unit in enumerate(_RATE_UNITS):
        if i and value < 100:
            text = f"{value:.1f}"
            if len(text) <= 4:  # '99.9': not carried over to '100.0'
                return text, unit
        text = f"{value:.0f}"
        if len(text) <= 3 or i == last:
            return text, unit
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_rate(bps: float | None) -> str:
    """Bytes per second in decimal units: 1500 -> '1.5 KB/s', 999_999 -> '1.0 MB/s';
    above 0 but at most half a byte a second, '<1 B/s'."""
    if bps is None or not math.isfinite(bps):
        return UNKNOWN
    value = max(0.0, float(bps))
    text, unit = _rate_parts(value)
    return f"{'<1' if text == '0' and value > 0 else text} {unit}"


def fmt_rate_short(bps: float | None) -> str:
    """Bytes per second in at most RATE_WIDTH cells with an SI suffix and no unit (the
    column's label says 'B/s'): 0 -> '0', 850 -> '850', 1500 -> '1.5K', 80_000 -> '80K',
    999_999 -> '1.0M'. Above 0 but at most half a byte a second: '<1', never '0'.
    (What `_rate_parts` does, unrolled: every row on screen formats four of these.)"""
    if bps is None or not math.isfinite(bps):
        return UNKNOWN
    value = float(bps)
    if value < 999.5:
        if value <= 0:
            return "0"
        text = f"{value:.0f}"
        return "<1" if text == "0" else text
    for suffix in _SI[1:]:
        value /= 1000
        if value < 9.95:
            text = f"{value:.1f}"
            if len(text) == 3:  # not carried over to '10.0'
                return text + suffix
        if value < 999.5:
            text = f"{value:.0f}"
            if len(text) <= 3:
                return text + suffix
    return f"{value:.0f}{_SI[-1]}"


def fmt_figures(a: str, b: str, width: int = RATE_WIDTH) -> str:
    """Two short figures of one cell, each right-aligned in `width` cells so that a
    column of them lines up ('1.2M  80K'); both unknown is one '—'."""
    if a == UNKNOWN and b == UNKNOWN:
        return UNKNOWN
    return f"{a:>{width}} {b:>{width}}"


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
