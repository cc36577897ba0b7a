"""Rates from cumulative counters. Pure: a counter that goes down is a reset, not a rate."""

from __future__ import annotations


def counter_rate(prev: int | None, cur: int | None, elapsed_s: float) -> float | None:
    """Per-second rate of a monotonic counter, or None when it cannot be known.

    None when either value is missing, time did not advance, or the counter went
    down (VM restarted, device unplugged): a reset gives no rate, never a negative one.
    """
    if prev is None or cur is None or elapsed_s <= 0 or cur < prev:
        return None
    return (cur - prev) / elapsed_s


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
