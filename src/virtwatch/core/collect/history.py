"""Bounded in-memory metric rings per (host, VM uuid, metric), fed from Snapshots.

Two tiers per series: every sample for the last few minutes, and one mean per bucket
(15 s by default) for the last hour, so live graphs of 1,000 VMs stay within a few MB.
Host-level metrics use the VM uuid "" (as the store does).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from virtwatch.core.model import DomainSample, HostSample, Snapshot

Point = tuple[float, float]  # (epoch seconds, value)

HOST = ""  # the "VM uuid" of host-level series


def _num(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def io_rate(d: DomainSample, group: str, name: str) -> float | None:
    """A rate from the VM's `disk` or `net` measurement (absent until measured)."""
    io = getattr(d, group, None)
    value = None if io is None else getattr(io, name, None)
    return None if value is None else float(value)


def _domain_metric(group: str, name: str) -> Callable[[DomainSample], float | None]:
    return lambda d: io_rate(d, group, name)


# metric name (as the store names it) -> how to read it from a DomainSample
VM_METRICS: Mapping[str, Callable[[DomainSample], float | None]] = {
    "cpu_pct": lambda d: _num(d.cpu_pct),
    "mem_used_kib": lambda d: _num(d.mem_used_kib),
    "mem_alloc_kib": lambda d: _num(d.mem_alloc_kib),
    "disk_rd_bps": _domain_metric("disk", "rd_bps"),
    "disk_wr_bps": _domain_metric("disk", "wr_bps"),
    "net_rx_bps": _domain_metric("net", "rx_bps"),
    "net_tx_bps": _domain_metric("net", "tx_bps"),
}

HOST_METRICS: Mapping[str, Callable[[HostSample], float | None]] = {
    "host.cpu_pct": lambda h: _num(h.cpu_pct),
    "host.mem_used_kib": lambda h: _num(h.mem_used_kib),
    "host.mem_total_kib": lambda h: _num(h.mem_total_kib),
}


class Ring:
    """A fixed-capacity ring of (time, value) points; the oldest is overwritten."""

    __slots__ = ("_n", "_next", "_ts", "_vs", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a ring needs a capacity of at least 1, got {capacity}")
        self.capacity = capacity
        self._ts = array("d", bytes(8 * capacity))
        self._vs = array("f", bytes(4 * capacity))
        self._next = 0
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, ts: float, value: float) -> None:
        i = self._next
        self._ts[i] = ts
        self._vs[i] = value
        self._next = (i + 1) % self.capacity
        if self._n < self.capacity:
            self._n += 1

    def oldest(self) -> float | None:
        if not self._n:
            return None
        return self._ts[(self._next - self._n) % self.capacity]

    def newest(self) -> Point | None:
        if not self._n:
            return None
        i = (self._next - 1) % self.capacity
        return self._ts[i], float(self._vs[i])

    def points(self, since: float = -math.inf) -> list[Point]:
        """Points at or after `since`, oldest first."""
        out: list[Point] = []
        start = self._next - self._n
        for k in range(self._n):
            i = (start + k) % self.capacity
            t = self._ts[i]
            if t >= since:
                out.append((t, float(self._vs[i])))
        return out

    def last_values(self, n: int) -> list[float]:
        """The newest `n` values, oldest first (for sparklines)."""
        n = min(n, self._n)
        return [float(self._vs[(self._next - n + k) % self.capacity]) for k in range(n)]


@dataclass(slots=True)
class _Bucket:
    start: float
    total: float = 0.0
    count: int = 0


class Series:
    """One metric's recent samples and its bucketed means."""

    __slots__ = ("_bucket", "bucket_s", "coarse", "fine")

    def __init__(self, fine_points: int, coarse_points: int, bucket_s: float) -> None:
        self.fine = Ring(fine_points)
        self.coarse = Ring(coarse_points)
        self.bucket_s = bucket_s
        self._bucket: _Bucket | None = None

    def add(self, ts: float, value: float) -> None:
        self.fine.append(ts, value)
        start = ts - (ts % self.bucket_s)
        b = self._bucket
        if b is not None and b.start != start:
            self.coarse.append(b.start + self.bucket_s / 2, b.total / b.count)
            b = None
        if b is None:
            b = self._bucket = _Bucket(start)
        b.total += value
        b.count += 1

    def points(self, since: float) -> list[Point]:
        """Every sample when the fine ring reaches back to `since`, else bucket means
        up to where the fine ring begins, then every sample."""
        oldest = self.fine.oldest()
        if oldest is None:
            return []
        if oldest <= since:
            return self.fine.points(since)
        # a bucket is drawn at its middle; only buckets that end before the fine ring
        # begins are shown, so no sample is drawn twice
        half = self.bucket_s / 2
        coarse = [p for p in self.coarse.points(since) if p[0] + half <= oldest]
        return coarse + self.fine.points(since)


class MetricHistory:
    """Rings for every (host, VM uuid, metric) seen in recent snapshots.

    `record(snapshot)` after each tick; `series(...)` / `sparkline(...)` to read.
    A VM that leaves its host's snapshots is forgotten after `forget_after_s`.
    """

    def __init__(
        self,
        *,
        fine_points: int = 150,
        coarse_points: int = 240,
        bucket_s: float = 15.0,
        forget_after_s: float = 3600.0,
    ) -> None:
        self.fine_points = fine_points
        self.coarse_points = coarse_points
        self.bucket_s = bucket_s
        self.forget_after_s = forget_after_s
        self._series: dict[tuple[str, str], dict[str, Series]] = {}
        self._seen: dict[tuple[str, str], float] = {}
        self.recorded = 0

    def _add(self, host: str, uuid: str, metric: str, ts: float, value: float) -> None:
        per_vm = self._series.get((host, uuid))
        if per_vm is None:
            per_vm = self._series[(host, uuid)] = {}
        s = per_vm.get(metric)
        if s is None:
            s = per_vm[metric] = Series(self.fine_points, self.coarse_points, self.bucket_s)
        s.add(ts, value)

    def record(self, snap: Snapshot) -> None:
        """Add every known value of `snap`; unknown values leave a gap, never a zero."""
        host = snap.host
        hs = snap.host_sample
        if hs is not None:
            for metric, read_host in HOST_METRICS.items():
                value = read_host(hs)
                if value is not None:
                    self._add(host, HOST, metric, hs.measured_at, value)
            self._seen[(host, HOST)] = snap.taken_at
        for d in snap.domains:
            for metric, read in VM_METRICS.items():
                value = read(d)
                if value is not None:
                    self._add(host, d.uuid, metric, d.measured_at, value)
            self._seen[(host, d.uuid)] = snap.taken_at
        self.recorded += 1
        self._forget(snap.taken_at)

    def _forget(self, now: float) -> None:
        cutoff = now - self.forget_after_s
        gone = [k for k, seen in self._seen.items() if seen < cutoff]
        for key in gone:
            del self._seen[key]
            self._series.pop(key, None)

    def series(self, host: str, uuid: str, metric: str, *, since: float) -> list[Point]:
        s = self._series.get((host, uuid), {}).get(metric)
        return [] if s is None else s.points(since)

    def sparkline(self, host: str, uuid: str, metric: str, n: int) -> list[float]:
        """The newest `n` samples of a series, oldest first."""
        s = self._series.get((host, uuid), {}).get(metric)
        return [] if s is None else s.fine.last_values(n)

    def covers(self, host: str, uuid: str, metric: str, since: float) -> bool:
        """True when the rings hold data reaching back to `since` (else ask the store)."""
        s = self._series.get((host, uuid), {}).get(metric)
        if s is None:
            return False
        oldest = s.coarse.oldest() if len(s.coarse) else s.fine.oldest()
        return oldest is not None and oldest <= since + self.bucket_s

    def metrics(self, host: str, uuid: str) -> list[str]:
        return sorted(self._series.get((host, uuid), {}))

    def tracked(self) -> set[tuple[str, str]]:
        """Every (host, VM uuid) with at least one series ("" uuid: the host)."""
        return set(self._series)
