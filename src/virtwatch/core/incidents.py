"""Incidents: errors as they happened (`ErrorReport`), and the reporter that folds a
flood of the same error into one incident.

An `ErrorReport` is an AppError as it happened somewhere, at some time, on the hub. An
*incident* is a run of reports with the same fingerprint (code, host, VM and the
message with numbers and addresses masked) with no gap longer than the reporter's
window. The reporter (`ErrorReporter`, below) publishes an incident as a few cumulative
reports, not one per occurrence. What the store does with them:

- key: `(fingerprint, first_at)` — the same for every report of one incident
  (`ErrorReport.incident_key`); a later incident of the same fingerprint has a later
  `first_at` and is a new row.
- upsert: INSERT a row on the first report of a key; on each later report UPDATE that
  row: `count = max(count, report.count)`, `last_seen = max(last_seen, report.at)`,
  message/hint/severity/context from the report (the newest wording), and
  `closed = report.closed`. `count` is cumulative (the total so far), never a delta:
  never add it up. Replaying a report is harmless.
- `closed=True` marks the last report of the incident from this reporter (the window
  passed without a repeat, the reporter closed, or it was evicted to bound memory).

A report built directly with `ErrorReport.of(...)` did not pass through a reporter:
its `fingerprint` is "" and `first_at` None (`incident_key` computes both). Everything
that reports errors should go through the runtime's ErrorReporter instead.

The reporter is the one place errors go to be seen: it publishes a handful of
cumulative reports per incident (first occurrence, at most one update per
`update_interval_s`, a final one when the window passes without a repeat), with memory
bounded by `max_incidents`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from virtwatch.core.config import validate
from virtwatch.core.config_schema import ErrorsSection
from virtwatch.core.errors import AppError, ErrorCode, as_app_error

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b0x[0-9a-f]+\b", re.I)
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])")
# IPv6 and MAC addresses: groups of hex digits joined by colons (at least three groups)
_COLON_HEX = re.compile(r"(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:])", re.I)
_NUMBER = re.compile(r"(?<![\w-])\d+(?:\.\d+)*(?![\w-])")
_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")
_SPACE = re.compile(r"\s+")


def normalise_message(message: str) -> str:
    """`message` with ids, addresses and bare numbers masked, so repeats look alike.

    Quoted text ('web-01') keeps its digits: VM and file names tell incidents apart;
    counts, pids, ports, durations and addresses do not.
    """
    text = _UUID.sub("<uuid>", message)
    text = _HEX.sub("<hex>", text)
    text = _IPV4.sub("<ip>", text)
    text = _COLON_HEX.sub("<addr>", text)
    parts = _QUOTED.split(text)
    # odd indices are the quoted pieces (the split keeps its capturing group)
    text = "".join(p if i % 2 else _NUMBER.sub("#", p) for i, p in enumerate(parts))
    return _SPACE.sub(" ", text).strip()


# the host's libvirtd cannot be reached or does not answer: however an outage shows (a
# call without reply, keepalive closing the connection, opens failing), it is one incident
HOST_LINK_CODES = frozenset(
    {
        ErrorCode.LIBVIRT_CONNECTION_FAILED,
        ErrorCode.LIBVIRT_CONNECTION_LOST,
        ErrorCode.LIBVIRT_NOT_ANSWERING,
    }
)


def fingerprint(error: AppError, host: str | None, vm: str | None) -> str:
    """16 hex digits naming what went wrong where: code, host, VM, normalised message; or,
    for the host's link to libvirtd (`HOST_LINK_CODES`, no VM), just the host."""
    if error.code in HOST_LINK_CODES and vm is None and host:
        key = f"host-link|{host}"
    else:
        key = "|".join((error.code.value, host or "", vm or "", normalise_message(error.message)))
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """One publication of an incident (see the module docstring for the store's part)."""

    error: AppError  # the latest occurrence
    host: str | None
    vm: str | None
    at: float  # last seen (epoch seconds)
    fingerprint: str = ""  # "" = not from a reporter (see `incident_key`)
    count: int = 1  # occurrences so far in this incident (cumulative)
    first_at: float | None = None  # first seen; None = `at`
    closed: bool = False  # the last report of this incident

    @classmethod
    def of(cls, error: AppError, *, host: str | None = None, vm: str | None = None) -> ErrorReport:
        return cls(error, host, vm, time.time())

    @property
    def started_at(self) -> float:
        """When the incident began: `first_at`, else `at`."""
        return self.at if self.first_at is None else self.first_at

    @property
    def incident_key(self) -> tuple[str, float]:
        """The store's upsert key, the same for every report of one incident: the
        fingerprint (computed the reporter's way when "") and `started_at`."""
        fp = self.fingerprint or fingerprint(self.error, self.host, self.vm)
        return (fp, self.started_at)


# --- the reporter ------------------------------------------------------------------

DEFAULT_WINDOW_S = 300.0  # an outage that repeats at least this often stays one incident
DEFAULT_UPDATE_INTERVAL_S = 1.0
DEFAULT_MAX_INCIDENTS = 1000


@dataclass(frozen=True, slots=True)
class ReporterSettings:
    """The `[errors]` config section."""

    window_s: float = DEFAULT_WINDOW_S
    update_interval_s: float = DEFAULT_UPDATE_INTERVAL_S
    max_incidents: int = DEFAULT_MAX_INCIDENTS


def reporter_settings(section: Mapping[str, Any], *, path: Path | None = None) -> ReporterSettings:
    """Parse `[errors]` (the schema's `ErrorsSection`): window_s (quiet seconds that end an
    incident), update_interval_s (at most one update per incident this often),
    max_incidents (open ones kept)."""
    sec = validate(ErrorsSection, section, prefix="errors", path=path)
    return ReporterSettings(sec.window_s, sec.update_interval_s, sec.max_incidents)


class ReporterState(enum.StrEnum):
    UNOPENED = "unopened"  # report() works; nothing ticks until start()
    OPEN = "open"
    CLOSED = "closed"  # every report is published at once, marked closed


@dataclass(slots=True)
class _Incident:
    fingerprint: str
    error: AppError
    host: str | None
    vm: str | None
    first_at: float
    last_at: float
    count: int = 1
    published_count: int = 0
    published_at: float = 0.0

    def report(self, *, closed: bool = False) -> ErrorReport:
        return ErrorReport(
            self.error,
            self.host,
            self.vm,
            self.last_at,
            self.fingerprint,
            self.count,
            self.first_at,
            closed,
        )


@dataclass(frozen=True, slots=True)
class ReporterStats:
    reported: int  # occurrences handed to report()
    published: int  # ErrorReports put on the hub
    incidents: int  # incidents opened so far
    open_incidents: int
    evicted: int  # incidents closed early to bound memory


class ErrorReporter:
    """`report()` from anywhere on the loop thread; `start()` runs the ticker that publishes
    pending counts and closes quiet incidents; `aclose()` closes every incident."""

    def __init__(
        self,
        publish: Callable[[object], None],
        *,
        window_s: float = DEFAULT_WINDOW_S,
        update_interval_s: float = DEFAULT_UPDATE_INTERVAL_S,
        max_incidents: int = DEFAULT_MAX_INCIDENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0 or update_interval_s < 0 or max_incidents < 1:
            raise ValueError("window_s > 0, update_interval_s >= 0 and max_incidents >= 1")
        self._publish = publish
        self.window_s = window_s
        self.update_interval_s = update_interval_s
        self.max_incidents = max_incidents
        self._clock = clock
        # least recently seen first: expiry and eviction both take from the front
        self._open: collections.OrderedDict[str, _Incident] = collections.OrderedDict()
        self._dirty: set[str] = set()  # incidents with occurrences not yet published
        self._state = ReporterState.UNOPENED
        self._ticker: asyncio.Task[None] | None = None
        self._reported = 0
        self._published = 0
        self._incidents = 0
        self._evicted = 0

    @property
    def state(self) -> ReporterState:
        return self._state

    def report(
        self, error: AppError | Exception, *, host: str | None = None, vm: str | None = None
    ) -> ErrorReport:
        """Record one occurrence; publish it if it opens an incident or an update is due.

        Returns the incident's report as it stands (published or not). Never raises.
        """
        err = as_app_error(error)
        now = self._clock()
        self._reported += 1
        fp = fingerprint(err, host, vm)
        inc = self._open.get(fp)
        if inc is not None and now - inc.last_at >= self.window_s:
            self._close(inc)
            inc = None
        if inc is None:
            inc = _Incident(fp, err, host, vm, now, now)
            self._open[fp] = inc
            self._incidents += 1
            while len(self._open) > self.max_incidents:
                self._evicted += 1
                self._close(next(iter(self._open.values())))
            return self._emit(inc, closed=self._state is ReporterState.CLOSED)
        inc.count += 1
        inc.last_at = now
        inc.error = err
        self._open.move_to_end(fp)
        if self._state is ReporterState.CLOSED:
            return self._emit(inc, closed=True)
        if now - inc.published_at >= self.update_interval_s:
            return self._emit(inc)
        self._dirty.add(fp)
        return inc.report()

    def tick(self) -> int:
        """Close incidents quiet for a window, publish due updates; returns reports published."""
        now = self._clock()
        before = self._published
        while self._open:
            oldest = next(iter(self._open.values()))
            if now - oldest.last_at < self.window_s:
                break
            self._close(oldest)
        for fp in list(self._dirty):
            inc = self._open[fp]
            if now - inc.published_at >= self.update_interval_s:
                self._emit(inc)
        return self._published - before

    def incidents(self) -> list[ErrorReport]:
        """Open incidents as they stand, least recently seen first."""
        return [inc.report() for inc in self._open.values()]

    def stats(self) -> ReporterStats:
        return ReporterStats(
            self._reported, self._published, self._incidents, len(self._open), self._evicted
        )

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the ticker (one task on the running loop)."""
        if self._state is not ReporterState.UNOPENED:
            raise RuntimeError(f"ErrorReporter.start() on a reporter that is {self._state}")
        self._state = ReporterState.OPEN
        self._ticker = asyncio.create_task(self._run(), name="error-reporter")

    async def _run(self) -> None:
        interval = max(self.update_interval_s, 0.05)
        while True:
            await asyncio.sleep(interval)
            self.tick()

    async def aclose(self) -> None:
        """Stop the ticker and publish the final (closed) report of every open incident."""
        if self._state is ReporterState.CLOSED:
            return
        self._state = ReporterState.CLOSED
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for inc in list(self._open.values()):
            self._close(inc)

    async def __aenter__(self) -> ErrorReporter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- internals --------------------------------------------------------------------

    def _emit(self, inc: _Incident, *, closed: bool = False) -> ErrorReport:
        rep = inc.report(closed=closed)
        inc.published_count = inc.count
        inc.published_at = self._clock()
        self._dirty.discard(inc.fingerprint)
        self._published += 1
        self._publish(rep)
        return rep

    def _close(self, inc: _Incident) -> None:
        del self._open[inc.fingerprint]
        self._emit(inc, closed=True)
