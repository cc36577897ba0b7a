"""Who acts: login user (through sudo too) and the SSH client address."""

from __future__ import annotations

import os
import pwd

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.ops.identity import (
    Actor,
    actor_from,
    current_actor,
    describe_user,
    ssh_client_address,
)


@pytest.mark.parametrize(
    ("environ", "address"),
    [
        ({"SSH_CONNECTION": "203.0.113.7 51234 198.51.100.2 22"}, "203.0.113.7"),
        ({"SSH_CLIENT": "203.0.113.7 51234 22"}, "203.0.113.7"),
        ({"SSH_CLIENT": "2001:db8::1 51234 22"}, "2001:db8::1"),
        ({"SSH_CONNECTION": "2001:0db8:0000::0001 1 2001:db8::2 22"}, "2001:db8::1"),
        ({"SSH_CONNECTION": "garbage here", "SSH_CLIENT": "192.0.2.1 1 22"}, "192.0.2.1"),
        ({"SSH_CONNECTION": "not-an-ip 1 2 3"}, None),
        ({"SSH_CLIENT": ""}, None),
        ({}, None),
    ],
)
def test_ssh_client_address(environ: dict[str, str], address: str | None) -> None:
    assert ssh_client_address(environ) == address


@given(st.dictionaries(st.sampled_from(["SSH_CLIENT", "SSH_CONNECTION", "X"]), st.text()))
def test_ssh_client_address_is_an_address_or_none(environ: dict[str, str]) -> None:
    import ipaddress

    found = ssh_client_address(environ)
    if found is not None:
        assert str(ipaddress.ip_address(found)) == found


def test_describe_user() -> None:
    assert describe_user("alice", "alice") == "alice"
    assert describe_user("alice", "root") == "alice as root"
    assert describe_user(None, "root") == "root"
    assert describe_user("", "bob") == "bob"


def test_actor_from_a_login_over_ssh() -> None:
    env = {"SSH_CLIENT": "192.0.2.9 40000 22"}
    assert actor_from(env, login="alice", effective="root") == Actor("alice as root", "192.0.2.9")


def test_actor_without_a_terminal_uses_sudo_user() -> None:
    assert actor_from({"SUDO_USER": "carol"}, login=None, effective="root") == Actor(
        "carol as root", None
    )
    assert actor_from({}, login=None, effective="root") == Actor("root", None)


def test_current_actor_names_this_process() -> None:
    me = current_actor({})
    effective = pwd.getpwuid(os.geteuid()).pw_name
    assert me.user == effective or me.user.endswith(f" as {effective}")
    assert me.client is None
    assert current_actor({"SSH_CLIENT": "192.0.2.3 1 22"}).client == "192.0.2.3"
