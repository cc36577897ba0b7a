"""The error taxonomy (pure) and the de-duplicating reporter (fake clock, real hub)."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from dataclasses import dataclass

import libvirt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.config import ConfigError, config_error
from virtwatch.core.errors import (
    AppError,
    Category,
    ErrorCode,
    Severity,
    as_app_error,
    classify_libvirt,
    is_transient,
    one_line,
)
from virtwatch.core.hub import Hub
from virtwatch.core.incidents import (
    ErrorReport,
    ErrorReporter,
    ReporterSettings,
    ReporterState,
    fingerprint,
    normalise_message,
    reporter_settings,
)

SECRET = "hunter2"
SECRET_URI = f"qemu+tcp://bob:{SECRET}@10.0.0.5/system"

# --- taxonomy ---------------------------------------------------------------------------

SEED_CODES = {
    Category.DOMAIN: {"MACHINE_NOT_FOUND", "MACHINE_OPERATION_FAILED", "LIBVIRT_CONNECTION_FAILED"},
    Category.SYSTEM: {"DATABASE_ERROR", "EXTERNAL_SERVICE_ERROR", "INTERNAL_ERROR"},
    Category.NETWORK: {"NETWORK_FILTER_ERROR", "FIREWALL_ERROR"},
    Category.AUTH: {"UNAUTHORIZED", "FORBIDDEN"},
    Category.RESOURCE: {"RESOURCE_NOT_FOUND", "RESOURCE_CONFLICT", "RESOURCE_EXHAUSTED"},
    Category.VALIDATION: {"VALIDATION_ERROR", "INVALID_INPUT"},
}


def test_every_seed_code_exists_in_its_category() -> None:
    for category, names in SEED_CODES.items():
        for name in names:
            assert ErrorCode[name].category is category


def test_every_code_has_a_category() -> None:
    assert {code.category for code in ErrorCode} == set(Category)


def test_app_error_redacts_credentials_everywhere() -> None:
    err = AppError(
        ErrorCode.LIBVIRT_CONNECTION_FAILED,
        f"cannot connect to {SECRET_URI}",
        f"try `virsh -c {SECRET_URI} list`",
        context={"uri": SECRET_URI},
        cause=ValueError(f"refused {SECRET_URI}"),
    )
    for text in (str(err), err.message, err.hint, err.one_line(), repr(err), err.cause_text):
        assert SECRET not in text
    assert SECRET not in json.dumps(err.as_dict())
    assert "bob:***@10.0.0.5" in err.message
    assert err.context["uri"] == "qemu+tcp://bob:***@10.0.0.5/system"


def test_app_error_is_immutable_but_still_an_exception() -> None:
    err = AppError(ErrorCode.TIMEOUT, "slow", "wait")
    with pytest.raises(AttributeError, match="immutable"):
        err.message = "changed"
    err.add_note("Python sets __notes__ and __traceback__ on exceptions")
    with pytest.raises(AppError) as caught:
        raise err from KeyError("k")
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.message == "slow"


def test_app_error_round_trips_through_pickle() -> None:
    err = AppError(ErrorCode.TIMEOUT, "slow", "wait", Severity.WARNING, {"a": "b"}, True, 68, 0)
    back = pickle.loads(pickle.dumps(err))
    assert (back.code, back.message, back.hint, back.severity) == (
        err.code,
        err.message,
        err.hint,
        err.severity,
    )
    assert (back.context, back.transient, back.libvirt_code) == ({"a": "b"}, True, 68)


@dataclass(eq=False)
class WithRecord(AppError):
    record: str | None = None


def test_a_dataclass_subclass_keeps_its_fields_sealed_and_picklable() -> None:
    err = WithRecord(ErrorCode.MACHINE_OPERATION_FAILED, "not verified", record="audit-1")
    with pytest.raises(AttributeError, match="WithRecord is immutable"):
        err.record = "other"
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, WithRecord)
    assert (back.record, back.message) == ("audit-1", "not verified")


def test_config_error_keeps_working_as_a_subclass() -> None:
    err = config_error("pool.max_size", "must be int")
    assert isinstance(err, ConfigError)
    assert isinstance(err, AppError)
    assert err.code is ErrorCode.VALIDATION_ERROR
    assert "pool.max_size" in err.one_line()


def test_as_dict_is_json_safe_and_complete() -> None:
    err = AppError(ErrorCode.FORBIDDEN, "read only", "reconnect", cause=OSError("x"))
    data = json.loads(json.dumps(err.as_dict()))
    assert data["code"] == "FORBIDDEN"
    assert data["category"] == "auth"
    assert data["severity"] == "error"
    assert data["cause"] == "OSError: x"


# --- libvirt classification (pure; the same cases are produced for real in
# tests/integration/test_error_mapping.py and tests/qemu/test_error_mapping_qemu.py) ----

E = libvirt
C = ErrorCode
# (libvirt code, libvirt domain, message, opening) -> (our code, transient); the numbers
# are those of notes/libvirt.md's table (code 42 = VIR_ERR_NO_DOMAIN, domain 10 = QEMU, ...)
CASES = [
    (42, 10, "Domain not found", None, C.MACHINE_NOT_FOUND, False),
    (55, 10, "domain is already running", None, C.MACHINE_INVALID_STATE, False),
    (55, 20, "domain is not running", None, C.MACHINE_INVALID_STATE, False),
    (1, 12, "Domain 'x' is already running", None, C.MACHINE_INVALID_STATE, False),  # test drv
    (1, 7, "client socket is closed", None, C.LIBVIRT_CONNECTION_LOST, True),
    (38, 7, "Cannot write data: Broken pipe", None, C.LIBVIRT_CONNECTION_LOST, True),
    (38, 7, "Failed to connect socket to '/x'", None, C.LIBVIRT_CONNECTION_FAILED, True),
    (38, 7, "Cannot recv data: EOF", True, C.LIBVIRT_CONNECTION_FAILED, True),
    (6, 20, "invalid connection pointer", None, C.LIBVIRT_CONNECTION_LOST, True),
    (5, 0, "no connection driver available", None, C.LIBVIRT_CONNECTION_FAILED, False),
    (1, 45, "Unable to parse URI ::::", None, C.LIBVIRT_CONNECTION_FAILED, False),
    (45, 12, "authentication failed", None, C.UNAUTHORIZED, False),
    (8, 46, "Missing authentication credentials", None, C.UNAUTHORIZED, False),
    (29, 20, "read only access prevents virDomainSuspend", None, C.FORBIDDEN, False),
    (88, 55, "access denied", None, C.FORBIDDEN, False),
    (68, 0, "cannot acquire state change lock", None, C.TIMEOUT, True),
    (86, 10, "guest agent is not responding", None, C.TIMEOUT, True),
    (38, 10, "cannot open file", None, C.MACHINE_OPERATION_FAILED, False),
    (27, 20, "bad xml", None, C.INVALID_INPUT, False),
    (3, 12, "not supported", None, C.MACHINE_OPERATION_FAILED, False),
    (9, 10, "operation failed", None, C.MACHINE_OPERATION_FAILED, False),
    (28, 10, "domain exists already", None, C.RESOURCE_CONFLICT, False),
    (87, 10, "busy", None, C.RESOURCE_CONFLICT, True),
    (2, 0, "out of memory", None, C.RESOURCE_EXHAUSTED, False),
    (43, 19, "no network", None, C.RESOURCE_NOT_FOUND, False),
    (62, 33, "no filter", None, C.NETWORK_FILTER_ERROR, False),
    (1, 59, "iptables failed", None, C.FIREWALL_ERROR, False),
    (1, 10, "something odd", None, C.MACHINE_OPERATION_FAILED, False),
]  # fmt: skip


def test_case_numbers_are_libvirts() -> None:
    """The table above uses numbers; make sure they are the constants they stand for."""
    assert (E.VIR_ERR_NO_DOMAIN, E.VIR_ERR_OPERATION_INVALID, E.VIR_ERR_INVALID_CONN) == (42, 55, 6)
    assert (E.VIR_ERR_NO_CONNECT, E.VIR_FROM_URI, E.VIR_ERR_AUTH_FAILED) == (5, 45, 45)
    assert (E.VIR_FROM_AUTH, E.VIR_ERR_OPERATION_DENIED, E.VIR_ERR_OPERATION_TIMEOUT) == (
        46,
        29,
        68,
    )
    assert (E.VIR_FROM_RPC, E.VIR_FROM_TEST, E.VIR_FROM_DOMAIN, E.VIR_FROM_QEMU) == (7, 12, 20, 10)


@pytest.mark.parametrize(("code", "domain", "message", "opening", "want", "transient"), CASES)
def test_classify_libvirt(
    code: int, domain: int, message: str, opening: bool | None, want: ErrorCode, transient: bool
) -> None:
    rule = classify_libvirt(code, domain, message, opening=opening)
    assert (rule.code, rule.transient) == (want, transient)
    assert rule.hint


@pytest.mark.parametrize(
    ("message", "code", "hint_part"),
    [
        # ssh's own words, as libvirt 9.0 passes them on (seen in tests/qemu/test_remote_ssh)
        (
            "Cannot recv data: nobody@h: Permission denied (publickey).: Connection reset",
            ErrorCode.UNAUTHORIZED,
            "ssh could not log in",
        ),
        (
            "Cannot recv data: Host key verification failed.: Connection reset by peer",
            ErrorCode.UNAUTHORIZED,
            "known_hosts",
        ),
        (
            "Cannot recv data: ssh: connect to host h port 2223: Connection refused",
            ErrorCode.LIBVIRT_CONNECTION_FAILED,
            "the ssh transport failed",
        ),
    ],
)
def test_ssh_transport_failures_while_opening_say_what_ssh_needs(
    message: str, code: ErrorCode, hint_part: str
) -> None:
    rule = classify_libvirt(
        libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, message, opening=True, ssh=True
    )
    assert rule.code is code
    assert hint_part in rule.hint
    assert rule.transient is (code is ErrorCode.LIBVIRT_CONNECTION_FAILED)


def test_one_line_folds_the_line_breaks_ssh_passes_on() -> None:
    err = AppError(
        ErrorCode.LIBVIRT_CONNECTION_FAILED,
        "cannot connect: Warning: Identity file x not accessible.\r\n  ssh: Could not resolve",
        "check it\n",
    )
    assert err.one_line() == (
        "cannot connect: Warning: Identity file x not accessible. ssh: Could not resolve — check it"
    )
    assert one_line("a  b") == "a  b"  # only line breaks fold


def test_a_tls_setup_failure_is_not_retried() -> None:
    rule = classify_libvirt(
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_FROM_RPC,
        "Cannot read CA certificate '/etc/pki/CA/cacert.pem': No such file or directory",
        opening=True,
    )
    assert rule.code is ErrorCode.LIBVIRT_CONNECTION_FAILED
    assert not rule.transient
    assert "TLS" in rule.hint


@pytest.mark.parametrize(
    "message",
    [
        "unable to connect to server at 'hv-tls-01:16514': Connection refused",
        "unable to connect to server at 'tls.lab.example:16514': No route to host",
        "GnuTLS handshake failed: The TLS connection was non-properly terminated.",
        "Unable to read TLS confirmation: Input/output error",
    ],
)
def test_an_outage_of_a_tls_host_is_still_transient(message: str) -> None:
    rule = classify_libvirt(
        libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, message, opening=True
    )
    assert rule.code is ErrorCode.LIBVIRT_CONNECTION_FAILED
    assert rule.transient
    assert "TLS could not be set up" not in rule.hint


def test_a_copied_or_unpickled_error_still_masks_what_its_uri_carried() -> None:
    uri = "qemu+ssh://u@h/system?keyfile=/root/.ssh/secret_key"
    cause = RuntimeError("Warning: Identity file /root/.ssh/secret_key not accessible")
    err = AppError(ErrorCode.LIBVIRT_CONNECTION_FAILED, "x", "y", context={"uri": uri}, cause=cause)
    assert "secret_key" not in err.cause_text
    for again in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert again.cause_text == err.cause_text
        assert again.context == err.context


def test_a_short_password_does_not_mask_letters_all_over_the_message() -> None:
    uri = "qemu+tcp://u:o@h/system"
    err = AppError(
        ErrorCode.LIBVIRT_CONNECTION_FAILED,
        f"cannot connect to {uri}",
        "",
        context={"uri": uri},
        cause=RuntimeError("Connection refused"),
    )
    assert err.cause_text == "RuntimeError: Connection refused"
    assert err.message == "cannot connect to qemu+tcp://u:***@h/system"


def test_a_connection_lost_later_is_not_a_login_problem() -> None:
    rule = classify_libvirt(
        libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv data", opening=False
    )
    assert rule.code is ErrorCode.LIBVIRT_CONNECTION_LOST
    assert rule.transient


def test_invalid_state_hints_say_which_state() -> None:
    invalid = E.VIR_ERR_OPERATION_INVALID
    assert "already running" in classify_libvirt(invalid, 10, "domain is already running").hint
    assert "start it first" in classify_libvirt(invalid, 20, "domain is not running").hint
    assert "not paused" in classify_libvirt(1, E.VIR_FROM_TEST, "domain 'x' not paused").hint


@given(code=st.integers(-5, 200), domain=st.integers(-5, 120), message=st.text(max_size=80))
def test_classify_is_total(code: int, domain: int, message: str) -> None:
    rule = classify_libvirt(code, domain, message)
    assert isinstance(rule.code, ErrorCode)
    assert rule.hint
    if rule.transient:
        assert rule.code in {
            ErrorCode.TIMEOUT,
            ErrorCode.LIBVIRT_CONNECTION_LOST,
            ErrorCode.LIBVIRT_CONNECTION_FAILED,
            ErrorCode.RESOURCE_CONFLICT,
        }


def test_is_transient_never_for_cancellation() -> None:
    assert not is_transient(asyncio.CancelledError())
    assert not is_transient(KeyboardInterrupt())
    assert is_transient(AppError(ErrorCode.TIMEOUT, "t", transient=True))
    assert not is_transient(AppError(ErrorCode.TIMEOUT, "t", transient=False))
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionResetError())
    assert not is_transient(ValueError("bug"))


def test_as_app_error_wraps_anything() -> None:
    same = AppError(ErrorCode.FORBIDDEN, "no")
    assert as_app_error(same) is same
    t = as_app_error(TimeoutError(), what="probe")
    assert (t.code, t.transient, t.message) == (ErrorCode.TIMEOUT, True, "probe: timed out")
    bug = as_app_error(ValueError(f"bad {SECRET_URI}"), what="parse", vm="web-01")
    assert bug.code is ErrorCode.INTERNAL_ERROR
    assert not bug.transient
    assert isinstance(bug.cause, ValueError)
    assert SECRET not in bug.message
    assert bug.context == {"vm": "web-01"}


# --- fingerprints ------------------------------------------------------------------------


def test_normalise_masks_numbers_and_addresses_but_not_quoted_names() -> None:
    assert normalise_message("took 24.3 s, pid 1234") == "took # s, pid #"
    assert normalise_message("peer 10.1.2.3:16509 reset") == "peer <ip> reset"
    assert normalise_message("mac 52:54:00:ab:cd:ef gone") == "mac <addr> gone"
    assert normalise_message("ptr 0x7f3a12 leaked") == "ptr <hex> leaked"
    uid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert normalise_message(f"domain {uid} busy") == "domain <uuid> busy"
    assert normalise_message("no domain with matching name 'web-01'") == (
        "no domain with matching name 'web-01'"
    )
    assert normalise_message("vm-0001 and eth0 keep their digits") == (
        "vm-0001 and eth0 keep their digits"
    )


@given(st.text(max_size=120))
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise_message(text)
    assert normalise_message(once) == once


@given(a=st.integers(0, 10**9), b=st.integers(0, 10**9))
def test_numbers_do_not_split_incidents(a: int, b: int) -> None:
    ea = AppError(ErrorCode.TIMEOUT, f"waited {a} ms for job {b}")
    eb = AppError(ErrorCode.TIMEOUT, f"waited {b} ms for job {a}")
    assert fingerprint(ea, "hv1", "web") == fingerprint(eb, "hv1", "web")


def test_fingerprint_tells_code_host_and_vm_apart() -> None:
    err = AppError(ErrorCode.MACHINE_NOT_FOUND, "Domain not found")
    base = fingerprint(err, "hv1", "web-01")
    assert base != fingerprint(err, "hv1", "web-02")
    assert base != fingerprint(err, "hv2", "web-01")
    assert base != fingerprint(AppError(ErrorCode.TIMEOUT, "Domain not found"), "hv1", "web-01")
    assert len(base) == 16


def test_report_without_a_reporter_has_an_incident_key() -> None:
    err = AppError(ErrorCode.TIMEOUT, "slow")
    rep = ErrorReport(err, "hv1", None, 100.0)
    assert rep.incident_key == (fingerprint(err, "hv1", None), 100.0)
    assert rep.started_at == 100.0
    assert not rep.closed


# --- the reporter ----------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_reporter(**kw: float) -> tuple[ErrorReporter, list[ErrorReport], FakeClock]:
    clock = FakeClock()
    out: list[ErrorReport] = []

    def publish(item: object) -> None:
        assert isinstance(item, ErrorReport)
        out.append(item)

    window = kw.pop("window_s", 60.0)
    return ErrorReporter(publish, window_s=window, clock=clock, **kw), out, clock  # type: ignore[arg-type]


def lost(n: int = 0) -> AppError:
    return AppError(
        ErrorCode.LIBVIRT_CONNECTION_LOST,
        f"collecting stats: Cannot recv data: reset after {n} ms",
        "it reconnects",
        Severity.CRITICAL,
        transient=True,
    )


def test_flood_at_one_instant_is_one_publish_then_a_final_count() -> None:
    rep, out, clock = make_reporter()
    for i in range(1000):
        rep.report(lost(i), host="hv1")
    assert len(out) == 1
    assert out[0].count == 1
    assert rep.incidents()[0].count == 1000
    clock.now += 61
    rep.tick()
    assert len(out) == 2
    final = out[-1]
    assert (final.count, final.closed, final.first_at) == (1000, True, 1_000.0)
    assert final.incident_key == out[0].incident_key
    assert rep.stats().open_incidents == 0


def test_flood_over_time_publishes_at_most_one_update_per_interval() -> None:
    rep, out, clock = make_reporter(update_interval_s=1.0)
    for i in range(1000):  # one every 0.1 s for 100 s; the ticker runs every second
        rep.report(lost(i), host="hv1")
        clock.now += 0.1
        if i % 10 == 9:
            rep.tick()
    clock.now += 61
    rep.tick()
    duration = 1000 * 0.1
    assert len(out) <= 1 + duration / 1.0 + 1
    assert out[-1].count == 1000
    assert out[-1].closed
    assert sum(r.closed for r in out) == 1
    assert len({r.incident_key for r in out}) == 1
    counts = [r.count for r in out]
    assert counts == sorted(counts)


def test_tick_publishes_the_count_when_the_flood_stops() -> None:
    rep, out, clock = make_reporter(update_interval_s=1.0)
    for _ in range(5):
        rep.report(lost(), host="hv1")
        clock.now += 0.1
    assert [r.count for r in out] == [1]
    clock.now += 1.0
    assert rep.tick() == 1
    assert [r.count for r in out] == [1, 5]
    assert rep.tick() == 0  # nothing new


def test_different_vms_are_different_incidents() -> None:
    rep, out, _ = make_reporter()
    gone = AppError(ErrorCode.MACHINE_NOT_FOUND, "Domain not found")
    for vm in ("web-01", "web-02", "web-01", "db-01"):
        rep.report(gone, host="hv1", vm=vm)
    assert len({r.fingerprint for r in out}) == 3
    by_vm = {r.vm: r.count for r in rep.incidents()}
    assert by_vm == {"web-01": 2, "web-02": 1, "db-01": 1}


def test_a_gap_longer_than_the_window_starts_a_new_incident() -> None:
    rep, out, clock = make_reporter(window_s=60.0)
    rep.report(lost(), host="hv1")
    clock.now += 120  # no tick ran meanwhile: report() closes the old incident itself
    rep.report(lost(), host="hv1")
    assert [(r.count, r.closed, r.first_at) for r in out] == [
        (1, False, 1_000.0),
        (1, True, 1_000.0),
        (1, False, 1_120.0),
    ]
    assert rep.stats().incidents == 2


def test_memory_is_bounded_by_evicting_the_least_recently_seen() -> None:
    rep, out, clock = make_reporter(max_incidents=10)
    for i in range(25):
        rep.report(AppError(ErrorCode.MACHINE_NOT_FOUND, "gone"), host="hv1", vm=f"vm{i}")
        clock.now += 0.01
    stats = rep.stats()
    assert (stats.open_incidents, stats.evicted, stats.incidents) == (10, 15, 25)
    assert [r.vm for r in out if r.closed] == [f"vm{i}" for i in range(15)]
    assert {r.vm for r in rep.incidents()} == {f"vm{i}" for i in range(15, 25)}


def test_non_app_errors_are_wrapped() -> None:
    rep, out, _ = make_reporter()
    rep.report(ValueError("oops"), host="hv1")
    assert out[0].error.code is ErrorCode.INTERNAL_ERROR
    assert "ValueError: oops" in out[0].error.message


async def test_aclose_publishes_finals_and_later_reports_go_out_at_once() -> None:
    rep, out, _ = make_reporter()
    await rep.start()
    assert rep.state.value == "open"
    rep.report(lost(), host="hv1")
    rep.report(lost(), host="hv1")
    await rep.aclose()
    assert rep.state is ReporterState.CLOSED
    assert [(r.count, r.closed) for r in out] == [(1, False), (2, True)]
    rep.report(lost(), host="hv2")
    rep.report(lost(), host="hv2")
    assert [(r.count, r.closed) for r in out[2:]] == [(1, True), (2, True)]
    await rep.aclose()  # idempotent


async def test_the_ticker_delivers_updates_on_a_real_hub() -> None:
    hub = Hub()
    sub = hub.subscribe(ErrorReport)
    async with ErrorReporter(hub.publish, update_interval_s=0.01, window_s=0.05) as rep:
        for _ in range(3):
            rep.report(lost(), host="hv1")
        first = await asyncio.wait_for(sub.get(), 5)
        assert first.count == 1
        final = await asyncio.wait_for(sub.get(), 5)
        while not final.closed:  # an update may come before the window closes
            final = await asyncio.wait_for(sub.get(), 5)
    assert final.count == 3
    assert rep.stats().published >= 2


def test_reporter_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="window_s"):
        ErrorReporter(lambda _: None, window_s=0)


def test_reporter_settings_from_config() -> None:
    assert reporter_settings({}) == ReporterSettings()
    s = reporter_settings({"window_s": 60, "update_interval_s": 2.5, "max_incidents": 50})
    assert (s.window_s, s.update_interval_s, s.max_incidents) == (60.0, 2.5, 50)
    with pytest.raises(ConfigError, match=r"'errors\.window'"):
        reporter_settings({"window": 60})
    with pytest.raises(ConfigError, match=r"'errors\.max_incidents'"):
        reporter_settings({"max_incidents": 0})
