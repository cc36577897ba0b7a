"""The nearest-rank percentile: always one of the values, never an interpolation.

The pool's wait figures, the spike baselines and the stored rollups all use it; the
rollup's SQL computes the same rank in integers (see `storage.rollup`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction


def nearest_rank(n: int, q: float) -> int:
    """The 1-based rank of the `q`-th percentile (`q` in [0, 100]) of `n` values:
    ceil(q n / 100), at least 1. Exact (no float rounding: q 7 of 100 values is rank 7)."""
    if n < 1:
        raise ValueError("the percentile of no values is undefined")
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, got {q!r}")
    return max(1, math.ceil(Fraction(q) * n / 100))


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (`q` in [0, 100]) of `values` by the nearest-rank method;
    ValueError when there are none (say what "no values" means where you call it)."""
    return sorted(values)[nearest_rank(len(values), q) - 1]
