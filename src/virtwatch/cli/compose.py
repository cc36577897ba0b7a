"""The composition root: the one place that builds the runtime, the store and the
watchers, and wires them together (the dashboard and `record` share it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from virtwatch import __version__
from virtwatch.cli.parser import PROBE_TIMEOUT_S, default_db_path, resolve_uri
from virtwatch.core.collect.collector import collector_settings
from virtwatch.core.config import Config, load_config
from virtwatch.core.errors import AppError
from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.incidents import reporter_settings
from virtwatch.core.libvirt.connection import Credentials, probe_uri
from virtwatch.core.libvirt.demo import demo_uri
from virtwatch.core.libvirt.pool_policy import PoolSettings
from virtwatch.core.libvirt.uri import redact_uri
from virtwatch.core.ops.tasks import task_settings
from virtwatch.core.runtime import HostConfig, Runtime
from virtwatch.storage.engine import db_url

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    from virtwatch.storage.store import Store
    from virtwatch.storage.writer import StoreWriter
    from virtwatch.tui.app import VirtwatchApp


STARTUP_MAX_S = 5.0  # no table painted by then (no host answered yet): the start is over


# what the dashboard's store side imports, off the event loop, once its first table is up
STORE_MODULES = (
    "virtwatch.core.health.checks",
    "virtwatch.core.triage.drift",
    "virtwatch.core.health.monitor",
    "virtwatch.core.triage.spike_watch",
    "virtwatch.storage.export",
    "virtwatch.storage.queries",
    "virtwatch.storage.settings",
    "virtwatch.storage.store",
    "virtwatch.storage.timeline_queries",
    "virtwatch.storage.writer",
)


@dataclass(frozen=True, slots=True)
class Chosen:
    uri: str
    notice: str | None
    name: str | None = None


async def choose_host(flag: str | None, *, allow_demo: bool, read_only: bool) -> Chosen:
    """The URI to watch. Without --uri, a hypervisor that does not answer gives the demo
    host, with the reason shown on screen. With --uri, a failure is an error."""
    uri, explicit = resolve_uri(flag)
    if explicit or not allow_demo:
        return Chosen(uri, None)
    try:
        await probe_uri(uri, read_only=read_only, timeout_s=PROBE_TIMEOUT_S)
    except AppError as err:
        notice = (
            f"DEMO HOST (fictional values) — {redact_uri(uri)} did not answer: {err.message}. "
            "Start libvirtd or pass --uri."
        )
        return Chosen(demo_uri(), notice, "demo")
    return Chosen(uri, None)


def hosts_from(
    config: Config, args: argparse.Namespace, chosen: Chosen | None = None
) -> list[HostConfig]:
    """The hosts to watch: --uri wins; else the config's [[hosts]]; else the default URI
    (or the demo host `chosen` for it). [pool] applies to every host; --read-only to all."""
    pool = PoolSettings.from_mapping(config.section("pool"), config.path)
    interval = getattr(args, "interval", None) or collector_settings(config).interval_s
    forced_ro = bool(getattr(args, "read_only", False))
    entries = config.settings().hosts
    if not args.uri and entries:
        hosts = []
        for entry in entries:
            creds = None
            if entry.password_file:
                creds = Credentials.from_file(
                    Path(entry.password_file).expanduser(), username=entry.username
                )
            hosts.append(
                HostConfig(
                    entry.uri,
                    name=entry.name or None,
                    read_only=forced_ro or entry.read_only,
                    interval_s=entry.interval_s or interval,
                    pool=pool,
                    credentials=creds,
                )
            )
        return hosts
    if chosen is not None:
        return [
            HostConfig(
                chosen.uri,
                name=chosen.name,
                read_only=forced_ro,
                interval_s=interval,
                notice=chosen.notice,
                pool=pool,
            )
        ]
    uri, _explicit = resolve_uri(args.uri)
    return [HostConfig(uri, read_only=forced_ro, interval_s=interval, pool=pool)]


def build_runtime(config: Config, hosts: Sequence[HostConfig], hub: Hub) -> Runtime:
    """The one Runtime of a process, with the [errors] and [tasks] settings."""
    return Runtime(
        hosts,
        hub=hub,
        reporter=reporter_settings(config.section("errors"), path=config.path),
        tasks=task_settings(config.section("tasks"), path=config.path),
        collector=collector_settings(config),
    )


def config_from(args: argparse.Namespace) -> Config:
    """The config of `--config` (else the platform's), the environment laid over it; a
    note on stderr for each old key spelling it uses."""
    from virtwatch.tui.settings import default_config_path

    flag = getattr(args, "config", None)
    config = load_config(Path(flag) if flag else default_config_path())
    for note in config.warnings:
        print(f"virtwatch: warning: {note}", file=sys.stderr)
    return config


def database_of(args: argparse.Namespace, config: Config) -> str:
    """Where the history is: --db, else [storage] db (VIRTWATCH_STORAGE__DB, then the
    file), else the platform's data dir."""
    return getattr(args, "db", None) or configured_db(config) or str(default_db_path())


def configured_db(config: Config) -> str | None:
    """[storage] db (or VIRTWATCH_STORAGE__DB), when set."""
    from virtwatch.storage.settings import parse_storage

    return parse_storage(config.section("storage"), config.path).db


def freeze_the_start() -> None:
    """Once started: collect what the start left, and freeze what survives (modules, the
    runtime, the store: they live as long as the process), so that no later full
    collection walks it again (each one holds the GIL: a stall of the event loop)."""
    gc.collect()
    gc.freeze()


@contextlib.asynccontextmanager
async def health_monitor(
    rt: Runtime, hub: Hub, writer: StoreWriter | None, config: Config
) -> AsyncIterator[None]:
    """Every standard health check of `rt` (and of the store writer) in the background,
    results and alerts on the hub, thresholds from the config file's [health]."""
    from virtwatch.core.health.checks import CATALOGUE, runtime_checks
    from virtwatch.core.health.monitor import HealthMonitor, HealthRegistry, health_settings

    settings = health_settings(config, CATALOGUE)
    checks = runtime_checks(settings, rt, store=writer, events=rt.events)
    async with HealthMonitor(HealthRegistry(checks), hub.publish, settings):
        yield


@contextlib.asynccontextmanager
async def watchers(rt: Runtime, store: Store, hub: Hub, config: Config) -> AsyncIterator[None]:
    """What is judged as data arrives, in the background: metric spikes against each
    series' own stored baseline (issue 7), and configuration drift of every VM."""
    from virtwatch.core.triage.drift import DriftWatcher
    from virtwatch.core.triage.spike_watch import SpikeWatch
    from virtwatch.core.triage.spikes import spike_rules
    from virtwatch.storage.timeline_queries import StoreRollupReader

    spikes = SpikeWatch(
        StoreRollupReader(store),
        rt.publish,
        spike_rules(config.section("spikes"), config.path),
        hosts=list(rt.pools),
    )
    tasks = [asyncio.create_task(spikes.run(), name="spike-watch")]
    for label, pool in rt.pools.items():
        drift = DriftWatcher(pool, hub, host=label, report=rt.publish)
        tasks.append(asyncio.create_task(drift.run(), name=f"drift:{label}"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def store_writer(
    config: Config,
    store: Store,
    hub: Hub,
    intake: Iterable[Subscription[Any]] | None = None,
    *,
    role: Literal["recorder", "dashboard"],
) -> StoreWriter:
    """The store writer with the config's [storage] buffer, flush interval and retention,
    holding a lease on its hosts as `role` (storage/lease.py: of the processes sharing a
    database, one writes each host's history, a recorder before a dashboard)."""
    from virtwatch.storage.lease import WriterRole
    from virtwatch.storage.settings import parse_storage
    from virtwatch.storage.writer import StoreWriter

    storage = parse_storage(config.section("storage"), config.path)
    return StoreWriter(
        store,
        hub,
        buffer_rows=storage.buffer_rows,
        flush_interval_s=storage.flush_interval_s,
        retention_policy=storage.retention,
        intake=intake,
        role=WriterRole(role),
    )


@contextlib.asynccontextmanager
async def judging(
    config: Config, rt: Runtime, hub: Hub, store: Store, writer: StoreWriter
) -> AsyncIterator[None]:
    """The health checks and the spike and drift watchers of an open runtime."""
    async with health_monitor(rt, hub, writer, config), watchers(rt, store, hub, config):
        yield


@contextlib.asynccontextmanager
async def recording(
    config: Config, rt: Runtime, hub: Hub, store: Store
) -> AsyncIterator[StoreWriter]:
    """Everything that watches and remembers, for the recorder: the store writer
    (subscribed before the runtime opens and closed after it, so the runtime's first and
    final reports are kept), the runtime `rt`, the health checks and the watchers."""
    writer = store_writer(config, store, hub, role="recorder")
    async with writer, rt, judging(config, rt, hub, store, writer):
        yield writer


@contextlib.asynccontextmanager
async def recording_after_start(
    app: VirtwatchApp,
    config: Config,
    rt: Runtime,
    hub: Hub,
    db: str | None,
    intake: Iterable[Subscription[Any]],
    *,
    startup_max_s: float = STARTUP_MAX_S,
) -> AsyncIterator[None]:
    """The dashboard's `recording`, in the order that paints its first table soonest.

    The runtime opens at once: its snapshots reach the screen, and the store writer's
    `intake` (subscribed earlier) queues them. Once the app has painted its first table
    (or has left, or `startup_max_s` have passed), the store side loads its modules
    (SQLAlchemy and the rest, in a worker thread: the screen keeps answering), opens the
    database, and the writer drains the queues; then the health checks and watchers
    start and the app gets the stored history. The start is then over: one garbage
    collection clears what it left, and what survives (modules, the app: they live as
    long as the process) is frozen, so that no later collection walks it again (the
    collector was paused by `run_dashboard`: each full collection during the start
    walked every object of every module just imported, 0.1-0.2 s here, several times).

    Closes like `recording`: checks and watchers, the runtime, then the writer (so the
    runtime's final reports are kept) and the store. A database that does not open ends
    the app, and its error leaves this block.
    """
    left = asyncio.Event()
    async with (
        contextlib.AsyncExitStack() as keeping,  # the store and its writer: closed last
        rt,
        contextlib.AsyncExitStack() as judged,  # checks and watchers: closed first
    ):

        async def open_store() -> None:
            started = [asyncio.ensure_future(e.wait()) for e in (app.first_table, left)]
            await asyncio.wait(started, timeout=startup_max_s, return_when=asyncio.FIRST_COMPLETED)
            for waiting in started:
                waiting.cancel()
            try:
                await asyncio.to_thread(_import_all, STORE_MODULES)
                from virtwatch.storage.export import StoreIncidents
                from virtwatch.storage.queries import Queries
                from virtwatch.storage.settings import parse_storage
                from virtwatch.storage.store import Store
                from virtwatch.tui.factory import attach_store

                storage = parse_storage(config.section("storage"), config.path)
                store = await keeping.enter_async_context(
                    Store(db_url(db or storage.db or default_db_path()))
                )
                writer = await keeping.enter_async_context(
                    store_writer(config, store, hub, intake, role="dashboard")
                )
                if not left.is_set():
                    await judged.enter_async_context(judging(config, rt, hub, store, writer))
                    incidents = StoreIncidents(store, generated_by=f"virtwatch {__version__}")
                    attach_store(app, Queries(store), incidents)
            except BaseException:
                if app.is_running:
                    app.exit()  # the error leaves this block once the app has
                raise
            freeze_the_start()
            gc.enable()

        opening = asyncio.create_task(open_store(), name="store-after-start")
        try:
            yield
        finally:
            left.set()  # the app left: the store opens now if it has not yet, and the
            await asyncio.wait({opening})  # writer keeps what its queues hold
            failure = None if opening.cancelled() else opening.exception()
        if failure is not None:
            raise failure


def _import_all(names: Sequence[str]) -> None:
    for name in names:
        importlib.import_module(name)
