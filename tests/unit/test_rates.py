from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.rates import counter_rate, cpu_percent

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
