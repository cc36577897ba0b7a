"""`virtwatch record`: collect and store without a screen, until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from typing import TYPE_CHECKING

from virtwatch.cli.compose import (
    build_runtime,
    config_from,
    database_of,
    freeze_the_start,
    hosts_from,
    recording,
)
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.process import prepare_libvirt
from virtwatch.core.libvirt.uri import redact_text
from virtwatch.storage.engine import db_url

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    pass


async def run_record(args: argparse.Namespace) -> int:
    """Collect and write until SIGINT/SIGTERM, then flush and exit 0."""
    from virtwatch.storage.store import Store

    config = config_from(args)
    prepare_libvirt()
    hosts = hosts_from(config, args)
    if args.name and len(hosts) == 1:
        hosts = [dataclasses.replace(hosts[0], name=args.name)]
    hub = Hub()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Store(db_url(database_of(args, config))) as store:
            async with recording(config, build_runtime(config, hosts, hub), hub, store) as writer:
                freeze_the_start()
                names = ", ".join(h.label for h in hosts)
                print(
                    f"virtwatch: recording {names} into {redact_text(store.url)}; "
                    "stop with Ctrl-C or SIGTERM",
                    file=sys.stderr,
                    flush=True,
                )
                await stop.wait()
            print(
                f"virtwatch: stopped; {writer.samples_written} samples and "
                f"{writer.records_written} records written",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
