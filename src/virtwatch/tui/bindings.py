"""The dashboard's ports bound to the real core and store: actions become
background tasks on the runner (verified, audited); stored history comes from the
store's queries at the resolution the span needs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from virtwatch.core.collect.details import (
    DomainDetails,
    ExtraStats,
    clear_details_on_events,
    details_loader,
    extra_stats_loader,
)
from virtwatch.core.collect.loader import DataLoader
from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.connection import ConnectionSource
from virtwatch.core.ops.actions import Action, submit_action
from virtwatch.core.ops.tasks import TaskRunner
from virtwatch.core.records import AuditRecord, DomainEvent
from virtwatch.tui.ports import VmRef

if TYPE_CHECKING:  # the dashboard paints before it loads SQLAlchemy
    from virtwatch.storage.queries import Queries


V = TypeVar("V")


class RunnerActions:
    """ActionSink: one background task per VM (`submit_action`), on the host's pool."""

    def __init__(
        self,
        runner: TaskRunner,
        sources: Mapping[str, ConnectionSource],
        publish: Callable[[object], None],
    ) -> None:
        self._runner = runner
        self._sources = sources
        self._publish = publish

    def request(self, action: Action, targets: Sequence[VmRef]) -> None:
        for t in targets:
            source = self._sources.get(t.host)
            if source is None:
                self._publish(
                    ErrorReport.of(
                        AppError(
                            ErrorCode.RESOURCE_NOT_FOUND,
                            f"{action.label} {t.name}: no connection to host {t.host}",
                            "the host is not in this session's configuration",
                            Severity.ERROR,
                        ),
                        host=t.host,
                        vm=t.name,
                    )
                )
                continue
            submit_action(
                self._runner,
                source,
                action,
                t.name,
                host=t.host,
                publish=self._publish,
            )


class StoredHistory:
    """SeriesSource and TimelineSource over the store's read-only queries."""

    def __init__(self, queries: Queries) -> None:
        self._q = queries

    async def series(
        self, host: str, vm_uuid: str, metric: str, since: float, until: float
    ) -> Sequence[tuple[float, float]]:
        s = await self._q.series(host, vm_uuid, metric, since, until)
        return [(p.at, p.mean) for p in s.points]

    async def vm_events(
        self, host: str, vm_uuid: str, since: float, until: float
    ) -> Sequence[DomainEvent]:
        return await self._q.events(since, until, host=host, vm_uuid=vm_uuid)

    async def vm_audit(
        self, host: str, vm_uuid: str, since: float, until: float
    ) -> Sequence[AuditRecord]:
        return await self._q.audit(since, until, host=host, vm_uuid=vm_uuid)


class LoaderDetails:
    """DetailsSource (and ExtraStatsSource) over one details DataLoader and one
    extra-stats DataLoader per host (by host label)."""

    def __init__(
        self,
        loaders: Mapping[str, DataLoader[str, DomainDetails]],
        extra: Mapping[str, DataLoader[str, ExtraStats]] | None = None,
    ) -> None:
        self._loaders = loaders
        self._extra = extra or {}

    async def details(self, host: str, vm_uuid: str) -> DomainDetails:
        return await _loader_of(self._loaders, host).load(vm_uuid)

    async def extra_stats(self, host: str, vm_uuid: str) -> ExtraStats:
        return await _loader_of(self._extra, host).load(vm_uuid)


def _loader_of(loaders: Mapping[str, DataLoader[str, V]], host: str) -> DataLoader[str, V]:
    loader = loaders.get(host)
    if loader is None:
        raise AppError(
            ErrorCode.RESOURCE_NOT_FOUND,
            f"no details loader for host {host}",
            "the host is not in this session's configuration",
        )
    return loader


class DetailsService(LoaderDetails):
    """`async with DetailsService(pools, hub)`: a details loader per host, whose cache
    of a VM is cleared by that VM's define/device/metadata events on the hub."""

    def __init__(self, sources: Mapping[str, ConnectionSource], hub: Hub) -> None:
        self._owned = {host: details_loader(src) for host, src in sources.items()}
        self._owned_extra = {host: extra_stats_loader(src) for host, src in sources.items()}
        super().__init__(self._owned, self._owned_extra)
        self._events = hub.subscribe(DomainEvent, maxsize=1_000)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DetailsService:
        self._task = asyncio.create_task(
            clear_details_on_events(self._events, self._owned), name="details-clearing"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._events.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for loader in self._owned.values():
            await loader.aclose()
        for extra in self._owned_extra.values():
            await extra.aclose()
