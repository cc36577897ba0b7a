"""The sample recorder: subscribes to snapshots on the hub and writes their values.

Every snapshot that is pending when the writer wakes goes into one batched write,
so a slow disk makes batches bigger, not the UI slower.
"""

from __future__ import annotations

import asyncio
import logging

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.hub import Hub
from virtwatch.core.model import Snapshot
from virtwatch.core.reports import ErrorReport
from virtwatch.storage.store import SampleRow, Store

log = logging.getLogger(__name__)


def rows_from_snapshot(snap: Snapshot) -> list[SampleRow]:
    """The values of one snapshot worth keeping, as rows. Unknown values are not invented."""
    ts = int(snap.taken_at * 1000)
    rows: list[SampleRow] = []
    hs = snap.host_sample
    if hs is not None:
        for metric, value in (
            ("host.cpu_pct", hs.cpu_pct),
            ("host.mem_used_kib", hs.mem_used_kib),
        ):
            if value is not None:
                rows.append(SampleRow(snap.host, "", "", metric, ts, float(value)))
    for d in snap.domains:
        for metric, v in (
            ("cpu_pct", d.cpu_pct),
            ("mem_used_kib", d.mem_used_kib),
            ("mem_alloc_kib", d.mem_alloc_kib),
        ):
            if v is not None:
                rows.append(SampleRow(snap.host, d.uuid, d.name, metric, ts, float(v)))
    return rows


class SampleRecorder:
    """Runs until cancelled; on cancel, writes what is still pending, then stops."""

    def __init__(self, store: Store, hub: Hub) -> None:
        self._store = store
        self._hub = hub
        self._sub = hub.subscribe(Snapshot, maxsize=10_000)
        self.batches = 0

    async def _drain_once(self, first: Snapshot) -> None:
        rows = rows_from_snapshot(first)
        while (more := self._sub.get_nowait()) is not None:
            rows.extend(rows_from_snapshot(more))
        try:
            await self._store.write_samples(rows)
            self.batches += 1
        except AppError as err:
            self._hub.publish(ErrorReport.of(err))
        except Exception as err:  # the disk or database refused: keep running, say so
            self._hub.publish(
                ErrorReport.of(
                    AppError(
                        ErrorCode.DATABASE_ERROR,
                        f"writing {len(rows)} samples failed: {err.__class__.__name__}: {err}",
                        "check free disk space and permissions of the database file",
                        Severity.ERROR,
                        transient=True,
                    )
                )
            )

    async def run(self) -> None:
        try:
            async for snap in self._sub:
                await self._drain_once(snap)
        except asyncio.CancelledError:
            first = self._sub.get_nowait()
            if first is not None:
                await asyncio.shield(self._drain_once(first))
            raise
        finally:
            self._sub.close()
