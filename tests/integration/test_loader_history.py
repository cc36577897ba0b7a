"""Per-VM history for the visible rows through the store: N loads, ONE SELECT ... IN,
on a real SQLite file (storage's Queries is the HistorySource)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event

from virtwatch.core.collect.loader import HistoryKey, HistorySource, history_loader
from virtwatch.storage.engine import db_url
from virtwatch.storage.queries import Queries
from virtwatch.storage.rows import SampleRow
from virtwatch.storage.store import Store

NOW = 1_795_000_000.0


async def test_visible_rows_history_is_one_query(tmp_path: Path) -> None:
    rows = [
        SampleRow("hv1", f"uuid-{v}", f"vm-{v}", metric, int((NOW - 60 * k) * 1000), float(v + k))
        for v in range(30)
        for metric in ("cpu_pct", "mem_used_kib")
        for k in range(5)
    ]
    async with Store(db_url(tmp_path / "h.db")) as store:
        await store.write_samples(rows)
        selects: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                selects.append(statement)

        event.listen(store.reader.sync_engine, "before_cursor_execute", count)
        source: HistorySource = Queries(store)
        loader = history_loader(source, window_s=3600, clock=lambda: NOW + 1)
        visible = [HistoryKey("hv1", f"uuid-{v}", "cpu_pct") for v in range(0, 30, 2)]
        histories = await asyncio.gather(*(loader.load(k) for k in visible))
        nothing = await loader.load(HistoryKey("hv1", "uuid-404", "cpu_pct"))
        event.remove(store.reader.sync_engine, "before_cursor_execute", count)
    assert len(selects) == 2  # the fifteen visible rows, then the unknown VM alone
    assert " IN " in selects[0].upper()
    assert len(histories) == 15
    first = histories[0]
    assert [v for _t, v in first] == [4.0, 3.0, 2.0, 1.0, 0.0]  # oldest first
    assert [t for t, _v in first] == sorted(t for t, _v in first)
    assert histories[1][-1] == (NOW, 2.0)
    assert nothing == ()  # no data: empty, not an error
