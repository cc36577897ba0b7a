"""Background tasks: retry policies with an injected sleep, transient vs permanent errors,
per-attempt timeouts, cancellation (never retried), bounded concurrency, statistics and
the order of published state changes. Real asyncio, real tenacity; only sleep is fake."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.config import ConfigError
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.incidents import ErrorReport, ErrorReporter
from virtwatch.core.ops.tasks import (
    POLICIES,
    RetryPolicy,
    RunnerState,
    TaskRunner,
    task_settings,
)
from virtwatch.core.records import TaskState, TaskUpdate

S = TaskState
NOW = 5_000.0


class Published:
    """The hub's publish, recording what went out in order."""

    def __init__(self) -> None:
        self.items: list[object] = []

    def __call__(self, item: object) -> None:
        self.items.append(item)

    def updates(self, task_id: str | None = None) -> list[TaskUpdate]:
        return [
            u
            for u in self.items
            if isinstance(u, TaskUpdate) and (task_id is None or u.task_id == task_id)
        ]

    def states(self, task_id: str) -> list[tuple[TaskState, int]]:
        return [(u.state, u.attempt) for u in self.updates(task_id)]

    def reports(self) -> list[ErrorReport]:
        return [r for r in self.items if isinstance(r, ErrorReport)]


class FakeSleep:
    """Records each backoff and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


class BlockingSleep:
    """Records the backoff, then waits forever: a task is caught waiting to retry."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.entered = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.entered.set()
        await asyncio.Event().wait()


def runner_with(
    sleep: Callable[[float], Awaitable[None]] | None = None, **kw: object
) -> tuple[TaskRunner, Published]:
    pub = Published()
    runner = TaskRunner(pub, sleep=sleep or FakeSleep(), clock=lambda: NOW, **kw)  # type: ignore[arg-type]
    return runner, pub


def lost() -> AppError:
    return AppError(ErrorCode.LIBVIRT_CONNECTION_LOST, "client socket is closed", transient=True)


def flaky(
    failures: int, make: Callable[[], Exception] = lost
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            raise make()
        return "ok"

    return fn, calls


# --- policies (pure) -------------------------------------------------------------------


def test_seed_defaults() -> None:
    p = POLICIES["default"]
    assert (p.max_retries, p.initial_backoff_s, p.multiplier, p.max_backoff_s) == (3, 1, 2, 30)
    assert p.max_attempts == 4
    assert POLICIES["none"].max_attempts == 1
    assert not POLICIES["action"].retry_on_timeout


def test_backoff_doubles_then_caps_at_30() -> None:
    p = RetryPolicy("long", max_retries=8)
    assert [p.base_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert p.base_delay(5000) == 30  # no overflow far out


@given(retry=st.integers(1, 2000), u=st.floats(0, 1, exclude_max=True))
def test_jitter_stays_within_ten_percent(retry: int, u: float) -> None:
    p = POLICIES["default"]
    base = p.base_delay(retry)
    assert base <= p.delay(retry, u) < base * 1.1 + 1e-9
    assert p.delay(retry, u) <= 33.0


def test_nonsense_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="multiplier >= 1"):
        RetryPolicy("x", multiplier=0.5)
    with pytest.raises(ValueError, match="attempt_timeout_s"):
        RetryPolicy("x", attempt_timeout_s=0)


def test_task_settings_from_config() -> None:
    s = task_settings(
        {
            "max_concurrency": 2,
            "policies": {
                "default": {"max_retries": 5, "attempt_timeout_s": 0},
                "health": {"max_retries": 1, "max_backoff_s": 5},
            },
        }
    )
    assert s.max_concurrency == 2
    assert s.policies["default"].max_retries == 5
    assert s.policies["default"].attempt_timeout_s is None  # 0 = no timeout
    assert s.policies["default"].initial_backoff_s == 1.0  # untouched keys keep the seed's
    assert s.policies["health"].max_backoff_s == 5.0
    assert s.policies["action"] == POLICIES["action"]
    assert task_settings({}).policies["default"] == POLICIES["default"]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"max_concurency": 2}, "tasks.max_concurency"),
        ({"max_concurrency": 0}, "tasks.max_concurrency"),
        ({"policies": {"default": {"max_retries": "3"}}}, "tasks.policies.default.max_retries"),
        ({"policies": {"default": {"retries": 3}}}, "tasks.policies.default.retries"),
        ({"policies": {"x": {"max_backoff_s": 0.5}}}, "tasks.policies.x.max_backoff_s"),
        ({"policies": {"x": {"jitter": 2}}}, "tasks.policies.x.jitter"),
        ({"policies": 3}, "tasks.policies"),
    ],
)
def test_bad_task_config_names_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        task_settings(section)
    assert f"'{key}'" in caught.value.message


# --- retrying --------------------------------------------------------------------------


async def test_transient_errors_retry_with_backoff_1_2_4_and_jitter() -> None:
    sleep = FakeSleep()
    runner, pub = runner_with(sleep)
    fn, calls = flaky(3)
    h = runner.submit("probe hv1", "health.probe", fn, host="hv1")
    assert await h.result() == "ok"
    assert calls == [1, 2, 3, 4]
    for got, base in zip(sleep.delays, [1, 2, 4], strict=True):
        assert base <= got < base * 1.1
    assert pub.states(h.id) == [
        (S.PENDING, 0),
        (S.RUNNING, 1),
        (S.RETRYING, 2),
        (S.RUNNING, 2),
        (S.RETRYING, 3),
        (S.RUNNING, 3),
        (S.RETRYING, 4),
        (S.RUNNING, 4),
        (S.SUCCEEDED, 4),
    ]
    retrying = [u for u in pub.updates(h.id) if u.state is S.RETRYING]
    gaps = [u.next_try_at - u.at for u in retrying if u.next_try_at is not None]
    assert gaps == pytest.approx(sleep.delays)
    assert {u.error_code for u in retrying} == {"LIBVIRT_CONNECTION_LOST"}
    assert all(u.max_attempts == 4 and u.host == "hv1" for u in pub.updates(h.id))
    assert pub.updates(h.id)[-1].started_at == NOW
    s = runner.stats()
    assert (s.succeeded, s.failed, s.retries, s.running, s.pending) == (1, 0, 3, 0, 0)
    await runner.aclose()


async def test_backoff_caps_at_30_seconds() -> None:
    sleep = FakeSleep()
    runner, _ = runner_with(sleep, rng=lambda: 0.0)
    fn, _ = flaky(8)
    h = runner.submit("x", "t", fn, policy=RetryPolicy("long", max_retries=8))
    assert await h.result() == "ok"
    assert sleep.delays == [1, 2, 4, 8, 16, 30, 30, 30]
    sleep.delays.clear()
    runner2, _ = runner_with(sleep, rng=lambda: 0.999999)
    fn, _ = flaky(8)
    await runner2.submit("x", "t", fn, policy=RetryPolicy("long", max_retries=8)).result()
    assert max(sleep.delays) == pytest.approx(33.0, rel=1e-5)
    await runner.aclose()
    await runner2.aclose()


async def test_permanent_error_fails_at_once_and_reaches_handler_and_reporter() -> None:
    runner_pub = Published()
    reporter = ErrorReporter(runner_pub, clock=lambda: NOW)
    handled: list[AppError] = []
    runner = TaskRunner(runner_pub, sleep=FakeSleep(), clock=lambda: NOW, reporter=reporter)
    gone = AppError(ErrorCode.MACHINE_NOT_FOUND, "Domain not found", "check the name")
    fn, calls = flaky(5, lambda: gone)
    h = runner.submit("start web-01", "action.start", fn, on_error=handled.append, vm_name="web-01")
    with pytest.raises(AppError) as caught:
        await h.result()
    assert caught.value is gone
    assert calls == [1]
    assert runner_pub.states(h.id) == [(S.PENDING, 0), (S.RUNNING, 1), (S.FAILED, 1)]
    last = runner_pub.updates(h.id)[-1]
    assert (last.error_code, last.message, last.vm_name) == (
        "MACHINE_NOT_FOUND",
        "Domain not found",
        "web-01",
    )
    assert handled == [gone]
    [report] = runner_pub.reports()
    assert (report.error, report.vm) == (gone, "web-01")
    await runner.aclose()


async def test_retries_run_out_then_the_last_error_is_the_result() -> None:
    runner, pub = runner_with()
    fn, calls = flaky(100)
    h = runner.submit("x", "t", fn)
    with pytest.raises(AppError) as caught:
        await h.result()
    assert caught.value.code is ErrorCode.LIBVIRT_CONNECTION_LOST
    assert calls == [1, 2, 3, 4]
    assert pub.states(h.id)[-1] == (S.FAILED, 4)
    assert runner.stats().failed == 1
    await runner.aclose()


async def test_a_bug_is_not_retried_and_becomes_an_internal_error() -> None:
    runner, _ = runner_with()
    fn, calls = flaky(5, lambda: KeyError("missing"))
    with pytest.raises(AppError) as caught:
        await runner.submit("x", "t", fn).result()
    assert caught.value.code is ErrorCode.INTERNAL_ERROR
    assert isinstance(caught.value.cause, KeyError)
    assert calls == [1]
    await runner.aclose()


async def test_a_custom_predicate_decides_for_other_exceptions() -> None:
    runner, _ = runner_with()
    fn, calls = flaky(2, lambda: OSError("EAGAIN"))
    h = runner.submit("x", "t", fn, retry_if=lambda e: isinstance(e, OSError))
    assert await h.result() == "ok"
    assert calls == [1, 2, 3]
    await runner.aclose()


async def test_async_error_handler_and_a_broken_one() -> None:
    pub = Published()
    reporter = ErrorReporter(pub, clock=lambda: NOW)
    runner = TaskRunner(pub, sleep=FakeSleep(), clock=lambda: NOW, reporter=reporter)
    seen: list[str] = []

    async def handler(err: AppError) -> None:
        await asyncio.sleep(0)
        seen.append(err.message)

    def broken(err: AppError) -> None:
        raise RuntimeError("handler bug")

    fn, _ = flaky(9, lambda: AppError(ErrorCode.FORBIDDEN, "read only"))
    with pytest.raises(AppError):
        await runner.submit("a", "t", fn, on_error=handler).result()
    assert seen == ["read only"]
    fn, _ = flaky(9, lambda: AppError(ErrorCode.FORBIDDEN, "read only again"))
    h = runner.submit("b", "t", fn, on_error=broken)
    with pytest.raises(AppError) as caught:
        await h.result()
    assert caught.value.message == "read only again"  # the task's own error, not the bug's
    await asyncio.sleep(0)
    messages = [r.error.message for r in pub.reports()]
    assert "error handler of b: RuntimeError: handler bug" in messages
    await runner.aclose()


# --- timeouts --------------------------------------------------------------------------


async def hang() -> str:
    await asyncio.Event().wait()
    return "never"


async def test_each_attempt_is_bounded_and_a_timeout_is_retried() -> None:
    runner, pub = runner_with()
    pol = RetryPolicy("t", max_retries=1, attempt_timeout_s=0.01)
    h = runner.submit("probe", "t", hang, policy=pol)
    with pytest.raises(AppError) as caught:
        await h.result()
    assert caught.value.code is ErrorCode.TIMEOUT
    assert "attempt 2 of 2 took longer than 0.01 s" in caught.value.message
    assert [st for st, _ in pub.states(h.id)] == [
        S.PENDING,
        S.RUNNING,
        S.RETRYING,
        S.RUNNING,
        S.FAILED,
    ]
    await runner.aclose()


async def test_a_timed_out_action_is_not_retried() -> None:
    runner, pub = runner_with()
    h = runner.submit(
        "shutdown web", "action.shutdown", hang, policy="action", attempt_timeout_s=0.01
    )
    with pytest.raises(AppError) as caught:
        await h.result()
    assert caught.value.code is ErrorCode.TIMEOUT
    assert not caught.value.transient
    assert pub.states(h.id) == [(S.PENDING, 0), (S.RUNNING, 1), (S.FAILED, 1)]
    await runner.aclose()


# --- cancellation ----------------------------------------------------------------------


async def test_cancel_while_running_ends_cancelled_and_is_not_retried() -> None:
    runner, pub = runner_with()
    started = asyncio.Event()
    saw_cancel: list[bool] = []
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.append(True)
            raise
        return "never"

    h = runner.submit("x", "t", fn)
    await started.wait()
    assert h.state is S.RUNNING
    assert runner.cancel(h.id)
    with pytest.raises(AppError) as caught:
        await h.result()
    assert caught.value.code is ErrorCode.CANCELLED
    assert saw_cancel == [True]
    assert calls == [1]
    assert pub.states(h.id) == [(S.PENDING, 0), (S.RUNNING, 1), (S.CANCELLED, 1)]
    assert pub.updates(h.id)[-1].message == "cancelled while running"
    assert not runner.cancel(h.id)  # already finished
    assert runner.stats().cancelled == 1
    await runner.aclose()


async def test_cancel_while_waiting_to_retry_ends_cancelled() -> None:
    sleep = BlockingSleep()
    runner, pub = runner_with(sleep)
    fn, calls = flaky(100)
    h = runner.submit("x", "t", fn)
    await sleep.entered.wait()
    assert h.state is S.RETRYING
    assert h.cancel()
    with pytest.raises(AppError) as caught:
        await h.result()
    assert caught.value.code is ErrorCode.CANCELLED
    assert calls == [1]
    assert len(sleep.delays) == 1
    assert [s for s, _ in pub.states(h.id)] == [S.PENDING, S.RUNNING, S.RETRYING, S.CANCELLED]
    assert pub.updates(h.id)[-1].message == "cancelled while retrying"
    await runner.aclose()


async def test_cancellation_turned_into_a_transient_error_is_still_cancelled() -> None:
    runner, pub = runner_with()
    started = asyncio.Event()
    calls: list[int] = []

    async def sloppy() -> str:
        calls.append(1)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise lost() from None  # a callee that swallows the cancel
        return "never"

    h = runner.submit("x", "t", sloppy)
    await started.wait()
    h.cancel()
    with pytest.raises(AppError) as caught:
        await h.result()
    assert caught.value.code is ErrorCode.CANCELLED
    assert calls == [1]
    assert pub.states(h.id)[-1] == (S.CANCELLED, 1)
    await runner.aclose()


async def test_cancel_while_pending_never_runs_it() -> None:
    runner, pub = runner_with(max_concurrency=1)
    gate = asyncio.Event()

    async def blocker() -> str:
        await gate.wait()
        return "done"

    first = runner.submit("first", "t", blocker)
    fn, calls = flaky(0)
    second = runner.submit("second", "t", fn)
    for _ in range(5):
        await asyncio.sleep(0)
    assert (first.state, second.state) == (S.RUNNING, S.PENDING)
    assert runner.cancel(second.id)
    with pytest.raises(AppError, match="cancelled while pending"):
        await second.result()
    assert calls == []
    gate.set()
    assert await first.result() == "done"
    assert pub.states(second.id) == [(S.PENDING, 0), (S.CANCELLED, 0)]
    await runner.aclose()


async def test_cancel_right_after_submit() -> None:
    runner, pub = runner_with()
    fn, calls = flaky(0)
    h = runner.submit("x", "t", fn)
    assert h.cancel()  # before the task ever ran
    with pytest.raises(AppError) as caught:
        await h.result()
    assert caught.value.code is ErrorCode.CANCELLED
    assert calls == []
    assert pub.states(h.id) == [(S.PENDING, 0), (S.CANCELLED, 0)]
    await runner.aclose()


async def test_cancelling_a_waiter_does_not_cancel_the_task() -> None:
    runner, _ = runner_with()
    gate = asyncio.Event()

    async def fn() -> str:
        await gate.wait()
        return "done"

    h = runner.submit("x", "t", fn)
    waiter = asyncio.create_task(h.result())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    assert await h.result() == "done"
    await runner.aclose()


# --- concurrency, stats, history, shutdown ---------------------------------------------


async def test_concurrency_is_bounded_and_the_rest_wait_pending() -> None:
    runner, pub = runner_with(max_concurrency=2)
    gate = asyncio.Event()
    live: list[int] = []
    peak: list[int] = [0]

    async def work() -> int:
        live.append(1)
        peak[0] = max(peak[0], len(live))
        await gate.wait()
        live.pop()
        return 1

    handles = [runner.submit(f"t{i}", "t", work) for i in range(6)]

    for _ in range(100):  # a few loop iterations let every task reach its slot or queue
        await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)
    s = runner.stats()
    assert (s.running, s.pending, s.submitted, s.max_concurrency) == (2, 4, 6, 2)
    assert sorted(h.state for h in handles).count(S.PENDING) == 4
    gate.set()
    assert sum([await h.result() for h in handles]) == 6
    assert peak[0] == 2
    assert runner.stats().succeeded == 6
    for h in handles:  # every task's own updates are in order
        assert [st for st, _ in pub.states(h.id)] == [S.PENDING, S.RUNNING, S.SUCCEEDED]
    await runner.aclose()


async def test_history_is_bounded() -> None:
    runner, _ = runner_with(history=3)
    handles = []
    for i in range(5):
        fn, _ = flaky(0)
        handles.append(runner.submit(f"t{i}", "t", fn))
        await handles[-1].result()
    assert [u.name for u in runner.tasks()] == ["t2", "t3", "t4"]
    assert runner.get(handles[0].id) is None
    assert runner.get(handles[4].id) is handles[4]
    await runner.aclose()


async def test_tasks_lists_running_ones_after_history() -> None:
    runner, _ = runner_with()
    gate = asyncio.Event()

    async def wait() -> str:
        await gate.wait()
        return "w"

    fn, _ = flaky(0)
    await runner.submit("done", "t", fn).result()
    runner.submit("live", "t", wait)
    await asyncio.sleep(0)
    assert [(u.name, u.state) for u in runner.tasks()] == [
        ("done", S.SUCCEEDED),
        ("live", S.RUNNING),
    ]
    gate.set()
    await runner.aclose()


async def test_aclose_cancels_everything_and_refuses_new_work() -> None:
    async with TaskRunner(Published(), max_concurrency=1, sleep=FakeSleep()) as runner:
        handles = [runner.submit(f"t{i}", "t", hang) for i in range(3)]
        await asyncio.sleep(0)
    assert runner.state is RunnerState.CLOSED
    assert [h.state for h in handles] == [S.CANCELLED] * 3
    assert runner.stats().cancelled == 3
    fn, _ = flaky(0)
    with pytest.raises(AppError, match="closed"):
        runner.submit("late", "t", fn)


async def test_unknown_policy_is_a_clear_error() -> None:
    runner, _ = runner_with()
    fn, _ = flaky(0)
    with pytest.raises(AppError) as caught:
        runner.submit("x", "t", fn, policy="agressive")
    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert "default" in caught.value.hint
    await runner.aclose()
