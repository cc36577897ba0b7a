"""Cost of the error reporter and the task runner against bare baselines, in one run.

    .venv/bin/python -m bench.errors_tasks

- reporter: `report()` of a flood (same fingerprint) and of distinct errors, vs a bare
  `hub.publish` of a pre-built ErrorReport; and how many hub messages a flood makes.
- tasks: one task through `TaskRunner` (submit + result) vs a bare `await fn()`, and
  vs `asyncio.create_task`; all with the same trivial coroutine.
Figures are medians of several rounds; ratios are against the baseline of the same run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import ErrorReport, ErrorReporter
from virtwatch.core.ops.tasks import TaskRunner

ROUNDS = 7
N = 5_000


def median_us(fn: Callable[[], None], n: int) -> float:
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def lost(i: int) -> AppError:
    return AppError(
        ErrorCode.LIBVIRT_CONNECTION_LOST,
        f"collecting stats: Cannot recv data: reset after {i} ms",
        "it reconnects",
        Severity.CRITICAL,
        transient=True,
    )


def bench_reporter() -> None:
    hub = Hub()
    sub = hub.subscribe(ErrorReport, maxsize=N + 10)
    errors = [lost(i) for i in range(N)]
    prebuilt = ErrorReport(errors[0], "hv1", None, 0.0)

    def bare() -> None:
        for _ in range(N):
            hub.publish(prebuilt)
        while sub.get_nowait() is not None:
            pass

    def flood() -> None:
        rep = ErrorReporter(hub.publish)
        for err in errors:
            rep.report(err, host="hv1")
        while sub.get_nowait() is not None:
            pass

    def distinct() -> None:
        rep = ErrorReporter(hub.publish, max_incidents=N)
        for i, err in enumerate(errors):
            rep.report(err, host="hv1", vm=f"vm{i}")
        while sub.get_nowait() is not None:
            pass

    base = median_us(bare, N)
    fl = median_us(flood, N)
    di = median_us(distinct, N)
    before = hub.published
    rep = ErrorReporter(hub.publish)
    for err in errors:
        rep.report(err, host="hv1")
    print(f"reporter: bare publish {base:.2f} us/error (baseline)")
    print(f"reporter: flood report {fl:.2f} us/error ({fl / base:.1f}x)")
    print(f"reporter: distinct report {di:.2f} us/error ({di / base:.1f}x)")
    print(f"reporter: {N} identical errors at once -> {hub.published - before} hub message(s)")


async def bench_tasks() -> None:
    async def work() -> int:
        return 1

    async def rounds(run: Callable[[], object]) -> float:
        times = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            await run()  # type: ignore[misc]
            times.append((time.perf_counter() - t0) / (N // 5) * 1e6)
        return statistics.median(times)

    async def bare() -> None:
        for _ in range(N // 5):
            await work()

    async def created() -> None:
        for _ in range(N // 5):
            await asyncio.create_task(work())

    runner = TaskRunner(lambda _: None, max_concurrency=8)

    async def through_runner() -> None:
        for _ in range(N // 5):
            await runner.submit("t", "bench", work).result()

    async def batch() -> None:
        handles = [runner.submit("t", "bench", work) for _ in range(N // 5)]
        for h in handles:
            await h.result()

    base = await rounds(bare)
    ct = await rounds(created)
    tr = await rounds(through_runner)
    tb = await rounds(batch)
    await runner.aclose()
    print(f"tasks: bare await {base:.2f} us/task (baseline)")
    print(f"tasks: asyncio.create_task {ct:.2f} us/task ({ct / base:.0f}x)")
    print(
        f"tasks: TaskRunner one at a time {tr:.2f} us/task ({tr / base:.0f}x, {tr / ct:.1f}x task)"
    )
    print(
        f"tasks: TaskRunner {N // 5} at once {tb:.2f} us/task "
        f"({tb / base:.0f}x, {tb / ct:.1f}x task)"
    )


def main() -> None:
    bench_reporter()
    asyncio.run(bench_tasks())


if __name__ == "__main__":
    main()
