"""The Textual app: subscribes to the hub and shows what arrives. It never polls
libvirt or the database itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer

from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.model import Snapshot
from virtwatch.core.reports import ErrorReport
from virtwatch.tui.header import HostHeader
from virtwatch.tui.machines import MachineTable


class VirtwatchApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "virtwatch"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "quit", "Quit")]

    def __init__(self, hub: Hub, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        # subscribe before anything can publish: the first snapshot must not be missed
        self._snapshots: Subscription[Snapshot] = hub.subscribe(Snapshot, latest_only=True)
        self._errors: Subscription[ErrorReport] = hub.subscribe(ErrorReport, maxsize=100)

    def compose(self) -> ComposeResult:
        yield HostHeader(clock=self._clock, id="host-header")
        table = MachineTable(clock=self._clock, id="machines")
        table.border_title = "Machines"
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(self._follow_snapshots(), name="snapshots", exclusive=True, group="snap")
        self.run_worker(self._follow_errors(), name="errors", exclusive=True, group="err")

    async def _follow_snapshots(self) -> None:
        table = self.query_one(MachineTable)
        header = self.query_one(HostHeader)
        async for snap in self._snapshots:
            table.post_message(MachineTable.SnapshotArrived(snap))
            header.show(snap)

    async def _follow_errors(self) -> None:
        header = self.query_one(HostHeader)
        async for report in self._errors:
            header.show(error=report)

    def on_unmount(self) -> None:
        self._snapshots.close()
        self._errors.close()
