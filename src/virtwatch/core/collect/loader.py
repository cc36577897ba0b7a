"""A DataLoader: `await loader.load(key)` from anywhere, one batch call per event-loop tick.

Every `load` made in one loop iteration joins one call of the batch function with the
distinct keys (de-duplicated; at most `max_batch` keys per call). Callers share one
future per key, shielded: cancelling one caller never cancels the load for the others.
An error belongs to its key and is never cached. The cache is bounded (least recently
used goes first); `clear(key)`, `clear_all()` and `prime(key, value)` manage it.
Also here: the port through which per-VM history is loaded (`HistorySource`, which
the store implements with one `SELECT ... IN`), and its batch function.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from virtwatch.core.errors import AppError, ErrorCode, Severity

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# keys -> {key: value or the exception for that key}; raising fails the whole batch
BatchFn = Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]]

DEFAULT_CACHE_SIZE = 1000
DEFAULT_MAX_BATCH = 500


class LoaderState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LoaderStats:
    batches: int  # calls of the batch function
    keys_loaded: int  # keys sent to it
    hits: int  # loads answered from the cache (or joined to an in-flight load)
    errors: int  # keys that failed
    cached: int  # entries in the cache now (in-flight ones included)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """A key's error is seen by whoever awaits it; this keeps asyncio from logging it
    as "never retrieved" when every caller had been cancelled."""
    if not fut.cancelled():
        fut.exception()


class DataLoader(Generic[K, V]):
    """Batches and caches lookups by key. `async with` it (or `aclose()`) to end in-flight
    batches at shutdown; loading from a closed loader is an error."""

    def __init__(
        self,
        batch_fn: BatchFn[K, V],
        *,
        name: str = "loader",
        max_batch: int = DEFAULT_MAX_BATCH,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        """`cache_size=0` keeps nothing after a load completes (values that go stale at
        once, like live stats): loads are still batched and de-duplicated while in flight."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._batch_fn = batch_fn
        self.name = name
        self.max_batch = max_batch
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[K, asyncio.Future[V]] = collections.OrderedDict()
        self._queue: list[tuple[K, asyncio.Future[V]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._state = LoaderState.OPEN
        self._batches = self._keys = self._hits = self._errors = 0

    def __repr__(self) -> str:
        return f"<DataLoader {self.name} {self._state} cached={len(self._cache)}>"

    @property
    def state(self) -> LoaderState:
        return self._state

    def stats(self) -> LoaderStats:
        return LoaderStats(self._batches, self._keys, self._hits, self._errors, len(self._cache))

    # --- loading ----------------------------------------------------------------------

    def _future(self, key: K) -> asyncio.Future[V]:
        if self._state is LoaderState.CLOSED:
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"loader {self.name!r} is closed",
                "this is a bug in virtwatch: a lookup was made after shutdown",
            )
        fut = self._cache.get(key)
        if fut is not None:
            self._cache.move_to_end(key)
            self._hits += 1
            return fut
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        fut.add_done_callback(_retrieve)
        self._cache[key] = fut  # in flight: later loads of the key join it
        self._queue.append((key, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)  # after every load of this loop iteration
        return fut

    async def load(self, key: K) -> V:
        """The value for `key`, loaded with every other key asked for in this loop tick."""
        return await asyncio.shield(self._future(key))

    async def load_many(self, keys: Iterable[K]) -> list[V]:
        """Values in the order of `keys` (one batch); the first failing key's error raises."""
        futures = [self._future(k) for k in keys]
        together = asyncio.gather(*futures)
        together.add_done_callback(_retrieve)
        return list(await asyncio.shield(together))

    # --- cache ------------------------------------------------------------------------

    def clear(self, key: K) -> bool:
        """Forget `key` (its next load calls the batch function again). An in-flight load
        still answers its callers but is not cached. True if something was dropped."""
        return self._cache.pop(key, None) is not None

    def clear_all(self) -> None:
        self._cache.clear()

    def prime(self, key: K, value: V) -> bool:
        """Put a known value in the cache unless the key is there already (True if put)."""
        if key in self._cache or self.cache_size == 0:
            return False
        fut: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        fut.set_result(value)
        self._cache[key] = fut
        self._trim()
        return True

    def _trim(self) -> None:
        """Drop the least recently used settled entries beyond `cache_size`."""
        excess = sum(1 for f in self._cache.values() if f.done()) - self.cache_size
        if excess <= 0:
            return
        for key in [k for k, f in self._cache.items() if f.done()][:excess]:
            del self._cache[key]

    def _uncache(self, key: K, fut: asyncio.Future[V]) -> None:
        if self._cache.get(key) is fut:
            del self._cache[key]

    # --- batches ----------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        if self._state is LoaderState.CLOSED:
            return
        for start in range(0, len(queue), self.max_batch):
            chunk = queue[start : start + self.max_batch]
            task = asyncio.get_running_loop().create_task(
                self._run(chunk), name=f"loader:{self.name}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, chunk: list[tuple[K, asyncio.Future[V]]]) -> None:
        keys = [k for k, _f in chunk]
        self._batches += 1
        self._keys += len(keys)
        try:
            results = await self._batch_fn(keys)
        except asyncio.CancelledError:
            self._fail(chunk, self._closed_error())
            raise
        except Exception as err:
            self._fail(chunk, err)
            return
        for key, fut in chunk:
            if fut.done():
                continue
            if key not in results:
                self._fail(
                    [(key, fut)],
                    AppError(
                        ErrorCode.INTERNAL_ERROR,
                        f"loader {self.name!r}: the batch gave no value for {key!r}",
                        "this is a bug in virtwatch: a batch function must answer every key",
                    ),
                )
                continue
            value = results[key]
            if isinstance(value, BaseException):
                self._fail([(key, fut)], value)
            else:
                fut.set_result(value)
                if self.cache_size == 0:
                    self._uncache(key, fut)
        self._trim()

    def _fail(self, chunk: Iterable[tuple[K, asyncio.Future[V]]], err: BaseException) -> None:
        for key, fut in chunk:
            self._uncache(key, fut)  # errors are never cached: the next load tries again
            if not fut.done():
                self._errors += 1
                fut.set_exception(err)

    def _closed_error(self) -> AppError:
        return AppError(
            ErrorCode.INTERNAL_ERROR,
            f"loader {self.name!r} closed while loading",
            "virtwatch is shutting down",
            Severity.INFO,
        )

    # --- lifecycle --------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel in-flight batches (their callers get an error) and refuse new loads."""
        if self._state is LoaderState.CLOSED:
            return
        self._state = LoaderState.CLOSED
        self._fail(self._queue, self._closed_error())
        self._queue = []
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._cache.clear()

    async def __aenter__(self) -> DataLoader[K, V]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# --- per-VM history through the store ---------------------------------------------------


class HistoryPoint(Protocol):
    """One point of a stored series (the store's `Point`): when, and its mean."""

    @property
    def at(self) -> float: ...

    @property
    def mean(self) -> float: ...


class HistorySource(Protocol):
    """What core needs from the store to draw history: many VMs' series in ONE query
    (`SELECT ... WHERE vm_uuid IN (...)`). storage's `Queries` implements it."""

    async def histories(
        self,
        vm_uuids: Sequence[str],
        metrics: Sequence[str],
        since: float,
        until: float,
        *,
        host: str | None = None,
    ) -> Mapping[str, Mapping[str, Sequence[HistoryPoint]]]: ...


@dataclass(frozen=True, slots=True)
class HistoryKey:
    host: str
    vm_uuid: str
    metric: str


History = tuple[tuple[float, float], ...]  # (epoch seconds, value), oldest first


def history_batch(
    source: HistorySource, *, window_s: float, clock: Callable[[], float] = time.time
) -> BatchFn[HistoryKey, History]:
    """A batch function for a DataLoader[HistoryKey, History]: the last `window_s` seconds
    of each key, one `histories` query per host (normally one: the visible rows' host).
    A VM or metric without stored data gets an empty history, not an error."""

    async def batch(keys: list[HistoryKey]) -> dict[HistoryKey, History | BaseException]:
        until = clock()
        since = until - window_s
        by_host: dict[str, list[HistoryKey]] = collections.defaultdict(list)
        for key in keys:
            by_host[key.host].append(key)
        out: dict[HistoryKey, History | BaseException] = {}
        for host, group in by_host.items():
            uuids = sorted({k.vm_uuid for k in group})
            metrics = sorted({k.metric for k in group})
            found = await source.histories(uuids, metrics, since, until, host=host)
            for key in group:
                points = found.get(key.vm_uuid, {}).get(key.metric, ())
                out[key] = tuple((p.at, p.mean) for p in points)
        return out

    return batch


def history_loader(
    source: HistorySource,
    *,
    window_s: float = 3600.0,
    cache_size: int = DEFAULT_CACHE_SIZE,
    clock: Callable[[], float] = time.time,
) -> DataLoader[HistoryKey, History]:
    """Per-VM history for the visible rows: N loads in one tick = one query.
    Cached until cleared: the UI appends live points itself and clears on a new window."""
    return DataLoader(
        history_batch(source, window_s=window_s, clock=clock),
        name="history",
        cache_size=cache_size,
    )
