"""What the dashboard calls on the rest of virtwatch, as small Protocols.

The composition root (cli.py) binds them to the real objects (actions, task runner,
store queries); tests bind them to recorders. Results never come back through
these calls: they arrive on the hub (TaskUpdate, AuditRecord, ErrorReport).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from virtwatch.core.collect.details import DomainDetails, ExtraStats
from virtwatch.core.ops.actions import Action
from virtwatch.core.records import AuditRecord, DomainEvent


@dataclass(frozen=True, slots=True)
class VmRef:
    """A VM as the UI names it to the core."""

    host: str
    uuid: str
    name: str


class ActionSink(Protocol):
    """Starts lifecycle actions in the background; progress arrives on the hub."""

    def request(self, action: Action, targets: Sequence[VmRef]) -> None: ...


class TaskControl(Protocol):
    """Cancels a background task by its id (TaskUpdate.task_id)."""

    def cancel(self, task_id: str) -> bool: ...


class SeriesSource(Protocol):
    """Stored history for ranges the in-memory rings do not cover: points
    (epoch seconds, value) at a resolution fit for the range."""

    async def series(
        self, host: str, vm_uuid: str, metric: str, since: float, until: float
    ) -> Sequence[tuple[float, float]]: ...


class TimelineSource(Protocol):
    """Stored events and audit rows of one VM in a window (for the detail screen)."""

    async def vm_events(
        self, host: str, vm_uuid: str, since: float, until: float
    ) -> Sequence[DomainEvent]: ...

    async def vm_audit(
        self, host: str, vm_uuid: str, since: float, until: float
    ) -> Sequence[AuditRecord]: ...


class DetailsSource(Protocol):
    """A VM's definition (title, description, tags, disks, NICs), batched and cached by
    the core's DataLoader; raises AppError when the host cannot say."""

    async def details(self, host: str, vm_uuid: str) -> DomainDetails: ...


@runtime_checkable
class ExtraStatsSource(Protocol):
    """A VM's live per-device counters (per vCPU, disk, NIC): the core's extra-stats
    DataLoader, one domainListGetStats for the loads of one tick. A DetailsSource that
    can also say this gets the detail screen's device figures."""

    async def extra_stats(self, host: str, vm_uuid: str) -> ExtraStats: ...
