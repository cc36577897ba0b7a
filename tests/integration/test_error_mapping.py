"""Every libvirt error the test driver can give, produced for real and mapped.

Each case makes libvirt raise (nothing is constructed by hand), then checks the code
and domain libvirt gave (so a libvirt upgrade that changes them is noticed) and what
`from_libvirt` makes of it. The ones only a daemon gives are in
tests/qemu/test_error_mapping_qemu.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import FleetFactory
from virtwatch.core.errors import AppError, ErrorCode, Severity, from_libvirt, is_transient
from virtwatch.core.incidents import ErrorReport, ErrorReporter
from virtwatch.core.ops.tasks import TaskRunner
from virtwatch.core.records import TaskState, TaskUpdate

pytestmark = pytest.mark.libvirt

SECRET = "s3cret-pw"


def produce(fn: Callable[[], Any]) -> libvirt.libvirtError:
    """Run `fn`, which must make libvirt raise; return what it raised."""
    with pytest.raises(libvirt.libvirtError) as caught:
        fn()
    return caught.value


def codes(err: libvirt.libvirtError) -> tuple[int, int]:
    return (err.get_error_code(), err.get_error_domain())


def no_secret(app: AppError) -> None:
    for text in (app.message, app.hint, app.one_line(), repr(app), app.cause_text):
        assert SECRET not in text
    assert all(SECRET not in v for v in app.context.values())


@pytest.fixture
def fleet(make_fleet: FleetFactory) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(make_fleet(3, states=(1, 5, 3)))  # running, shut off, paused
    yield conn
    conn.close()


def test_no_such_domain(fleet: libvirt.virConnect) -> None:
    raw = produce(lambda: fleet.lookupByName("no-such-vm"))
    assert codes(raw) == (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_TEST)
    app = from_libvirt(raw, what="start no-such-vm", vm="no-such-vm")
    assert app.code is ErrorCode.MACHINE_NOT_FOUND
    assert (app.severity, app.transient) == (Severity.WARNING, False)
    assert app.message.startswith("start no-such-vm: Domain not found")
    assert app.context["vm"] == "no-such-vm"
    assert app.cause is raw


def test_destroy_a_shut_off_vm_is_an_invalid_state(fleet: libvirt.virConnect) -> None:
    dom = fleet.lookupByName("vm-0001")
    raw = produce(dom.destroy)
    assert codes(raw) == (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_DOMAIN)
    app = from_libvirt(raw)
    assert (app.code, app.transient) == (ErrorCode.MACHINE_INVALID_STATE, False)
    assert "not running" in app.hint


@pytest.mark.parametrize(
    ("vm", "act", "hint"),
    [
        ("vm-0000", "create", "already running"),  # start a running VM
        ("vm-0000", "resume", "not paused"),  # resume a VM that is not paused
        ("vm-0001", "suspend", "not running"),  # pause a shut-off VM
    ],
)
def test_test_driver_state_conflicts_are_invalid_states(
    fleet: libvirt.virConnect, vm: str, act: str, hint: str
) -> None:
    """libvirt 9's test driver says these with an internal error (QEMU uses code 55)."""
    dom = fleet.lookupByName(vm)
    raw = produce(getattr(dom, act))
    assert codes(raw) == (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_TEST)
    app = from_libvirt(raw)
    assert app.code is ErrorCode.MACHINE_INVALID_STATE
    assert hint in app.hint


@pytest.fixture
def auth_fleet(tmp_path: Path) -> str:
    path = tmp_path / "auth.xml"
    path.write_text(
        f"<node><auth><user password='{SECRET}'>admin</user></auth>"
        "<domain type='test'><name>a</name><memory>1024</memory>"
        "<os><type>hvm</type></os></domain></node>"
    )
    return f"test://{path}"


def _auth(user: str, password: str) -> list[Any]:
    def answer(creds: list[list[Any]], _data: object) -> int:
        for cred in creds:
            if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                cred[4] = user
            elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                cred[4] = password
        return 0

    return [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]


def test_wrong_password(auth_fleet: str) -> None:
    raw = produce(lambda: libvirt.openAuth(auth_fleet, _auth("admin", "wrong"), 0))
    assert codes(raw) == (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_FROM_TEST)
    app = from_libvirt(raw, uri=auth_fleet, opening=True)
    assert (app.code, app.transient) == (ErrorCode.UNAUTHORIZED, False)
    assert "credentials were refused" in app.hint
    no_secret(app)
    conn = libvirt.openAuth(auth_fleet, _auth("admin", SECRET), 0)  # the right one works
    conn.close()


def test_auth_needed_without_a_callback(auth_fleet: str) -> None:
    raw = produce(lambda: libvirt.open(auth_fleet))
    assert codes(raw) == (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_AUTH)
    app = from_libvirt(raw, uri=auth_fleet)
    assert (app.code, app.transient) == (ErrorCode.UNAUTHORIZED, False)
    assert "asks for credentials" in app.hint


def test_unknown_uri_scheme_redacts_the_password() -> None:
    uri = f"bogus:///system?password={SECRET}"
    raw = produce(lambda: libvirt.open(uri))
    assert codes(raw) == (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_FROM_NONE)
    assert SECRET in str(raw)  # libvirt's own text carries it ...
    app = from_libvirt(raw, uri=uri, what="cannot connect")
    assert (app.code, app.transient) == (ErrorCode.LIBVIRT_CONNECTION_FAILED, False)
    assert "scheme" in app.hint
    assert "password=***" in app.message
    no_secret(app)  # ... ours does not


def test_remote_transport_that_cannot_start_is_a_failed_connection() -> None:
    """A host part sends any scheme to the remote driver: here TLS without a CA file,
    which fails on the client before any network traffic (notes: "TLS CA missing")."""
    uri = f"bogus://admin:{SECRET}@hv9.invalid/system"
    raw = produce(lambda: libvirt.open(uri))
    assert codes(raw) == (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC)
    app = from_libvirt(raw, uri=uri)
    # a missing CA file does not appear by retrying: not transient (an action through
    # such a URI fails once, with one audit row, instead of three tries)
    assert (app.code, app.transient) == (ErrorCode.LIBVIRT_CONNECTION_FAILED, False)
    assert "TLS" in app.hint
    assert "spelling" in app.hint
    assert app.context["uri"] == "bogus://admin:***@hv9.invalid/system"
    no_secret(app)


def test_ssh_that_cannot_start_is_one_line_and_hides_the_keyfile() -> None:
    """The real ssh client, failing before any traffic (a name that cannot resolve):
    libvirt passes on ssh's stderr, two lines, one quoting the keyfile= path."""
    keyfile = f"/nonexistent/{SECRET}/id_ed25519"
    uri = f"qemu+ssh://admin@hv9.invalid/system?keyfile={keyfile}&no_tty=1"
    raw = produce(lambda: libvirt.open(uri))
    assert "\n" in str(raw)  # libvirt's own text spans lines ...
    assert keyfile in str(raw)
    app = from_libvirt(raw, uri=uri, opening=True)
    assert "\n" not in app.message  # ... ours is one line
    assert "\n" not in app.one_line()
    assert (app.code, app.transient) == (ErrorCode.LIBVIRT_CONNECTION_FAILED, True)
    assert "ssh" in app.hint
    no_secret(app)


def test_malformed_uri() -> None:
    uri = f"qemu+tcp://admin:{SECRET}@[hv9/system"
    raw = produce(lambda: libvirt.open(uri))
    assert codes(raw) == (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_URI)
    app = from_libvirt(raw, uri=uri)
    assert (app.code, app.transient) == (ErrorCode.LIBVIRT_CONNECTION_FAILED, False)
    assert "malformed" in app.hint
    no_secret(app)


def test_write_on_a_read_only_connection(make_fleet: FleetFactory) -> None:
    ro = libvirt.openReadOnly(make_fleet(2))
    try:
        raw = produce(lambda: ro.lookupByName("vm-0000").suspend())
    finally:
        ro.close()
    assert codes(raw) == (libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_FROM_DOMAIN)
    app = from_libvirt(raw)
    assert (app.code, app.transient) == (ErrorCode.FORBIDDEN, False)
    assert "read-only" in app.hint


def test_use_after_close(make_fleet: FleetFactory) -> None:
    conn = libvirt.open(make_fleet(2))
    conn.close()
    raw = produce(conn.listAllDomains)
    assert codes(raw) == (libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_FROM_DOMAIN)
    app = from_libvirt(raw)
    assert (app.code, app.transient) == (ErrorCode.LIBVIRT_CONNECTION_LOST, True)
    assert app.severity is Severity.CRITICAL


# --- real libvirt errors through the reporter and the task runner ----------------------


async def test_a_flood_of_real_errors_is_one_incident(fleet: libvirt.virConnect) -> None:
    out: list[object] = []
    now = [100.0]
    reporter = ErrorReporter(out.append, window_s=60, clock=lambda: now[0])
    for i in range(200):
        raw = await asyncio.to_thread(produce, lambda: fleet.lookupByName("ghost"))
        reporter.report(from_libvirt(raw, what="collect"), host="hv-test", vm="ghost")
        now[0] += 0.01 * (i % 2)
    now[0] += 61
    reporter.tick()
    reports = [r for r in out if isinstance(r, ErrorReport)]
    assert len(reports) <= 4
    assert reports[-1].count == 200
    assert reports[-1].closed
    assert len({r.incident_key for r in reports}) == 1


async def test_a_missing_vm_is_not_retried(fleet: libvirt.virConnect) -> None:
    """Acting on a missing VM gives one clear failure, not a retry storm."""
    out: list[object] = []
    sleeps: list[float] = []

    async def no_wait(delay: float) -> None:
        sleeps.append(delay)

    async def start_ghost() -> None:
        try:
            await asyncio.to_thread(lambda: fleet.lookupByName("ghost").create())
        except libvirt.libvirtError as err:
            raise from_libvirt(err, what="start ghost", vm="ghost") from err

    async with TaskRunner(out.append, sleep=no_wait) as runner:
        h = runner.submit("start ghost", "action.start", start_ghost, policy="action")
        with pytest.raises(AppError) as caught:
            await h.result()
    assert caught.value.code is ErrorCode.MACHINE_NOT_FOUND
    assert sleeps == []
    states = [u.state for u in out if isinstance(u, TaskUpdate)]
    assert states == [TaskState.PENDING, TaskState.RUNNING, TaskState.FAILED]


async def test_a_dead_connection_is_retried_then_fails(make_fleet: FleetFactory) -> None:
    conn = libvirt.open(make_fleet(2))
    conn.close()
    out: list[object] = []
    sleeps: list[float] = []

    async def no_wait(delay: float) -> None:
        sleeps.append(delay)

    async def poll() -> int:
        try:
            return len(await asyncio.to_thread(conn.listAllDomains))
        except libvirt.libvirtError as err:
            raise from_libvirt(err, what="poll") from err

    async with TaskRunner(out.append, sleep=no_wait) as runner:
        h = runner.submit("poll", "collector.poll", poll)
        with pytest.raises(AppError) as caught:
            await h.result()
    assert caught.value.code is ErrorCode.LIBVIRT_CONNECTION_LOST
    assert is_transient(caught.value)
    assert len(sleeps) == 3
    assert [u.state for u in out if isinstance(u, TaskUpdate)].count(TaskState.RETRYING) == 3
