"""Cause hints: for a crash, an I/O error, an action's effect or a spike, what else in
the timeline probably explains it (a disk filling, memory pressure, a spike before)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from virtwatch.core.records import (
    EventKind,
    HealthState,
)
from virtwatch.core.triage.entries import EntryKind, TimelineEntry, ordered
from virtwatch.core.triage.when import clock_time

_BAD = (HealthState.WARN, HealthState.CRIT)

# lifecycle words (core/libvirt/events.py's decoding) -> the actions that produce them
_EFFECTS: tuple[tuple[str, frozenset[str]], ...] = (
    ("destroyed", frozenset({"force_off"})),
    ("shut down", frozenset({"shutdown"})),
    ("shutdown:", frozenset({"shutdown"})),
    ("suspended: by admin", frozenset({"pause"})),
    ("resumed: unpaused", frozenset({"resume"})),
    ("started: booted", frozenset({"start"})),
    ("reboot", frozenset({"reboot"})),
)


ACTION_EFFECT_S = 120.0  # an action's effect arrives within this after it started


CAUSE_LOOKBACK_S = 15 * 60.0  # a spike this recent may explain a crash


ERROR_NEAR_S = 5 * 60.0


@dataclass(frozen=True, slots=True)
class _HealthStep:
    at: float
    check: str
    subject: str
    state: HealthState
    message: str


class _Index:
    """Lookups over one ordered list of entries (plus context) for the hint rules."""

    def __init__(self, entries: Sequence[TimelineEntry], context: Sequence[TimelineEntry]) -> None:
        self.health: dict[str | None, list[_HealthStep]] = {}
        self.by_vm: dict[str, list[TimelineEntry]] = {}
        self.by_host_errors: dict[str | None, list[TimelineEntry]] = {}
        for e in ordered([*context, *entries]):
            if e.kind is EntryKind.HEALTH:
                state = _state_of(e.detail.get("state", ""))
                if state is not None:
                    self.health.setdefault(e.host, []).append(
                        _HealthStep(
                            e.at,
                            e.detail.get("check", ""),
                            e.detail.get("subject", ""),
                            state,
                            e.detail.get("message", ""),
                        )
                    )
            elif e.kind is EntryKind.ERROR:
                self.by_host_errors.setdefault(e.host, []).append(e)
            if e.vm_uuid:
                self.by_vm.setdefault(e.vm_uuid, []).append(e)

    def bad_checks_at(
        self, host: str | None, at: float, wanted: Callable[[str], bool]
    ) -> list[_HealthStep]:
        """Checks on `host` whose latest state at `at` was warn or crit, worst first."""
        latest: dict[tuple[str, str], _HealthStep] = {}
        for step in self.health.get(host, []):
            if step.at > at:
                break
            if wanted(step.check):
                latest[(step.check, step.subject)] = step
        bad = [s for s in latest.values() if s.state in _BAD]
        return sorted(bad, key=lambda s: (-s.state, s.check, s.subject))

    def vm_entries(self, vm_uuid: str, since: float, until: float) -> list[TimelineEntry]:
        rows = self.by_vm.get(vm_uuid, [])
        times = [e.at for e in rows]
        return rows[bisect.bisect_left(times, since) : bisect.bisect_right(times, until)]

    def host_errors(self, host: str | None, since: float, until: float) -> list[TimelineEntry]:
        return [
            e
            for e in self.by_host_errors.get(host, [])
            if e.at <= until and (e.until if e.until is not None else e.at) >= since
        ]


def _state_of(label: str) -> HealthState | None:
    try:
        return HealthState[label.upper()]
    except KeyError:
        return None


def _is_disk(check: str) -> bool:
    return "disk" in check or "filesystem" in check or check.endswith(".fs")


def _is_memory(check: str) -> bool:
    return "mem" in check or "swap" in check or "psi" in check


def _holds(subject: str, paths: Sequence[str]) -> bool:
    mount = subject.rstrip("/") + "/"
    return any(p == subject or p.startswith(mount) for p in paths)


def _words(e: TimelineEntry) -> str:
    return f"{e.title} {e.detail.get('reason', '')}".lower()


def _io_error_hint(e: TimelineEntry, ix: _Index, disks: Mapping[str, Sequence[str]]) -> str:
    if e.kind is not EntryKind.EVENT or not (
        e.detail.get("event_kind") == EventKind.IO_ERROR.value or "i/o error" in _words(e)
    ):
        return ""
    bad = ix.bad_checks_at(e.host, e.at, _is_disk)
    if bad:
        paths = disks.get(e.vm_uuid or "", ())
        holding = [s for s in bad if paths and _holds(s.subject, paths)]
        step = (holding or bad)[0]
        what = "the host disk holding it" if holding else "host disk"
        msg = f": {step.message}" if step.message else ""
        return f"{what} {step.subject} was {step.state.label} at that moment{msg}"
    for err in ix.host_errors(e.host, e.at - ERROR_NEAR_S, e.at + ERROR_NEAR_S):
        text = err.title.lower()
        if "no space" in text or "enospc" in text or err.detail.get("code") == "RESOURCE_EXHAUSTED":
            return f"the host reported '{err.title}' at {clock_time(err.at)}"
    return ""


def _crash_hint(e: TimelineEntry, ix: _Index) -> str:
    words = _words(e)
    if e.kind is not EntryKind.EVENT or not any(
        w in words for w in ("crashed", "panicked", "watchdog")
    ):
        return ""
    parts = []
    bad = ix.bad_checks_at(e.host, e.at, _is_memory)
    if bad:
        step = bad[0]
        msg = f" ({step.message})" if step.message else ""
        parts.append(f"host {step.check} was {step.state.label}{msg}: the OOM killer may have")
        parts[-1] += " ended QEMU" if "crashed" in words else " starved the guest"
    if e.vm_uuid:
        for prior in reversed(ix.vm_entries(e.vm_uuid, e.at - CAUSE_LOOKBACK_S, e.at)):
            if prior.kind is EntryKind.SPIKE and prior.detail.get("phase") == "start":
                parts.append(f"after {prior.title} at {clock_time(prior.at)}")
                break
    return "; ".join(parts)


def _action_hint(e: TimelineEntry, ix: _Index) -> str:
    if e.kind is not EntryKind.EVENT or not e.vm_uuid:
        return ""
    words = _words(e)
    actions = next((acts for w, acts in _EFFECTS if w in words), None)
    if actions is None:
        return ""
    for prior in reversed(ix.vm_entries(e.vm_uuid, e.at - ACTION_EFFECT_S, e.at)):
        if prior.kind is EntryKind.ACTION and prior.detail.get("action") in actions:
            who = prior.detail.get("user", "?")
            if prior.detail.get("client"):
                who += f" from {prior.detail['client']}"
            return f"{prior.detail['action']} by {who} at {clock_time(prior.at)}"
    return ""


def _failed_action_hint(e: TimelineEntry, ix: _Index) -> str:
    if e.kind is not EntryKind.ACTION or e.detail.get("outcome") != "failed" or not e.vm_uuid:
        return ""
    for prior in reversed(ix.vm_entries(e.vm_uuid, float("-inf"), e.at)):
        if prior.kind is EntryKind.EVENT and prior.at < e.at:
            return f"last event before it: {prior.title} at {clock_time(prior.at)}"
    return ""


def _spike_hint(e: TimelineEntry, ix: _Index) -> str:
    if e.kind is not EntryKind.SPIKE or e.detail.get("phase") != "start":
        return ""
    bad = ix.bad_checks_at(e.host, e.until if e.until is not None else e.at, lambda c: True)
    if bad:
        step = bad[0]
        return f"host {step.check} {step.subject} was {step.state.label} at the same time"
    return ""


def add_hints(
    entries: Sequence[TimelineEntry],
    *,
    context: Sequence[TimelineEntry] = (),
    disk_paths: Mapping[str, Sequence[str]] | None = None,
) -> list[TimelineEntry]:
    """Each entry with a hint when the others (or `context`: e.g. the health state before
    the window) show a likely cause at that moment. Entries keep their order."""
    ix = _Index(entries, context)
    disks = disk_paths or {}
    out = []
    for e in entries:
        hint = (
            _io_error_hint(e, ix, disks)
            or _crash_hint(e, ix)
            or _action_hint(e, ix)
            or _failed_action_hint(e, ix)
            or _spike_hint(e, ix)
        )
        out.append(replace(e, hint=hint) if hint and hint != e.hint else e)
    return out
