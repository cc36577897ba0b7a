"""Real QEMU VMs under libvirtd. These tests never skip: no daemon is a failure."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import libvirt
import pytest

QEMU_URI = "qemu:///system"

VmFactory = Callable[..., Coroutine[Any, Any, libvirt.virDomain]]


def diskless_xml(name: str, *, memory_mib: int = 64) -> str:
    """A tiny TCG VM: no disk, no graphics, no balloon; boots to a network ROM and idles."""
    return f"""
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <devices><memballoon model='none'/></devices>
</domain>"""


def unique_name(prefix: str = "vwtest") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def hypervisor() -> None:
    """libvirtd must answer; the Makefile starts it. Fail loudly, never skip."""
    try:
        conn = libvirt.open(QEMU_URI)
    except libvirt.libvirtError as err:
        subprocess.run(["scripts/hypervisor-up.sh"], check=False)
        try:
            conn = libvirt.open(QEMU_URI)
        except libvirt.libvirtError:
            pytest.fail(f"libvirtd does not answer on {QEMU_URI}: {err}")
    conn.close()


@pytest.fixture
async def transient_vm(hypervisor: None) -> AsyncIterator[VmFactory]:
    """Create transient diskless VMs with unique names; every one is destroyed in finally."""
    conn = libvirt.open(QEMU_URI)
    made: list[str] = []

    async def create(name: str | None = None) -> libvirt.virDomain:
        vm_name = name or unique_name()
        made.append(vm_name)
        return conn.createXML(diskless_xml(vm_name), 0)

    try:
        yield create
    finally:
        for vm_name in made:
            with contextlib.suppress(libvirt.libvirtError):  # gone: the test destroyed it
                conn.lookupByName(vm_name).destroy()
        conn.close()
