"""Health: judging, damping, [health] config (overrides, per VM, errors naming the key),
and the monitor's transitions with injected readings."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.config import Config, ConfigError
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.health.checks import CATALOGUE
from virtwatch.core.health.monitor import (
    Check,
    CheckInfo,
    Damper,
    HealthMonitor,
    HealthRegistry,
    HealthSettings,
    Reading,
    Thresholds,
    exit_code,
    health_settings,
    judge,
    worst,
)
from virtwatch.core.hub import Hub
from virtwatch.core.ops.tasks import TaskRunner
from virtwatch.core.records import HealthAlert, HealthResult, HealthState, TaskUpdate

OK, WARN, CRIT, UNKNOWN = HealthState.OK, HealthState.WARN, HealthState.CRIT, HealthState.UNKNOWN
states = st.sampled_from([OK, WARN, CRIT, UNKNOWN])


# --- judging ----------------------------------------------------------------------------


def test_judge_higher_is_worse() -> None:
    t = Thresholds(80, 95)
    assert [judge(v, t) for v in (10, 80, 94.9, 95, 300)] == [OK, WARN, WARN, CRIT, CRIT]
    assert judge(None, t) is UNKNOWN
    assert judge(float("nan"), t) is UNKNOWN


def test_judge_lower_is_worse() -> None:
    t = Thresholds(20, 5, higher_is_worse=False)
    assert [judge(v, t) for v in (50, 20, 6, 5, 0)] == [OK, WARN, WARN, CRIT, CRIT]


def test_a_missing_level_is_never_reached() -> None:
    assert judge(1e9, Thresholds(None, None)) is OK
    assert judge(1e9, Thresholds(None, 10)) is CRIT


@given(a=st.floats(-1e6, 1e6), b=st.floats(-1e6, 1e6), w=st.floats(0, 100), c=st.floats(0, 100))
def test_a_higher_value_is_never_judged_better(a: float, b: float, w: float, c: float) -> None:
    t = Thresholds(min(w, c), max(w, c))
    lo, hi = sorted((a, b))
    rank = [OK, WARN, CRIT].index
    assert rank(judge(lo, t)) <= rank(judge(hi, t))


def test_worst_and_exit_codes() -> None:
    assert worst([OK, UNKNOWN, OK]) is UNKNOWN
    assert worst([UNKNOWN, WARN]) is WARN
    assert worst([]) is OK
    assert exit_code([OK, OK]) == 0
    assert exit_code([OK, WARN]) == 1
    assert exit_code([UNKNOWN]) == 1  # could not be checked: not "fine"
    assert exit_code([WARN, CRIT, OK]) == 2


# --- damping ------------------------------------------------------------------------------


def test_the_first_verdict_is_adopted_and_only_trouble_is_news() -> None:
    assert Damper(3).step(OK) == (OK, None)
    assert Damper(3).step(CRIT) == (CRIT, UNKNOWN)


def test_a_new_state_must_hold_for_n_runs() -> None:
    d = Damper(3)
    d.step(OK)
    assert d.step(WARN) == (OK, None)
    assert d.step(WARN) == (OK, None)
    assert d.step(WARN) == (WARN, OK)
    assert d.step(WARN) == (WARN, None)


def test_flapping_is_damped() -> None:
    d = Damper(2)
    d.step(OK)
    for raw in [WARN, OK, WARN, OK, CRIT, WARN, OK]:
        assert d.step(raw) == (OK, None)


def test_a_streak_must_be_of_one_state() -> None:
    d = Damper(2)
    d.step(OK)
    assert d.step(WARN) == (OK, None)
    assert d.step(CRIT) == (OK, None)  # the streak restarts with CRIT
    assert d.step(CRIT) == (CRIT, OK)


@given(hold=st.integers(1, 5), runs=st.lists(states, min_size=1, max_size=40))
def test_a_damped_change_always_follows_hold_equal_verdicts(
    hold: int, runs: list[HealthState]
) -> None:
    d = Damper(hold)
    d.step(OK)
    history = [OK]
    for i, raw in enumerate(runs):
        state, previous = d.step(raw)
        if previous is not None:
            assert state is raw
            assert previous is not state
            tail = runs[max(0, i - hold + 1) : i + 1]
            assert len(tail) == hold
            assert all(r is raw for r in tail)
        else:
            assert state is history[-1]
        history.append(state)


# --- config -------------------------------------------------------------------------------


def settings_of(data: dict[str, object]) -> HealthSettings:
    return health_settings(Config({"health": data}, Path("/etc/virtwatch/config.toml")), CATALOGUE)


def test_defaults_are_the_catalogues() -> None:
    s = settings_of({})
    assert s.hold == 3
    assert s.thresholds("host.cpu", None) == Thresholds(85.0, 95.0)
    assert s.info("host.disk").interval_s == 60


def test_overrides_per_check_and_per_vm() -> None:
    s = settings_of(
        {
            "hold": 2,
            "checks": {
                "host.cpu": {"warn": 70, "crit": 90.5, "interval": 5, "timeout": 2, "hold": 4},
                "host.swap": {"enabled": False},
            },
            "vms": {"db-primary": {"vm.steal": {"warn": 20}}},
        }
    )
    assert s.hold == 2
    assert s.thresholds("host.cpu", None) == Thresholds(70.0, 90.5)
    assert s.info("host.cpu").interval_s == 5
    assert s.info("host.cpu").timeout_s == 2
    assert s.hold_of("host.cpu") == 4
    assert s.hold_of("host.memory") == 2
    assert "host.swap" in s.disabled
    assert s.thresholds("vm.steal", "db-primary") == Thresholds(20.0, 30.0)
    assert s.thresholds("vm.steal", "web-01") == Thresholds(10.0, 30.0)


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        (
            {"checks": {"host.cpu": {"warn": 99, "crit": 90}}},
            'health.checks."host.cpu".warn',
            "must not be above crit",
        ),
        (
            {"checks": {"host.cpu": {"crit": "high"}}},
            'health.checks."host.cpu".crit',
            "a number",
        ),
        (
            {"checks": {"host.cpu": {"warn": True}}},
            'health.checks."host.cpu".warn',
            "a number",
        ),
        ({"checks": {"host.cpuu": {"warn": 1}}}, 'health.checks."host.cpuu"', "unknown check"),
        (
            {"checks": {"host.cpu": {"warning": 1}}},
            'health.checks."host.cpu".warning',
            "unknown key",
        ),
        (
            {"checks": {"host.cpu": {"interval": 0.5}}},
            'health.checks."host.cpu".interval',
            "at least 1 s",
        ),
        ({"checks": {"host.cpu": {"hold": 0}}}, 'health.checks."host.cpu".hold', "at least 1"),
        (
            {"checks": {"host.cpu": {"enabled": "no"}}},
            'health.checks."host.cpu".enabled',
            "true or false",
        ),
        ({"checks": {"host.cpu": 5}}, 'health.checks."host.cpu"', "must be a table"),
        ({"hold": 1.5}, "health.hold", "whole number"),
        (
            {"vms": {"db": {"host.cpu": {"warn": 1}}}},
            'health.vms."db"."host.cpu"',
            "not a VM-level check",
        ),
        (
            {"vms": {"db": {"vm.steal": {"warn": 50}}}},
            'health.vms."db"."vm.steal".warn',
            "must not be above crit (30)",
        ),
        (
            {"vms": {"db": {"vm.steal": {"interval": 5}}}},
            'health.vms."db"."vm.steal".interval',
            "unknown key",
        ),
        ({"thresholds": {}}, "health.thresholds", "unknown key"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_key(
    data: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_of(data)
    err = caught.value
    assert f"'{key}'" in err.message
    assert words in err.message
    assert "/etc/virtwatch/config.toml" in err.message
    assert err.code is ErrorCode.VALIDATION_ERROR
    assert err.hint


# --- the monitor ----------------------------------------------------------------------------


class Script:
    """A check body that returns the next scripted readings on each run."""

    def __init__(self, *runs: Sequence[Reading]) -> None:
        self.runs = list(runs)
        self.count = 0
        self.ran = asyncio.Event()

    async def __call__(self) -> Sequence[Reading]:
        self.count += 1
        self.ran.set()
        return self.runs.pop(0) if len(self.runs) > 1 else self.runs[0]


INFO = CheckInfo("host.cpu", "%", Thresholds(80.0, 95.0), interval_s=30, timeout_s=5)


def cpu(value: float | None, subject: str = "hv1") -> list[Reading]:
    return [Reading(subject, value, f"cpu {value}")]


def monitor(hub: Hub, *checks: Check, settings: HealthSettings | None = None) -> HealthMonitor:
    return HealthMonitor(HealthRegistry(checks), hub.publish, settings or HealthSettings(3, {}))


async def test_a_transition_is_alerted_only_after_it_holds() -> None:
    hub = Hub()
    results = hub.subscribe(HealthResult)
    alerts = hub.subscribe(HealthAlert)
    body = Script(cpu(50), cpu(90), cpu(91), cpu(97), cpu(97), cpu(97))
    settings = HealthSettings(2, {"host.cpu": INFO})
    check = settings.check("host.cpu", body, host="hv1")
    m = monitor(hub, check, settings=settings)
    seen = [(await m.run_check(check))[0] for _ in range(6)]
    assert [(r.raw_state, r.state) for r in seen] == [
        (OK, OK),
        (WARN, OK),
        (WARN, WARN),
        (CRIT, WARN),
        (CRIT, CRIT),
        (CRIT, CRIT),
    ]
    assert results.pending() == 6
    got = [alerts.get_nowait() for _ in range(alerts.pending())]
    assert [(a.previous, a.current) for a in got if a is not None] == [(OK, WARN), (WARN, CRIT)]
    assert seen[1].message.endswith("(still ok: warn must hold 2 runs)")
    assert (seen[0].warn, seen[0].crit, seen[0].unit, seen[0].host) == (80.0, 95.0, "%", "hv1")
    assert m.latest()[0].state is CRIT


async def test_a_flapping_reading_raises_no_alert() -> None:
    hub = Hub()
    alerts = hub.subscribe(HealthAlert)
    settings = HealthSettings(3, {"host.cpu": INFO})
    body = Script(cpu(10), cpu(90), cpu(10), cpu(99), cpu(10), cpu(90), cpu(90))
    check = settings.check("host.cpu", body, host="hv1")
    m = monitor(hub, check, settings=settings)
    for _ in range(7):
        await m.run_check(check)
    assert alerts.pending() == 0
    assert m.latest()[0].state is OK


async def test_per_vm_thresholds_apply_to_that_vm_only() -> None:
    hub = Hub()
    s = settings_of({"hold": 1, "vms": {"db": {"vm.steal": {"warn": 20, "crit": 40}}}})
    body = Script([Reading("db", 15.0, "x", vm="db"), Reading("web", 15.0, "x", vm="web")])
    check = s.check("vm.steal", body, host="hv1")
    out = {r.subject: r for r in await monitor(hub, check, settings=s).run_check(check)}
    assert out["db"].state is OK
    assert (out["db"].warn, out["db"].crit) == (20.0, 40.0)
    assert out["web"].state is WARN


async def test_a_reading_that_decides_its_state_wins_over_thresholds() -> None:
    hub = Hub()
    settings = HealthSettings(1, {"host.cpu": INFO})
    check = settings.check(
        "host.cpu", Script([Reading("hv1", 1.0, "unreachable", HealthState.CRIT)]), host="hv1"
    )
    (r,) = await monitor(hub, check, settings=settings).run_check(check)
    assert r.state is CRIT


async def test_a_check_that_raises_or_hangs_is_unknown_with_the_reason() -> None:
    hub = Hub()

    async def broken() -> Sequence[Reading]:
        raise AppError(ErrorCode.INTERNAL_ERROR, "probe exploded", "")

    async def hangs() -> Sequence[Reading]:
        await asyncio.Event().wait()
        return []

    info = CheckInfo("host.cpu", "%", Thresholds(80.0, 95.0), timeout_s=0.05)
    settings = HealthSettings(1, {"host.cpu": info})
    m = monitor(hub, settings=settings)
    (a,) = await m.run_check(settings.check("host.cpu", broken, host="hv1"))
    (b,) = await m.run_check(settings.check("host.cpu", hangs, host="hv2"))
    assert (a.state, a.subject) == (UNKNOWN, "hv1")
    assert "probe exploded" in a.message
    assert b.state is UNKNOWN
    assert "did not finish within 0.05 s" in b.message


async def test_through_the_task_runner_each_run_is_a_background_task() -> None:
    hub = Hub()
    tasks = hub.subscribe(TaskUpdate)
    settings = HealthSettings(1, {"host.cpu": INFO})
    check = settings.check("host.cpu", Script(cpu(10)), host="hv1")
    async with TaskRunner(hub.publish) as runner:
        m = HealthMonitor(HealthRegistry([check]), hub.publish, settings, runner=runner)
        (r,) = await m.run_check(check)
    assert r.state is OK
    updates = [tasks.get_nowait() for _ in range(tasks.pending())]
    kinds = {u.kind for u in updates if u is not None}
    assert kinds == {"health.host.cpu"}
    assert [u.state.value for u in updates if u is not None][-1] == "succeeded"


async def test_a_hung_check_through_the_runner_times_out_as_unknown() -> None:
    hub = Hub()

    async def hangs() -> Sequence[Reading]:
        await asyncio.Event().wait()
        return []

    info = CheckInfo("host.cpu", "%", Thresholds(80.0, 95.0), timeout_s=0.05)
    settings = HealthSettings(1, {"host.cpu": info})
    async with TaskRunner(hub.publish) as runner:
        m = HealthMonitor(HealthRegistry(), hub.publish, settings, runner=runner)
        (r,) = await m.run_check(settings.check("host.cpu", hangs, host="hv1"))
    assert r.state is UNKNOWN
    assert "did not finish within 0.05 s" in r.message


async def test_vanished_subjects_are_forgotten() -> None:
    hub = Hub()
    settings = HealthSettings(1, {"host.cpu": INFO})
    body = Script(cpu(10, "a") + cpu(10, "b"), cpu(10, "a"))
    check = settings.check("host.cpu", body, host="hv1")
    m = monitor(hub, check, settings=settings)
    await m.run_check(check)
    await m.run_check(check)
    assert [r.subject for r in m.latest()] == ["a"]


async def test_each_check_runs_on_its_own_interval_until_closed() -> None:
    hub = Hub()
    fast_info = CheckInfo("host.cpu", "%", Thresholds(80.0, 95.0), interval_s=0.02)
    slow_info = CheckInfo("host.memory", "%", Thresholds(90.0, 95.0), interval_s=3600)
    settings = HealthSettings(1, {"host.cpu": fast_info, "host.memory": slow_info})
    fast, slow = Script(cpu(1)), Script(cpu(1))
    disabled = Check(slow_info, Script(cpu(1)), "hv2", enabled=False)
    registry = HealthRegistry(
        [settings.check("host.cpu", fast), settings.check("host.memory", slow), disabled]
    )
    async with HealthMonitor(registry, hub.publish, settings) as m:
        async with asyncio.timeout(10):
            while fast.count < 4:
                fast.ran.clear()
                await fast.ran.wait()
    assert slow.count == 1  # ran at start, next run an hour away
    assert m.runs >= 5
    with pytest.raises(AppError, match="opens once"):
        await m.open()


def test_a_check_is_registered_once_per_host() -> None:
    settings = HealthSettings(1, {"host.cpu": INFO})
    body = Script(cpu(1))
    reg = HealthRegistry([settings.check("host.cpu", body, host="a")])
    reg.add(settings.check("host.cpu", body, host="b"))
    with pytest.raises(ValueError, match="registered twice"):
        reg.add(settings.check("host.cpu", body, host="a"))
    assert len(reg) == 2
