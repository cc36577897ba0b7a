"""The tests' one wait: it returns as soon as the condition holds, and a timeout fails
the test naming what was awaited and what was seen instead."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.waiting import until, wait_until


def test_wait_until_returns_once_the_condition_holds() -> None:
    calls = itertools.count()
    took = wait_until(lambda: next(calls) >= 2, "the third look", step_s=0.001)
    assert 0 <= took < 5
    assert next(calls) == 3


def test_a_timeout_names_what_was_awaited_and_what_was_seen() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"(?s)0.05 s waiting for the dialog.*row 1"):
        wait_until(lambda: False, "the dialog", timeout_s=0.05, step_s=0.01, seen=lambda: "row 1")


def test_a_failing_look_does_not_hide_the_timeout() -> None:
    def gone() -> str:
        raise RuntimeError("no session")

    with pytest.raises(pytest.fail.Exception, match="waiting for x; could not look: Runtime"):
        wait_until(lambda: False, "x", timeout_s=0.01, step_s=0.01, seen=gone)


async def test_until_takes_plain_and_async_conditions() -> None:
    ready: list[int] = []
    asyncio.get_running_loop().call_later(0.02, ready.append, 1)
    await until(lambda: ready, "the callback")

    async def stored() -> bool:
        await asyncio.sleep(0)
        return bool(ready)

    assert await until(stored, "the row") < 5


async def test_until_bounds_a_condition_that_hangs() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    with pytest.raises(pytest.fail.Exception, match="waiting for an answer"):
        await until(hangs, "an answer", timeout_s=0.05)
