"""Typed records that travel on the hub and into the store.

Each is immutable and carries the wall-clock time (epoch seconds) it happened at.
Producers: the event thread (DomainEvent), the task runner (TaskUpdate), actions
(AuditRecord), health checks (HealthResult, HealthAlert), connection sources
(HostConnection). `ErrorReport` lives in `incidents.py`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class EventKind(enum.StrEnum):
    LIFECYCLE = "lifecycle"
    REBOOT = "reboot"
    IO_ERROR = "io_error"
    WATCHDOG = "watchdog"
    AGENT_LIFECYCLE = "agent_lifecycle"
    DEVICE_ADDED = "device_added"
    DEVICE_REMOVED = "device_removed"
    METADATA_CHANGE = "metadata_change"
    CONFIG_CHANGE = "config_change"  # drift found by comparing definitions
    SPIKE = "spike"  # a metric far outside its own recent behaviour


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Something libvirt told us happened to a VM (or we found, for drift and spikes)."""

    host: str
    vm_uuid: str
    vm_name: str
    kind: EventKind
    summary: str  # words for an admin: "stopped: destroyed by admin", "paused: I/O error"
    at: float
    detail: Mapping[str, str] = field(default_factory=dict)  # raw codes, device alias, ...


class TaskState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """A background task changed state."""

    task_id: str
    name: str  # e.g. "shutdown web-01"
    kind: str  # e.g. "action.shutdown", "health.host_cpu"
    state: TaskState
    attempt: int
    max_attempts: int
    at: float
    started_at: float | None = None
    next_try_at: float | None = None
    error_code: str | None = None
    message: str = ""
    host: str | None = None
    vm_name: str | None = None


class Outcome(enum.StrEnum):
    VERIFIED = "verified"  # the VM reached the expected state in time
    IGNORED = "ignored"  # e.g. the guest ignored an ACPI shutdown
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who did what to which VM, and what came of it."""

    host: str
    vm_uuid: str
    vm_name: str
    action: str  # start, shutdown, force_off, reboot, pause, resume
    user: str
    client: str | None  # SSH client address when over SSH
    outcome: Outcome
    started_at: float
    duration_s: float
    message: str = ""
    error_code: str | None = None


class HealthState(enum.IntEnum):
    OK = 0
    WARN = 1
    CRIT = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class HealthResult:
    """One run of one health check."""

    check: str  # e.g. "host.cpu", "libvirt.reachable"
    subject: str  # what it judged: a host name, a mount point, a VM name
    state: HealthState  # after damping
    raw_state: HealthState  # this run's own verdict, before damping
    value: float | None
    unit: str
    warn: float | None
    crit: float | None
    message: str
    at: float
    host: str | None = None


@dataclass(frozen=True, slots=True)
class HealthAlert:
    """A check's (damped) state changed."""

    check: str
    subject: str
    previous: HealthState
    current: HealthState
    message: str
    at: float
    host: str | None = None


class ConnectionState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DEGRADED = "degraded"  # some connections dead, or slow
    RECONNECTING = "reconnecting"
    DOWN = "down"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HostConnection:
    """A host's connection state as its pool sees it."""

    host: str
    uri: str  # redacted
    state: ConnectionState
    at: float
    since: float  # when this state began
    next_retry_at: float | None = None
    message: str = ""
