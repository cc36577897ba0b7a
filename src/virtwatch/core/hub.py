"""The hub: in-process publish/subscribe between the engine, the store and the UI.

Publishing never blocks. A subscriber either keeps only the latest item (snapshots
for a screen: latest wins) or a bounded backlog that drops its oldest item when
full and counts what it dropped (the store writer must see every snapshot).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    """One consumer's queue. Iterate it with `async for`; `close()` ends the iteration."""

    def __init__(self, hub: Hub, kind: type[T], *, latest_only: bool, maxsize: int) -> None:
        self._hub = hub
        self.kind = kind
        self.latest_only = latest_only
        self._items: collections.deque[T] = collections.deque(maxlen=1 if latest_only else maxsize)
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped = 0  # items lost because the consumer fell behind (backlog mode)
        self.replaced = 0  # items superseded before being read (latest-only mode)

    def _put(self, item: T) -> None:
        if self._closed:
            return
        if self._items.maxlen is not None and len(self._items) == self._items.maxlen:
            if self.latest_only:
                self.replaced += 1
            else:
                self.dropped += 1
        self._items.append(item)
        self._wakeup.set()

    def pending(self) -> int:
        return len(self._items)

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def get(self) -> T:
        """The next item; raises `StopAsyncIteration` once closed and drained."""
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()

    def close(self) -> None:
        self._closed = True
        self._hub._unsubscribe(self)
        self._wakeup.set()


class Hub:
    """Routes each published item to the subscriptions whose `kind` it is an instance of."""

    def __init__(self) -> None:
        self._subs: list[Subscription[object]] = []
        self.published = 0

    def subscribe(
        self, kind: type[T], *, latest_only: bool = False, maxsize: int = 10_000
    ) -> Subscription[T]:
        sub: Subscription[T] = Subscription(self, kind, latest_only=latest_only, maxsize=maxsize)
        self._subs.append(sub)  # type: ignore[arg-type]
        return sub

    def _unsubscribe(self, sub: Subscription[T]) -> None:
        self._subs = [s for s in self._subs if s is not sub]

    def publish(self, item: object) -> None:
        """Deliver to every matching subscriber; never blocks, never raises."""
        self.published += 1
        for sub in self._subs:
            if isinstance(item, sub.kind):
                sub._put(item)

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()
