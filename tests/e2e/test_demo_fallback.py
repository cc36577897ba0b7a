"""Without a hypervisor that answers, `virtwatch` (no --uri) opens the bundled demo host
and says so on screen with the reason; a URI the admin names never falls back."""

from __future__ import annotations

import shlex
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_tmux import BIN, STARTUP_S, tmux
from tests.waiting import wait_until
from virtwatch.cli.compose import choose_host
from virtwatch.core.libvirt.demo import demo_uri

pytestmark = pytest.mark.libvirt


@pytest.fixture
def silent_uri(tmp_path: Path) -> str:
    """A local hypervisor URI whose daemon socket does not exist: nothing answers."""
    return f"qemu:///system?socket={tmp_path / 'no-libvirtd.sock'}"


async def test_an_unanswered_default_uri_gives_the_demo_host_with_the_reason(
    silent_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", silent_uri)
    chosen = await choose_host(None, allow_demo=True, read_only=False)
    assert chosen.uri == demo_uri()
    assert chosen.name == "demo"
    assert chosen.notice is not None
    assert chosen.notice.startswith("DEMO HOST (fictional values)")
    assert "did not answer" in chosen.notice
    assert "no-libvirtd.sock" in chosen.notice  # the reason names what was tried
    assert "Start libvirtd or pass --uri" in chosen.notice


async def test_a_named_uri_or_no_demo_never_falls_back(
    silent_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = await choose_host(silent_uri, allow_demo=True, read_only=False)
    assert (named.uri, named.notice) == (silent_uri, None)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", silent_uri)
    refused = await choose_host(None, allow_demo=False, read_only=False)
    assert (refused.uri, refused.notice) == (silent_uri, None)


async def test_a_default_uri_that_answers_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "test:///default")
    chosen = await choose_host(None, allow_demo=True, read_only=False)
    assert (chosen.uri, chosen.notice) == ("test:///default", None)


@pytest.fixture
def session() -> Iterator[str]:
    assert shutil.which("tmux"), "tmux is installed by `make test`"
    name = f"vw-demo-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        tmux("kill-session", "-t", name, check=False)


def test_the_dashboard_says_it_shows_the_demo_host_and_why(
    silent_uri: str, session: str, tmp_path: Path
) -> None:
    rc = tmp_path / "rc"
    cmd = (
        f"LIBVIRT_DEFAULT_URI={shlex.quote(silent_uri)} {BIN} --db {tmp_path / 'd.db'}; "
        f"echo $? > {rc}"
    )
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", cmd)

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", session)

    wait_until(lambda: "DEMO HOST" in screen(), "the demo notice", timeout_s=STARTUP_S, seen=screen)
    text = "".join(screen().split())  # the notice folds wherever the width puts it
    assert "didnotanswer" in text
    assert "Startlibvirtdorpass--uri" in text
    assert "demo" in text
    wait_until(lambda: "running" in screen(), "the demo fleet's VMs", seen=screen)
    tmux("send-keys", "-t", session, "q")
    wait_until(rc.exists, "virtwatch to exit", seen=screen)
    assert rc.read_text().strip() == "0"


def test_a_named_uri_that_does_not_answer_shows_the_outage_not_the_demo(
    silent_uri: str, session: str, tmp_path: Path
) -> None:
    cmd = f"{BIN} --uri {shlex.quote(silent_uri)} --db {tmp_path / 'd.db'}"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", cmd)

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", session)

    wait_until(
        lambda: "reconnecting" in screen(),
        "the outage on screen",
        timeout_s=STARTUP_S,
        seen=screen,
    )
    # long lines fold wherever the terminal's width puts them: compare without spaces
    text = "".join(screen().split())
    assert text.startswith(silent_uri)  # the host line names that URI
    assert "isunreachable" in text
    assert "DEMOHOST" not in text
    assert "demo" not in text
