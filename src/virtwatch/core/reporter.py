"""The error reporter: the one place errors go to be seen. It folds a flood of the same
error into one incident and publishes a handful of cumulative `ErrorReport`s for it
(first occurrence, at most one update per `update_interval_s`, a final one when the
window passes without a repeat), with memory bounded by `max_incidents`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from virtwatch.core.config import config_error, get_typed
from virtwatch.core.errors import AppError, as_app_error
from virtwatch.core.reports import ErrorReport, fingerprint

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
    """Parse `[errors]`: window_s (quiet seconds that end an incident), update_interval_s
    (at most one update per incident this often), max_incidents (open ones kept)."""
    known = {"window_s", "update_interval_s", "max_incidents"}
    for key in section:
        if key not in known:
            raise config_error(f"errors.{key}", f"unknown key; known: {sorted(known)}", path)
    return ReporterSettings(
        get_typed(section, "window_s", DEFAULT_WINDOW_S, prefix="errors", minimum=1, path=path),
        get_typed(
            section,
            "update_interval_s",
            DEFAULT_UPDATE_INTERVAL_S,
            prefix="errors",
            minimum=0.1,
            path=path,
        ),
        get_typed(
            section, "max_incidents", DEFAULT_MAX_INCIDENTS, prefix="errors", minimum=1, path=path
        ),
    )


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
