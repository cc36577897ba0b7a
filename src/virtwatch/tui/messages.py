"""Messages from the hub-following workers to the app. A newer snapshot of a host
replaces a pending older one (latest wins), as does a host's connection state."""

from __future__ import annotations

from textual.message import Message

from virtwatch.core.model import Snapshot
from virtwatch.core.records import HostConnection


class SnapshotArrived(Message):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotArrived) and message.snapshot.host == self.snapshot.host


class RecordArrived(Message):
    """Any other record from the hub: an error, health result or alert, task update,
    audit row, domain event or connection state."""

    def __init__(self, record: object) -> None:
        super().__init__()
        self.record = record

    def can_replace(self, message: Message) -> bool:
        mine = self.record
        other = getattr(message, "record", None)
        return (
            isinstance(mine, HostConnection)
            and isinstance(other, HostConnection)
            and mine.host == other.host
        )
