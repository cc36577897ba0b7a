"""Time in a timeline: windows, parsing '2h' / '10:30' / ISO 8601 / epoch seconds,
and printing instants."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from virtwatch.core.errors import AppError, ErrorCode, Severity

if TYPE_CHECKING:
    from virtwatch.core.triage.entries import TimelineEntry


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Window:
    """[since, until) in epoch seconds."""

    since: float
    until: float

    def __post_init__(self) -> None:
        if not self.until > self.since:
            raise AppError(
                ErrorCode.INVALID_INPUT,
                f"the window ends ({iso_utc(self.until)}) before it starts ({iso_utc(self.since)})",
                "give --until later than --since",
                Severity.WARNING,
            )

    @classmethod
    def last(cls, span_s: float, now: float) -> Window:
        return cls(now - span_s, now)

    @property
    def span_s(self) -> float:
        return self.until - self.since

    def contains(self, e: TimelineEntry) -> bool:
        """An entry belongs to the window when it happened in it, or its span overlaps it."""
        end = e.until if e.until is not None else e.at
        return e.at < self.until and end >= self.since


def iso_utc(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="seconds")


def clock_time(at: float, tz: tzinfo | None = None) -> str:
    """HH:MM:SS in local time (or `tz`)."""
    return datetime.fromtimestamp(at, tz=UTC).astimezone(tz).strftime("%H:%M:%S")


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*(?:ago)?\s*$", re.IGNORECASE)


_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse_when(text: str, now: float, tz: tzinfo | None = None) -> float:
    """'now', '15m' / '2h' / '1d' (ago), '10:30' (today, local), ISO 8601 ('2026-11-26T10:00',
    local unless it names a zone), or epoch seconds -> epoch seconds."""
    t = text.strip()
    if t.lower() == "now":
        return now
    if m := _RELATIVE.match(t):
        return now - float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    if m := _CLOCK.match(t):
        local_now = datetime.fromtimestamp(now, tz=UTC).astimezone(tz)
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hh < 24 and mm < 60 and ss < 60:
            when = local_now.replace(hour=hh, minute=mm, second=ss, microsecond=0)
            if when.timestamp() > now:  # '23:50' just after midnight means yesterday
                when -= timedelta(days=1)
            return when.timestamp()
    try:
        value = float(t)
    except ValueError:
        pass
    else:
        if value > 1e9:
            return value
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"cannot read the time {text!r}",
            "use 'now', '15m', '2h', '1d' (ago), '10:30', '2026-11-26T10:00' or epoch seconds",
            Severity.WARNING,
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz) if tz is not None else dt.astimezone()
    return dt.timestamp()
