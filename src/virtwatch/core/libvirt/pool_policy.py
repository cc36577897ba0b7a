"""What a libvirt pool is told and what it tells: its settings (`[pool]`), its
statistics (`PoolStats`), and the pure rules it follows (backoff, the host's state)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from virtwatch.core.config import config_error, validate
from virtwatch.core.config_schema import PoolSection
from virtwatch.core.libvirt.calls import DEFAULT_CALL_TIMEOUT_S
from virtwatch.core.libvirt.connection import DEFAULT_OPEN_TIMEOUT_S, SourceState
from virtwatch.core.records import ConnectionState


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How a pool sizes, times out and heals. TOML: the `[pool]` section, the same key
    names (`acquire_timeout_s = 30`; see `config_schema.PoolSection`)."""

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
        """Parse a `[pool]` table (the schema's `PoolSection`); bad values name the key."""
        parsed = validate(PoolSection, section, prefix="pool", path=path)
        _check_settings(parsed, path)  # before building: the error names the file
        return cls(**parsed.model_dump())


def _check_settings(s: PoolSettings | PoolSection, path: Path | None) -> None:
    """The schema's ranges (for settings built in code too) and the cross-key rules."""
    if isinstance(s, PoolSettings):
        validate(
            PoolSection, {f.name: getattr(s, f.name) for f in fields(s)}, prefix="pool", path=path
        )
    if s.min_size > s.max_size:
        raise config_error(
            "pool.min_size", f"must not exceed pool.max_size ({s.max_size}), got {s.min_size}", path
        )
    if s.reconnect_initial_s > s.reconnect_max_s:
        raise config_error(
            "pool.reconnect_initial_s",
            f"must not exceed pool.reconnect_max_s ({s.reconnect_max_s:g})",
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
