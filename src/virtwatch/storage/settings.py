"""The `[storage]` section of the config file, parsed into typed settings.

[storage]
db = "~/.local/share/virtwatch/virtwatch.db"   # or postgresql://user@host/db
raw_hours = 24          minute_days = 30        hour_days = 730
events_days = 90        errors_days = 90        audit_days = 90
tasks_days = 90         health_days = 7         alerts_days = 90
max_size_mb = 8192      # SQLite file cap; 0 = none
buffer_rows = 200000    flush_interval_s = 1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtwatch.core.config import validate
from virtwatch.core.config_schema import StorageSection
from virtwatch.storage.retention import Retention, retention_of
from virtwatch.storage.writer import DEFAULT_BUFFER_ROWS, DEFAULT_FLUSH_INTERVAL_S


@dataclass(frozen=True, slots=True)
class StorageSettings:
    db: str | None = None  # a path or URL; None = the platform's data dir
    retention: Retention = field(default_factory=Retention)
    buffer_rows: int = DEFAULT_BUFFER_ROWS
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S


def parse_storage(section: Mapping[str, Any], path: Path | None = None) -> StorageSettings:
    """`[storage]` (the schema's `StorageSection`) -> StorageSettings; a bad value raises
    ConfigError naming the key."""
    sec = validate(StorageSection, section, prefix="storage", path=path)
    return StorageSettings(
        db=sec.db or None,
        retention=retention_of(sec),
        buffer_rows=sec.buffer_rows,
        flush_interval_s=sec.flush_interval_s,
    )
