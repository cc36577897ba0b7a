"""Health checks: a registry of named checks, each run on its own interval with its own
timeout; readings judged against ok/warn/crit thresholds; damped state changes.

Every run publishes one `HealthResult` per subject (a host, a mount, a VM); a damped
state change (the new state held for `hold` runs in a row) publishes a `HealthAlert`.
Thresholds come from the check's defaults, overridden in `[health]` per check and, for
VM-level checks, per VM (see `health_settings`). Judging and damping are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from virtwatch.core.config import Config, config_error, key_name, validate
from virtwatch.core.config_schema import CheckOverride, HealthSection, VmLimits
from virtwatch.core.errors import AppError, ErrorCode, as_app_error
from virtwatch.core.ops.tasks import RetryPolicy, RunnerState, TaskRunner
from virtwatch.core.records import HealthAlert, HealthResult, HealthState

log = logging.getLogger(__name__)

DEFAULT_HOLD = 3
EXIT_CODES = {
    HealthState.OK: 0,
    HealthState.WARN: 1,
    HealthState.CRIT: 2,
    HealthState.UNKNOWN: 1,
}


# --- thresholds and judging (pure) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Thresholds:
    """`warn`/`crit` limits; with `higher_is_worse` a value at or above a limit reaches it
    (at or below, otherwise). None: that level is never reached."""

    warn: float | None
    crit: float | None
    higher_is_worse: bool = True


def judge(value: float | None, t: Thresholds) -> HealthState:
    """A reading's state: UNKNOWN without a value, else the worst limit it reaches."""
    if value is None or math.isnan(value):
        return HealthState.UNKNOWN

    def reached(limit: float | None) -> bool:
        if limit is None:
            return False
        return value >= limit if t.higher_is_worse else value <= limit

    if reached(t.crit):
        return HealthState.CRIT
    if reached(t.warn):
        return HealthState.WARN
    return HealthState.OK


def worst(states: Iterable[HealthState]) -> HealthState:
    """CRIT > WARN > UNKNOWN > OK: the state a summary (or an exit code) reports."""
    order = (HealthState.OK, HealthState.UNKNOWN, HealthState.WARN, HealthState.CRIT)
    return max(states, key=order.index, default=HealthState.OK)


def exit_code(states: Iterable[HealthState]) -> int:
    """0 ok, 1 warn (or unknown: it could not be checked), 2 crit."""
    return EXIT_CODES[worst(states)]


class Damper:
    """One subject's damped state: it changes only after `hold` runs in a row agree on a
    new state. The first verdict is adopted at once (there was nothing to damp)."""

    __slots__ = ("_candidate", "_count", "hold", "state")

    def __init__(self, hold: int) -> None:
        if hold < 1:
            raise ValueError("hold must be at least 1")
        self.hold = hold
        self.state: HealthState | None = None
        self._candidate: HealthState | None = None
        self._count = 0

    def step(self, raw: HealthState) -> tuple[HealthState, HealthState | None]:
        """Feed one run's verdict: (damped state, the previous state if it just changed)."""
        if self.state is None:  # a first verdict of trouble is news; a first "ok" is not
            self.state = raw
            bad = raw in (HealthState.WARN, HealthState.CRIT)
            return raw, HealthState.UNKNOWN if bad else None
        if raw is self.state:
            self._candidate, self._count = None, 0
            return self.state, None
        if raw is self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = raw, 1
        if self._count >= self.hold:
            previous, self.state = self.state, raw
            self._candidate, self._count = None, 0
            return raw, previous
        return self.state, None


# --- what a check is --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One subject's measurement from one run of a check.

    `state` set: the check decided itself (unreachable is CRIT whatever the thresholds).
    `vm` set: the subject is that VM, and per-VM thresholds apply.
    """

    subject: str
    value: float | None
    message: str
    state: HealthState | None = None
    vm: str | None = None


@dataclass(frozen=True, slots=True)
class CheckInfo:
    """A check's name and defaults, known before any instance is built (config validation)."""

    name: str  # "host.cpu"
    unit: str  # "%", "s", "ms", "" ...
    thresholds: Thresholds
    interval_s: float = 30.0
    timeout_s: float = 10.0
    per_vm: bool = False  # subjects are VMs: thresholds may be overridden per VM
    description: str = ""


CheckFn = Callable[[], Awaitable[Sequence[Reading]]]


@dataclass(frozen=True, slots=True)
class Check:
    """An instance of a check: its info (after config), what it runs, for which host."""

    info: CheckInfo
    run: CheckFn
    host: str | None = None
    hold: int = DEFAULT_HOLD
    enabled: bool = True

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def key(self) -> tuple[str, str]:
        return (self.info.name, self.host or "")


# --- configuration ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Parsed `[health]`: per-check infos (defaults with overrides), holds, per-VM limits."""

    hold: int = DEFAULT_HOLD
    infos: Mapping[str, CheckInfo] = field(default_factory=dict)
    holds: Mapping[str, int] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()
    per_vm: Mapping[tuple[str, str], Thresholds] = field(default_factory=dict)  # (vm, check)

    def info(self, name: str) -> CheckInfo:
        return self.infos[name]

    def hold_of(self, name: str) -> int:
        return self.holds.get(name, self.hold)

    def thresholds(self, name: str, vm: str | None) -> Thresholds:
        if vm is not None and (vm, name) in self.per_vm:
            return self.per_vm[(vm, name)]
        return self.infos[name].thresholds

    def check(self, name: str, run: CheckFn, *, host: str | None = None) -> Check:
        """An instance of the catalogued check `name` with these settings."""
        return Check(
            self.info(name), run, host, self.hold_of(name), enabled=name not in self.disabled
        )


def _limits(
    given: CheckOverride | VmLimits, base: Thresholds, full: str, path: Path | None
) -> Thresholds:
    warn = base.warn if given.warn is None else given.warn
    crit = base.crit if given.crit is None else given.crit
    if warn is not None and crit is not None:
        bad = warn > crit if base.higher_is_worse else warn < crit
        if bad:
            side = "above" if base.higher_is_worse else "below"
            raise config_error(
                f"{full}.warn",
                f"warn ({warn:g}) must not be {side} crit ({crit:g}): "
                f"{'higher' if base.higher_is_worse else 'lower'} values are worse here",
                path,
            )
    return Thresholds(warn, crit, base.higher_is_worse)


def health_settings(config: Config, catalogue: Iterable[CheckInfo]) -> HealthSettings:
    """`[health]` (the schema's `HealthSection`) -> HealthSettings; a bad value raises
    ConfigError naming the exact key.

    [health]
    hold = 3                              # runs a new state must hold (damping)
    [health.checks."host.cpu"]            # any catalogued check, by name
    warn = 85.0                           # thresholds in the check's unit
    crit = 95.0
    interval_s = 30.0                     # seconds between runs
    timeout_s = 10.0                      # seconds a run may take
    hold = 3
    enabled = true
    [health.vms."db-primary"."vm.steal"]  # per VM, for VM-level checks (vm.*)
    warn = 20.0
    """
    path = config.path
    section = validate(HealthSection, config.section("health"), prefix="health", path=path)
    known = {c.name: c for c in catalogue}
    infos = dict(known)
    holds: dict[str, int] = {}
    disabled: set[str] = set()
    for name, given in section.checks.items():
        full = key_name(("health", "checks", name))
        if name not in known:
            raise config_error(full, f"unknown check (known: {', '.join(sorted(known))})", path)
        base = known[name]
        infos[name] = replace(
            base,
            thresholds=_limits(given, base.thresholds, full, path),
            interval_s=base.interval_s if given.interval_s is None else given.interval_s,
            timeout_s=base.timeout_s if given.timeout_s is None else given.timeout_s,
        )
        if given.hold is not None:
            holds[name] = given.hold
        if not given.enabled:
            disabled.add(name)
    per_vm: dict[tuple[str, str], Thresholds] = {}
    for vm, checks in section.vms.items():
        for name, limits in checks.items():
            full = key_name(("health", "vms", vm, name))
            if name not in known:
                raise config_error(full, f"unknown check (known: {', '.join(sorted(known))})", path)
            if not known[name].per_vm:
                per_vm_names = ", ".join(sorted(n for n, c in known.items() if c.per_vm))
                raise config_error(full, f"not a VM-level check (those are: {per_vm_names})", path)
            per_vm[(vm, name)] = _limits(limits, infos[name].thresholds, full, path)
    return HealthSettings(
        section.hold,
        MappingProxyType(infos),
        MappingProxyType(holds),
        frozenset(disabled),
        MappingProxyType(per_vm),
    )


# --- the registry and the monitor ---------------------------------------------------------


class HealthRegistry:
    """The checks of this process, by (name, host). Built by the composition root."""

    def __init__(self, checks: Iterable[Check] = ()) -> None:
        self._checks: dict[tuple[str, str], Check] = {}
        for check in checks:
            self.add(check)

    def add(self, check: Check) -> None:
        if check.key in self._checks:
            raise ValueError(f"check {check.name!r} for host {check.host!r} is registered twice")
        self._checks[check.key] = check

    def __iter__(self) -> Any:
        return iter(self._checks.values())

    def __len__(self) -> int:
        return len(self._checks)

    def enabled(self) -> list[Check]:
        return [c for c in self._checks.values() if c.enabled]


class MonitorState(enum.StrEnum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class HealthMonitor:
    """Runs the registry's checks: `run_once()` all of them now, or `async with` to run each
    on its own interval in the background until the block exits.

    With a TaskRunner each run is a background task (kind "health.<check>", no retry: the
    next interval is the retry; the check's timeout is the attempt timeout). Without one,
    runs are awaited directly under the same timeout.
    """

    def __init__(
        self,
        registry: HealthRegistry,
        publish: Callable[[object], None],
        settings: HealthSettings,
        *,
        runner: TaskRunner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._publish = publish
        self._settings = settings
        self._runner = runner
        self._clock = clock
        self._dampers: dict[tuple[str, str, str], Damper] = {}
        self._latest: dict[tuple[str, str, str], HealthResult] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._state = MonitorState.UNOPENED
        self.runs = 0

    @property
    def state(self) -> MonitorState:
        return self._state

    def latest(self) -> list[HealthResult]:
        """The newest result of every (check, host, subject), sorted worst first."""
        order = (HealthState.CRIT, HealthState.WARN, HealthState.UNKNOWN, HealthState.OK)
        return sorted(
            self._latest.values(),
            key=lambda r: (order.index(r.state), r.check, r.host or "", r.subject),
        )

    async def _readings(self, check: Check) -> Sequence[Reading]:
        timeout = check.info.timeout_s
        if self._runner is None:
            async with asyncio.timeout(timeout):
                return await check.run()
        policy = RetryPolicy(f"health.{check.name}", max_retries=0, attempt_timeout_s=timeout)
        handle = self._runner.submit(
            f"health {check.name}" + (f" on {check.host}" if check.host else ""),
            f"health.{check.name}",
            check.run,
            policy=policy,
            retry_if=lambda _exc: False,
            host=check.host,
        )
        return await handle.result()

    async def run_check(self, check: Check) -> list[HealthResult]:
        """Run one check now; publish and return its results (and alerts, on a change)."""
        try:
            readings = list(await self._readings(check))
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            readings = [
                Reading(
                    check.host or "-",
                    None,
                    f"the check did not finish within {check.info.timeout_s:g} s",
                    HealthState.UNKNOWN,
                )
            ]
        except Exception as exc:
            err = as_app_error(exc, what=f"health check {check.name}")
            if err.code is ErrorCode.TIMEOUT:
                message = f"the check did not finish within {check.info.timeout_s:g} s"
            else:
                message = f"the check failed: {err.message}"
            readings = [Reading(check.host or "-", None, message, HealthState.UNKNOWN)]
        self.runs += 1
        return self._record(check, readings)

    def _record(self, check: Check, readings: Sequence[Reading]) -> list[HealthResult]:
        at = self._clock()
        host = check.host or ""
        out: list[HealthResult] = []
        seen: set[tuple[str, str, str]] = set()
        for r in readings:
            limits = self._settings.thresholds(check.name, r.vm)
            raw = r.state if r.state is not None else judge(r.value, limits)
            key = (check.name, host, r.subject)
            seen.add(key)
            damper = self._dampers.get(key)
            if damper is None:
                damper = self._dampers[key] = Damper(check.hold)
            state, previous = damper.step(raw)
            message = r.message
            if state is not raw:
                message += f" (still {state.label}: {raw.label} must hold {check.hold} runs)"
            result = HealthResult(
                check=check.name,
                subject=r.subject,
                state=state,
                raw_state=raw,
                value=r.value,
                unit=check.info.unit,
                warn=limits.warn,
                crit=limits.crit,
                message=message,
                at=at,
                host=check.host,
            )
            self._latest[key] = result
            self._publish(result)
            out.append(result)
            if previous is not None:
                self._publish(
                    HealthAlert(check.name, r.subject, previous, state, r.message, at, check.host)
                )
        # subjects that vanished (a VM undefined, a mount gone) are forgotten
        for key in [k for k in self._dampers if k[:2] == (check.name, host) and k not in seen]:
            del self._dampers[key]
            self._latest.pop(key, None)
        return out

    async def run_once(self) -> list[HealthResult]:
        """Every enabled check once, concurrently (each under its own timeout)."""
        batches = await asyncio.gather(*(self.run_check(c) for c in self._registry.enabled()))
        return [r for batch in batches for r in batch]

    async def _loop(self, check: Check) -> None:
        while True:
            if self._runner is not None and self._runner.state is not RunnerState.OPEN:
                log.info("health check %s stopped: the task runner is closing", check.name)
                return
            started = time.monotonic()
            await self.run_check(check)
            await asyncio.sleep(max(0.0, check.info.interval_s - (time.monotonic() - started)))

    async def open(self) -> HealthMonitor:
        if self._state is not MonitorState.UNOPENED:
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"the health monitor is {self._state}; it opens once",
                "this is a bug in virtwatch: build a new HealthMonitor",
            )
        self._state = MonitorState.OPEN
        for check in self._registry.enabled():
            name = f"health:{check.name}:{check.host or ''}"
            self._tasks.append(asyncio.create_task(self._loop(check), name=name))
        return self

    async def aclose(self) -> None:
        if self._state is MonitorState.CLOSED:
            return
        self._state = MonitorState.CLOSED
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def __aenter__(self) -> HealthMonitor:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
