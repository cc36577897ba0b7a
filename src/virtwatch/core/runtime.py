"""The runtime: opens connection sources and collectors in order, closes them in
reverse, and leaves no task running. Built once by the composition root.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from virtwatch.core.collector import DEFAULT_INTERVAL_S, Collector
from virtwatch.core.connection import DEFAULT_OPEN_TIMEOUT_S, ConnectionSource, SingleConnection
from virtwatch.core.hub import Hub
from virtwatch.core.process import prepare_libvirt


@dataclass(frozen=True, slots=True)
class HostConfig:
    uri: str
    name: str | None = None
    read_only: bool = False
    interval_s: float = DEFAULT_INTERVAL_S
    notice: str | None = None  # shown with every snapshot (e.g. "demo host: ...")


class Runtime:
    """`async with Runtime(hosts) as rt:` collects every host until the block exits."""

    def __init__(
        self,
        hosts: Sequence[HostConfig],
        *,
        hub: Hub | None = None,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
    ) -> None:
        self.hub = hub or Hub()
        self.hosts = tuple(hosts)
        self._open_timeout_s = open_timeout_s
        self.sources: list[ConnectionSource] = []
        self.collectors: list[Collector] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Runtime:
        prepare_libvirt()
        for host in self.hosts:
            source = SingleConnection(
                host.uri, read_only=host.read_only, open_timeout_s=self._open_timeout_s
            )
            self.sources.append(source)
            collector = Collector(
                source,
                self.hub.publish,
                host=host.name,
                interval_s=host.interval_s,
                notice=host.notice,
            )
            self.collectors.append(collector)
        for collector in self.collectors:
            self._tasks.append(
                asyncio.create_task(collector.run(), name=f"collector:{collector.host}")
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for source in reversed(self.sources):
            await source.close()
        self.sources.clear()
