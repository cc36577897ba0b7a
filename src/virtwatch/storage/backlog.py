"""Raw samples waiting for the disk, oldest first, held in chunks the GC does not walk.

A full garbage collection visits every item of every tracked container: a flat deque
of 200,000 waiting samples adds ~2-12 ms to each one, and a collection holds the GIL, so
the whole event loop stalls for it. Here the samples sit in immutable tuples of plain
tuples (one per tick), which the collector stops tracking after it first sees them;
only the short deque of chunks is walked.
"""

from __future__ import annotations

import collections
import itertools
import operator
from collections.abc import Iterator

from virtwatch.storage.store import Sample

_ts_of = operator.itemgetter(4)  # Sample.ts_ms


class SampleBacklog:
    """A FIFO of samples: appended a chunk at a time, taken and dropped from the front."""

    __slots__ = ("_chunks", "_len")

    def __init__(self) -> None:
        self._chunks: collections.deque[tuple[Sample, ...]] = collections.deque()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[Sample]:
        return itertools.chain.from_iterable(self._chunks)

    def append(self, rows: tuple[Sample, ...]) -> None:
        """Add `rows` after everything held (newest last)."""
        if rows:
            self._chunks.append(rows)
            self._len += len(rows)

    def put_back(self, rows: tuple[Sample, ...]) -> None:
        """Return `rows` (taken earlier) to the front, ahead of everything held."""
        if rows:
            self._chunks.appendleft(rows)
            self._len += len(rows)

    def drop_oldest(self, n: int) -> int:
        """Remove up to `n` of the oldest samples; returns how many went."""
        dropped = 0
        chunks = self._chunks
        while dropped < n and chunks:
            first = chunks[0]
            if len(first) <= n - dropped:
                chunks.popleft()
                dropped += len(first)
            else:
                chunks[0] = first[n - dropped :]
                dropped = n
        self._len -= dropped
        return dropped

    def take(self, n: int) -> tuple[Sample, ...]:
        """Remove and return up to `n` of the oldest samples, oldest first."""
        chunks = self._chunks
        if chunks and len(chunks[0]) == n:  # the common case: a flush of whole ticks
            self._len -= n
            return chunks.popleft()
        parts: list[tuple[Sample, ...]] = []
        need = n
        while need > 0 and chunks:
            first = chunks[0]
            if len(first) <= need:
                parts.append(chunks.popleft())
                need -= len(first)
            else:
                parts.append(first[:need])
                chunks[0] = first[need:]
                need = 0
        if not parts:
            return ()
        taken = parts[0] if len(parts) == 1 else tuple(itertools.chain.from_iterable(parts))
        self._len -= len(taken)
        return taken

    def oldest_ts_ms(self) -> int | None:
        """The earliest sample time held (samples of a chunk need not be in time order)."""
        return min((min(map(_ts_of, c)) for c in self._chunks), default=None)
