"""The pure rules of VM actions: where each may start from, and how its outcome is judged."""

from __future__ import annotations

import itertools

import pytest

from virtwatch.core.errors import ErrorCode
from virtwatch.core.model import DomainState
from virtwatch.core.ops.actions import (
    RULES,
    Action,
    ActionTimeouts,
    Observation,
    judge,
    refusal,
)
from virtwatch.core.records import Outcome

R, B, P, SD, OFF, CR, PM = (
    DomainState.RUNNING,
    DomainState.BLOCKED,
    DomainState.PAUSED,
    DomainState.SHUTDOWN,
    DomainState.SHUTOFF,
    DomainState.CRASHED,
    DomainState.PMSUSPENDED,
)

ALLOWED = {
    Action.START: {OFF},
    Action.SHUTDOWN: {R, B},
    Action.FORCE_OFF: set(DomainState) - {OFF},
    Action.REBOOT: {R, B},
    Action.PAUSE: {R, B},
    Action.RESUME: {P},
}


@pytest.mark.parametrize(("action", "state"), list(itertools.product(Action, DomainState)))
def test_every_action_from_every_state(action: Action, state: DomainState) -> None:
    err = refusal(action, int(state), 0, "web-01")
    if state in ALLOWED[action]:
        assert err is None
        return
    assert err is not None
    assert err.code is ErrorCode.MACHINE_INVALID_STATE
    assert not err.transient  # retrying cannot change the VM's state
    assert "web-01" in err.message
    assert err.hint
    assert err.context["action"] == action.value


@pytest.mark.parametrize(
    ("action", "state", "words"),
    [
        (Action.START, R, "web-01 is already running; nothing to start"),
        (Action.PAUSE, P, "web-01 is already paused; nothing to pause"),
        (Action.RESUME, R, "web-01 is already running; nothing to resume"),
        (Action.SHUTDOWN, OFF, "web-01 is already shut off; nothing to shut down"),
        (Action.FORCE_OFF, OFF, "web-01 is already shut off; nothing to force off"),
    ],
)
def test_already_in_the_target_state(action: Action, state: DomainState, words: str) -> None:
    err = refusal(action, int(state), 0, "web-01")
    assert err is not None
    assert err.message == words
    assert "nothing was done" in err.hint


def test_already_names_the_reason_when_there_is_one() -> None:
    err = refusal(Action.START, int(R), 1, "web-01")
    assert err is not None
    assert err.message == "web-01 is already running (running: booted); nothing to start"


def test_refusals_say_what_to_do_instead() -> None:
    paused_shutdown = refusal(Action.SHUTDOWN, int(P), 5, "db")
    assert paused_shutdown is not None
    assert paused_shutdown.message == "cannot shut down db: it is paused: I/O error"
    assert "force-off db" in paused_shutdown.hint
    off_pause = refusal(Action.PAUSE, int(OFF), 2, "db")
    assert off_pause is not None
    assert "vm start db" in off_pause.hint
    assert "destroyed by admin" in off_pause.message


def test_rules_cover_every_action() -> None:
    assert set(RULES) == set(Action)
    for action, rule in RULES.items():
        assert rule.already <= rule.target
        assert not (rule.allowed & rule.already), action


def test_cli_names_round_trip() -> None:
    assert Action.FORCE_OFF.cli_name == "force-off"
    for action in Action:
        assert Action.from_cli(action.cli_name) is action


def test_labels_and_which_actions_interrupt_the_guest() -> None:
    assert Action.FORCE_OFF.label == "force off"
    assert {a for a in Action if a.destructive} == {
        Action.SHUTDOWN,
        Action.FORCE_OFF,
        Action.REBOOT,
        Action.PAUSE,
    }


def test_timeouts_per_action() -> None:
    t = ActionTimeouts()
    assert t.wait_for(Action.SHUTDOWN) == t.shutdown_s
    short = t.with_wait(Action.SHUTDOWN, 2.5)
    assert short.wait_for(Action.SHUTDOWN) == 2.5
    assert short.wait_for(Action.START) == t.start_s


def obs(state: DomainState | None, reason: int = 0, domain_id: int | None = 7) -> Observation:
    return Observation(None if state is None else int(state), reason, domain_id)


def test_reaching_the_target_is_verified() -> None:
    v = judge(Action.PAUSE, "a", obs(P, 1), waited_s=15, reached=True)
    assert v.outcome is Outcome.VERIFIED
    assert v.message == "a is paused: by admin"


def test_a_transient_vm_that_vanished_after_force_off_is_verified() -> None:
    v = judge(Action.FORCE_OFF, "a", obs(None), waited_s=30, reached=True)
    assert v.outcome is Outcome.VERIFIED
    assert "gone" in v.message


def test_a_guest_still_running_after_acpi_shutdown_ignored_it() -> None:
    v = judge(Action.SHUTDOWN, "a", obs(R, 1), waited_s=5, reached=False)
    assert v.outcome is Outcome.IGNORED
    assert v.message == "a ignored the ACPI shutdown: still running: booted after 5 s"
    assert "force-off a" in v.hint


@pytest.mark.parametrize("state", [P, SD, CR])
def test_a_shutdown_stuck_elsewhere_failed(state: DomainState) -> None:
    v = judge(Action.SHUTDOWN, "a", obs(state), waited_s=5, reached=False)
    assert v.outcome is Outcome.FAILED
    assert "did not become shut off within 5 s" in v.message


@pytest.mark.parametrize("action", [Action.START, Action.PAUSE, Action.RESUME, Action.FORCE_OFF])
def test_other_actions_that_time_out_failed(action: Action) -> None:
    v = judge(action, "a", obs(SD), waited_s=3, reached=False)
    assert v.outcome is Outcome.FAILED


def test_reboot_seen_and_running_is_verified_with_its_domain_id() -> None:
    v = judge(Action.REBOOT, "a", obs(R), waited_s=60, reached=True, rebooted=True, before_id=7)
    assert v.outcome is Outcome.VERIFIED
    assert "domain ID 7 unchanged" in v.message
    moved = judge(
        Action.REBOOT,
        "a",
        obs(R, domain_id=8),
        waited_s=60,
        reached=True,
        rebooted=True,
        before_id=7,
    )
    assert moved.outcome is Outcome.VERIFIED
    assert "new domain ID" in moved.message


def test_reboot_not_seen_while_running_was_ignored() -> None:
    v = judge(Action.REBOOT, "a", obs(R), waited_s=4, reached=False, rebooted=False, before_id=7)
    assert v.outcome is Outcome.IGNORED
    assert "did not reboot within 4 s" in v.message


def test_reboot_on_a_driver_without_reboot_events_is_judged_by_state() -> None:
    v = judge(Action.REBOOT, "a", obs(R), waited_s=4, reached=True, rebooted=None)
    assert v.outcome is Outcome.VERIFIED
    assert "no reboot event" in v.message


@pytest.mark.parametrize("state", [OFF, None, P])
def test_reboot_that_ends_not_running_failed(state: DomainState | None) -> None:
    v = judge(Action.REBOOT, "a", obs(state), waited_s=4, reached=False, rebooted=True)
    assert v.outcome is Outcome.FAILED
