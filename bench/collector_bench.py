"""Collector benchmark on a 1,000-VM test-driver fleet (the fleet XML the tests generate).

Measures, in one run so that the machine's noise hits every figure alike:
  - libvirt calls per tick (stats calls must be 1 per host, whatever the fleet size);
  - tick wall time against the bare getAllDomainStats call it makes (target: <= 1.5x),
    interleaved round by round, medians; and the floor any consumer pays to identify
    each domain (UUID/name/ID per record);
  - the naive per-domain version once (listAllDomains + info + state per domain);
  - the collector's own CPU time per tick per 100 VMs (process CPU minus the bare call's).
Each over the in-process test driver (test:///...) and over RPC through libvirtd
(test+unix:///...), the path a real host takes, when libvirtd answers.

    .venv/bin/python -m bench.collector_bench [--vms 1000] [--rounds 40] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import libvirt
from tests.conftest import fleet_xml

from virtwatch.core.collect.collector import Collector
from virtwatch.core.libvirt.calls import Borrowed
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.libvirt.process import prepare_libvirt

T = TypeVar("T")
STEADY_FLAGS_ENFORCE = (
    libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
    | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ENFORCE_STATS
)


class CountingConnection:
    """The real connection; counts every method called on it, by name."""

    def __init__(self, conn: libvirt.virConnect, counts: collections.Counter[str]) -> None:
        self._conn = conn
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if not callable(attr):
            return attr
        counts = self._counts

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[f"conn.{name}"] += 1
            return attr(*args, **kwargs)

        return counted


class CountingBorrowed:
    """A `Borrowed` of the real source whose calls see a CountingConnection."""

    def __init__(self, inner: Borrowed, counts: collections.Counter[str]) -> None:
        self._inner = inner
        self._counts = counts

    @property
    def connection_id(self) -> int:
        return self._inner.connection_id

    async def call(self, fn: Callable[[Any], T], **kw: Any) -> T:
        counts = self._counts
        return await self._inner.call(lambda c: fn(CountingConnection(c, counts)), **kw)


class CountingSource:
    def __init__(self, uri: str) -> None:
        self._inner = SingleConnection(uri)
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def uri(self) -> str:
        return self._inner.uri

    @property
    def read_only(self) -> bool:
        return False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:  # Borrowed-like: CountingBorrowed
        async with self._inner.connection() as b:
            yield CountingBorrowed(b, self.counts)

    async def close(self) -> None:
        await self._inner.close()


@contextlib.contextmanager
def counting_domain_calls(counts: collections.Counter[str]) -> Any:
    """Count virDomain method calls (UUID, name, ID are local; info/state are round trips)."""
    names = ("UUID", "UUIDString", "name", "ID", "info", "state", "XMLDesc")
    real = {n: getattr(libvirt.virDomain, n) for n in names}

    def wrap(n: str) -> Callable[..., Any]:
        fn = real[n]

        def counted(self: libvirt.virDomain, *a: Any) -> Any:
            counts[f"dom.{n}"] += 1
            return fn(self, *a)

        return counted

    for n in names:
        setattr(libvirt.virDomain, n, wrap(n))
    try:
        yield
    finally:
        for n, fn in real.items():
            setattr(libvirt.virDomain, n, fn)


def med_ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 2)


async def calls_per_tick(uri: str) -> dict[str, Any]:
    source = CountingSource(uri)
    counts = source.counts
    try:
        collector = Collector(source, lambda _x: None)
        with counting_domain_calls(counts):
            await collector.tick()
            first = dict(counts)
            counts.clear()
            ticks = 5
            for _ in range(ticks):
                await collector.tick()
            steady = {k: v / ticks for k, v in counts.items()}
    finally:
        await source.close()
    return {"first_tick": first, "steady_per_tick": steady}


def _identify(records: list[tuple[libvirt.virDomain, dict[str, Any]]]) -> None:
    for dom, rec in records:
        dom.UUID()
        dom.name()
        if rec.get("state.state") not in (0, 5):
            dom.ID()


async def timing(uri: str, rounds: int, vms: int) -> dict[str, Any]:
    source = SingleConnection(uri)
    try:
        collector = Collector(source, lambda _x: None)
        await collector.tick()  # learns what the host refuses, caches definitions
        await collector.tick()
        async with source.connection() as b:
            flags = STEADY_FLAGS_ENFORCE  # what the collector passes (the host took both)
            groups = _steady_groups(collector)

            def bare(conn: libvirt.virConnect) -> int:
                # the records die here, as the collector's do at the end of its tick:
                # returned, they would be freed later, outside the timed call (the ~1,000
                # virDomainFree calls cost as much as the call itself, in process)
                return len(conn.getAllDomainStats(groups, flags))

            def floor(conn: libvirt.virConnect) -> None:
                _identify(conn.getAllDomainStats(groups, flags))

            bare_s: list[float] = []
            floor_s: list[float] = []
            tick_s: list[float] = []
            cpu_bare: list[float] = []
            cpu_tick: list[float] = []
            for _ in range(rounds):
                c0, t0 = time.process_time(), time.perf_counter()
                await b.call(bare)  # a counted thread per call, as the collector's tick
                bare_s.append(time.perf_counter() - t0)
                cpu_bare.append(time.process_time() - c0)
                t0 = time.perf_counter()
                await b.call(floor)
                floor_s.append(time.perf_counter() - t0)
                c0, t0 = time.process_time(), time.perf_counter()
                await collector.tick()
                tick_s.append(time.perf_counter() - t0)
                cpu_tick.append(time.process_time() - c0)
            t0 = time.perf_counter()
            naive_calls = await b.call(_naive)
            naive_s = time.perf_counter() - t0
    finally:
        await source.close()
    own_cpu = statistics.median(cpu_tick) - statistics.median(cpu_bare)
    return {
        "bare_ms": med_ms(bare_s),
        "identify_floor_ms": med_ms(floor_s),
        "tick_ms": med_ms(tick_s),
        "ratio_tick_to_bare": round(statistics.median(tick_s) / statistics.median(bare_s), 2),
        "ratio_floor_to_bare": round(statistics.median(floor_s) / statistics.median(bare_s), 2),
        "naive_ms": round(naive_s * 1000, 1),
        "naive_calls": naive_calls,
        "ratio_naive_to_tick": round(naive_s / statistics.median(tick_s), 1),
        "tick_cpu_ms": med_ms(cpu_tick),
        "bare_cpu_ms": med_ms(cpu_bare),
        "collector_cpu_ms_per_tick_per_100_vms": round(own_cpu * 1000 * 100 / vms, 3),
    }


def _steady_groups(collector: Collector) -> int:
    """The groups the collector asks a host for on a cheap tick, after its refusals."""
    from virtwatch.core.libvirt.stats import group_bits

    last = collector.last
    return group_bits(last.groups) if last is not None else 1


def _naive(conn: libvirt.virConnect) -> int:
    """What a per-domain poller does: list, then a round trip or two per domain."""
    calls = 1
    for dom in conn.listAllDomains(0):
        dom.info()
        dom.state()
        calls += 2
    return calls


def rpc_available(uri: str) -> bool:
    try:
        libvirt.open(uri).close()
        return True
    except libvirt.libvirtError:
        return False


async def scaling(scheme: str, fleet: Callable[[int], Path]) -> dict[int, float]:
    """Stats calls per steady tick for several fleet sizes: always 1."""
    out = {}
    for n in (10, 100, 1000):
        counts = await calls_per_tick(f"{scheme}{fleet(n)}")
        out[n] = counts["steady_per_tick"].get("conn.getAllDomainStats", 0.0)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    prepare_libvirt()
    tmp = Path(tempfile.mkdtemp(prefix="vwbench-", dir="/var/tmp"))
    os.chmod(tmp, 0o755)  # libvirtd reads the fleet for test+unix://

    def fleet(n: int) -> Path:
        path = tmp / f"fleet-{n}.xml"
        if not path.exists():
            path.write_text(fleet_xml(n))
            os.chmod(path, 0o644)
        return path

    report: dict[str, Any] = {"vms": args.vms, "rounds": args.rounds, "modes": {}}
    modes = {"in-process (test:///)": "test://", "over RPC (test+unix:///)": "test+unix://"}
    for label, scheme in modes.items():
        uri = f"{scheme}{fleet(args.vms)}"
        if scheme == "test+unix://" and not rpc_available(uri):
            report["modes"][label] = {"skipped": "libvirtd does not answer"}
            continue
        report["modes"][label] = {
            "calls": await calls_per_tick(uri),
            "stats_calls_per_tick_by_fleet_size": await scaling(scheme, fleet),
            "timing": await timing(uri, args.rounds, args.vms),
        }
    await asyncio.to_thread(shutil.rmtree, tmp, True)
    return report


def print_report(r: dict[str, Any]) -> None:
    print(f"collector bench: {r['vms']} VMs, {r['rounds']} interleaved rounds (medians)")
    for label, m in r["modes"].items():
        print(f"\n== {label}")
        if "skipped" in m:
            print(f"   skipped: {m['skipped']}")
            continue
        steady = m["calls"]["steady_per_tick"]
        conn_calls = {k: v for k, v in steady.items() if k.startswith("conn.")}
        dom_calls = {k: v for k, v in steady.items() if k.startswith("dom.")}
        print(f"   libvirt calls per steady tick (connection): {conn_calls}")
        print(f"   per-domain local calls per tick (no round trip): {dom_calls}")
        print(f"   first tick (learns refusals, reads definitions): {m['calls']['first_tick']}")
        print(f"   stats calls per tick by fleet size: {m['stats_calls_per_tick_by_fleet_size']}")
        t = m["timing"]
        print(
            f"   bare getAllDomainStats {t['bare_ms']} ms | collector tick {t['tick_ms']} ms"
            f" | ratio {t['ratio_tick_to_bare']}x"
        )
        print(
            f"   identify-each-domain floor {t['identify_floor_ms']} ms"
            f" ({t['ratio_floor_to_bare']}x the bare call)"
        )
        print(
            f"   naive per-domain poll {t['naive_ms']} ms with {t['naive_calls']} calls"
            f" ({t['ratio_naive_to_tick']}x a collector tick)"
        )
        print(
            f"   CPU per tick: {t['tick_cpu_ms']} ms (bare call {t['bare_cpu_ms']} ms);"
            f" collector's own {t['collector_cpu_ms_per_tick_per_100_vms']} ms per 100 VMs"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--vms", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    report = asyncio.run(main_async(args))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
