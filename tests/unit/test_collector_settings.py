"""`[collector]` parsing: defaults, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtwatch.core.collect.collector import (
    FAST_GROUPS,
    SLOW_GROUPS,
    CollectorSettings,
    collector_settings,
)
from virtwatch.core.config import Config, ConfigError
from virtwatch.core.libvirt.stats import STATS_BLOCK, STATS_CPU_TOTAL, STATS_STATE


def test_defaults() -> None:
    s = collector_settings(Config({}))
    assert s == CollectorSettings()
    assert s.fast_groups == FAST_GROUPS
    assert s.slow_groups == SLOW_GROUPS


def test_overrides() -> None:
    s = collector_settings(
        Config(
            {
                "collector": {
                    "interval": 5,
                    "slow_interval": 30.0,
                    "tick_timeout": 12,
                    "fast_groups": ["cpu_total"],
                    "slow_groups": ["block"],
                }
            }
        )
    )
    assert (s.interval_s, s.slow_interval_s, s.tick_timeout_s) == (5.0, 30.0, 12.0)
    assert s.fast_groups == STATS_STATE | STATS_CPU_TOTAL  # state always comes
    assert s.slow_groups == STATS_BLOCK


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"interval": 0}, "collector.interval", "at least"),
        ({"interval": "2s"}, "collector.interval", "must be float"),
        ({"slow_groups": ["disk"]}, "collector.slow_groups", "unknown stats group 'disk'"),
        ({"fast_groups": "state"}, "collector.fast_groups", "must be a list"),
        ({"intervall": 2}, "collector.intervall", "unknown key"),
    ],
)
def test_a_bad_value_names_its_key(table: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        collector_settings(Config({"collector": table}, Path("/etc/virtwatch.toml")))
    assert f"'{key}'" in caught.value.message
    assert words in caught.value.message
    assert "/etc/virtwatch.toml" in caught.value.message
