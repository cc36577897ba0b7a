"""A remote hypervisor over `qemu+ssh://`, for real: a private sshd on loopback
(scripts/sshd-up.sh, started by `make test`) in front of this machine's own libvirtd, so
every call goes through the ssh client, sshd and virt-ssh-helper as it would to another
host. The same runtime the dashboard builds collects, receives events and acts over it;
a refused login is one clear error, not a retry storm."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import libvirt
import pytest

from tests.vms import QEMU_URI, VmFactory
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.libvirt.pool import LibvirtPool
from virtwatch.core.libvirt.pool_policy import PoolSettings
from virtwatch.core.model import Snapshot
from virtwatch.core.ops.actions import Action, submit_action
from virtwatch.core.records import ConnectionState, DomainEvent, Outcome
from virtwatch.core.runtime import HostConfig, Runtime

pytestmark = pytest.mark.qemu

SSH_DIR = os.environ.get("VIRTWATCH_SSH_DIR", "/var/lib/virtwatch-tests/ssh")
SSH_PORT = os.environ.get("VIRTWATCH_SSH_PORT", "2222")
WAIT_S = 30.0  # a bound so a stuck test fails instead of hanging; not a timing
T = TypeVar("T")
BIN = str(Path(sys.executable).with_name("virtwatch"))


def ssh_uri(user: str = "root") -> str:
    return f"qemu+ssh://{user}@127.0.0.1:{SSH_PORT}/system?command={SSH_DIR}/ssh"


def _answers(uri: str) -> bool:
    probe = subprocess.run(["virsh", "-c", uri, "uri"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def remote(hypervisor: None) -> str:
    """libvirt over ssh must answer; the Makefile starts the sshd. Fail, never skip."""
    uri = ssh_uri()
    if not _answers(uri):
        subprocess.run(["scripts/sshd-up.sh"], check=False)
        if not _answers(uri):
            pytest.fail(f"libvirt does not answer over ssh ({uri}): run scripts/sshd-up.sh")
    return uri


async def next_matching(sub: Subscription[T], pred: Callable[[T], bool], what: str) -> T:
    try:
        async with asyncio.timeout(WAIT_S):
            while not pred(item := await sub.get()):
                pass
    except TimeoutError:
        pytest.fail(f"no {what} within {WAIT_S} s")
    return item


async def test_the_runtime_collects_hears_events_and_acts_over_ssh(
    remote: str, transient_vm: VmFactory
) -> None:
    hub = Hub()
    snaps = hub.subscribe(Snapshot)
    events = hub.subscribe(DomainEvent)
    dom = await transient_vm()
    name, uuid = dom.name(), dom.UUIDString()
    host = HostConfig(remote, name="far", interval_s=0.5)
    async with Runtime([host], hub=hub) as rt:
        first = await next_matching(
            snaps, lambda s: any(d.name == name for d in s.domains), "a snapshot with the VM"
        )
        assert first.host == "far"
        assert rt.pools["far"].connection_state is ConnectionState.CONNECTED
        seen = next(d for d in first.domains if d.name == name)
        assert seen.uuid == uuid
        # the VM's CPU time grows across ticks, read over the ssh tunnel
        later = await next_matching(
            snaps,
            lambda s: any(
                d.name == name and (d.cpu_time_ns or 0) > (seen.cpu_time_ns or 0) for d in s.domains
            ),
            "a later snapshot with more CPU time",
        )
        assert later.taken_at > first.taken_at

        # an action through the pool: verified by its outcome, its event pushed back
        handle = submit_action(
            rt.tasks, rt.pools["far"], Action.PAUSE, name, host="far", publish=hub.publish
        )
        audit = await asyncio.wait_for(handle.result(), WAIT_S)
        assert audit.outcome is Outcome.VERIFIED
        paused = await next_matching(
            events, lambda e: e.vm_uuid == uuid and e.summary.startswith("suspended"), "pause"
        )
        assert paused.host == "far"
        assert paused.vm_name == name
        # and a change made elsewhere (here, on the local socket) arrives over ssh too
        await asyncio.to_thread(dom.resume)
        resumed = await next_matching(
            events, lambda e: e.vm_uuid == uuid and e.summary.startswith("resumed"), "resume"
        )
        assert resumed.host == "far"


async def snapshot_cli(uri: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [BIN, "snapshot", "--json", "--uri", uri],
        capture_output=True,
        text=True,
        check=False,
    )


async def local_names() -> set[str]:
    conn = await asyncio.to_thread(libvirt.open, QEMU_URI)
    try:
        return {d.name() for d in await asyncio.to_thread(conn.listAllDomains, 0)}
    finally:
        conn.close()


async def test_snapshot_cli_over_ssh_lists_what_the_daemon_lists(
    remote: str, transient_vm: VmFactory
) -> None:
    dom = await transient_vm()
    before = await local_names()
    out = await snapshot_cli(remote)
    after = await local_names()
    assert out.returncode == 0, out.stderr
    names = {d["name"] for d in json.loads(out.stdout)["domains"]}
    assert dom.name() in names
    # exactly the daemon's domains: other tests' VMs may come and go meanwhile, so
    # every VM listed both before and after, and none listed by neither
    assert before & after <= names <= before | after


async def test_a_refused_ssh_login_is_one_clear_error_not_a_retry_storm(remote: str) -> None:
    refused = ssh_uri("nobody")  # sshd has no key for this user
    pool = LibvirtPool(refused, host="far", settings=PoolSettings(min_size=1, max_size=2))
    async with pool:  # opening never fails for an unreachable host: the pool says so
        assert pool.connection_state is ConnectionState.DOWN
        with pytest.raises(AppError) as caught:
            await pool.acquire()
        err = caught.value
        assert err.code is ErrorCode.UNAUTHORIZED
        assert not err.transient
        assert "Permission denied" in err.message
        assert "ssh" in err.hint
        assert "known_hosts" in err.hint
        failures = pool.stats().failures
        await asyncio.sleep(1.5)  # a retrying pool would have tried again by now
        assert pool.stats().failures == failures

    out = await snapshot_cli(refused)
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Permission denied" in lines[0]
    assert "ssh could not log in" in lines[0]
    assert "Traceback" not in out.stderr
