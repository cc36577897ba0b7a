from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.collect.rates import (
    MAX_BYTES_PER_S,
    busy_percent,
    counter_rate,
    cpu_percent,
    disk_io,
    net_io,
    summed_rate,
)
from virtwatch.core.libvirt.stats import BlockCounters, NetCounters

counters = st.integers(min_value=0, max_value=2**64 - 1)
elapsed = st.floats(min_value=0.001, max_value=3600, allow_nan=False)


def test_rate_of_a_steady_counter() -> None:
    assert counter_rate(1000, 3000, 2.0) == 1000.0


def test_missing_values_give_no_rate() -> None:
    assert counter_rate(None, 5, 1.0) is None
    assert counter_rate(5, None, 1.0) is None


def test_time_that_did_not_advance_gives_no_rate() -> None:
    assert counter_rate(1, 2, 0.0) is None
    assert counter_rate(1, 2, -1.0) is None


@given(prev=counters, cur=counters, dt=elapsed)
def test_a_reset_never_gives_a_negative_rate(prev: int, cur: int, dt: float) -> None:
    rate = counter_rate(prev, cur, dt)
    if cur < prev:
        assert rate is None
    else:
        assert rate is not None
        assert rate >= 0


@given(prev=counters, cur=counters, dt=elapsed, cpus=st.integers(min_value=1, max_value=512))
def test_cpu_percent_stays_between_0_and_100(prev: int, cur: int, dt: float, cpus: int) -> None:
    pct = cpu_percent(prev, cur, dt, cpus)
    assert pct is None or 0.0 <= pct <= 100.0


def test_one_busy_vcpu_of_two_is_fifty_percent() -> None:
    assert cpu_percent(0, 2_000_000_000, 2.0, 2) == 50.0


def test_cpu_percent_needs_a_cpu_count() -> None:
    assert cpu_percent(0, 10, 1.0, None) is None
    assert cpu_percent(0, 10, 1.0, 0) is None


# --- wraps, ceilings, busy share --------------------------------------------------------

WRAP32 = 2**32


def test_a_declared_32_bit_counter_is_followed_across_its_wrap() -> None:
    assert counter_rate(WRAP32 - 100, 50, 1.0, wrap_at=WRAP32) == 150.0


def test_without_a_wrap_declared_going_down_is_a_reset() -> None:
    assert counter_rate(WRAP32 - 100, 50, 1.0) is None


def test_negative_counters_are_not_counters() -> None:
    assert counter_rate(-1, 5, 1.0) is None
    assert counter_rate(5, -1, 1.0) is None


def test_a_rate_above_the_ceiling_is_a_disguised_reset() -> None:
    assert counter_rate(0, 10**15, 1.0, max_rate=MAX_BYTES_PER_S) is None
    assert counter_rate(0, 10**9, 1.0, max_rate=MAX_BYTES_PER_S) == 1e9


@given(
    prev=st.integers(min_value=0, max_value=WRAP32 - 1),
    cur=st.integers(min_value=0, max_value=WRAP32 - 1),
    dt=elapsed,
)
def test_wrapped_rates_are_never_negative_and_match_the_modular_delta(
    prev: int, cur: int, dt: float
) -> None:
    rate = counter_rate(prev, cur, dt, wrap_at=WRAP32)
    assert rate is not None
    assert rate >= 0
    assert abs(rate * dt - (cur - prev) % WRAP32) <= 1e-6 * max(1.0, (cur - prev) % WRAP32)


@given(prev=counters, cur=counters, dt=elapsed, ceiling=st.floats(min_value=1, max_value=1e12))
def test_a_rate_is_none_or_within_zero_and_the_ceiling(
    prev: int, cur: int, dt: float, ceiling: float
) -> None:
    rate = counter_rate(prev, cur, dt, max_rate=ceiling)
    assert rate is None or 0 <= rate <= ceiling


def test_busy_percent_of_host_cpu_times() -> None:
    assert busy_percent((10.0, 100.0), (15.0, 110.0)) == 50.0
    assert busy_percent(None, (15.0, 110.0)) is None
    assert busy_percent((10.0, 100.0), (10.0, 100.0)) is None  # no time passed
    assert busy_percent((10.0, 100.0), (5.0, 50.0)) is None  # host rebooted: counters reset
    # an idle host whose summed busy fields went back by float rounding: 0 %, not unknown
    assert busy_percent((10.000000000001, 100.0), (10.0, 100.4)) == 0.0
    assert busy_percent((10.0, 100.0), (5.0, 110.0)) is None  # busy really went backwards


@given(
    a=st.tuples(st.floats(0, 1e9), st.floats(0, 1e9)),
    b=st.tuples(st.floats(0, 1e9), st.floats(0, 1e9)),
)
def test_busy_percent_stays_between_0_and_100(
    a: tuple[float, float], b: tuple[float, float]
) -> None:
    pct = busy_percent(a, b)
    assert pct is None or 0.0 <= pct <= 100.0


def test_summed_rate_leaves_out_reset_counters() -> None:
    assert summed_rate([(0, 10), (100, 5), (None, 3)], 1.0, max_rate=1e9) == 10.0
    assert summed_rate([(100, 5)], 1.0, max_rate=1e9) is None


def blk(name: str, rd: int, wr: int, *, reqs: int = 1) -> BlockCounters:
    return BlockCounters(name, f"/img/{name}", rd, reqs, wr, reqs, 10, 100, 20)


def test_disk_io_sums_disks_and_rates_over_the_ones_in_both_readings() -> None:
    before = [blk("vda", 1000, 500), blk("vdb", 0, 0)]
    after = [blk("vda", 3000, 1500, reqs=3), blk("vdb", 100, 0, reqs=2)]
    io = disk_io(before, after, 2.0, 42.0)
    assert io.devices == ("vda", "vdb")
    assert (io.rd_bytes, io.wr_bytes) == (3100, 1500)
    assert (io.rd_bps, io.wr_bps) == (1050.0, 500.0)
    assert io.rd_iops == 1.5  # (3-1 + 2-1) / 2 s
    assert (io.capacity_bytes, io.allocation_bytes) == (200, 20)
    assert io.measured_at == 42.0


def test_a_hot_unplugged_disk_never_makes_a_negative_rate() -> None:
    before = [blk("vda", 1000, 0), blk("vdb", 10**9, 10**9)]
    after = [blk("vda", 2000, 0)]
    io = disk_io(before, after, 1.0, 0.0)
    assert io.rd_bps == 1000.0
    assert io.wr_bps == 0.0


def test_a_replugged_disk_with_a_fresh_counter_is_left_out() -> None:
    io = disk_io([blk("vda", 10**6, 0)], [blk("vda", 10, 0)], 1.0, 0.0)
    assert io.rd_bps is None


def test_the_first_reading_has_totals_but_no_rates() -> None:
    io = disk_io(None, [blk("vda", 5, 5)], 0.0, 1.0)
    assert io.rd_bytes == 5
    assert io.rd_bps is None
    assert io.wr_iops is None


def nic(name: str, rx: int, tx: int, errs: int = 0, drop: int = 0) -> NetCounters:
    return NetCounters(name, rx, rx // 100, errs, drop, tx, tx // 100, errs, drop)


def test_net_io_rates_errors_and_drops() -> None:
    io = net_io([nic("vnet0", 0, 0)], [nic("vnet0", 2000, 1000, errs=2, drop=4)], 2.0, 7.0)
    assert (io.rx_bps, io.tx_bps) == (1000.0, 500.0)
    assert (io.rx_pps, io.tx_pps) == (10.0, 5.0)
    assert io.errs_ps == 2.0  # rx + tx
    assert io.drops_ps == 4.0
    assert (io.rx_errs, io.tx_drop) == (2, 4)


def test_missing_counters_are_unknown_not_zero() -> None:
    io = net_io(None, [NetCounters("#0", *(None,) * 8)], 1.0, 0.0)
    assert io.rx_bytes is None
    assert io.devices == ("#0",)


counter_lists = st.lists(
    st.tuples(st.sampled_from(["vda", "vdb", "sda"]), counters, counters), max_size=3
)


@given(before=counter_lists, after=counter_lists, dt=elapsed)
def test_disk_rates_are_never_negative_whatever_the_devices_do(
    before: list[tuple[str, int, int]], after: list[tuple[str, int, int]], dt: float
) -> None:
    io = disk_io([blk(n, r, w) for n, r, w in before], [blk(n, r, w) for n, r, w in after], dt, 0.0)
    for rate in (io.rd_bps, io.wr_bps, io.rd_iops, io.wr_iops):
        assert rate is None or 0 <= rate <= MAX_BYTES_PER_S
