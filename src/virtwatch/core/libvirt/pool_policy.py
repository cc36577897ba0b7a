"""What a libvirt pool is told and what it tells: its settings (`[pool]`), its
statistics (`PoolStats`), and the pure rules it follows (backoff, the host's state)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from virtwatch.core.config import config_error, get_typed
from virtwatch.core.libvirt.connection import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_OPEN_TIMEOUT_S,
    SourceState,
)
from virtwatch.core.records import ConnectionState


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How a pool sizes, times out and heals. TOML: the `[pool]` section, keys without
    the `_s` suffix (`acquire_timeout = 30`)."""

    min_size: int = 2  # connections kept open, dedicated ones included
    max_size: int = 10  # connections ever open to this host, dedicated ones included
    acquire_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0  # idle shared connections above min_size close after this
    open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S  # a call without its own deadline
    check_after_idle_s: float = 5.0  # a connection idle this long is probed before lending
    check_timeout_s: float = 5.0  # a probe (isAlive + getLibVersion) slower than this fails
    health_interval_s: float = 30.0  # idle connections are probed this often
    keepalive_interval_s: int = 5  # libvirt keepalive: a ping every N s ...
    keepalive_count: int = 3  # ... and the connection is dead after N unanswered
    close_grace_s: float = 10.0  # close() waits this long for borrowed connections
    reconnect_initial_s: float = 0.25  # first retry after a failure ...
    reconnect_max_s: float = 4.0  # ... doubling up to this (with jitter)
    down_retry_s: float = 60.0  # retry interval after a non-transient failure (auth)
    stats_interval_s: float = 5.0  # PoolStats published at least this often

    def __post_init__(self) -> None:
        _check_settings(self, None)

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any], path: Path | None = None) -> PoolSettings:
        """Parse a `[pool]` table; unknown keys and bad values name the exact key."""
        known = {_toml_key(f.name): f for f in fields(cls)}
        for key in section:
            if key not in known:
                raise config_error(
                    f"pool.{key}", f"unknown key (known: {', '.join(sorted(known))})", path
                )
        defaults = cls()
        values: dict[str, Any] = {}
        for key, f in known.items():
            default = getattr(defaults, f.name)
            low, high = _RANGES.get(f.name, (0.0, None))
            values[f.name] = get_typed(
                section, key, default, prefix="pool", minimum=low, maximum=high, path=path
            )
        settings = cls.__new__(cls)
        for name, value in values.items():
            object.__setattr__(settings, name, value)
        _check_settings(settings, path)
        return settings


_RANGES: dict[str, tuple[float, float | None]] = {
    "min_size": (0, 1000),
    "max_size": (1, 1000),
    "acquire_timeout_s": (0.001, None),
    "idle_timeout_s": (0.001, None),
    "open_timeout_s": (0.001, None),
    "call_timeout_s": (0.001, None),
    "check_timeout_s": (0.001, None),
    "health_interval_s": (0.001, None),
    "keepalive_interval_s": (1, None),
    "keepalive_count": (1, None),
    "reconnect_initial_s": (0.001, None),
    "reconnect_max_s": (0.001, None),
    "down_retry_s": (0.001, None),
    "stats_interval_s": (0.001, None),
}


def _toml_key(field_name: str) -> str:
    return field_name.removesuffix("_s")


def _check_settings(s: PoolSettings, path: Path | None) -> None:
    for name, (low, high) in _RANGES.items():
        value = getattr(s, name)
        if value < low or (high is not None and value > high):
            bound = f"at least {low:g}" if value < low else f"at most {high:g}"
            raise config_error(f"pool.{_toml_key(name)}", f"must be {bound}, got {value!r}", path)
    if s.min_size > s.max_size:
        raise config_error(
            "pool.min_size", f"must not exceed pool.max_size ({s.max_size}), got {s.min_size}", path
        )
    if s.reconnect_initial_s > s.reconnect_max_s:
        raise config_error(
            "pool.reconnect_initial",
            f"must not exceed pool.reconnect_max ({s.reconnect_max_s:g})",
            path,
        )


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One pool's figures at `at`; published on the hub for the UI and health checks."""

    host: str
    uri: str  # redacted
    state: SourceState
    size: int  # open connections to the host: shared and dedicated
    idle: int
    in_use: int  # shared connections lent out (or being probed)
    dedicated: int  # slots reserved by dedicated connections: shared cap = max - this
    dedicated_open: int  # of which open now
    opening: int
    waiters: int
    min_size: int
    max_size: int
    created: int
    destroyed: int
    failures: int  # failed opens, failed probes, connections lost
    timeouts: int  # acquires that gave up
    acquire_wait_p50_s: float | None
    acquire_wait_p99_s: float | None
    at: float


def backoff_delay(
    attempt: int, *, initial_s: float, max_s: float, rand: float, jitter: float = 0.5
) -> float:
    """Seconds before retry number `attempt` (1-based): `initial_s * 2**(attempt-1)` capped
    at `max_s`, then shortened by up to `jitter` of itself (`rand` in [0, 1)) so that
    several connections (or several virtwatch instances) do not retry in lock-step."""
    exponent = min(max(attempt, 1) - 1, 64)
    base = min(max_s, initial_s * 2.0**exponent)
    return base * (1.0 - jitter * min(max(rand, 0.0), 1.0))


def host_state(
    *, closed: bool, live: int, ever_connected: bool, outage: bool, down: bool
) -> ConnectionState:
    """A host's connection state from what its pool knows.

    `outage`: a connection was lost or an open failed and nothing has opened since;
    `down`: the last failure will not heal by itself (bad credentials, bad URI)."""
    if closed:
        return ConnectionState.CLOSED
    if live == 0:
        if down:
            return ConnectionState.DOWN
        if outage or ever_connected:
            return ConnectionState.RECONNECTING
        return ConnectionState.CONNECTING
    return ConnectionState.DEGRADED if outage else ConnectionState.CONNECTED


def _same_figures(a: PoolStats, b: PoolStats) -> bool:
    return {f.name: getattr(a, f.name) for f in fields(a) if f.name != "at"} == {
        f.name: getattr(b, f.name) for f in fields(b) if f.name != "at"
    }
