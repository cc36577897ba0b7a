"""`virtwatch vm ACTION NAME`: one verified action, with its audit row."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from virtwatch.cli.compose import config_from, database_of
from virtwatch.cli.parser import (
    ANSWER_S,
    EXIT_NOT_VERIFIED,
    ONE_SHOT_CLOSE_S,
    resolve_uri,
)
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.calls import no_answer_error
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.libvirt.eventloop import LibvirtEventThread
from virtwatch.core.libvirt.process import prepare_libvirt
from virtwatch.core.libvirt.uri import redact_text, redact_uri
from virtwatch.core.ops.actions import DEFAULT_TIMEOUTS, Action, ActionNotVerified, submit_action
from virtwatch.core.ops.tasks import TaskRunner
from virtwatch.core.records import AuditRecord, TaskUpdate
from virtwatch.storage.engine import db_url

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    pass


async def run_vm(args: argparse.Namespace) -> int:
    """One action as a background task; its audit row (and task log) go to the store.
    Exit 0 when verified, 1 when ignored/failed, 2 on an error (missing VM, ...)."""
    from virtwatch.storage.store import Store

    db = database_of(args, config_from(args))  # a bad config fails before anything acts
    prepare_libvirt()
    LibvirtEventThread.ensure_running()  # before the first open: reboots are seen as events
    uri, _explicit = resolve_uri(args.uri)
    action = Action.from_cli(args.vm_action)
    timeouts = DEFAULT_TIMEOUTS
    if args.timeout is not None:
        timeouts = timeouts.with_wait(action, args.timeout)
    hub = Hub()
    rows: list[AuditRecord | TaskUpdate] = []

    def publish(item: object) -> None:
        hub.publish(item)
        if isinstance(item, AuditRecord | TaskUpdate):
            rows.append(item)

    # the store opens first: no action without a place for its audit row
    async with Store(db_url(db)) as store:
        source = SingleConnection(
            uri, read_only=args.read_only, open_timeout_s=ANSWER_S, call_timeout_s=ANSWER_S
        )
        budget = timeouts.wait_for(action) + ANSWER_S
        try:
            async with asyncio.timeout(budget), TaskRunner(publish) as runner:
                handle = submit_action(
                    runner,
                    source,
                    action,
                    args.vm_name,
                    host=redact_uri(uri),
                    publish=publish,
                    timeouts=timeouts,
                )
                try:
                    record = await handle.result()
                except ActionNotVerified as err:
                    print(f"virtwatch: {redact_text(err.one_line())}", file=sys.stderr)
                    return EXIT_NOT_VERIFIED
        except TimeoutError:
            what = f"{action.cli_name} {args.vm_name}"
            raise no_answer_error(redact_uri(uri), budget, what) from None
        finally:
            await source.close(wait_s=ONE_SHOT_CLOSE_S)
            await store.write([], rows)
    print(f"{record.message} ({action.cli_name} verified in {record.duration_s:.1f} s)")
    return 0
