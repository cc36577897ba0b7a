"""Builds the dashboard the way the CLI does, with recorders standing in for the
core (actions, task control, stored series) so a test can assert what the core
received. The data is published on a real Hub."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.canned import NOW
from virtwatch.core.collect.history import MetricHistory
from virtwatch.core.hub import Hub
from virtwatch.core.ops.actions import Action
from virtwatch.core.records import AuditRecord, DomainEvent
from virtwatch.tui.app import VirtwatchApp
from virtwatch.tui.ports import VmRef


def frozen() -> float:
    return NOW


async def settle(pilot: Any, rounds: int = 4) -> None:
    for _ in range(rounds):
        await pilot.pause()


@dataclass
class RecordingSink:
    """An ActionSink that remembers every request."""

    requests: list[tuple[Action, list[VmRef]]] = field(default_factory=list)

    def request(self, action: Action, targets: Sequence[VmRef]) -> None:
        self.requests.append((action, list(targets)))


@dataclass
class RecordingTasks:
    cancelled: list[str] = field(default_factory=list)

    def cancel(self, task_id: str) -> bool:
        self.cancelled.append(task_id)
        return True


@dataclass
class RecordingSeries:
    """A SeriesSource with a fixed line per metric; records each query."""

    queries: list[tuple[str, str, str, float, float]] = field(default_factory=list)

    async def series(
        self, host: str, vm_uuid: str, metric: str, since: float, until: float
    ) -> Sequence[tuple[float, float]]:
        self.queries.append((host, vm_uuid, metric, since, until))
        step = (until - since) / 50
        return [(since + i * step, float(10 + i % 7)) for i in range(51)]

    async def vm_events(
        self, host: str, vm_uuid: str, since: float, until: float
    ) -> Sequence[DomainEvent]:
        return []

    async def vm_audit(
        self, host: str, vm_uuid: str, since: float, until: float
    ) -> Sequence[AuditRecord]:
        return []


AppFactory = Callable[..., tuple[VirtwatchApp, Hub]]


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def make_app(sink: RecordingSink) -> AppFactory:
    def make(**kw: Any) -> tuple[VirtwatchApp, Hub]:
        hub = Hub()
        kw.setdefault("clock", frozen)
        kw.setdefault("actions", sink)
        kw.setdefault("history", MetricHistory())
        kw.setdefault("cursor_blink", False)
        return VirtwatchApp(hub, **kw), hub

    return make
