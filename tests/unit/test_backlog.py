"""The writer's sample backlog behaves as one FIFO of samples, whatever its chunking, and
holds its samples where a full garbage collection does not walk them."""

from __future__ import annotations

import collections
import gc

from hypothesis import given
from hypothesis import strategies as st

from virtwatch.storage.backlog import SampleBacklog
from virtwatch.storage.store import Sample


def _rows(start: int, n: int) -> tuple[Sample, ...]:
    return tuple(("h", f"u{i % 7}", "vm", "cpu_pct", start + i, float(i)) for i in range(n))


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 30)),
        st.tuples(st.just("take"), st.integers(0, 40)),
        st.tuples(st.just("drop"), st.integers(0, 40)),
        st.tuples(st.just("fail"), st.integers(0, 40)),  # take, then put back
    ),
    max_size=60,
)


@given(_ops)
def test_the_backlog_is_one_fifo_of_samples(ops: list[tuple[str, int]]) -> None:
    backlog = SampleBacklog()
    model: collections.deque[Sample] = collections.deque()
    next_ts = 0
    for op, n in ops:
        if op == "append":
            rows = _rows(next_ts, n)
            next_ts += n
            backlog.append(rows)
            model.extend(rows)
        elif op == "take":
            taken = backlog.take(n)
            assert isinstance(taken, tuple)
            assert list(taken) == [model.popleft() for _ in range(min(n, len(model)))]
        elif op == "drop":
            want = min(n, len(model))
            assert backlog.drop_oldest(n) == want
            for _ in range(want):
                model.popleft()
        else:
            taken = backlog.take(n)
            backlog.put_back(taken)
        assert len(backlog) == len(model)
        assert bool(backlog) == bool(model)
        assert list(backlog) == list(model)
        assert backlog.oldest_ts_ms() == min((r[4] for r in model), default=None)


def test_an_empty_backlog_gives_nothing() -> None:
    backlog = SampleBacklog()
    assert backlog.take(10) == ()
    assert backlog.drop_oldest(10) == 0
    assert backlog.oldest_ts_ms() is None
    assert not backlog


def test_the_oldest_time_is_the_minimum_not_the_first() -> None:
    backlog = SampleBacklog()
    backlog.append(_rows(500, 3))
    backlog.append(_rows(100, 3))  # a late host's tick, older than the one before
    assert backlog.oldest_ts_ms() == 100


def test_a_full_collection_does_not_walk_the_held_samples() -> None:
    """What the chunking is for: once the collector has seen them, held samples are no
    longer tracked, so the only tracked object per tick is none at all (the deque of
    chunks is the backlog's one container)."""
    backlog = SampleBacklog()
    for t in range(200):
        backlog.append(_rows(t * 1000, 1000))
    # a collection untracks a tuple whose items are untracked by then: the rows at the
    # first one the chunk survives, the chunk itself at the latest at the next
    gc.collect()
    gc.collect()
    chunks = backlog._chunks
    assert gc.is_tracked(chunks)
    assert not any(gc.is_tracked(c) for c in chunks)
    assert not any(gc.is_tracked(r) for c in chunks for r in c)
    assert len(gc.get_referents(chunks)) == 200  # a full GC visits 200 items, not 200,000
