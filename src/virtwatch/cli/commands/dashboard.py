"""`virtwatch` (or `virtwatch dashboard`): the live dashboard."""

from __future__ import annotations

import argparse
import gc
from typing import TYPE_CHECKING

from virtwatch.cli.compose import (
    build_runtime,
    choose_host,
    config_from,
    hosts_from,
    recording_after_start,
)
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.process import prepare_libvirt

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    pass


async def run_dashboard(args: argparse.Namespace) -> int:
    gc.disable()  # until the start is over: see `recording_after_start`
    try:
        return await _dashboard(args)
    finally:
        gc.enable()


async def _dashboard(args: argparse.Namespace) -> int:
    from virtwatch.storage.intake import store_intake  # no SQLAlchemy: that loads later
    from virtwatch.tui.bindings import DetailsService
    from virtwatch.tui.factory import make_app  # Textual loads only for the screen
    from virtwatch.tui.settings import default_config_path

    config = config_from(args)
    config_path = config.path or default_config_path()
    prepare_libvirt()
    chosen = None
    if args.uri or not config.hosts():
        chosen = await choose_host(args.uri, allow_demo=not args.no_demo, read_only=args.read_only)
    hosts = hosts_from(config, args, chosen)
    hub = Hub()
    # subscribed before the runtime publishes anything: the store writer's queues (the
    # writer itself comes later) and, as it is made, the app (the very first snapshot
    # reaches the screen)
    intake = store_intake(hub)
    rt = build_runtime(config, hosts, hub)
    app = make_app(
        hub,
        config=config,
        config_path=config_path,
        read_only=all(h.read_only for h in hosts),
        interval_s=hosts[0].interval_s,
        theme=args.theme,
        refresh_s=args.refresh,
        runner=rt.tasks,
        sources=rt.pools,  # filled as the runtime opens
    )
    async with (
        recording_after_start(app, config, rt, hub, args.db, intake),
        DetailsService(rt.pools, hub) as details,
    ):
        app.details_source = details  # its loaders need the open pools
        await app.run_async()
    return 0
