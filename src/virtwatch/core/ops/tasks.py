"""Background tasks: a coroutine function run under a named retry policy (tenacity), with
a timeout per attempt, bounded concurrency and cancel by id. Every state change is a
`TaskUpdate` on the hub (RETRYING carries the coming attempt's number and its time).
Only transient errors are retried; cancellation always propagates and is never retried.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Generic, TypeVar, cast

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from virtwatch.core.config import config_error, validate
from virtwatch.core.config_schema import TasksSection
from virtwatch.core.errors import AppError, ErrorCode, Severity, as_app_error, is_transient
from virtwatch.core.incidents import ErrorReporter
from virtwatch.core.records import TaskState, TaskUpdate

T = TypeVar("T")

DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_HISTORY = 200  # finished tasks kept for tasks()

ErrorHandler = Callable[[AppError], Awaitable[None] | None]
RetryPredicate = Callable[[Exception], bool]


# --- policies -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a task is retried. Defaults are the seed's:
    3 retries, 1 s initial backoff, x2 per retry, 30 s cap; plus up to 10 % jitter."""

    name: str
    max_retries: int = 3
    initial_backoff_s: float = 1.0
    multiplier: float = 2.0
    max_backoff_s: float = 30.0
    jitter: float = 0.1  # each delay is stretched by a random factor in [1, 1 + jitter)
    attempt_timeout_s: float | None = 60.0  # None: an attempt may take forever
    retry_on_timeout: bool = True  # False when a timed-out attempt may still have acted

    def __post_init__(self) -> None:
        problems = [
            (self.max_retries < 0, "max_retries >= 0"),
            (self.initial_backoff_s < 0, "initial_backoff_s >= 0"),
            (self.multiplier < 1, "multiplier >= 1"),
            (self.max_backoff_s < self.initial_backoff_s, "max_backoff_s >= initial_backoff_s"),
            (not 0 <= self.jitter <= 1, "0 <= jitter <= 1"),
            (
                self.attempt_timeout_s is not None and self.attempt_timeout_s <= 0,
                "attempt_timeout_s > 0 or None",
            ),
        ]
        bad = [want for failed, want in problems if failed]
        if bad:
            raise ValueError(f"retry policy {self.name!r}: need {', '.join(bad)}")

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def base_delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1 = before the second attempt), no jitter."""
        try:
            raw = self.initial_backoff_s * self.multiplier ** (retry - 1)
        except OverflowError:
            raw = math.inf
        return min(self.max_backoff_s, raw)

    def delay(self, retry: int, u: float) -> float:
        """`base_delay` stretched by jitter; `u` is uniform in [0, 1)."""
        return self.base_delay(retry) * (1.0 + self.jitter * u)


POLICIES: Mapping[str, RetryPolicy] = MappingProxyType(
    {
        "default": RetryPolicy("default"),
        "none": RetryPolicy("none", max_retries=0),
        # actions verify their own outcome inside one attempt (up to minutes for an ACPI
        # shutdown); a timed-out attempt may still act in its thread, so it is not retried
        "action": RetryPolicy(
            "action",
            max_retries=2,
            max_backoff_s=10.0,
            attempt_timeout_s=300.0,
            retry_on_timeout=False,
        ),
    }
)


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """The `[tasks]` config section."""

    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    history: int = DEFAULT_HISTORY
    policies: Mapping[str, RetryPolicy] = field(default_factory=lambda: POLICIES)


def task_settings(section: Mapping[str, Any], *, path: Path | None = None) -> TaskSettings:
    """Parse `[tasks]` (the schema's `TasksSection`):

    [tasks]
    max_concurrency = 4
    history = 200
    [tasks.policies.default]       # overrides; a new name defines a new policy
    max_retries = 3                # initial_backoff_s, multiplier, max_backoff_s,
    attempt_timeout_s = 60         # jitter, retry_on_timeout; 0 = no attempt timeout
    """
    sec = validate(TasksSection, section, prefix="tasks", path=path)
    policies = dict(POLICIES)
    for name, override in sec.policies.items():
        base = policies.get(name, RetryPolicy(name))
        given = override.model_dump(exclude_none=True)
        if given.get("attempt_timeout_s") == 0:
            given["attempt_timeout_s"] = None
        initial = given.get("initial_backoff_s", base.initial_backoff_s)
        cap = given.get("max_backoff_s", base.max_backoff_s)
        if cap < initial:
            raise config_error(
                f"tasks.policies.{name}.max_backoff_s",
                f"must be at least initial_backoff_s ({initial:g}), got {cap!r}",
                path,
            )
        policies[name] = replace(base, **given)
    return TaskSettings(sec.max_concurrency, sec.history, MappingProxyType(policies))


# --- handles --------------------------------------------------------------------------


class RunnerState(enum.StrEnum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class TaskHandle(Generic[T]):
    """One submitted task: its id, its latest update, its result, and a way to cancel it."""

    def __init__(
        self,
        task_id: str,
        name: str,
        kind: str,
        fn: Callable[[], Awaitable[T]],
        policy: RetryPolicy,
        attempt_timeout_s: float | None,
        retry_if: RetryPredicate,
        on_error: ErrorHandler | None,
        host: str | None,
        vm_name: str | None,
        first: TaskUpdate,
    ) -> None:
        self.id = task_id
        self.name = name
        self.kind = kind
        self.policy = policy
        self.attempt_timeout_s = attempt_timeout_s
        self.host = host
        self.vm_name = vm_name
        self._fn = fn
        self._retry_if = retry_if
        self._on_error = on_error
        self._last = first
        self._outcome: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._attempts = 0  # attempts started

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id} {self.kind} {self._last.state}>"

    @property
    def state(self) -> TaskState:
        return self._last.state

    @property
    def attempt(self) -> int:
        return self._last.attempt

    @property
    def last(self) -> TaskUpdate:
        """The latest update published for this task."""
        return self._last

    def done(self) -> bool:
        return self._last.state.finished

    async def result(self) -> T:
        """The value `fn` returned. Raises the task's AppError when it failed, and an
        AppError with code CANCELLED when it was cancelled. Cancelling the caller does
        not cancel the task."""
        return await asyncio.shield(self._outcome)

    def cancel(self) -> bool:
        """Ask the task to stop; False when it already finished."""
        if self.done() or self._task is None or self._task.done():
            return False
        self._task.cancel()
        return True


@dataclass(frozen=True, slots=True)
class TaskStats:
    max_concurrency: int
    submitted: int
    pending: int
    running: int
    retrying: int
    succeeded: int
    failed: int
    cancelled: int
    retries: int  # retries scheduled over all tasks


# --- the runner -----------------------------------------------------------------------


class TaskRunner:
    """Runs tasks; `aclose()` cancels what is left and waits for it."""

    def __init__(
        self,
        publish: Callable[[object], None],
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        policies: Mapping[str, RetryPolicy] = POLICIES,
        history: int = DEFAULT_HISTORY,
        reporter: ErrorReporter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if "default" not in policies:
            raise ValueError("policies need a 'default' policy")
        self._publish = publish
        self.max_concurrency = max_concurrency
        self.policies = policies
        self._reporter = reporter
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random().random
        self._slots = asyncio.Semaphore(max_concurrency)
        self._active: dict[str, TaskHandle[Any]] = {}
        self._history: collections.deque[TaskHandle[Any]] = collections.deque(maxlen=history)
        self._state = RunnerState.OPEN
        self._counts: collections.Counter[str] = collections.Counter()

    @property
    def state(self) -> RunnerState:
        return self._state

    def submit(
        self,
        name: str,
        kind: str,
        fn: Callable[[], Awaitable[T]],
        *,
        policy: str | RetryPolicy = "default",
        attempt_timeout_s: float | None = None,
        retry_if: RetryPredicate = is_transient,
        on_error: ErrorHandler | None = None,
        host: str | None = None,
        vm_name: str | None = None,
    ) -> TaskHandle[T]:
        """Start `fn` as a task (PENDING until a slot is free) and return its handle.

        `policy`: a name from `policies` or a RetryPolicy. `attempt_timeout_s`: overrides
        the policy's (None = the policy's). `retry_if`: which exceptions are worth another
        attempt (default: AppError.transient and the like); never consulted for
        cancellation. `on_error(err)`: called once when the task finally fails (after the
        reporter, if the runner has one, got the error).
        """
        if self._state is not RunnerState.OPEN:
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"task {name!r} submitted to a task runner that is {self._state}",
                "this is a bug in virtwatch: work was started during shutdown",
            )
        pol = self._policy(policy)
        task_id = uuid.uuid4().hex[:12]
        first = TaskUpdate(
            task_id,
            name,
            kind,
            TaskState.PENDING,
            0,
            pol.max_attempts,
            self._clock(),
            host=host,
            vm_name=vm_name,
        )
        timeout = attempt_timeout_s if attempt_timeout_s is not None else pol.attempt_timeout_s
        handle: TaskHandle[T] = TaskHandle(
            task_id, name, kind, fn, pol, timeout, retry_if, on_error, host, vm_name, first
        )
        self._active[task_id] = handle
        self._counts["submitted"] += 1
        self._publish(first)
        task = asyncio.create_task(self._drive(handle), name=f"task:{kind}:{task_id}")
        handle._task = task
        task.add_done_callback(lambda t: self._settle(handle, t))
        return handle

    def get(self, task_id: str) -> TaskHandle[Any] | None:
        found = self._active.get(task_id)
        if found is not None:
            return found
        return next((h for h in self._history if h.id == task_id), None)

    def cancel(self, task_id: str) -> bool:
        """Cancel a task by id; False when unknown or already finished."""
        handle = self._active.get(task_id)
        return handle.cancel() if handle is not None else False

    def tasks(self) -> list[TaskUpdate]:
        """The latest update of recent finished tasks (oldest first), then unfinished ones."""
        return [h.last for h in self._history] + [h.last for h in self._active.values()]

    def stats(self) -> TaskStats:
        live = collections.Counter(h.state for h in self._active.values())
        c = self._counts
        return TaskStats(
            self.max_concurrency,
            c["submitted"],
            live[TaskState.PENDING],
            live[TaskState.RUNNING],
            live[TaskState.RETRYING],
            c[TaskState.SUCCEEDED],
            c[TaskState.FAILED],
            c[TaskState.CANCELLED],
            c["retries"],
        )

    async def aclose(self) -> None:
        """Cancel every unfinished task and wait until each has ended."""
        if self._state is RunnerState.CLOSED:
            return
        self._state = RunnerState.CLOSING
        while self._active:
            tasks = [h._task for h in self._active.values() if h._task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # let done callbacks settle the handles
        self._state = RunnerState.CLOSED

    async def __aenter__(self) -> TaskRunner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- internals --------------------------------------------------------------------

    def _policy(self, policy: str | RetryPolicy) -> RetryPolicy:
        if isinstance(policy, RetryPolicy):
            return policy
        try:
            return self.policies[policy]
        except KeyError:
            raise AppError(
                ErrorCode.INVALID_INPUT,
                f"unknown retry policy {policy!r}",
                f"use one of {sorted(self.policies)} or define it under [tasks.policies]",
            ) from None

    def _set(self, h: TaskHandle[Any], state: TaskState, **changes: Any) -> None:
        prev = h.last
        update = TaskUpdate(
            h.id,
            h.name,
            h.kind,
            state,
            changes.get("attempt", prev.attempt),
            prev.max_attempts,
            self._clock(),
            started_at=changes.get("started_at", prev.started_at),
            next_try_at=changes.get("next_try_at"),
            error_code=changes.get("error_code"),
            message=changes.get("message", ""),
            host=h.host,
            vm_name=h.vm_name,
        )
        h._last = update
        self._publish(update)

    async def _attempt(self, h: TaskHandle[T]) -> T:
        async with self._slots:
            h._attempts += 1
            n = h._attempts
            started = h.last.started_at if h.last.started_at is not None else self._clock()
            self._set(h, TaskState.RUNNING, attempt=n, started_at=started)
            limit = asyncio.timeout(h.attempt_timeout_s)
            try:
                async with limit:
                    return await h._fn()
            except TimeoutError as exc:
                if not limit.expired():
                    raise
                raise AppError(
                    ErrorCode.TIMEOUT,
                    f"{h.name}: attempt {n} of {h.policy.max_attempts} took longer than "
                    f"{h.attempt_timeout_s:g} s",
                    "the host or VM is slow or hung; check it, then try again",
                    Severity.ERROR,
                    {"task": h.id},
                    transient=h.policy.retry_on_timeout,
                    cause=exc,
                ) from exc

    def _should_retry(self, h: TaskHandle[Any], exc: BaseException) -> bool:
        if not isinstance(exc, Exception):
            return False  # CancelledError, KeyboardInterrupt: never retried
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return False  # cancelled, whatever the callee turned the cancellation into
        return h._retry_if(exc)

    def _before_sleep(self, h: TaskHandle[Any], rs: RetryCallState) -> None:
        delay = rs.upcoming_sleep
        exc = rs.outcome.exception() if rs.outcome is not None else None
        err = as_app_error(exc, what=h.name) if exc is not None else None
        self._counts["retries"] += 1
        self._set(
            h,
            TaskState.RETRYING,
            attempt=rs.attempt_number + 1,
            next_try_at=self._clock() + delay,
            error_code=err.code.value if err else None,
            message=err.message if err else "",
        )

    async def _drive(self, h: TaskHandle[T]) -> None:
        pol = h.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(pol.max_attempts),
            wait=lambda rs: pol.delay(rs.attempt_number, self._rng()),
            retry=retry_if_exception(lambda exc: self._should_retry(h, exc)),
            reraise=True,
            sleep=self._sleep,
            before_sleep=lambda rs: self._before_sleep(h, rs),
        )
        try:
            value = cast(T, await retrying(self._attempt, h))
        except asyncio.CancelledError:
            self._finish_cancelled(h)
            raise
        except Exception as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                self._finish_cancelled(h)
                raise asyncio.CancelledError from exc
            await self._finish_failed(h, as_app_error(exc, what=h.name))
        else:
            self._finish(h, TaskState.SUCCEEDED)
            h._outcome.set_result(value)

    def _finish(self, h: TaskHandle[Any], state: TaskState, **changes: Any) -> None:
        self._set(h, state, **changes)
        self._counts[state] += 1
        if self._active.pop(h.id, None) is not None:
            self._history.append(h)

    def _finish_cancelled(self, h: TaskHandle[Any]) -> None:
        if h.done():
            return
        was = h.last.state
        self._finish(h, TaskState.CANCELLED, message=f"cancelled while {was.value}")
        err = AppError(
            ErrorCode.CANCELLED,
            f"{h.name}: cancelled while {was.value}",
            "it was cancelled by request or at shutdown; run it again if still needed",
            Severity.INFO,
            {"task": h.id},
        )
        _set_error(h._outcome, err)

    async def _finish_failed(self, h: TaskHandle[Any], err: AppError) -> None:
        self._finish(h, TaskState.FAILED, error_code=err.code.value, message=err.message)
        _set_error(h._outcome, err)
        if self._reporter is not None:
            self._reporter.report(err, host=h.host, vm=h.vm_name)
        if h._on_error is not None:
            try:
                maybe = h._on_error(err)
                if maybe is not None:
                    await maybe
            except Exception as exc:  # a broken handler must not hide the task's own error
                if self._reporter is not None:
                    self._reporter.report(
                        as_app_error(exc, what=f"error handler of {h.name}"),
                        host=h.host,
                        vm=h.vm_name,
                    )

    def _settle(self, h: TaskHandle[Any], task: asyncio.Task[None]) -> None:
        """Done callback: a task cancelled before its first step never ran `_drive`."""
        if h.done():
            return
        if task.cancelled():
            self._finish_cancelled(h)
            return
        exc = task.exception()
        err = as_app_error(exc or RuntimeError("task ended without an outcome"), what=h.name)
        self._finish(h, TaskState.FAILED, error_code=err.code.value, message=err.message)
        _set_error(h._outcome, err)


def _set_error(fut: asyncio.Future[Any], err: AppError) -> None:
    if fut.done():
        return
    fut.set_exception(err)
    fut.exception()  # mark retrieved: nobody has to await result() for a failed task
