"""Deterministic sample data for the storage tests (seeded, no wall clock)."""

from __future__ import annotations

import random

from virtwatch.storage.rows import SampleRow

DAY_MS = 86_400_000
T0_MS = 1_795_000_000_000 - 1_795_000_000_000 % DAY_MS  # a UTC midnight


def day_of_samples(
    *,
    host: str = "hv1",
    vms: int = 2,
    metrics: tuple[str, ...] = ("cpu_pct", "mem_used_kib"),
    start_ms: int = T0_MS,
    span_ms: int = DAY_MS,
    step_ms: int = 2000,
    seed: int = 7,
) -> list[SampleRow]:
    """Every `step_ms` one value per (VM, metric): noisy, with ties and spikes."""
    rng = random.Random(seed)
    rows: list[SampleRow] = []
    for v in range(vms):
        uuid = f"00000000-0000-4000-8000-{v:012d}"
        for metric in metrics:
            for ts in range(start_ms, start_ms + span_ms, step_ms):
                kind = rng.random()
                if kind < 0.1:
                    value = 50.0  # ties
                elif kind < 0.12:
                    value = rng.uniform(500, 1000)  # spikes
                else:
                    value = round(rng.gauss(40, 15), 3)
                rows.append(SampleRow(host, uuid, f"vm-{v}", metric, ts, value))
    return rows
