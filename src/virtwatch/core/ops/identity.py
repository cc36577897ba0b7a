"""Who is acting, for the audit trail: the login user and, over SSH, the client address.

`actor_from` is pure (environment and names in, `Actor` out); `current_actor()` reads
this process. SSH variables are set by sshd but can be edited by the user: they say
where a session came from, they do not prove it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    user: str  # "alice", or "alice as root" when she acts through sudo/su
    client: str | None  # the SSH client's address, None for a local session


def ssh_client_address(environ: Mapping[str, str]) -> str | None:
    """The client address from SSH_CONNECTION ("ip port ip port") or SSH_CLIENT
    ("ip port port"); None when absent or not an IP address."""
    for var in ("SSH_CONNECTION", "SSH_CLIENT"):
        fields = environ.get(var, "").split()
        if not fields:
            continue
        try:
            return str(ipaddress.ip_address(fields[0]))
        except ValueError:
            continue
    return None


def describe_user(login: str | None, effective: str) -> str:
    """ "alice" when she is herself, "alice as root" through sudo or su."""
    if login and login != effective:
        return f"{login} as {effective}"
    return login or effective


def actor_from(environ: Mapping[str, str], *, login: str | None, effective: str) -> Actor:
    """`login`: who logged in (os.getlogin), `effective`: whose rights the process has.
    Without a terminal, sudo's SUDO_USER names the login user."""
    who = login or environ.get("SUDO_USER") or None
    return Actor(describe_user(who, effective), ssh_client_address(environ))


def _login_name() -> str | None:
    with contextlib.suppress(OSError):  # no controlling terminal (cron, CI, a service)
        return os.getlogin()
    return None


def _effective_name() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return f"uid {uid}"


def current_actor(environ: Mapping[str, str] | None = None) -> Actor:
    """This process's actor; `environ` defaults to os.environ."""
    return actor_from(
        os.environ if environ is None else environ, login=_login_name(), effective=_effective_name()
    )
