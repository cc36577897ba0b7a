"""libvirt event codes in words: every code the installed binding knows has words, and
unknown codes stay visible as numbers instead of raising."""

from __future__ import annotations

import libvirt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.libvirt.events import (
    REBOOT_SUMMARY,
    decode_agent,
    decode_device,
    decode_io_error,
    decode_io_error_reason,
    decode_lifecycle,
    decode_metadata,
    decode_watchdog,
    lifecycle_detail,
    lifecycle_kind_name,
)

LIFECYCLE_TYPES = (
    "DEFINED",
    "UNDEFINED",
    "STARTED",
    "SUSPENDED",
    "RESUMED",
    "STOPPED",
    "SHUTDOWN",
    "PMSUSPENDED",
    "CRASHED",
)


def constants(prefix: str) -> dict[str, int]:
    return {
        name[len(prefix) :]: int(getattr(libvirt, name))
        for name in dir(libvirt)
        if name.startswith(prefix)
    }


def lifecycle_pairs() -> list[tuple[str, str, int, int]]:
    pairs = []
    for kind in LIFECYCLE_TYPES:
        event = int(getattr(libvirt, f"VIR_DOMAIN_EVENT_{kind}"))
        for detail_name, detail in constants(f"VIR_DOMAIN_EVENT_{kind}_").items():
            pairs.append((kind, detail_name, event, detail))
    return pairs


PAIRS = lifecycle_pairs()


def test_the_binding_has_lifecycle_details_to_check() -> None:
    # every lifecycle type of the binding has details, so the test below is not vacuous
    assert {p[0] for p in PAIRS} == set(LIFECYCLE_TYPES)


@pytest.mark.parametrize(("kind", "detail_name", "event", "detail"), PAIRS)
def test_every_lifecycle_detail_of_the_binding_has_words(
    kind: str, detail_name: str, event: int, detail: int
) -> None:
    text = decode_lifecycle(event, detail)
    name, _, words = text.partition(": ")
    assert name == lifecycle_kind_name(event)
    assert name.replace("-", "").upper() == kind
    assert words
    assert "detail" not in words  # the fallback for unknown details


@pytest.mark.parametrize(
    ("event", "detail", "text"),
    [
        (5, 1, "stopped: destroyed"),
        (5, 0, "stopped: shut down"),
        (5, 2, "stopped: crashed"),
        (5, 4, "stopped: saved"),
        (2, 0, "started: booted"),
        (2, 2, "started: restored"),
        (3, 0, "suspended: by admin"),
        (3, 2, "suspended: I/O error"),
        (3, 3, "suspended: watchdog"),
        (4, 0, "resumed: unpaused"),
        (6, 1, "shutdown: requested by the guest"),
        (6, 2, "shutdown: requested by the host"),
        (8, 0, "crashed: panicked"),
        (0, 0, "defined: added"),
        (1, 0, "undefined: removed"),
        (7, 1, "PM-suspended: to disk"),
    ],
)
def test_lifecycle_words(event: int, detail: int, text: str) -> None:
    assert decode_lifecycle(event, detail) == text


def test_unknown_lifecycle_values_stay_visible() -> None:
    assert decode_lifecycle(5, 99) == "stopped: detail 99"
    assert decode_lifecycle(42, 3) == "lifecycle event 42 (detail 3)"
    assert lifecycle_kind_name(42) == "event 42"


@given(st.integers(), st.integers())
def test_lifecycle_decoding_never_raises_and_is_one_line(event: int, detail: int) -> None:
    text = decode_lifecycle(event, detail)
    assert text
    assert "\n" not in text
    if "detail" in text:  # a fallback names the raw number
        assert str(detail) in text
    raw = lifecycle_detail(event, detail)
    assert raw["event"] == str(event)
    assert raw["detail"] == str(detail)


@pytest.mark.parametrize(
    ("name", "action"), sorted(constants("VIR_DOMAIN_EVENT_WATCHDOG_").items())
)
def test_every_watchdog_action_has_words(name: str, action: int) -> None:
    text = decode_watchdog(action)
    assert text.startswith("watchdog fired: ")
    assert f"action {action}" not in text  # the fallback for unknown actions


def test_watchdog_words() -> None:
    assert decode_watchdog(2) == "watchdog fired: guest reset"
    assert decode_watchdog(3) == "watchdog fired: guest powered off"
    assert decode_watchdog(77) == "watchdog fired: action 77"


@pytest.mark.parametrize(
    ("name", "action"), sorted(constants("VIR_DOMAIN_EVENT_IO_ERROR_").items())
)
def test_every_io_error_action_has_words(name: str, action: int) -> None:
    assert f"action {action}" not in decode_io_error(action, "vda", "", None)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (
            (1, "virtio-disk0", "/var/lib/libvirt/images/a.qcow2", "enospc"),
            "I/O error on virtio-disk0 (/var/lib/libvirt/images/a.qcow2): "
            "no space left on device; guest paused",
        ),
        ((2, "vda", "", ""), "I/O error on vda; reported to the guest"),
        ((0, "", "", None), "I/O error on a disk; no action"),
        (
            (1, "sda", "/x", "Input/output error"),
            "I/O error on sda (/x): Input/output error; guest paused",
        ),
        ((9, "vdb", "", "eio"), "I/O error on vdb: input/output error; action 9"),
    ],
)
def test_io_error_words(args: tuple[int, str, str, str | None], text: str) -> None:
    assert decode_io_error(*args) == text


@given(st.text(), st.text(), st.text(), st.integers())
def test_io_error_keeps_untrusted_text_verbatim(
    alias: str, path: str, reason: str, action: int
) -> None:
    text = decode_io_error(action, alias, path, reason)
    assert alias in text
    assert path in text
    assert decode_io_error_reason(reason) in text


def test_agent_words() -> None:
    connected = libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
    gone = libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED
    started = libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_DOMAIN_STARTED
    channel = libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_CHANNEL
    unknown = libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_UNKNOWN
    assert decode_agent(connected, channel) == "guest agent connected (channel event)"
    assert decode_agent(gone, started) == "guest agent disconnected (domain started)"
    assert decode_agent(connected, unknown) == "guest agent connected"
    assert decode_agent(5, 9) == "guest agent state 5 (reason 9)"


@pytest.mark.parametrize(("name", "mtype"), sorted(constants("VIR_DOMAIN_METADATA_").items()))
def test_every_metadata_type_has_words(name: str, mtype: int) -> None:
    text = decode_metadata(mtype, None)
    assert text == f"metadata changed: {name.lower()}"


def test_metadata_element_names_its_namespace() -> None:
    assert decode_metadata(2, "http://example.org/x/1") == (
        "metadata changed: element http://example.org/x/1"
    )
    assert decode_metadata(0, "ignored-for-description") == "metadata changed: description"
    assert decode_metadata(9, None) == "metadata changed: type 9"


def test_device_and_reboot_words() -> None:
    assert decode_device(True, "ua-tab") == "device added: ua-tab"
    assert decode_device(False, "net0") == "device removed: net0"
    assert decode_device(False, "") == "device removed: (no alias)"
    assert REBOOT_SUMMARY == "rebooted (guest reset)"
