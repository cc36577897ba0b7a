"""`virtwatch snapshot`: one snapshot of a host as JSON on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from virtwatch.cli.parser import ANSWER_S, ONE_SHOT_CLOSE_S, resolve_uri
from virtwatch.core.collect.collector import DEFAULT_INTERVAL_S, Collector
from virtwatch.core.libvirt.calls import no_answer_error
from virtwatch.core.libvirt.connection import SingleConnection
from virtwatch.core.libvirt.process import prepare_libvirt
from virtwatch.core.libvirt.uri import redact_uri
from virtwatch.core.model import snapshot_to_dict

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    pass


async def run_snapshot(args: argparse.Namespace) -> int:
    prepare_libvirt()
    uri, _explicit = resolve_uri(args.uri)
    source = SingleConnection(uri, read_only=True, open_timeout_s=ANSWER_S, call_timeout_s=ANSWER_S)
    pause = min(args.interval or DEFAULT_INTERVAL_S, 1.0)
    budget = ANSWER_S + pause
    try:
        async with asyncio.timeout(budget):
            collector = Collector(source, lambda _item: None)
            await collector.tick()
            await asyncio.sleep(pause)  # a second tick gives CPU rates
            snap = await collector.tick()
    except TimeoutError:
        raise no_answer_error(redact_uri(uri), budget, "a snapshot") from None
    finally:
        await source.close(wait_s=ONE_SHOT_CLOSE_S)
    json.dump(snapshot_to_dict(snap), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
