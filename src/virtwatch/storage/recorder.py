"""The walking skeleton's sample recorder, now the store writer (writer.py), which
records samples and every other hub record. The old names stay importable."""

from __future__ import annotations

from virtwatch.storage.rows import SampleRow, rows_from_snapshot
from virtwatch.storage.writer import StoreWriter

SampleRecorder = StoreWriter

__all__ = ["SampleRecorder", "SampleRow", "StoreWriter", "rows_from_snapshot"]
