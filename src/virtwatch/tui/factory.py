"""One factory builds the dashboard for the CLI, the tests and the benchmarks:
settings from the config's [ui] table (flags win), per-host read-only from
[[hosts]], rings sized for the collector interval, ports bound to the core and the store
(now, or with `attach_store` once the store is open)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from virtwatch.core.collect.history import MetricHistory
from virtwatch.core.config import Config
from virtwatch.core.hub import Hub
from virtwatch.core.libvirt.connection import ConnectionSource
from virtwatch.core.libvirt.uri import redact_uri
from virtwatch.core.ops.tasks import TaskRunner
from virtwatch.tui.app import VirtwatchApp
from virtwatch.tui.bindings import RunnerActions, StoredHistory
from virtwatch.tui.ports import DetailsSource, TimelineSource
from virtwatch.tui.settings import ui_settings

if TYPE_CHECKING:  # the store's code loads only when it opens
    from virtwatch.storage.queries import Queries

LIVE_WINDOW_S = 300.0  # every sample of the last 5 minutes stays in memory


def read_only_hosts(config: Config) -> frozenset[str]:
    """Labels (name, else redacted URI) of the [[hosts]] with read_only = true."""
    return frozenset(h.name or redact_uri(h.uri) for h in config.settings().hosts if h.read_only)


def history_for(interval_s: float) -> MetricHistory:
    """Rings that hold the last 5 minutes at the collector's interval, then 15 s means
    for an hour."""
    fine = max(30, min(1200, math.ceil(LIVE_WINDOW_S / interval_s) + 1))
    return MetricHistory(fine_points=fine, coarse_points=240, bucket_s=15.0)


def make_app(
    hub: Hub,
    *,
    config: Config | None = None,
    config_path: Path | None = None,
    read_only: bool = False,
    interval_s: float = 2.0,
    theme: str | None = None,
    refresh_s: float | None = None,
    runner: TaskRunner | None = None,
    sources: Mapping[str, ConnectionSource] | None = None,
    queries: Queries | None = None,
    details: DetailsSource | None = None,
    timeline: TimelineSource | None = None,
    clock: Callable[[], float] = time.time,
) -> VirtwatchApp:
    config = config or Config({}, config_path)
    settings = ui_settings(config)
    if theme is not None:
        settings = dataclasses.replace(settings, theme=theme)
    if refresh_s is not None:
        settings = dataclasses.replace(settings, refresh_s=refresh_s)
    actions = None
    if runner is not None and sources is not None and not read_only:
        actions = RunnerActions(runner, sources, hub.publish)
    app = VirtwatchApp(
        hub,
        clock=clock,
        history=history_for(interval_s),
        actions=actions,
        tasks=runner,
        details=details,
        read_only=read_only,
        read_only_hosts=read_only_hosts(config),
        settings=settings,
        config_path=config_path,
        config_notes=config.warnings,
    )
    if queries is not None:
        attach_store(app, queries, timeline)
    elif timeline is not None:
        app.timeline = timeline
    return app


def attach_store(
    app: VirtwatchApp, queries: Queries, timeline: TimelineSource | None = None
) -> None:
    """Give an app made without a store its stored history (the detail screen's 24 h and
    7 d graphs) and incidents (`timeline`: the timeline screen and export; else the plain
    stored history); the screens opened from then on use them."""
    stored = StoredHistory(queries)
    app.series_source = stored
    app.timeline = timeline or stored
