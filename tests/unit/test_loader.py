"""The DataLoader: batching per loop tick, de-duplication, shielded shared futures,
errors per key and never cached, a bounded cache with clear/clear_all/prime."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtwatch.core.collect.loader import DataLoader, LoaderState
from virtwatch.core.errors import AppError, ErrorCode


class Backend:
    """Records every batch; answers key -> key * 10, or an error for keys in `bad`."""

    def __init__(self, *, bad: set[int] | None = None, gate: asyncio.Event | None = None) -> None:
        self.calls: list[list[int]] = []
        self.bad = bad or set()
        self.gate = gate
        self.fail_all: Exception | None = None
        self.omit: set[int] = set()

    async def __call__(self, keys: list[int]) -> Mapping[int, int | BaseException]:
        self.calls.append(list(keys))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_all is not None:
            raise self.fail_all
        out: dict[int, int | BaseException] = {}
        for k in keys:
            if k in self.omit:
                continue
            out[k] = ValueError(f"bad key {k}") if k in self.bad else k * 10
        return out


async def test_loads_in_one_tick_are_one_batch_with_distinct_keys() -> None:
    backend = Backend()
    loader = DataLoader(backend)
    values = await asyncio.gather(*(loader.load(k) for k in [1, 2, 3, 2, 1]))
    assert values == [10, 20, 30, 20, 10]
    assert backend.calls == [[1, 2, 3]]
    assert loader.stats().batches == 1
    assert loader.stats().hits == 2  # the repeated keys joined the first loads


async def test_loads_in_later_ticks_are_later_batches() -> None:
    backend = Backend()
    loader = DataLoader(backend)
    assert await loader.load(1) == 10
    assert await loader.load(2) == 20
    assert backend.calls == [[1], [2]]


async def test_big_batches_are_split() -> None:
    backend = Backend()
    loader = DataLoader(backend, max_batch=2)
    assert await loader.load_many([1, 2, 3, 4, 5]) == [10, 20, 30, 40, 50]
    assert backend.calls == [[1, 2], [3, 4], [5]]


async def test_cached_values_cost_no_call_until_cleared() -> None:
    backend = Backend()
    loader = DataLoader(backend)
    await loader.load_many([1, 2])
    assert await loader.load(1) == 10
    assert len(backend.calls) == 1
    assert loader.clear(1) is True
    assert loader.clear(1) is False
    assert await loader.load(1) == 10
    assert await loader.load(2) == 20
    assert backend.calls == [[1, 2], [1]]  # only the cleared key went back to the backend
    loader.clear_all()
    await loader.load_many([1, 2])
    assert backend.calls[-1] == [1, 2]


async def test_prime_fills_the_cache_but_never_overwrites() -> None:
    backend = Backend()
    loader = DataLoader(backend)
    assert loader.prime(7, 777) is True
    assert loader.prime(7, 1) is False
    assert await loader.load(7) == 777
    assert backend.calls == []


async def test_the_cache_is_bounded_least_recently_used_first() -> None:
    backend = Backend()
    loader = DataLoader(backend, cache_size=2)
    await loader.load_many([1, 2])
    await loader.load(1)  # 1 is now more recent than 2
    await loader.load(3)  # evicts 2
    assert loader.stats().cached == 2
    await loader.load_many([1, 3])
    assert backend.calls == [[1, 2], [3]]
    await loader.load(2)
    assert backend.calls[-1] == [2]


async def test_an_error_belongs_to_its_key_and_is_not_cached() -> None:
    backend = Backend(bad={2})
    loader = DataLoader(backend)
    results = await asyncio.gather(*(loader.load(k) for k in (1, 2, 3)), return_exceptions=True)
    assert results[0] == 10
    assert isinstance(results[1], ValueError)
    assert results[2] == 30
    backend.bad.clear()
    assert await loader.load(2) == 20  # tried again, not served from the cache
    assert backend.calls == [[1, 2, 3], [2]]
    assert loader.stats().errors == 1


async def test_a_failing_batch_fails_each_key_and_caches_nothing() -> None:
    backend = Backend()
    backend.fail_all = ConnectionError("host gone")
    loader = DataLoader(backend)
    results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    backend.fail_all = None
    assert await loader.load_many([1, 2]) == [10, 20]
    assert len(backend.calls) == 2


async def test_a_key_the_batch_forgot_is_an_error_naming_it() -> None:
    backend = Backend()
    backend.omit = {5}
    loader = DataLoader(backend, name="things")
    with pytest.raises(AppError, match="'things': the batch gave no value for 5"):
        await loader.load(5)


async def test_one_cancelled_caller_does_not_cancel_the_others() -> None:
    gate = asyncio.Event()
    backend = Backend(gate=gate)
    loader = DataLoader(backend)
    impatient = asyncio.create_task(loader.load(1))
    patient = asyncio.create_task(loader.load(1))
    await asyncio.sleep(0.01)  # both joined one batch, which waits at the gate
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    gate.set()
    assert await patient == 10
    assert backend.calls == [[1]]
    assert await loader.load(1) == 10  # the value was cached, not the cancellation
    assert len(backend.calls) == 1


async def test_when_every_caller_gives_up_the_load_still_completes_once() -> None:
    gate = asyncio.Event()
    backend = Backend(gate=gate)
    loader = DataLoader(backend)
    task = asyncio.create_task(loader.load(4))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    assert await loader.load(4) == 40
    assert backend.calls == [[4]]


async def test_clearing_a_key_in_flight_answers_its_callers_but_caches_nothing() -> None:
    gate = asyncio.Event()
    backend = Backend(gate=gate)
    loader = DataLoader(backend)
    first = asyncio.create_task(loader.load(1))
    await asyncio.sleep(0.01)
    loader.clear(1)  # e.g. a define event arrived while the old definition was loading
    gate.set()
    assert await first == 10
    assert await loader.load(1) == 10
    assert backend.calls == [[1], [1]]


async def test_without_a_cache_loads_are_still_batched_and_shared_in_flight() -> None:
    backend = Backend()
    loader = DataLoader(backend, cache_size=0)
    assert list(await asyncio.gather(loader.load(1), loader.load(1), loader.load(2))) == [
        10,
        10,
        20,
    ]
    assert backend.calls == [[1, 2]]
    assert loader.stats().cached == 0
    assert loader.prime(1, 5) is False
    await loader.load(1)
    assert backend.calls[-1] == [1]


async def test_closing_fails_what_is_in_flight_and_refuses_new_loads() -> None:
    gate = asyncio.Event()
    backend = Backend(gate=gate)
    async with DataLoader(backend, name="d") as loader:
        pending = asyncio.create_task(loader.load(1))
        await asyncio.sleep(0.01)
    assert loader.state is LoaderState.CLOSED
    with pytest.raises(AppError, match="closed while loading"):
        await pending
    with pytest.raises(AppError, match="is closed") as caught:
        await loader.load(2)
    assert caught.value.code is ErrorCode.INTERNAL_ERROR


@settings(max_examples=50, deadline=None)
@given(
    keys=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=60),
    bad=st.sets(st.integers(min_value=0, max_value=30)),
    max_batch=st.integers(min_value=1, max_value=10),
)
def test_any_burst_of_loads_is_answered_per_key_with_each_key_asked_once(
    keys: list[int], bad: set[int], max_batch: int
) -> None:
    async def scenario() -> None:
        backend = Backend(bad=bad)
        loader = DataLoader(backend, max_batch=max_batch)
        results = await asyncio.gather(*(loader.load(k) for k in keys), return_exceptions=True)
        for k, r in zip(keys, results, strict=True):
            if k in bad:
                assert isinstance(r, ValueError)
            else:
                assert r == k * 10
        asked = [k for call in backend.calls for k in call]
        assert sorted(asked) == sorted(set(keys))
        assert all(len(call) <= max_batch for call in backend.calls)

    asyncio.run(scenario())
