"""libvirtd as a process the tests can kill, freeze and restart. It is found by its pid
file (or executable path) and signalled by pid, never by name; a frozen daemon is always
thawed (`frozen` sends SIGCONT in `finally`), a killed one restarted by the caller."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import psutil

from tests.vms import QEMU_URI
from tests.waiting import wait_until

LIBVIRTD = "/usr/sbin/libvirtd"
PIDFILE = Path("/run/libvirtd.pid")


def libvirtd_process() -> psutil.Process | None:
    """The running libvirtd: the pid file's process if it is libvirtd, else by exe path."""
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        proc = psutil.Process(int(PIDFILE.read_text().strip()))
        if proc.exe() == LIBVIRTD and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    for proc in psutil.process_iter(["exe", "status"]):
        if proc.info["exe"] == LIBVIRTD and proc.info["status"] != psutil.STATUS_ZOMBIE:
            return proc
    return None


def libvirtd_pid() -> int:
    proc = libvirtd_process()
    assert proc is not None, "libvirtd is not running"
    return proc.pid


def kill_libvirtd() -> int:
    proc = libvirtd_process()
    assert proc is not None, "libvirtd is not running"
    os.kill(proc.pid, signal.SIGKILL)

    def dead() -> bool:
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(dead, "libvirtd to die of SIGKILL", step_s=0.02)
    return proc.pid


def daemon_answers() -> bool:
    try:
        conn = libvirt.open(QEMU_URI)
    except libvirt.libvirtError:
        return False
    conn.close()
    return True


def start_libvirtd() -> tuple[float, float]:
    """Start libvirtd; return (wall time it first answered, seconds that took)."""
    started = time.monotonic()
    subprocess.run(["libvirtd", "-d"], check=True, timeout=60)
    wait_until(daemon_answers, "libvirtd to answer after its restart", timeout_s=60, step_s=0.05)
    return time.time(), time.monotonic() - started


def ensure_libvirtd() -> None:
    """Thawed, running and answering (a test's `finally`)."""
    proc = libvirtd_process()
    if proc is not None:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGCONT)
    if proc is None or not daemon_answers():
        if libvirtd_process() is None:
            subprocess.run(["libvirtd", "-d"], check=False, timeout=60)
        deadline = time.monotonic() + 60
        while not daemon_answers() and time.monotonic() < deadline:
            time.sleep(0.1)


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[float]:
    """SIGSTOP libvirtd for the block; yields the wall time it stopped. SIGCONT always."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield time.time()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
