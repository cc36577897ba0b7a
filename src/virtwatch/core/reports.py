"""Error reports: an AppError as it happened somewhere, at some time, on the hub.

An *incident* is a run of reports with the same fingerprint (code, host, VM and the
message with numbers and addresses masked) with no gap longer than the reporter's
window. The reporter (reporter.py) publishes an incident as a few cumulative reports,
not one per occurrence. What the store does with them:

- key: `(fingerprint, first_at)` — the same for every report of one incident
  (`ErrorReport.incident_key`); a later incident of the same fingerprint has a later
  `first_at` and is a new row.
- upsert: INSERT a row on the first report of a key; on each later report UPDATE that
  row: `count = max(count, report.count)`, `last_seen = max(last_seen, report.at)`,
  message/hint/severity/context from the report (the newest wording), and
  `closed = report.closed`. `count` is cumulative (the total so far), never a delta:
  never add it up. Replaying a report is harmless.
- `closed=True` marks the last report of the incident from this reporter (the window
  passed without a repeat, the reporter closed, or it was evicted to bound memory).

A report built directly with `ErrorReport.of(...)` did not pass through a reporter:
its `fingerprint` is "" and `first_at` None (`incident_key` computes both). Everything
that reports errors should go through the runtime's ErrorReporter instead.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

from virtwatch.core.errors import AppError, ErrorCode

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b0x[0-9a-f]+\b", re.I)
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])")
# IPv6 and MAC addresses: groups of hex digits joined by colons (at least three groups)
_COLON_HEX = re.compile(r"(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:])", re.I)
_NUMBER = re.compile(r"(?<![\w-])\d+(?:\.\d+)*(?![\w-])")
_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")
_SPACE = re.compile(r"\s+")


def normalise_message(message: str) -> str:
    """`message` with ids, addresses and bare numbers masked, so repeats look alike.

    Quoted text ('web-01') keeps its digits: VM and file names tell incidents apart;
    counts, pids, ports, durations and addresses do not.
    """
    text = _UUID.sub("<uuid>", message)
    text = _HEX.sub("<hex>", text)
    text = _IPV4.sub("<ip>", text)
    text = _COLON_HEX.sub("<addr>", text)
    parts = _QUOTED.split(text)
    # odd indices are the quoted pieces (the split keeps its capturing group)
    text = "".join(p if i % 2 else _NUMBER.sub("#", p) for i, p in enumerate(parts))
    return _SPACE.sub(" ", text).strip()


# the host's libvirtd cannot be reached or does not answer: however an outage shows (a
# call without reply, keepalive closing the connection, opens failing), it is one incident
HOST_LINK_CODES = frozenset(
    {
        ErrorCode.LIBVIRT_CONNECTION_FAILED,
        ErrorCode.LIBVIRT_CONNECTION_LOST,
        ErrorCode.LIBVIRT_NOT_ANSWERING,
    }
)


def fingerprint(error: AppError, host: str | None, vm: str | None) -> str:
    """16 hex digits naming what went wrong where: code, host, VM, normalised message; or,
    for the host's link to libvirtd (`HOST_LINK_CODES`, no VM), just the host."""
    if error.code in HOST_LINK_CODES and vm is None and host:
        key = f"host-link|{host}"
    else:
        key = "|".join((error.code.value, host or "", vm or "", normalise_message(error.message)))
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """One publication of an incident (see the module docstring for the store's part)."""

    error: AppError  # the latest occurrence
    host: str | None
    vm: str | None
    at: float  # last seen (epoch seconds)
    fingerprint: str = ""  # "" = not from a reporter (see `incident_key`)
    count: int = 1  # occurrences so far in this incident (cumulative)
    first_at: float | None = None  # first seen; None = `at`
    closed: bool = False  # the last report of this incident

    @classmethod
    def of(cls, error: AppError, *, host: str | None = None, vm: str | None = None) -> ErrorReport:
        return cls(error, host, vm, time.time())

    @property
    def started_at(self) -> float:
        """When the incident began: `first_at`, else `at`."""
        return self.at if self.first_at is None else self.first_at

    @property
    def incident_key(self) -> tuple[str, float]:
        """The store's upsert key, the same for every report of one incident: the
        fingerprint (computed the reporter's way when "") and `started_at`."""
        fp = self.fingerprint or fingerprint(self.error, self.host, self.vm)
        return (fp, self.started_at)
