"""The pool's pure parts: backoff, the host-state judgement, settings
parsing, credentials that never print, URIs as opened, dead-connection errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import libvirt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.config import ConfigError
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.libvirt.calls import dead_error_codes, is_dead_error
from virtwatch.core.libvirt.connection import Credentials, effective_uri
from virtwatch.core.libvirt.pool_policy import PoolSettings, backoff_delay, host_state
from virtwatch.core.records import ConnectionState
from virtwatch.core.runtime import HostConfig

# --- backoff ------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=-5, max_value=10_000),
    initial=st.floats(min_value=0.001, max_value=10),
    cap=st.floats(min_value=0.001, max_value=100),
    rand=st.floats(min_value=0.0, max_value=1.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_stays_within_its_cap_and_its_jitter(
    attempt: int, initial: float, cap: float, rand: float, jitter: float
) -> None:
    delay = backoff_delay(attempt, initial_s=initial, max_s=cap, rand=rand, jitter=jitter)
    base = min(cap, initial * 2.0 ** (max(attempt, 1) - 1)) if attempt < 64 else cap
    assert delay <= min(cap, base) + 1e-12
    assert delay >= base * (1 - jitter) - 1e-12
    assert delay >= 0


@given(
    attempt=st.integers(min_value=1, max_value=200),
    rand=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_never_shrinks_from_one_attempt_to_the_next_at_equal_luck(
    attempt: int, rand: float
) -> None:
    kw = {"initial_s": 0.25, "max_s": 4.0, "rand": rand}
    assert backoff_delay(attempt + 1, **kw) >= backoff_delay(attempt, **kw)


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    delays = [backoff_delay(n, initial_s=0.25, max_s=4.0, rand=0.0) for n in range(1, 8)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    # full bad luck halves it (jitter 0.5): never longer than the cap, never zero
    assert backoff_delay(7, initial_s=0.25, max_s=4.0, rand=0.999999) == pytest.approx(2.0, 1e-5)


# --- host state ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("closed", "live", "ever", "outage", "down", "expected"),
    [
        (True, 3, True, False, False, ConnectionState.CLOSED),
        (False, 0, False, False, False, ConnectionState.CONNECTING),
        (False, 2, True, False, False, ConnectionState.CONNECTED),
        (False, 1, True, True, False, ConnectionState.DEGRADED),
        (False, 0, True, False, False, ConnectionState.RECONNECTING),
        (False, 0, True, True, False, ConnectionState.RECONNECTING),
        (False, 0, False, True, False, ConnectionState.RECONNECTING),
        (False, 0, False, True, True, ConnectionState.DOWN),
        (False, 0, True, True, True, ConnectionState.DOWN),
        (False, 1, True, True, True, ConnectionState.DEGRADED),
    ],
)
def test_host_state(
    closed: bool, live: int, ever: bool, outage: bool, down: bool, expected: ConnectionState
) -> None:
    got = host_state(closed=closed, live=live, ever_connected=ever, outage=outage, down=down)
    assert got is expected


# --- settings -----------------------------------------------------------------------


def test_settings_defaults_are_the_seeds() -> None:
    s = PoolSettings.from_mapping({})
    assert s == PoolSettings()
    assert (s.min_size, s.max_size, s.acquire_timeout_s, s.idle_timeout_s) == (2, 10, 30.0, 60.0)


def test_settings_from_toml_keys_without_the_unit_suffix() -> None:
    s = PoolSettings.from_mapping(
        {"min_size": 1, "max_size": 4, "acquire_timeout": 5, "idle_timeout": 2.5}
    )
    assert (s.min_size, s.max_size, s.acquire_timeout_s, s.idle_timeout_s) == (1, 4, 5.0, 2.5)
    assert isinstance(s.acquire_timeout_s, float)


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ({"max_size": "ten"}, "pool.max_size", "must be int"),
        ({"max_size": 0}, "pool.max_size", "at least 1"),
        ({"min_size": -1}, "pool.min_size", "at least 0"),
        ({"min_size": 5, "max_size": 4}, "pool.min_size", "must not exceed pool.max_size (4)"),
        ({"acquire_timeout": 0}, "pool.acquire_timeout", "at least"),
        ({"acquire_timeout": True}, "pool.acquire_timeout", "must be float"),
        # the old spellings still parse; the message names the current key
        ({"reconnect_initial": 9, "reconnect_max": 4}, "pool.reconnect_initial_s", "must not"),
        ({"reconnect_initial_s": 9, "reconnect_max_s": 4}, "pool.reconnect_initial_s", "must not"),
        ({"max_sise": 3}, "pool.max_sise", "unknown key"),
    ],
)
def test_bad_settings_name_the_key(section: dict[str, object], key: str, problem: str) -> None:
    path = Path("/etc/virtwatch.toml")
    with pytest.raises(ConfigError) as info:
        PoolSettings.from_mapping(section, path)
    assert f"'{key}'" in info.value.message
    assert problem in info.value.message
    assert str(path) in info.value.message
    assert info.value.code is ErrorCode.VALIDATION_ERROR


def test_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"pool\.min_size"):
        PoolSettings(min_size=3, max_size=2)


# --- credentials and URIs -----------------------------------------------------------


def test_credentials_never_show_the_password() -> None:
    creds = Credentials("admin", "hunter2")
    host = HostConfig("qemu+libssh2://admin@hv/system", credentials=creds)
    for text in (repr(creds), str(creds), repr(host), f"{creds}", f"{host!r}"):
        assert "hunter2" not in text
    assert "admin" in repr(creds)
    assert creds.reveal() == "hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(creds)


def test_credentials_from_a_file_read_its_first_line(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    assert Credentials.from_file(secret, username="u").reveal() == "s3cret"
    with pytest.raises(AppError, match="cannot read the password file"):
        Credentials.from_file(tmp_path / "missing")


@pytest.mark.parametrize(
    ("uri", "opened"),
    [
        ("qemu:///system", "qemu:///system"),
        ("qemu+ssh://root@hv/system", "qemu+ssh://root@hv/system?no_tty=1"),
        ("qemu+ssh://hv/system?keyfile=/k", "qemu+ssh://hv/system?keyfile=/k&no_tty=1"),
        ("qemu+ssh://hv/system?no_tty=0", "qemu+ssh://hv/system?no_tty=0"),
        ("qemu+tcp://hv/system", "qemu+tcp://hv/system"),
        ("qemu+libssh2://hv/system", "qemu+libssh2://hv/system"),
    ],
)
def test_ssh_never_prompts_on_the_dashboards_terminal(uri: str, opened: str) -> None:
    assert effective_uri(uri) == opened


def test_dead_connection_errors() -> None:
    assert dead_error_codes(libvirt.VIR_ERR_INVALID_CONN, 20)
    assert dead_error_codes(1, libvirt.VIR_FROM_RPC)
    assert not dead_error_codes(libvirt.VIR_ERR_NO_DOMAIN, 10)
    mapped = AppError(ErrorCode.LIBVIRT_CONNECTION_LOST, "x", libvirt_code=1, libvirt_domain=7)
    assert is_dead_error(mapped)
    assert not is_dead_error(AppError(ErrorCode.MACHINE_NOT_FOUND, "x", libvirt_code=42))
    assert not is_dead_error(ValueError("x"))
