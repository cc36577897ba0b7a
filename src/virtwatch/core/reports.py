"""Error reports: an AppError as it happened somewhere, at some time, on the hub."""

from __future__ import annotations

import time
from dataclasses import dataclass

from virtwatch.core.errors import AppError


@dataclass(frozen=True, slots=True)
class ErrorReport:
    error: AppError
    host: str | None
    vm: str | None
    at: float

    @classmethod
    def of(cls, error: AppError, *, host: str | None = None, vm: str | None = None) -> ErrorReport:
        return cls(error, host, vm, time.time())
