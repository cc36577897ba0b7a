"""Waiting for a condition with a generous bound (never a timing assertion)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 30.0, what: str = ""
) -> None:
    async def poll() -> None:
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"still not true after {timeout_s} s: {what}") from None
