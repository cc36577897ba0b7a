"""Every config key, once: its type, default, range, unit and meaning (pydantic v2).

Keys that hold seconds end in `_s`; other units are in the name (`_minutes`, `_hours`,
`_days`, `_mb`). Old spellings are in `RENAMED` and accepted with a warning for a release.
Storage's and the UI's keys are described here as plain data; those layers turn them into
their own settings. Cross-key rules that need code (min <= max, a catalogue of checks)
stay with the settings they guard.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


def _key(default: Any, doc: str, *, unit: str | None = None, **bounds: Any) -> Any:
    extra: dict[str, Any] | None = {"unit": unit} if unit else None
    return Field(default, description=doc, json_schema_extra=extra, **bounds)


class Section(BaseModel):
    """A TOML table: unknown keys refused, values strictly typed (an int is a float)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class HostEntry(Section):
    """One `[[hosts]]` entry."""

    uri: str = _key(..., "libvirt URI of the host", min_length=1)
    name: str = _key("", "label on screen and in the store (default: the redacted URI)")
    read_only: bool = _key(False, "open read-only; no actions on this host")
    interval_s: float | None = _key(
        None,
        "seconds between ticks for this host (default: [collector] interval_s)",
        unit="s",
        ge=0.1,
    )
    username: str = _key("", "SASL/SSH user name for password authentication")
    password_file: str = _key("", "file holding the password (never the password itself)")


class PoolSection(Section):
    """`[pool]`: connections per libvirt host."""

    min_size: int = _key(2, "connections kept open, dedicated ones included", ge=0, le=1000)
    max_size: int = _key(10, "connections ever open to one host", ge=1, le=1000)
    acquire_timeout_s: float = _key(30.0, "a borrower waits this long", unit="s", ge=0.001)
    idle_timeout_s: float = _key(
        60.0, "idle connections above min_size close after this", unit="s", ge=0.001
    )
    open_timeout_s: float = _key(
        10.0, "opening a connection may take this long", unit="s", ge=0.001
    )
    call_timeout_s: float = _key(60.0, "a call without its own deadline", unit="s", ge=0.001)
    check_after_idle_s: float = _key(
        5.0, "a connection idle this long is probed before lending", unit="s", ge=0.0
    )
    check_timeout_s: float = _key(5.0, "a probe slower than this fails", unit="s", ge=0.001)
    health_interval_s: float = _key(
        30.0, "idle connections are probed this often", unit="s", ge=0.001
    )
    keepalive_interval_s: int = _key(5, "libvirt keepalive: a ping every N s", unit="s", ge=1)
    keepalive_count: int = _key(3, "dead after this many unanswered pings", ge=1)
    close_grace_s: float = _key(
        10.0, "close() waits this long for borrowed connections", unit="s", ge=0.0
    )
    reconnect_initial_s: float = _key(0.25, "first retry after a failure", unit="s", ge=0.001)
    reconnect_max_s: float = _key(4.0, "retries double up to this", unit="s", ge=0.001)
    down_retry_s: float = _key(
        60.0, "retry interval after a non-transient failure", unit="s", ge=0.001
    )
    stats_interval_s: float = _key(5.0, "pool statistics published this often", unit="s", ge=0.001)


class CollectorSection(Section):
    """`[collector]`: how often and what to collect."""

    interval_s: float = _key(2.0, "seconds between ticks", unit="s", ge=0.1, le=3600)
    slow_interval_s: float = _key(10.0, "ticks that add the slow groups", unit="s", ge=0.1)
    tick_timeout_s: float = _key(30.0, "a slower tick marks the host stale", unit="s", ge=1.0)
    fast_groups: list[str] = _key(["state", "cpu_total", "vcpu"], "stats groups read every tick")
    slow_groups: list[str] = _key(
        ["balloon", "block", "interface"], "stats groups read every slow_interval_s"
    )


class StorageSection(Section):
    """`[storage]`: the database and how long it keeps what."""

    db: str = _key("", "a file path or postgresql:// URL (default: the platform's data dir)")
    raw_hours: float = _key(24.0, "raw samples kept", unit="h", ge=1)
    minute_days: float = _key(30.0, "per-minute aggregates kept", unit="d", ge=1)
    hour_days: float = _key(730.0, "per-hour aggregates kept", unit="d", ge=1)
    events_days: float = _key(90.0, "domain events kept", unit="d", ge=1)
    errors_days: float = _key(90.0, "error log kept", unit="d", ge=1)
    audit_days: float = _key(90.0, "action audit kept", unit="d", ge=1)
    tasks_days: float = _key(90.0, "task log kept", unit="d", ge=1)
    health_days: float = _key(7.0, "health check runs kept", unit="d", ge=1)
    alerts_days: float = _key(90.0, "health alerts kept", unit="d", ge=1)
    max_size_mb: int = _key(8192, "SQLite file cap; 0 = none", unit="MiB", ge=0)
    buffer_rows: int = _key(200_000, "rows held in memory while the store is away", ge=1000)
    flush_interval_s: float = _key(1.0, "the writer commits this often", unit="s", ge=0.05, le=60)


class ErrorsSection(Section):
    """`[errors]`: how repeated errors become incidents."""

    window_s: float = _key(300.0, "quiet seconds that end an incident", unit="s", ge=1)
    update_interval_s: float = _key(
        1.0, "at most one update per incident this often", unit="s", ge=0.1
    )
    max_incidents: int = _key(1000, "open incidents kept", ge=1)


class PolicyOverride(Section):
    """`[tasks.policies.NAME]`: a retry policy; unset keys keep the named policy's value."""

    max_retries: int | None = _key(None, "retries after the first attempt", ge=0)
    initial_backoff_s: float | None = _key(None, "first delay", unit="s", ge=0)
    multiplier: float | None = _key(None, "each delay is the last times this", ge=1)
    max_backoff_s: float | None = _key(None, "delays stop growing here", unit="s", ge=0)
    jitter: float | None = _key(None, "random stretch of each delay", ge=0, le=1)
    attempt_timeout_s: float | None = _key(None, "0 = an attempt may take forever", unit="s", ge=0)
    retry_on_timeout: bool | None = _key(None, "retry an attempt that timed out")


class TasksSection(Section):
    """`[tasks]`: background actions."""

    max_concurrency: int = _key(4, "tasks running at once", ge=1)
    history: int = _key(200, "finished tasks kept in memory", ge=0)
    policies: dict[str, PolicyOverride] = _key({}, "retry policies by name")


class SpikesSection(Section):
    """`[spikes]`: when a metric's jump above its baseline is worth a line."""

    enabled: bool = _key(True, "judge spikes at all")
    margin: float = _key(0.5, "how far above the baseline counts (0.5 = +50 %)", ge=0, le=100)
    hold_minutes: int = _key(2, "a spike must last this long", unit="min", ge=1, le=1440)
    baseline_hours: int = _key(24, "the baseline's window", unit="h", ge=1, le=720)
    min_baseline_minutes: int = _key(
        60, "history needed before judging", unit="min", ge=1, le=43200
    )
    refresh_minutes: int = _key(10, "baselines recomputed this often", unit="min", ge=1, le=1440)
    floors: dict[str, Annotated[float, Field(ge=0)]] = _key(
        {}, "metric name or `_suffix` -> the level below which nothing is a spike"
    )


class CheckOverride(Section):
    """`[health.checks."NAME"]`: unset keys keep the catalogue's values."""

    warn: float | None = _key(None, "warning threshold, in the check's unit")
    crit: float | None = _key(None, "critical threshold, in the check's unit")
    interval_s: float | None = _key(None, "seconds between runs", unit="s", ge=1)
    timeout_s: float | None = _key(None, "seconds a run may take", unit="s", gt=0)
    hold: int | None = _key(None, "runs a new state must hold", ge=1)
    enabled: bool = _key(True, "run this check")


class VmLimits(Section):
    """`[health.vms."VM"."CHECK"]`: per-VM thresholds of a VM-level check."""

    warn: float | None = _key(None, "warning threshold")
    crit: float | None = _key(None, "critical threshold")


class HealthSection(Section):
    """`[health]`: checks, thresholds, damping."""

    hold: int = _key(3, "runs a new state must hold (damping)", ge=1)
    checks: dict[str, CheckOverride] = _key({}, "per check, by catalogued name")
    vms: dict[str, dict[str, VmLimits]] = _key({}, "per VM, per VM-level check")


class UiSection(Section):
    """`[ui]`: the dashboard; written back when changed on screen."""

    theme: str = _key("textual-dark", "any Textual theme name")
    refresh_s: float = _key(1.0, "seconds between screen updates", unit="s", ge=0.2, le=10.0)
    stale_after_s: float = _key(
        10.0, "seconds without news before rows dim", unit="s", ge=1.0, le=3600.0
    )


class Schema(Section):
    """The whole file."""

    hosts: list[HostEntry] = _key([], "several hosts; default: the one from --uri/env")
    pool: PoolSection = PoolSection()
    collector: CollectorSection = CollectorSection()
    storage: StorageSection = StorageSection()
    errors: ErrorsSection = ErrorsSection()
    tasks: TasksSection = TasksSection()
    spikes: SpikesSection = SpikesSection()
    health: HealthSection = HealthSection()
    ui: UiSection = UiSection()


# (table path, old key) -> new key. "*" matches any name (a check's, a host index).
RENAMED: dict[tuple[str, str], str] = {
    **{
        ("pool", old): old + "_s"
        for old in (
            "acquire_timeout",
            "idle_timeout",
            "open_timeout",
            "call_timeout",
            "check_after_idle",
            "check_timeout",
            "health_interval",
            "keepalive_interval",
            "close_grace",
            "reconnect_initial",
            "reconnect_max",
            "down_retry",
            "stats_interval",
        )
    },
    ("collector", "interval"): "interval_s",
    ("collector", "slow_interval"): "slow_interval_s",
    ("collector", "tick_timeout"): "tick_timeout_s",
    ("hosts.*", "interval"): "interval_s",
    ("ui", "refresh"): "refresh_s",
    ("ui", "stale_after"): "stale_after_s",
    ("health.checks.*", "interval"): "interval_s",
    ("health.checks.*", "timeout"): "timeout_s",
}

SECTIONS: dict[str, type[Section]] = {
    "pool": PoolSection,
    "collector": CollectorSection,
    "storage": StorageSection,
    "errors": ErrorsSection,
    "tasks": TasksSection,
    "spikes": SpikesSection,
    "health": HealthSection,
    "ui": UiSection,
}
