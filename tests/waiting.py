"""Waiting in tests for something that happens in the background: poll a condition until
it holds, or fail naming what was awaited (and, if asked, what was seen instead).

A deadline is a bound so that a stuck test fails instead of hanging, never a timing
assertion: it must hold on a loaded machine (other VMs and libvirt clients on the host,
a busy runner). Waiting ends as soon as the condition holds, so a long deadline costs
nothing when things are fast. Where a test does measure a delay, it asserts on the
seconds these return.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

import pytest

WAIT_S = 30.0  # libvirtd, QEMU, the real binary in tmux, a database: all may be slow


def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    timeout_s: float = WAIT_S,
    step_s: float = 0.1,
    seen: Callable[[], object] | None = None,
) -> float:
    """Block until `condition()` is true; returns the seconds that took. After `timeout_s`
    the test fails, naming `what` and showing `seen()` (e.g. the screen) if given."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            _fail(what, timeout_s, seen)
        time.sleep(step_s)
    return time.monotonic() - started


async def until(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    *,
    timeout_s: float = WAIT_S,
    step_s: float = 0.05,
    seen: Callable[[], object] | None = None,
) -> float:
    """Wait until `condition()` (a plain or an async function) is true; returns the seconds
    that took. After `timeout_s` (a hanging async condition included) the test fails,
    naming `what` and showing `seen()` if given."""
    started = time.monotonic()

    async def holds() -> bool:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    try:
        async with asyncio.timeout(timeout_s):
            while True:  # a poll: the condition has no event to wait on
                if await holds():
                    return time.monotonic() - started
                await asyncio.sleep(step_s)
    except TimeoutError:
        _fail(what, timeout_s, seen)


def _fail(what: str, timeout_s: float, seen: Callable[[], object] | None) -> NoReturn:
    __tracebackhide__ = True
    message = f"timed out after {timeout_s:g} s waiting for {what}"
    if seen is not None:
        try:
            message += f"; seen instead:\n{seen()}"
        except Exception as e:  # the screen's session may be gone: say so, keep the message
            message += f"; could not look: {e!r}"
    pytest.fail(message)
