"""Error reports: an AppError as it happened somewhere, at some time, on the hub.

The reporter (reporter.py) de-duplicates floods: repeated reports of the same
fingerprint within a window become one report with a growing `count`, which the
store keeps as one error-log row (count, first and last seen).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from virtwatch.core.errors import AppError


@dataclass(frozen=True, slots=True)
class ErrorReport:
    error: AppError
    host: str | None
    vm: str | None
    at: float  # last seen
    fingerprint: str = ""  # code|host|vm|normalised message; "" = not yet fingerprinted
    count: int = 1  # occurrences folded into this report
    first_at: float | None = None  # first seen (None = `at`)

    @classmethod
    def of(cls, error: AppError, *, host: str | None = None, vm: str | None = None) -> ErrorReport:
        return cls(error, host, vm, time.time())
