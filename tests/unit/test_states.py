from __future__ import annotations

import pytest

from virtwatch.core.libvirt.states import decode_state
from virtwatch.core.model import DomainState


@pytest.mark.parametrize(
    ("state", "reason", "text"),
    [
        (1, 1, "running: booted"),
        (1, 0, "running"),
        (3, 5, "paused: I/O error"),
        (3, 6, "paused: watchdog"),
        (3, 1, "paused: by admin"),
        (5, 2, "shut off: destroyed by admin"),
        (5, 3, "shut off: crashed"),
        (5, 5, "shut off: saved"),
        (6, 1, "crashed: panicked"),
        (7, 0, "suspended (PM)"),
    ],
)
def test_reasons_in_words(state: int, reason: int, text: str) -> None:
    assert decode_state(state, reason)[1] == text


def test_unknown_reason_stays_visible() -> None:
    st, text = decode_state(3, 99)
    assert st is DomainState.PAUSED
    assert text == "paused: reason 99"


def test_unknown_state_stays_visible() -> None:
    st, text = decode_state(42, 0)
    assert st is DomainState.NOSTATE
    assert "42" in text
