"""libvirt errors only a daemon gives, produced for real against libvirtd + QEMU.

How each is produced (the system libvirtd is never killed or stopped here):
- no such domain, start a running VM, resume a running VM: plain calls on qemu:///system;
- destroy a shut-off VM: a defined (persistent) VM that was never started;
- socket missing: qemu+unix:///system?socket=/nonexistent;
- write on a read-only connection: openReadOnly, then suspend;
- use after close: close our own connection, then call on it;
- connection lost: the daemon drops OUR client (`virt-admin client-disconnect`, the id
  found by our pid among the clients that appeared when we connected), like a daemon
  that died, as seen from the client;
- job lock held: our own VM's QEMU is SIGSTOPped, one call holds the job waiting on the
  frozen monitor, a second call gives up after libvirt's 30 s job wait (takes ~31 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.vms import QEMU_URI, VmFactory, diskless_xml, unique_name
from tests.waiting import wait_until
from virtwatch.core.errors import ErrorCode, Severity, from_libvirt

pytestmark = pytest.mark.qemu


def produce(fn: Callable[[], Any]) -> libvirt.libvirtError:
    with pytest.raises(libvirt.libvirtError) as caught:
        fn()
    return caught.value


def codes(err: libvirt.libvirtError) -> tuple[int, int]:
    return (err.get_error_code(), err.get_error_domain())


async def test_no_such_domain(hypervisor: None) -> None:
    conn = libvirt.open(QEMU_URI)
    try:
        raw = produce(lambda: conn.lookupByName(unique_name("ghost")))
    finally:
        conn.close()
    assert codes(raw) == (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_QEMU)
    assert from_libvirt(raw).code is ErrorCode.MACHINE_NOT_FOUND


async def test_start_or_resume_a_running_vm(transient_vm: VmFactory) -> None:
    dom = await transient_vm()
    for act in (dom.create, dom.resume):
        raw = produce(act)
        assert codes(raw) == (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU)
        app = from_libvirt(raw, vm=dom.name())
        assert (app.code, app.transient) == (ErrorCode.MACHINE_INVALID_STATE, False)
        assert "already running" in app.hint


async def test_destroy_a_shut_off_vm(hypervisor: None) -> None:
    conn = libvirt.open(QEMU_URI)
    dom = conn.defineXML(diskless_xml(unique_name()))
    try:
        raw = produce(dom.destroy)
    finally:
        dom.undefine()
        conn.close()
    assert codes(raw) == (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_DOMAIN)
    app = from_libvirt(raw)
    assert app.code is ErrorCode.MACHINE_INVALID_STATE
    assert "not running" in app.hint


async def test_socket_missing(hypervisor: None) -> None:
    uri = "qemu+unix:///system?socket=/nonexistent"
    raw = produce(lambda: libvirt.open(uri))
    assert codes(raw) == (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC)
    for opening in (None, True):  # told from the message, or by the caller
        app = from_libvirt(raw, uri=uri, opening=opening)
        assert (app.code, app.transient) == (ErrorCode.LIBVIRT_CONNECTION_FAILED, True)
        assert app.severity is Severity.CRITICAL


async def test_write_on_a_read_only_connection(transient_vm: VmFactory) -> None:
    dom = await transient_vm()
    ro = libvirt.openReadOnly(QEMU_URI)
    try:
        raw = produce(lambda: ro.lookupByName(dom.name()).suspend())
    finally:
        ro.close()
    assert codes(raw) == (libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_FROM_DOMAIN)
    assert from_libvirt(raw).code is ErrorCode.FORBIDDEN


async def test_use_after_close(hypervisor: None) -> None:
    conn = libvirt.open(QEMU_URI)
    conn.close()
    raw = produce(conn.listAllDomains)
    assert codes(raw) == (libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_FROM_DOMAIN)
    app = from_libvirt(raw)
    assert (app.code, app.transient) == (ErrorCode.LIBVIRT_CONNECTION_LOST, True)


def _admin(*args: str) -> str:
    done = subprocess.run(
        ["virt-admin", *args], capture_output=True, text=True, check=True, timeout=30
    )
    return str(done.stdout)


def _daemon_server() -> str:
    """The daemon's client-serving server: 'libvirtd' (monolithic) or e.g. 'virtqemud'."""
    names: list[str] = re.findall(r"^\s*\d+\s+(\S+)\s*$", _admin("srv-list"), re.M)
    return next(n for n in names if n != "admin")


def _client_info(server: str, cid: str) -> str:
    """A client's details; "" for one that left between the listing and this call (other
    tests' connections close in the background)."""
    done = subprocess.run(
        ["virt-admin", "client-info", server, cid], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0 and "Client not found" in done.stderr:
        return ""
    done.check_returncode()
    return str(done.stdout)


def _our_clients(server: str) -> set[str]:
    ids: list[str] = re.findall(r"^\s*(\d+)\s+\S+", _admin("srv-clients-list", server), re.M)
    mine = re.compile(rf"^unix_process_id\s*:\s*{os.getpid()}\s*$", re.M)
    return {cid for cid in ids if mine.search(_client_info(server, cid))}


async def test_connection_lost_when_the_daemon_drops_us(hypervisor: None) -> None:
    server = _daemon_server()
    before = _our_clients(server)
    conn = libvirt.open(QEMU_URI)
    try:
        conn.getLibVersion()
        [ours] = _our_clients(server) - before
        _admin("client-disconnect", server, ours)
        first = produce(conn.listAllDomains)  # usually 38 "Cannot write data: Broken pipe"
        later = produce(conn.listAllDomains)  # 1 "client socket is closed"
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
    for raw in (first, later):
        assert raw.get_error_domain() == libvirt.VIR_FROM_RPC
        assert raw.get_error_code() in (
            libvirt.VIR_ERR_SYSTEM_ERROR,
            libvirt.VIR_ERR_INTERNAL_ERROR,
        )
        app = from_libvirt(raw, uri=QEMU_URI, what="collecting stats")
        assert (app.code, app.transient) == (ErrorCode.LIBVIRT_CONNECTION_LOST, True)
        assert "reconnects" in app.hint
    assert codes(later) == (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC)


def _collide_on_the_job_lock(dom: libvirt.virDomain) -> libvirt.libvirtError:
    """Freeze our VM's QEMU; one call holds the job waiting on the monitor, a second one
    waits for the job and gives up. Always thaws QEMU again."""
    pid = int(Path(f"/run/libvirt/qemu/{dom.name()}.pid").read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    holder = threading.Thread(target=_quietly, args=(dom.suspend,), daemon=True)
    holder.start()
    try:
        wait_until(
            lambda: dom.controlInfo()[0] == libvirt.VIR_DOMAIN_CONTROL_OCCUPIED,
            "the first call to reach the frozen QEMU monitor",
            step_s=0.05,
        )
        return produce(dom.resume)
    finally:
        os.kill(pid, signal.SIGCONT)
        holder.join(60)


def _quietly(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        fn()


async def test_job_lock_held_times_out(transient_vm: VmFactory) -> None:
    dom = await transient_vm()
    raw = await asyncio.to_thread(_collide_on_the_job_lock, dom)
    assert codes(raw) == (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_FROM_NONE)
    app = from_libvirt(raw, vm=dom.name())
    assert (app.code, app.transient) == (ErrorCode.TIMEOUT, True)
    assert "lock" in app.hint
