"""State reasons in words: libvirt's (state, reason) pairs decoded for admins.

The tables mirror libvirt's virDomain*Reason enums, which are stable ABI.
"""

from __future__ import annotations

from virtwatch.core.model import DomainState

_REASONS: dict[DomainState, dict[int, str]] = {
    DomainState.NOSTATE: {0: ""},
    DomainState.RUNNING: {
        0: "",
        1: "booted",
        2: "migrated in",
        3: "restored",
        4: "from snapshot",
        5: "unpaused",
        6: "migration cancelled",
        7: "save cancelled",
        8: "woken up",
        9: "crashed",
        10: "post-copy migration",
        11: "post-copy failed",
    },
    DomainState.BLOCKED: {0: ""},
    DomainState.PAUSED: {
        0: "",
        1: "by admin",
        2: "migrating",
        3: "saving",
        4: "dumping",
        5: "I/O error",
        6: "watchdog",
        7: "from snapshot",
        8: "shutting down",
        9: "snapshot",
        10: "crashed",
        11: "starting up",
        12: "post-copy migration",
        13: "post-copy failed",
        14: "API error",
    },
    DomainState.SHUTDOWN: {0: "", 1: "by user"},
    DomainState.SHUTOFF: {
        0: "",
        1: "shut down",
        2: "destroyed by admin",
        3: "crashed",
        4: "migrated",
        5: "saved",
        6: "failed to start",
        7: "from snapshot",
        8: "daemon down",
    },
    DomainState.CRASHED: {0: "", 1: "panicked"},
    DomainState.PMSUSPENDED: {0: ""},
}


def decode_state(state: int, reason: int) -> tuple[DomainState, str]:
    """(state, reason) -> (DomainState, "paused: I/O error"). Unknown values stay visible."""
    try:
        st = DomainState(state)
    except ValueError:
        return DomainState.NOSTATE, f"unknown state {state}"
    words = _REASONS[st].get(reason)
    if words is None:
        return st, f"{st.label}: reason {reason}"
    return st, f"{st.label}: {words}" if words else st.label
