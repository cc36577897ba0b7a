"""The hub subscriptions the store writer reads, made apart from the writer: a program can
subscribe before anything is published and build the writer (whose module loads
SQLAlchemy) once its screen is up, losing nothing that was published meanwhile."""

from __future__ import annotations

from typing import Any

from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.model import Snapshot
from virtwatch.storage.rows import RECORD_TYPES

SNAPSHOT_BACKLOG = 256  # snapshots waiting for the writer; beyond, the oldest are dropped
RECORD_BACKLOG = 10_000  # per record kind


def store_intake(hub: Hub) -> list[Subscription[Any]]:
    """A backlog subscription for snapshots and one per record kind the store keeps."""
    return [
        hub.subscribe(Snapshot, maxsize=SNAPSHOT_BACKLOG),
        *(hub.subscribe(kind, maxsize=RECORD_BACKLOG) for kind in RECORD_TYPES),
    ]
