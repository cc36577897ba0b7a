"""The one nearest-rank percentile (pool waits, spike baselines, rollups): always one of
the values, at the rank ceil(q n / 100) computed exactly."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtwatch.core.percentile import nearest_rank, percentile

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
quantile = st.floats(min_value=0, max_value=100, allow_nan=False)


@given(values=st.lists(finite, min_size=1, max_size=300), q=quantile)
def test_it_is_a_member_with_the_right_rank(values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert p in values
    rank = nearest_rank(len(values), q)
    assert 1 <= rank <= len(values)
    assert p == sorted(values)[rank - 1]
    # at least q % of the values are <= p, and (past the first) fewer than q % are < p
    assert sum(v <= p for v in values) * 100 >= q * len(values)
    assert sum(v < p for v in values) < rank


@given(n=st.integers(min_value=1, max_value=100_000), q=st.integers(min_value=1, max_value=100))
def test_the_rank_is_the_one_the_rollup_sql_computes_in_integers(n: int, q: int) -> None:
    rank = nearest_rank(n, q)
    assert 100 * (rank - 1) < q * n <= 100 * rank
    assert rank == (q * n + 99) // 100


@given(values=st.lists(finite, min_size=1, max_size=50))
def test_the_ends_are_the_minimum_and_the_maximum(values: list[float]) -> None:
    assert percentile(values, 0) == min(values)
    assert percentile(values, 100) == max(values)


def test_examples() -> None:
    hundred = [float(v) for v in range(1, 101)]
    assert percentile(hundred, 50) == 50.0
    assert percentile(hundred, 95) == 95.0
    assert percentile(hundred, 99) == 99.0
    assert percentile(hundred, 7) == 7.0  # ceil(7 / 100 * 100) in floats is 8
    assert math.ceil(7 / 100 * 100) == 8
    assert percentile([float(i) for i in range(1, 21)], 95) == 19.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 95) == 2.0
    assert percentile([2.0, 1.0], 50) == 1.0  # unsorted input


def test_no_values_and_bad_quantiles_are_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="between 0 and 100"):
        nearest_rank(3, -1)
