"""The machine table: one row per VM, updated in place, touching only changed cells.

VM names come from untrusted places: every cell is a rich `Text`, never markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from virtwatch.core.model import DomainSample, DomainState, Snapshot
from virtwatch.tui.format import UNKNOWN, fmt_duration, fmt_mem, fmt_pct

COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Name"),
    ("state", "State"),
    ("vcpus", "vCPU"),
    ("cpu", "CPU %"),
    ("mem", "Memory used / alloc"),
    ("uptime", "Uptime / reason"),
)

_STATE_STYLE = {
    DomainState.RUNNING: "green",
    DomainState.PAUSED: "yellow",
    DomainState.SHUTOFF: "dim",
    DomainState.CRASHED: "bold red",
    DomainState.BLOCKED: "yellow",
    DomainState.SHUTDOWN: "yellow",
    DomainState.PMSUSPENDED: "cyan",
}

Cells = tuple[str, ...]


def row_cells(d: DomainSample, now: float) -> Cells:
    """The plain text of each cell of a VM's row. Pure, so changes are cheap to detect."""
    if d.state is DomainState.RUNNING and d.started_at is not None:
        tail = f"up {fmt_duration(now - d.started_at)}"
    else:
        tail = d.state_text if d.state is not DomainState.RUNNING else "running (uptime unknown)"
    return (
        d.name,
        d.state.label,
        UNKNOWN if d.vcpus is None else str(d.vcpus),
        fmt_pct(d.cpu_pct),
        fmt_mem(d.mem_used_kib, d.mem_alloc_kib),
        tail,
    )


def _styled(cells: Cells, state: DomainState) -> list[Text]:
    style = _STATE_STYLE.get(state, "")
    out = [Text(c) for c in cells]
    out[1].stylize(style)
    out[2].justify = out[3].justify = "right"
    return out


@dataclass(frozen=True, slots=True)
class ApplyStats:
    added: int
    removed: int
    cells_updated: int


class MachineTable(DataTable[Text]):
    """Live VM table. Feed it with `apply(snapshot)`; it diffs against what it shows."""

    DEFAULT_CSS = """
    MachineTable { height: 1fr; }
    """

    class SnapshotArrived(Message):
        """A new snapshot for the table. A newer one replaces a pending older one."""

        def __init__(self, snapshot: Snapshot) -> None:
            super().__init__()
            self.snapshot = snapshot

        def can_replace(self, message: Message) -> bool:
            return (
                isinstance(message, MachineTable.SnapshotArrived)
                and message.snapshot.host == self.snapshot.host
            )

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self._clock = clock
        self._shown: dict[str, Cells] = {}
        self._states: dict[str, DomainState] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    @staticmethod
    def row_key(host: str, uuid: str) -> str:
        return f"{host}/{uuid}"

    def apply(self, snap: Snapshot) -> ApplyStats:
        """Make the table show `snap`'s VMs of `snap.host`: add, remove, update changed cells."""
        now = self._clock()
        prefix = f"{snap.host}/"
        wanted: dict[str, DomainSample] = {self.row_key(snap.host, d.uuid): d for d in snap.domains}
        removed = 0
        for key in [k for k in self._shown if k.startswith(prefix) and k not in wanted]:
            self.remove_row(key)
            del self._shown[key]
            del self._states[key]
            removed += 1
        added = updated = 0
        for key, d in wanted.items():
            cells = row_cells(d, now)
            old = self._shown.get(key)
            if old is None:
                self.add_row(*_styled(cells, d.state), key=key)
                added += 1
            elif old != cells or self._states[key] is not d.state:
                styled = _styled(cells, d.state)
                for i, (col, _label) in enumerate(COLUMNS):
                    if old[i] != cells[i] or (i == 1 and self._states[key] is not d.state):
                        # grow the column only when the new text is wider than the old
                        wider = len(cells[i]) > len(old[i])
                        self.update_cell(key, col, styled[i], update_width=wider)
                        updated += 1
            self._shown[key] = cells
            self._states[key] = d.state
        return ApplyStats(added, removed, updated)

    def shown(self) -> dict[str, Cells]:
        """What each row shows now, by row key (for tests and the headless view)."""
        return dict(self._shown)

    def on_machine_table_snapshot_arrived(self, message: SnapshotArrived) -> None:
        self.apply(message.snapshot)
