"""The runtime: opens the error reporter, libvirt's event thread, one connection pool
per host, the task runner, the collectors and the domain event streams in order,
closes them in reverse, and leaves no task running. Built once by the composition root.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import libvirt

from virtwatch.core.collect.collector import DEFAULT_INTERVAL_S, Collector, CollectorSettings
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport, ErrorReporter, ReporterSettings
from virtwatch.core.libvirt.connection import Credentials, SourceState
from virtwatch.core.libvirt.dedicated import DedicatedConnection
from virtwatch.core.libvirt.eventloop import LibvirtEventThread
from virtwatch.core.libvirt.events import DomainEventStream
from virtwatch.core.libvirt.pool import LibvirtPool
from virtwatch.core.libvirt.pool_policy import PoolSettings
from virtwatch.core.libvirt.process import prepare_libvirt
from virtwatch.core.libvirt.uri import redact_uri
from virtwatch.core.ops.tasks import TaskRunner, TaskSettings

COLLECTOR_CONNECTION = "collector"


@dataclass(frozen=True, slots=True)
class HostConfig:
    uri: str
    name: str | None = None
    read_only: bool = False
    interval_s: float = DEFAULT_INTERVAL_S
    notice: str | None = None  # shown with every snapshot (e.g. "demo host: ...")
    pool: PoolSettings = field(default_factory=PoolSettings)
    credentials: Credentials | None = None  # openAuth; its repr never shows the password

    @property
    def label(self) -> str:
        """The host's name on screen, in records and in `Runtime.pools`."""
        return self.name or redact_uri(self.uri)


class Runtime:
    """`async with Runtime(hosts) as rt:` collects every host until the block exits.

    Opens, in order: the `ErrorReporter` (`rt.reporter`: every ErrorReport any part
    publishes goes through it, so a flood becomes one incident with a count), libvirt's
    process-wide setup and event thread, one `LibvirtPool` per host (`rt.pools`, by host
    label), the `TaskRunner` (`rt.tasks`: actions and other background work), a
    `Collector` per host polling on the pool's dedicated "collector" connection
    (`rt.sources`) and its task, and a `DomainEventStream` per host (`rt.events`) on
    that same dedicated connection: events are pushed by the daemon, so they never
    queue behind a call, and each event forces an immediate tick of its host. Closes
    in reverse; when `aclose()` returns no task of the runtime is left running.
    """

    def __init__(
        self,
        hosts: Sequence[HostConfig],
        *,
        hub: Hub | None = None,
        open_timeout_s: float | None = None,
        reporter: ReporterSettings | None = None,
        tasks: TaskSettings | None = None,
        events: bool = True,
        collector: CollectorSettings | None = None,
    ) -> None:
        self._collector_settings = collector
        self.hub = hub or Hub()
        self.hosts = tuple(hosts)
        self._open_timeout_s = open_timeout_s
        rs = reporter or ReporterSettings()
        self.reporter = ErrorReporter(
            self.hub.publish,
            window_s=rs.window_s,
            update_interval_s=rs.update_interval_s,
            max_incidents=rs.max_incidents,
        )
        ts = tasks or TaskSettings()
        self.tasks = TaskRunner(
            self.publish,
            max_concurrency=ts.max_concurrency,
            policies=ts.policies,
            history=ts.history,
            reporter=self.reporter,
        )
        self._with_events = events
        self.events: dict[str, DomainEventStream] = {}
        self.pools: dict[str, LibvirtPool] = {}
        self.sources: list[DedicatedConnection] = []  # the collectors' connections
        self.collectors: list[Collector] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._state = SourceState.UNOPENED

    @property
    def state(self) -> SourceState:
        return self._state

    def publish(self, item: object) -> None:
        """What the runtime's parts publish: errors go through the reporter (de-duplicated
        into incidents), everything else straight onto the hub."""
        if isinstance(item, ErrorReport) and not item.fingerprint:
            self.reporter.report(item.error, host=item.host, vm=item.vm)
        else:
            self.hub.publish(item)

    async def __aenter__(self) -> Runtime:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        if self._state is not SourceState.UNOPENED:
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"the runtime is {self._state}; it opens once",
                "this is a bug in virtwatch: build a new Runtime",
            )
        labels = [h.label for h in self.hosts]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise AppError(
                ErrorCode.VALIDATION_ERROR,
                f"two hosts are called {duplicates[0]!r}",
                "give each [[hosts]] entry its own name",
            )
        self._state = SourceState.OPEN
        try:
            await self.reporter.start()
            self._stack.push_async_callback(self.reporter.aclose)
            prepare_libvirt()
            LibvirtEventThread.ensure_running()  # before the first open: keepalive, callbacks
            await self._open_pools()
            self._stack.push_async_callback(self.tasks.aclose)  # closes before the pools
            self._start_collectors()
            if self._with_events:
                await self._open_events()
        except BaseException:
            await self.aclose()
            raise

    async def _open_pools(self) -> None:
        pools: list[tuple[HostConfig, LibvirtPool]] = []
        for host in self.hosts:
            settings = host.pool
            if self._open_timeout_s is not None:
                settings = dataclasses.replace(settings, open_timeout_s=self._open_timeout_s)
            pool = LibvirtPool(
                host.uri,
                settings=settings,
                host=host.label,
                read_only=host.read_only,
                credentials=host.credentials,
                publish=self.publish,
            )
            # dedicated before open, so min_size counts it and no extra opens
            pool.dedicated(COLLECTOR_CONNECTION)
            self._stack.push_async_callback(pool.close)
            self.pools[host.label] = pool
            pools.append((host, pool))
        # concurrently: one unreachable host costs one open timeout, not one per host
        await asyncio.gather(*(pool.open() for _host, pool in pools))

    def _start_collectors(self) -> None:
        loop = asyncio.get_running_loop()
        for host in self.hosts:
            source = self.pools[host.label].dedicated(COLLECTOR_CONNECTION)
            collector = Collector(
                source,
                self.publish,
                host=host.label,
                interval_s=host.interval_s,
                notice=host.notice,
                settings=self._collector_settings,
            )
            source.add_open_listener(_tick_after_open(loop, collector))
            self.sources.append(source)
            self.collectors.append(collector)
        for collector in self.collectors:
            self._tasks.append(
                asyncio.create_task(collector.run(), name=f"collector:{collector.host}")
            )
        self._stack.push_async_callback(self._stop_tasks)

    async def _open_events(self) -> None:
        for host, collector, source in zip(self.hosts, self.collectors, self.sources, strict=True):
            stream = DomainEventStream(
                source,
                self.publish,
                host=host.label,
                on_event=_force_tick(collector),
            )
            self.events[host.label] = stream
            self._stack.push_async_callback(stream.aclose)
        # a host that is down does not fail open(): the stream reports it and registers
        # its callbacks on the first connection that opens
        await asyncio.gather(*(s.open() for s in self.events.values()))

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def aclose(self) -> None:
        """Close everything in reverse order of opening. Idempotent."""
        if self._state in (SourceState.CLOSING, SourceState.CLOSED):
            return
        self._state = SourceState.CLOSING
        try:
            await self._stack.aclose()
        finally:
            self.sources.clear()
            self._state = SourceState.CLOSED


def _force_tick(collector: Collector) -> Callable[[object], None]:
    def on_event(_event: object) -> None:
        collector.force_tick()

    return on_event


def _tick_after_open(
    loop: asyncio.AbstractEventLoop, collector: Collector
) -> Callable[[libvirt.virConnect], None]:
    """An open listener (runs in a worker thread): a reconnected host gets a tick now,
    not at the end of the interval."""

    def listener(_conn: libvirt.virConnect) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to tick
            loop.call_soon_threadsafe(collector.force_tick)

    return listener
