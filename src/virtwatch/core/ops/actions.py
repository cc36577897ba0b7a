"""VM actions whose outcome is verified, each leaving one `AuditRecord` on the hub.

`perform()` looks the VM up and checks its state first (a missing VM, or one already
in the target state, fails fast with a non-transient AppError), acts, then watches the
VM until it reaches the expected state or the action's timeout passes. The rules and
the verdict are pure functions; `perform` is the thin async shell around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import libvirt

from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt, is_transient
from virtwatch.core.libvirt.calls import Borrowed
from virtwatch.core.libvirt.connection import ConnectionSource
from virtwatch.core.libvirt.eventloop import LibvirtEventThread
from virtwatch.core.libvirt.states import decode_state
from virtwatch.core.model import DomainState
from virtwatch.core.ops.identity import Actor, current_actor
from virtwatch.core.ops.tasks import TaskHandle, TaskRunner
from virtwatch.core.records import AuditRecord, Outcome


class Action(enum.StrEnum):
    """The lifecycle actions, named as the audit log names them."""

    START = "start"
    SHUTDOWN = "shutdown"  # ACPI power button: the guest decides
    FORCE_OFF = "force_off"  # virDomainDestroy: pulls the plug
    REBOOT = "reboot"  # graceful: the guest decides
    PAUSE = "pause"
    RESUME = "resume"

    @property
    def cli_name(self) -> str:
        return self.value.replace("_", "-")

    @classmethod
    def from_cli(cls, name: str) -> Action:
        return cls(name.replace("-", "_"))

    @property
    def label(self) -> str:
        """The name in prose: "force off"."""
        return self.value.replace("_", " ")

    @property
    def destructive(self) -> bool:
        """Interrupts what the guest is doing: a UI asks for a confirmation first."""
        return self in (Action.SHUTDOWN, Action.FORCE_OFF, Action.REBOOT, Action.PAUSE)


@dataclass(frozen=True, slots=True)
class ActionTimeouts:
    """How long each action may take to show its outcome, and how often we look."""

    start_s: float = 30.0
    shutdown_s: float = 60.0  # a loaded guest may take a while to stop its services
    force_off_s: float = 30.0
    reboot_s: float = 60.0
    pause_s: float = 15.0
    resume_s: float = 15.0
    poll_s: float = 0.2

    def wait_for(self, action: Action) -> float:
        value: float = getattr(self, f"{action.value}_s")
        return value

    def with_wait(self, action: Action, seconds: float) -> ActionTimeouts:
        return dataclasses.replace(self, **{f"{action.value}_s": seconds})


DEFAULT_TIMEOUTS = ActionTimeouts()
ACTION_POLICY = "action"  # TaskRunner policy: retries only transient errors, not timeouts
ATTEMPT_MARGIN_S = 30.0  # on top of the action's own wait: lookup, the call, the audit
CALL_MARGIN_S = 10.0  # a call's deadline: the action's wait plus this (then: no answer)

_RUNNING = frozenset({DomainState.RUNNING, DomainState.BLOCKED})
_SHUTOFF = frozenset({DomainState.SHUTOFF})
_PAUSED = frozenset({DomainState.PAUSED})
_ACTIVE = frozenset(DomainState) - _SHUTOFF


@dataclass(frozen=True, slots=True)
class Rule:
    """Where an action may start from, where it must end, and how to say so."""

    allowed: frozenset[DomainState]
    target: frozenset[DomainState]
    verb: str  # "start", "shut down"
    target_words: str  # "running", "shut off"
    already: frozenset[DomainState] = field(default_factory=frozenset)


RULES: dict[Action, Rule] = {
    Action.START: Rule(_SHUTOFF, _RUNNING, "start", "running", _RUNNING),
    Action.SHUTDOWN: Rule(_RUNNING, _SHUTOFF, "shut down", "shut off", _SHUTOFF),
    Action.FORCE_OFF: Rule(_ACTIVE, _SHUTOFF, "force off", "shut off", _SHUTOFF),
    Action.REBOOT: Rule(_RUNNING, _RUNNING, "reboot", "running"),
    Action.PAUSE: Rule(_RUNNING, _PAUSED, "pause", "paused", _PAUSED),
    Action.RESUME: Rule(_PAUSED, _RUNNING, "resume", "running", _RUNNING),
}


def _refusal_hint(action: Action, state: DomainState, name: str) -> str:
    if state is DomainState.PAUSED and action in (Action.SHUTDOWN, Action.REBOOT):
        return (
            f"a paused guest cannot react to ACPI: resume it first, or "
            f"`virtwatch vm force-off {name}`"
        )
    if state is DomainState.PAUSED and action is Action.START:
        return f"it is already started: `virtwatch vm resume {name}`"
    if state is DomainState.SHUTOFF:
        return f"start it first: `virtwatch vm start {name}`"
    if state is DomainState.SHUTDOWN:
        return f"wait for it to finish shutting down, or `virtwatch vm force-off {name}`"
    if state is DomainState.PMSUSPENDED:
        return "the guest suspended itself: wake it from the guest, or force it off"
    if state is DomainState.CRASHED:
        return f"force it off first: `virtwatch vm force-off {name}`"
    return f"check its state with `virsh domstate --reason {name}`"


def refusal(action: Action, state: int, reason: int, name: str) -> AppError | None:
    """None when `action` may start from (state, reason); else why not, as an AppError
    (MACHINE_INVALID_STATE, not transient: retrying cannot help)."""
    rule = RULES[action]
    st, text = decode_state(state, reason)
    if st in rule.allowed:
        return None
    ctx = {"vm": name, "state": text, "action": action.value}
    if st in rule.already:
        extra = f" ({text})" if text != rule.target_words else ""
        return AppError(
            ErrorCode.MACHINE_INVALID_STATE,
            f"{name} is already {rule.target_words}{extra}; nothing to {rule.verb}",
            "nothing was done: the VM is already in the requested state",
            Severity.WARNING,
            ctx,
        )
    return AppError(
        ErrorCode.MACHINE_INVALID_STATE,
        f"cannot {rule.verb} {name}: it is {text}",
        _refusal_hint(action, st, name),
        Severity.WARNING,
        ctx,
    )


@dataclass(frozen=True, slots=True)
class Observation:
    """What we last saw of the VM: its (state, reason), or gone (a transient VM that
    stopped no longer exists)."""

    state: int | None
    reason: int = 0
    domain_id: int | None = None

    @property
    def gone(self) -> bool:
        return self.state is None

    def words(self) -> str:
        return (
            "gone (a transient VM stops existing when it stops)"
            if self.state is None
            else (decode_state(self.state, self.reason)[1])
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    message: str
    hint: str = ""


def judge(
    action: Action,
    name: str,
    last: Observation,
    *,
    waited_s: float,
    reached: bool,
    rebooted: bool | None = None,
    before_id: int | None = None,
) -> Verdict:
    """The outcome of an action from what we observed after it. Pure.

    `reached`: the target state was seen before the timeout; for a reboot, `rebooted`
    says whether a reboot was observed (None: this driver cannot report one).
    """
    rule = RULES[action]
    now = last.words()
    if action is Action.REBOOT:
        running = last.state is not None and DomainState(last.state) in _RUNNING
        if rebooted and running:
            same = before_id is not None and last.domain_id == before_id
            how = f"domain ID {before_id} unchanged" if same else "with a new domain ID"
            return Verdict(Outcome.VERIFIED, f"{name} rebooted ({how}); it is {now}")
        if rebooted is None and running:
            return Verdict(
                Outcome.VERIFIED,
                f"{name} is {now} after the reboot (this driver reports no reboot event)",
            )
        if running:
            return Verdict(
                Outcome.IGNORED,
                f"{name} did not reboot within {waited_s:g} s: the guest ignored the request",
                f"the guest may not handle ACPI; `virtwatch vm force-off {name}` then start, "
                "or give it longer with --timeout",
            )
        return Verdict(
            Outcome.FAILED,
            f"{name} is {now} after the reboot request, not running",
            "check the guest's console and the VM's on_reboot setting",
        )
    if reached:
        if last.gone:
            return Verdict(Outcome.VERIFIED, f"{name} is shut off and gone (transient VM)")
        return Verdict(Outcome.VERIFIED, f"{name} is {now}")
    if action is Action.SHUTDOWN and last.state is not None and DomainState(last.state) in _RUNNING:
        return Verdict(
            Outcome.IGNORED,
            f"{name} ignored the ACPI shutdown: still {now} after {waited_s:g} s",
            f"the guest may not handle ACPI or is still busy; `virtwatch vm force-off {name}`, "
            "or give it longer with --timeout",
        )
    return Verdict(
        Outcome.FAILED,
        f"{name} did not become {rule.target_words} within {waited_s:g} s: it is {now}",
        "check the VM with `virsh domstate --reason` and the libvirtd/QEMU logs",
    )


@dataclass(eq=False)
class ActionNotVerified(AppError):
    """The action was accepted but its outcome was not verified (IGNORED or FAILED)."""

    record: AuditRecord | None = None


# --- the async shell --------------------------------------------------------------

_CALLS: dict[Action, Callable[[libvirt.virDomain], object]] = {
    Action.START: lambda d: d.create(),
    Action.SHUTDOWN: lambda d: d.shutdown(),
    Action.FORCE_OFF: lambda d: d.destroy(),
    Action.PAUSE: lambda d: d.suspend(),
    Action.RESUME: lambda d: d.resume(),
}


_UNSUPPORTED = frozenset(
    {
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        libvirt.VIR_ERR_INVALID_ARG,
    }
)


def _observe(conn: libvirt.virConnect, uuid: str) -> Observation:
    """Blocking, inside a call: the VM's state now; Observation(None) once it is gone."""
    try:
        dom = conn.lookupByUUIDString(uuid)
        state, reason = dom.state()
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return Observation(None)
        raise
    raw_id = dom.ID()
    return Observation(int(state), int(reason), raw_id if raw_id >= 0 else None)


def _identify(conn: libvirt.virConnect, name: str) -> tuple[str, int, int]:
    """Blocking, inside a call: (uuid, state, reason) of the VM called `name`."""
    dom = conn.lookupByName(name)
    state, reason = dom.state()
    return dom.UUIDString(), int(state), int(reason)


@dataclass(slots=True)
class _Attempt:
    vm_uuid: str = ""


async def _wait_until(
    b: Borrowed,
    uuid: str,
    done: Callable[[Observation], bool],
    wait_s: float,
    poll_s: float,
) -> tuple[Observation, bool]:
    """Poll the VM's state until `done` or the deadline; (last seen, done)."""
    deadline = time.monotonic() + wait_s
    while True:
        remaining = max(deadline - time.monotonic(), 0.0)
        last = await b.call(
            lambda conn: _observe(conn, uuid),
            timeout_s=remaining + CALL_MARGIN_S,
            what="reading the VM's state",
        )
        if done(last):
            return last, True
        if time.monotonic() >= deadline:
            return last, False
        await asyncio.sleep(poll_s)


async def _reboot(b: Borrowed, uuid: str, name: str, timeouts: ActionTimeouts) -> Verdict:
    """Ask for a graceful reboot; verified by libvirt's reboot event for this VM and the
    VM running afterwards. The test driver reboots at once and emits no such event."""
    wait_s = timeouts.wait_for(Action.REBOOT)
    limit = wait_s + CALL_MARGIN_S
    test_driver = (await b.call(lambda c: c.getType(), timeout_s=limit)).upper() == "TEST"
    before = await b.call(lambda c: _observe(c, uuid), timeout_s=limit)
    seen = threading.Event()
    cid: int | None = None
    observable = not test_driver

    def register(conn: libvirt.virConnect) -> int:
        dom = conn.lookupByUUIDString(uuid)
        reboot = libvirt.VIR_DOMAIN_EVENT_ID_REBOOT
        return int(conn.domainEventRegisterAny(dom, reboot, lambda *_args: seen.set(), None))

    if observable:
        try:
            cid = await b.call(register, timeout_s=limit, what="watching for the reboot")
        except libvirt.libvirtError as err:
            if err.get_error_code() not in _UNSUPPORTED:
                raise
            observable = False  # a driver without events: judged by its state alone
    try:
        await b.call(
            lambda c: c.lookupByUUIDString(uuid).reboot(0), timeout_s=limit, what=f"reboot {name}"
        )

        def done(obs: Observation) -> bool:
            running = obs.state is not None and DomainState(obs.state) in _RUNNING
            return running and (not observable or seen.is_set())

        last, reached = await _wait_until(b, uuid, done, wait_s, timeouts.poll_s)
    finally:
        if cid is not None:
            registered = cid
            with contextlib.suppress(libvirt.libvirtError, AppError):
                await b.call(
                    lambda c: c.domainEventDeregisterAny(registered),
                    timeout_s=CALL_MARGIN_S,
                    what="deregistering the reboot watch",
                )
    return judge(
        Action.REBOOT,
        name,
        last,
        waited_s=wait_s,
        reached=reached,
        rebooted=seen.is_set() if observable else None,
        before_id=before.domain_id,
    )


async def _act(
    b: Borrowed,
    action: Action,
    name: str,
    timeouts: ActionTimeouts,
    attempt: _Attempt,
) -> Verdict:
    wait_s = timeouts.wait_for(action)
    limit = wait_s + CALL_MARGIN_S
    uuid, state, reason = await b.call(
        lambda c: _identify(c, name), timeout_s=limit, what=f"looking up {name}"
    )
    attempt.vm_uuid = uuid
    refused = refusal(action, state, reason, name)
    if refused is not None:
        raise refused
    if action is Action.REBOOT:
        return await _reboot(b, uuid, name, timeouts)
    act = _CALLS[action]
    await b.call(
        lambda c: act(c.lookupByUUIDString(uuid)),
        timeout_s=limit,
        what=f"{RULES[action].verb} {name}",
    )
    target = RULES[action].target

    def done(obs: Observation) -> bool:
        if obs.state is None:  # a transient VM vanishes when it stops
            return target == _SHUTOFF
        return DomainState(obs.state) in target

    last, reached = await _wait_until(b, uuid, done, wait_s, timeouts.poll_s)
    return judge(action, name, last, waited_s=wait_s, reached=reached)


async def perform(
    source: ConnectionSource,
    action: Action,
    vm_name: str,
    *,
    host: str,
    publish: Callable[[object], None],
    actor: Actor | None = None,
    timeouts: ActionTimeouts = DEFAULT_TIMEOUTS,
) -> AuditRecord:
    """Do `action` to `vm_name` and verify it; publish exactly one AuditRecord.

    Returns the VERIFIED record. Raises `ActionNotVerified` (carrying its IGNORED or
    FAILED record) when the VM did not get there in time, or an AppError when libvirt
    refused (MACHINE_NOT_FOUND, MACHINE_INVALID_STATE, FORBIDDEN: not transient) or the
    host is unreachable (transient). Cancellation is recorded as CANCELLED.
    """
    LibvirtEventThread.ensure_running()  # reboot verification listens for an event
    who = actor or current_actor()
    started_at, t0 = time.time(), time.monotonic()
    attempt = _Attempt()

    def record(outcome: Outcome, message: str, code: ErrorCode | None = None) -> AuditRecord:
        rec = AuditRecord(
            host=host,
            vm_uuid=attempt.vm_uuid,
            vm_name=vm_name,
            action=action.value,
            user=who.user,
            client=who.client,
            outcome=outcome,
            started_at=started_at,
            duration_s=time.monotonic() - t0,
            message=message,
            error_code=code.value if code else None,
        )
        publish(rec)
        return rec

    try:
        try:
            async with source.connection() as b:
                verdict = await _act(b, action, vm_name, timeouts, attempt)
        except libvirt.libvirtError as err:
            what = f"{RULES[action].verb} {vm_name}"
            raise from_libvirt(err, uri=source.uri, what=what, vm=vm_name) from err
    except AppError as err:
        record(Outcome.FAILED, err.message, err.code)
        raise
    except asyncio.CancelledError:
        record(Outcome.CANCELLED, "cancelled before the outcome was known")
        raise
    if verdict.outcome is Outcome.VERIFIED:
        return record(verdict.outcome, verdict.message)
    rec = record(verdict.outcome, verdict.message, ErrorCode.MACHINE_OPERATION_FAILED)
    raise ActionNotVerified(
        ErrorCode.MACHINE_OPERATION_FAILED,
        verdict.message,
        verdict.hint,
        Severity.WARNING if verdict.outcome is Outcome.IGNORED else Severity.ERROR,
        {"vm": vm_name, "action": action.value, "outcome": verdict.outcome.value},
        record=rec,
    )


def submit_action(
    runner: TaskRunner,
    source: ConnectionSource,
    action: Action,
    vm_name: str,
    *,
    host: str,
    publish: Callable[[object], None],
    actor: Actor | None = None,
    timeouts: ActionTimeouts = DEFAULT_TIMEOUTS,
) -> TaskHandle[AuditRecord]:
    """Run `perform` as a background task named "shutdown web-01" (kind
    "action.shutdown"). Only transient errors are retried (a lost connection); a refusal
    or an unverified outcome fails the task at once. Every attempt leaves its audit row."""
    who = actor or current_actor()  # the same actor for every attempt
    policy = ACTION_POLICY if ACTION_POLICY in runner.policies else "default"
    return runner.submit(
        f"{action.cli_name} {vm_name}",
        f"action.{action.value}",
        lambda: perform(
            source, action, vm_name, host=host, publish=publish, actor=who, timeouts=timeouts
        ),
        policy=policy,
        attempt_timeout_s=timeouts.wait_for(action) + ATTEMPT_MARGIN_S,
        retry_if=worth_retrying,
        host=host,
        vm_name=vm_name,
    )


def worth_retrying(exc: Exception) -> bool:
    """Transient failures, except libvirtd not answering a call: then whether the action
    happened is unknown, and doing it again could do it twice."""
    if isinstance(exc, AppError) and exc.code is ErrorCode.LIBVIRT_NOT_ANSWERING:
        return False
    return is_transient(exc)
