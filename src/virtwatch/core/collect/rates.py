"""Rates from cumulative counters. Pure: a counter that goes down is a reset, not a rate.

A rate is never negative and never absurd: a reset (VM restarted, device unplugged)
gives None ("unknown"), a wrap is followed only for counters declared to wrap, and a
rate above a physical ceiling is treated as a disguised reset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from virtwatch.core.libvirt.stats import BlockCounters, NetCounters
from virtwatch.core.model import DiskIo, NetIo

# ceilings above which a "rate" can only be a counter glitch (a reset that looks like growth)
MAX_BYTES_PER_S = 1e12  # 1 TB/s: far above any disk or NIC a VM gets
MAX_EVENTS_PER_S = 1e9  # requests or packets per second


def counter_rate(
    prev: int | None,
    cur: int | None,
    elapsed_s: float,
    *,
    wrap_at: int | None = None,
    max_rate: float | None = None,
) -> float | None:
    """Per-second rate of a monotonic counter, or None when it cannot be known.

    None when either value is missing, time did not advance, or the counter went
    down (VM restarted, device unplugged): a reset gives no rate, never a negative one.
    With `wrap_at` (e.g. 2**32 for a 32-bit counter) a counter that went down is read as
    having wrapped once. With `max_rate`, a rate above it is None (a disguised reset).
    """
    if prev is None or cur is None or elapsed_s <= 0 or prev < 0 or cur < 0:
        return None
    if cur >= prev:
        delta = cur - prev
    elif wrap_at is not None and prev < wrap_at and cur < wrap_at:
        delta = wrap_at - prev + cur
    else:
        return None
    rate = delta / elapsed_s
    if max_rate is not None and rate > max_rate:
        return None
    return rate


def cpu_percent(
    prev_ns: int | None, cur_ns: int | None, elapsed_s: float, cpus: int | None
) -> float | None:
    """CPU use in percent of `cpus` CPUs from cpu.time deltas (nanoseconds).

    Clamped to [0, 100]: scheduling jitter between the counter read and the clock
    read can make a fully busy VM look like 100.3 %.
    """
    if cpus is None or cpus <= 0:
        return None
    rate = counter_rate(prev_ns, cur_ns, elapsed_s)
    if rate is None:
        return None
    pct = 100.0 * rate / (1e9 * cpus)
    return min(100.0, max(0.0, pct))


_BUSY_JITTER = 0.02
"""How far (as a share of the elapsed total) busy time may go back and still read as 0 %."""


def busy_percent(prev: tuple[float, float] | None, cur: tuple[float, float]) -> float | None:
    """Share of time busy between two cumulative (busy, total) readings, in [0, 100].

    For host CPU times (psutil's seconds or libvirt's nanoseconds alike). None when
    the total did not advance or went backwards (counters reset by a host reboot). A busy
    share that went back by a hair (float rounding of summed fields, or the kernel's idle
    accounting jitter on an idle host) is 0 %, not unknown.
    """
    if prev is None:
        return None
    d_total = cur[1] - prev[1]
    d_busy = cur[0] - prev[0]
    if d_total <= 0 or d_busy < -_BUSY_JITTER * d_total:
        return None
    return min(100.0, max(0.0, 100.0 * d_busy / d_total))


def summed_rate(
    pairs: Iterable[tuple[int | None, int | None]], elapsed_s: float, *, max_rate: float
) -> float | None:
    """Sum of the rates of several counters (prev, cur); None if none of them has a rate.

    A counter that reset or is missing is left out rather than poisoning the sum.
    """
    total = None
    for prev, cur in pairs:
        rate = counter_rate(prev, cur, elapsed_s, max_rate=max_rate)
        if rate is not None:
            total = rate if total is None else total + rate
    return total


def _total(values: Iterable[int | None]) -> int | None:
    out = None
    for v in values:
        if v is not None:
            out = v if out is None else out + v
    return out


def disk_io(
    prev: Sequence[BlockCounters] | None,
    cur: Sequence[BlockCounters],
    elapsed_s: float,
    measured_at: float,
) -> DiskIo:
    """A VM's disks summed into one DiskIo; rates over the disks present in both readings."""
    before = {b.name: b for b in prev} if prev is not None else {}
    both = [(before[c.name], c) for c in cur if c.name in before]

    def rate(attr: str, ceiling: float) -> float | None:
        if prev is None:
            return None
        return summed_rate(
            ((getattr(p, attr), getattr(c, attr)) for p, c in both), elapsed_s, max_rate=ceiling
        )

    return DiskIo(
        devices=tuple(c.name for c in cur),
        rd_bytes=_total(c.rd_bytes for c in cur),
        wr_bytes=_total(c.wr_bytes for c in cur),
        rd_reqs=_total(c.rd_reqs for c in cur),
        wr_reqs=_total(c.wr_reqs for c in cur),
        rd_bps=rate("rd_bytes", MAX_BYTES_PER_S),
        wr_bps=rate("wr_bytes", MAX_BYTES_PER_S),
        rd_iops=rate("rd_reqs", MAX_EVENTS_PER_S),
        wr_iops=rate("wr_reqs", MAX_EVENTS_PER_S),
        capacity_bytes=_total(c.capacity for c in cur),
        allocation_bytes=_total(c.allocation for c in cur),
        measured_at=measured_at,
    )


def net_io(
    prev: Sequence[NetCounters] | None,
    cur: Sequence[NetCounters],
    elapsed_s: float,
    measured_at: float,
) -> NetIo:
    """A VM's interfaces summed into one NetIo; rates over the interfaces in both readings."""
    before = {n.name: n for n in prev} if prev is not None else {}
    both = [(before[c.name], c) for c in cur if c.name in before]

    def rate(attrs: tuple[str, ...], ceiling: float) -> float | None:
        if prev is None:
            return None
        return summed_rate(
            ((getattr(p, a), getattr(c, a)) for p, c in both for a in attrs),
            elapsed_s,
            max_rate=ceiling,
        )

    return NetIo(
        devices=tuple(c.name for c in cur),
        rx_bytes=_total(c.rx_bytes for c in cur),
        tx_bytes=_total(c.tx_bytes for c in cur),
        rx_pkts=_total(c.rx_pkts for c in cur),
        tx_pkts=_total(c.tx_pkts for c in cur),
        rx_errs=_total(c.rx_errs for c in cur),
        tx_errs=_total(c.tx_errs for c in cur),
        rx_drop=_total(c.rx_drop for c in cur),
        tx_drop=_total(c.tx_drop for c in cur),
        rx_bps=rate(("rx_bytes",), MAX_BYTES_PER_S),
        tx_bps=rate(("tx_bytes",), MAX_BYTES_PER_S),
        rx_pps=rate(("rx_pkts",), MAX_EVENTS_PER_S),
        tx_pps=rate(("tx_pkts",), MAX_EVENTS_PER_S),
        errs_ps=rate(("rx_errs", "tx_errs"), MAX_EVENTS_PER_S),
        drops_ps=rate(("rx_drop", "tx_drop"), MAX_EVENTS_PER_S),
        measured_at=measured_at,
    )
