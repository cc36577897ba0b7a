"""The real binary in a real terminal (tmux) against the real hypervisor."""

from __future__ import annotations

import atexit
import contextlib
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vms import QEMU_URI, diskless_xml, unique_name
from tests.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.qemu

BIN = str(Path(sys.executable).with_name("virtwatch"))
# bounds, not timings (waiting ends as soon as the screen shows it): the binary starts
# and connects on a host that may be busy with other VMs and libvirt clients; a forced
# off is verified by the app within its own 30 s, then written to the database
STARTUP_S = 2 * WAIT_S
ACTION_S = 2 * WAIT_S


# a tmux server of our own that stays up between tests: on the shared default server, a
# session created just as the previous test's last one was killed raced the server's exit
# ("new-session" exit 1, seen in a fresh-clone run); a developer's sessions are never touched
SOCKET = f"vw-e2e-{uuid.uuid4().hex[:8]}"
_server: list[bool] = []


def tmux(*args: str, check: bool = True) -> str:
    if not _server:
        subprocess.run(
            ["tmux", "-L", SOCKET, "start-server", ";", "set-option", "-g", "exit-empty", "off"],
            capture_output=True,
            check=True,
            timeout=10,
        )
        atexit.register(
            subprocess.run, ["tmux", "-L", SOCKET, "kill-server"], capture_output=True, check=False
        )
        _server.append(True)
    return subprocess.run(
        ["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=check, timeout=10
    ).stdout


@dataclass
class Screen:
    session: str
    rc_file: Path

    def text(self) -> str:
        return tmux("capture-pane", "-p", "-t", self.session)

    def __call__(self) -> str:
        return self.text()

    def alive(self) -> bool:
        out = subprocess.run(
            ["tmux", "-L", SOCKET, "has-session", "-t", self.session], capture_output=True
        )
        return out.returncode == 0


@pytest.fixture
def screen(tmp_path: Path, hypervisor: None) -> Iterator[Screen]:
    assert shutil.which("tmux"), "tmux is installed by `make test`"
    session = f"vw-{uuid.uuid4().hex[:8]}"
    # the session runs only virtwatch: when it exits, the session ends
    rc_file = tmp_path / "rc"
    cmd = f"{BIN} --uri {QEMU_URI} --db {tmp_path / 'e2e.db'} --interval 1; echo $? > {rc_file}"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", cmd)
    try:
        yield Screen(session, rc_file)
    finally:
        tmux("kill-session", "-t", session, check=False)


def test_a_vm_started_with_virsh_appears_and_its_destroy_shows(
    screen: Screen, tmp_path: Path
) -> None:
    # the host line counts VMs once the first snapshot is in (at 120 columns it leaves
    # the libvirt version out)
    wait_until(
        lambda: "Machines" in screen() and re.search(r"VMs \d+/\d+", screen()) is not None,
        "the dashboard with its first snapshot",
        timeout_s=STARTUP_S,
        seen=screen,
    )
    name = unique_name("vwe2e")
    xml = tmp_path / "vm.xml"
    xml.write_text(diskless_xml(name))
    subprocess.run(
        ["virsh", "-c", QEMU_URI, "create", str(xml)], check=True, timeout=60, capture_output=True
    )
    try:
        wait_until(lambda: name in screen(), f"{name} on screen", seen=screen)
        # QEMU passes through "paused: starting up" on its way to running
        wait_until(
            lambda: any(name in ln and "running" in ln for ln in screen().splitlines()),
            f"{name} shown running",
            seen=screen,
        )
    finally:
        subprocess.run(
            ["virsh", "-c", QEMU_URI, "destroy", name],
            check=False,
            timeout=60,
            capture_output=True,
        )
    # a transient VM is gone once destroyed: its row leaves the table
    wait_until(lambda: name not in screen(), f"{name} to leave the screen", seen=screen)
    assert screen.alive()


def test_q_quits_cleanly(screen: Screen) -> None:
    wait_until(lambda: "Machines" in screen(), "the dashboard", timeout_s=STARTUP_S, seen=screen)
    tmux("send-keys", "-t", screen.session, "q")
    wait_until(lambda: not screen.alive(), "virtwatch to exit on q")
    assert screen.rc_file.read_text().strip() == "0"


def test_a_persistent_vm_shows_shut_off_after_destroy(screen: Screen, tmp_path: Path) -> None:
    wait_until(lambda: "Machines" in screen(), "the dashboard", timeout_s=STARTUP_S, seen=screen)
    name = unique_name("vwe2e")
    xml = tmp_path / "vm.xml"
    xml.write_text(diskless_xml(name))

    def virsh(*args: str) -> None:
        subprocess.run(
            ["virsh", "-c", QEMU_URI, *args], check=True, timeout=60, capture_output=True
        )

    virsh("define", str(xml))
    try:
        virsh("start", name)
        wait_until(lambda: name in screen(), f"{name} on screen", seen=screen)
        virsh("destroy", name)
        # at 120 columns a long reason may be cut to fit: 'shut off: destroyed b…'
        destroyed = re.compile(r"shut off: destroy(ed by admin|[a-z ]*…)")
        wait_until(
            lambda: any(name in ln and destroyed.search(ln) for ln in screen().splitlines()),
            f"{name} shown as destroyed",
            seen=screen,
        )
    finally:
        subprocess.run(["virsh", "-c", QEMU_URI, "destroy", name], capture_output=True)
        subprocess.run(["virsh", "-c", QEMU_URI, "undefine", name], capture_output=True)


def test_force_off_from_the_keyboard_stops_the_vm_and_leaves_an_audit_row(
    screen: Screen, tmp_path: Path
) -> None:
    """Filter to a fresh VM, press F, confirm with y: virsh sees it shut off, the row
    says so, and the database holds one verified force_off audit row for it."""
    import sqlite3

    wait_until(lambda: "Machines" in screen(), "the dashboard", timeout_s=STARTUP_S, seen=screen)
    name = unique_name("vwe2e")
    xml = tmp_path / "vm.xml"
    xml.write_text(diskless_xml(name))

    def virsh(*args: str) -> str:
        return subprocess.run(
            ["virsh", "-c", QEMU_URI, *args], check=True, timeout=60, capture_output=True, text=True
        ).stdout

    virsh("define", str(xml))
    try:
        virsh("start", name)
        wait_until(lambda: name in screen(), f"{name} on screen", seen=screen)
        tmux("send-keys", "-t", screen.session, "/")
        # type only once the filter box is open: a VM name typed at the table would be
        # read as keys (d = shutdown, p = pause, ...)
        wait_until(lambda: "filter machines" in screen(), "the filter box", seen=screen)
        tmux("send-keys", "-t", screen.session, "-l", name)
        wait_until(
            lambda: name in screen().split("filter machines", 1)[-1], "the typed name", seen=screen
        )
        tmux("send-keys", "-t", screen.session, "Enter")
        wait_until(lambda: "1 of" in screen(), "the filter to leave one row", seen=screen)
        tmux("send-keys", "-t", screen.session, "F")
        wait_until(lambda: "Force off this VM?" in screen(), "the confirmation", seen=screen)
        assert f"{name} on qemu:///system" in screen()
        tmux("send-keys", "-t", screen.session, "y")
        wait_until(
            lambda: virsh("domstate", name).strip() == "shut off",
            f"{name} to be shut off",
            timeout_s=ACTION_S,
        )
        wait_until(
            lambda: any(name in ln and "shut off" in ln for ln in screen().splitlines()),
            f"{name} shown as shut off",
            seen=screen,
        )
        db = tmp_path / "e2e.db"

        def audit_rows() -> list[tuple[str, str, str]]:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                return conn.execute(
                    "SELECT action, outcome, user FROM audit WHERE vm_name = ?", (name,)
                ).fetchall()

        wait_until(lambda: bool(audit_rows()), "the audit row", timeout_s=ACTION_S)
        rows = audit_rows()
        assert len(rows) == 1
        assert rows[0][:2] == ("force_off", "verified")
        assert rows[0][2]
    finally:
        subprocess.run(["virsh", "-c", QEMU_URI, "destroy", name], capture_output=True)
        subprocess.run(["virsh", "-c", QEMU_URI, "undefine", name], capture_output=True)
