"""What the connection pool costs and buys against libvirtd, measured in one run.

    .venv/bin/python -m bench.pool [--uri qemu:///system] [--rounds 7] [--calls 2000]

1. Overhead: a bare call (`getLibVersion` in a worker thread on an open connection,
   with and without keepalive) vs the same call on a connection borrowed from the pool
   (`Borrowed.call`: a counted thread of its own) and returned, and a borrow + return
   with no call at all. The variants take turns call by call; each round's median call
   time, then the median over rounds.
2. Throughput: 200 concurrent short calls through a pool of 1 connection vs N, and
   (for reference) 200 calls sharing one bare connection with no pool at all.
   Median over rounds of the wall time; ratios against the 1-connection pool.

Timings are only compared with baselines measured in the same run (the machine is
noisy); nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import libvirt

from virtwatch.core.libvirt.eventloop import LibvirtEventThread
from virtwatch.core.libvirt.pool import LibvirtPool
from virtwatch.core.libvirt.pool_policy import PoolSettings

CONCURRENT = 200


async def bare_connection(uri: str) -> libvirt.virConnect:
    """A connection of our own, outside any pool (for comparison only: nothing else
    uses it, and it is closed after its last call has returned)."""
    return await asyncio.to_thread(libvirt.open, uri)


async def paired(
    variants: Mapping[str, Callable[[], Awaitable[object]]], calls: int
) -> dict[str, list[float]]:
    """Each variant's single-call durations, the variants taking turns call by call, so
    that the machine's drift (it is noisy) hits every variant alike."""
    out: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(calls):
        for key, fn in variants.items():
            started = time.perf_counter()
            await fn()
            out[key].append(time.perf_counter() - started)
    return out


async def wall(fn: Callable[[], Awaitable[object]], n: int) -> float:
    """Seconds for `n` concurrent calls."""
    started = time.perf_counter()
    await asyncio.gather(*(fn() for _ in range(n)))
    return time.perf_counter() - started


async def overhead(uri: str, rounds: int, calls: int) -> dict[str, float]:
    bare_conn = await bare_connection(uri)
    ka_conn = await bare_connection(uri)
    settings = PoolSettings(min_size=1, max_size=1)
    await asyncio.to_thread(
        ka_conn.setKeepAlive, settings.keepalive_interval_s, settings.keepalive_count
    )
    pool = LibvirtPool(uri, settings=settings)
    await pool.open()
    try:

        async def bare() -> object:
            return await asyncio.to_thread(bare_conn.getLibVersion)

        async def bare_keepalive() -> object:
            return await asyncio.to_thread(ka_conn.getLibVersion)

        async def pooled() -> object:
            async with pool.connection() as b:
                return await b.call(lambda conn: conn.getLibVersion())

        async def borrow_only() -> object:
            async with pool.connection() as b:
                return b.connection_id

        variants = {
            "bare": bare,
            "keepalive": bare_keepalive,
            "pooled": pooled,
            "borrow": borrow_only,
        }
        await paired(variants, 50)  # warm up threads and sockets
        medians: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for key, durations in (await paired(variants, calls)).items():
                medians[key].append(statistics.median(durations))
        return {k: statistics.median(v) for k, v in medians.items()}
    finally:
        await pool.close()
        await asyncio.to_thread(bare_conn.close)
        await asyncio.to_thread(ka_conn.close)


async def throughput(uri: str, rounds: int, wide: int) -> dict[str, float]:
    one = LibvirtPool(uri, settings=PoolSettings(min_size=1, max_size=1))
    many = LibvirtPool(uri, settings=PoolSettings(min_size=wide, max_size=wide))
    shared = await bare_connection(uri)
    await one.open()
    await many.open()
    try:

        def through(pool: LibvirtPool) -> Callable[[], Awaitable[object]]:
            async def call() -> object:
                async with pool.connection() as b:
                    return await b.call(lambda conn: conn.getLibVersion())

            return call

        async def no_pool() -> object:
            return await asyncio.to_thread(shared.getLibVersion)

        variants = {"pool of 1": through(one), f"pool of {wide}": through(many), "1 bare": no_pool}
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for fn in variants.values():
            await wall(fn, CONCURRENT)  # warm up
        for _ in range(rounds):
            for key, fn in variants.items():
                samples[key].append(await wall(fn, CONCURRENT))
        return {k: statistics.median(v) for k, v in samples.items()}
    finally:
        await one.close()
        await many.close()
        await asyncio.to_thread(shared.close)


async def main(args: argparse.Namespace) -> None:
    # as in virtwatch: the event thread runs before any connection opens, so the bare
    # connections below get the same libvirt client machinery as the pool's
    LibvirtEventThread.ensure_running()
    loop = asyncio.get_running_loop()
    # enough worker threads that the executor, not the pool, is never the limit
    loop.set_default_executor(ThreadPoolExecutor(max_workers=64))
    print(f"uri {args.uri}, {args.rounds} rounds, medians")
    o = await overhead(args.uri, args.rounds, args.calls)
    print(f"\n1. per call ({args.calls} calls of each per round, taking turns)")
    print(f"   bare call (to_thread getLibVersion)        {o['bare'] * 1e6:8.1f} us")
    print(f"   bare call, keepalive on (as pooled)        {o['keepalive'] * 1e6:8.1f} us")
    print(f"   borrow + call + release                    {o['pooled'] * 1e6:8.1f} us")
    print(f"   borrow + release, no call                  {o['borrow'] * 1e6:8.1f} us")
    for ref in ("bare", "keepalive"):
        extra = o["pooled"] - o[ref]
        print(
            f"   pooled / {ref:<9} = {o['pooled'] / o[ref]:.3f}   "
            f"overhead {extra * 1e6:+.1f} us per call ({extra / o[ref] * 100:+.1f} %)"
        )
    t = await throughput(args.uri, args.rounds, args.wide)
    base = t["pool of 1"]
    print(f"\n2. {CONCURRENT} concurrent getLibVersion calls (wall time)")
    for key, value in t.items():
        rate = CONCURRENT / value
        print(f"   {key:<12} {value * 1e3:8.1f} ms  {rate:8.0f} calls/s  x{base / value:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--wide", type=int, default=10, help="N for the wide pool")
    asyncio.run(main(parser.parse_args()))
