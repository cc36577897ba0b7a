"""Stress the pool's borrow model: hundreds of borrowers with random deadlines and
cancellations while connections are torn down and replaced (and, with --freeze, while
libvirtd is frozen with SIGSTOP in bursts). Run it under `python -X dev -X faulthandler`;
it exits 0 and prints a JSON summary, or the process dies (SIGSEGV is exit -11 / 139).

    python -X dev -X faulthandler scripts/borrow_stress.py test:///default --seconds 20
    python -X dev -X faulthandler scripts/borrow_stress.py qemu:///system --seconds 30 --freeze

It also runs against the code before the borrow model (raw connections yielded), so the
crash it was written to catch can be shown on the old commit: `PYTHONPATH=OLD/src`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import libvirt

from virtwatch.core.errors import AppError
from virtwatch.core.libvirt.pool import LibvirtPool
from virtwatch.core.libvirt.pool_policy import PoolSettings
from virtwatch.core.libvirt.process import prepare_libvirt

Fn = Callable[[libvirt.virConnect], object]


def _calls() -> list[tuple[str, Fn]]:
    def names(conn: libvirt.virConnect) -> object:
        return sorted(d.name() for d in conn.listAllDomains(0))

    def stats(conn: libvirt.virConnect) -> object:
        flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        return len(conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, flags))

    def states(conn: libvirt.virConnect) -> object:
        return [d.state() for d in conn.listAllDomains(0)]

    return [
        ("getLibVersion", lambda conn: conn.getLibVersion()),
        ("listAllDomains", names),
        ("getAllDomainStats", stats),
        ("states", states),
        ("getHostname", lambda conn: conn.getHostname()),
    ]


async def _run_call(borrowed: Any, fn: Fn) -> object:
    """The new API (`Borrowed.call`), or the old one (a raw virConnect, own thread)."""
    if hasattr(borrowed, "call"):
        return await borrowed.call(fn, timeout_s=30.0)
    return await asyncio.to_thread(fn, borrowed)  # the pattern the crash came from


class Stress:
    def __init__(self, pool: LibvirtPool, seconds: float, seed: int, min_under_call: int) -> None:
        self.pool = pool
        self.until = time.monotonic() + seconds
        # a loaded machine runs fewer calls a second: go on (up to 3x as long) until the
        # path under test, a teardown while a thread is inside a call, was taken enough
        self.hard_until = time.monotonic() + 3 * seconds
        self.min_under_call = min_under_call
        self.rand = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.calls = _calls()

    def running(self) -> bool:
        now = time.monotonic()
        if now < self.until:
            return True
        return self.counts["teardown.under_call"] < self.min_under_call and now < self.hard_until

    async def borrower(self, i: int) -> None:
        rand = random.Random(self.rand.random())
        dedicated = self.pool.dedicated(f"d{i % 2}") if i % 25 == 0 else None
        while self.running():
            deadline = rand.choice((0.0005, 0.002, 0.01, 0.05, 0.2, 1.0, 5.0))
            name, fn = rand.choice(self.calls)
            source = dedicated if dedicated is not None else self.pool
            task = asyncio.create_task(self._borrow_once(source, fn, deadline))
            if rand.random() < 0.15:  # cancelled from outside at a random instant
                await asyncio.sleep(rand.random() * 0.01)
                task.cancel()
            try:
                await task
                self.counts["ok"] += 1
                self.counts[f"ok.{name}"] += 1
            except asyncio.CancelledError:
                self.counts["cancelled"] += 1
            except TimeoutError:
                self.counts["deadline"] += 1
            except AppError as err:
                self.counts[f"error.{err.code.value}"] += 1
            except libvirt.libvirtError:
                self.counts["error.libvirt"] += 1
            await asyncio.sleep(rand.random() * 0.005)

    async def _borrow_once(self, source: Any, fn: Fn, deadline: float) -> None:
        async with asyncio.timeout(deadline), source.connection() as borrowed:
            await _run_call(borrowed, fn)

    async def chaos(self) -> None:
        """Tear connections down as libvirt's close callback and failed probes do."""
        rand = random.Random(self.rand.random())
        pool: Any = self.pool
        while self.running():
            await asyncio.sleep(rand.uniform(0.005, 0.05))
            in_use = [e for e in pool._in_use.values() if not e.dead and not e.closed]
            idle = [e for e in pool._idle if not e.dead and not e.closed]
            dedicated = [d._entry for d in pool._dedicated.values() if d._entry is not None]
            pick = rand.random()
            if in_use and pick < 0.5:
                entry = rand.choice(in_use)
            elif idle and pick < 0.8:
                entry = rand.choice(idle)
            elif dedicated:
                entry = rand.choice(dedicated)
            else:
                continue
            if getattr(entry, "busy", 0):
                self.counts["teardown.under_call"] += 1
            self.counts["teardown"] += 1
            pool._mark_lost(entry, "stress: torn down")
            if entry in pool._idle:
                pool._idle.remove(entry)
                pool._destroy(entry)


def _libvirtd_pid() -> int:
    out = subprocess.run(["pgrep", "-xo", "libvirtd"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("--freeze needs a running libvirtd")
    return int(out.stdout.split()[0])


async def freezer(stress: Stress, pid: int) -> None:
    """SIGSTOP libvirtd in bursts; every stop is followed by a SIGCONT, whatever happens."""
    rand = random.Random(stress.rand.random())
    while stress.running():
        await asyncio.sleep(rand.uniform(0.5, 2.0))
        os.kill(pid, signal.SIGSTOP)
        try:
            stress.counts["freeze"] += 1
            await asyncio.sleep(rand.uniform(0.3, 4.0))
        finally:
            os.kill(pid, signal.SIGCONT)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("uri")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--borrowers", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--min-under-call",
        type=int,
        default=0,
        help="run on until this many teardowns under a call",
    )
    ap.add_argument("--freeze", action="store_true", help="SIGSTOP libvirtd in bursts")
    args = ap.parse_args()
    prepare_libvirt()
    settings = PoolSettings(
        min_size=2,
        max_size=8,
        acquire_timeout_s=5.0,
        open_timeout_s=3.0,
        check_after_idle_s=0.05,
        check_timeout_s=1.0,
        health_interval_s=0.5,
        keepalive_interval_s=1,
        keepalive_count=2,
        reconnect_initial_s=0.01,
        reconnect_max_s=0.2,
        close_grace_s=10.0,
    )
    pid = _libvirtd_pid() if args.freeze else None
    started = time.monotonic()
    try:
        async with LibvirtPool(args.uri, settings=settings) as pool:
            stress = Stress(pool, args.seconds, args.seed, args.min_under_call)
            jobs = [asyncio.create_task(stress.borrower(i)) for i in range(args.borrowers)]
            jobs.append(asyncio.create_task(stress.chaos()))
            if pid is not None:
                jobs.append(asyncio.create_task(freezer(stress, pid)))
            await asyncio.gather(*jobs)
            stats = pool.stats()
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    # every abandoned thread must come back and close its connection before we say so
    await asyncio.sleep(0.5)
    summary = {
        "uri": args.uri,
        "seconds": round(time.monotonic() - started, 1),
        "created": stats.created,
        "destroyed": stats.destroyed,
        **dict(sorted(stress.counts.items())),
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
