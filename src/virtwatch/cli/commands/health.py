"""`virtwatch health`: every health check once; the exit code is the verdict."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING

from virtwatch.cli.compose import build_runtime, config_from, configured_db, hosts_from
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.process import prepare_libvirt
from virtwatch.storage.engine import db_url

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    pass


async def run_health(args: argparse.Namespace) -> int:
    """Every health check once, headless: a table (or --json) on stdout; the exit code is
    the worst state: 0 ok, 1 warn (or a check without data yet), 2 crit; 3 (Nagios UNKNOWN)
    when virtwatch could not judge, set by `main`. Thresholds from the config's [health]."""
    from virtwatch.core.health.checks import CATALOGUE, runtime_checks, store_check
    from virtwatch.core.health.monitor import (
        HealthMonitor,
        HealthRegistry,
        exit_code,
        health_settings,
        worst,
    )
    from virtwatch.storage.lease import WriterRole
    from virtwatch.storage.store import Store
    from virtwatch.storage.writer import StoreWriter

    prepare_libvirt()
    config = config_from(args)
    settings = health_settings(config, CATALOGUE)
    hosts = [
        dataclasses.replace(h, read_only=True, interval_s=0.5) for h in hosts_from(config, args)
    ]
    hub = Hub()
    async with contextlib.AsyncExitStack() as stack:
        rt = await stack.enter_async_context(build_runtime(config, hosts, hub))
        deadline = time.monotonic() + 10.0  # two ticks give rates; a dead host gives up
        while time.monotonic() < deadline:
            if all(c.failures or (c.last is not None and c.last.tick >= 2) for c in rt.collectors):
                break
            await asyncio.sleep(0.1)
        checks = runtime_checks(settings, rt, events=rt.events)
        writer = None
        db = args.db or configured_db(config)
        if db:
            store = await stack.enter_async_context(Store(db_url(db)))
            # as a dashboard would: a recorder that records a host keeps its history
            writer = await stack.enter_async_context(
                StoreWriter(store, hub, role=WriterRole.DASHBOARD)
            )
        monitor = HealthMonitor(HealthRegistry(checks), hub.publish, settings)
        results = await monitor.run_once()
        if writer is not None:
            await writer.flush()  # this run's results: the write itself is the probe
            results += await monitor.run_check(store_check(settings, writer))
    code = exit_code(r.state for r in results)
    if args.json:
        doc = {
            "state": worst(r.state for r in results).label,
            "exit_code": code,
            "results": [
                {
                    "check": r.check,
                    "host": r.host,
                    "subject": r.subject,
                    "state": r.state.label,
                    "value": r.value,
                    "unit": r.unit,
                    "warn": r.warn,
                    "crit": r.crit,
                    "message": r.message,
                    "at": r.at,
                }
                for r in results
            ],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for r in monitor.latest():  # worst first
            value = "—" if r.value is None else f"{r.value:g} {r.unit}".rstrip()
            print(f"{r.state.label:7} {r.check:18} {r.subject[:28]:28} {value:>14}  {r.message}")
    return code
