"""The command line and the composition root: the only place that builds the
runtime and the store and wires them together.

    virtwatch [--uri URI] [--db PATH] [--interval S]      the dashboard
    virtwatch snapshot --json [--uri URI]                 one snapshot as JSON
    virtwatch db upgrade [--db PATH]                      migrate the database
    virtwatch db stats [--db PATH] [--json]               rows, sizes, time span per table
    virtwatch record [--uri URI] [--db PATH]              collect and store, no screen
    virtwatch vm ACTION NAME [--uri URI] [--timeout S]    start/shutdown/... one VM, verified
    virtwatch timeline --since T [--until T] [--vm V] [--host H] [--json]   incident timeline
    virtwatch export --since T [--until T] [--vm V] [--output FILE]         JSON for a ticket
    virtwatch health [--uri URI] [--db PATH] [--json]     every health check once; exit 0/1/2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import platformdirs

from virtwatch import __version__
from virtwatch.core.collect.collector import DEFAULT_INTERVAL_S, Collector, collector_settings
from virtwatch.core.config import Config, config_error, get_typed, load_config
from virtwatch.core.errors import AppError, ErrorCode, Severity, one_line
from virtwatch.core.hub import Hub, Subscription
from virtwatch.core.incidents import reporter_settings
from virtwatch.core.libvirt.connection import (
    Credentials,
    SingleConnection,
    no_answer_error,
    probe_uri,
)
from virtwatch.core.libvirt.demo import demo_uri
from virtwatch.core.libvirt.eventloop import LibvirtEventThread
from virtwatch.core.libvirt.pool import PoolSettings
from virtwatch.core.libvirt.process import prepare_libvirt
from virtwatch.core.libvirt.uri import redact_text, redact_uri
from virtwatch.core.model import snapshot_to_dict
from virtwatch.core.ops.actions import DEFAULT_TIMEOUTS, Action, ActionNotVerified, submit_action
from virtwatch.core.ops.tasks import TaskRunner, task_settings
from virtwatch.core.records import AuditRecord, TaskUpdate
from virtwatch.core.runtime import HostConfig, Runtime
from virtwatch.storage.engine import db_url, sqlite_path

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    from virtwatch.core.triage.timeline import TimelineFilter, Window
    from virtwatch.storage.store import Store
    from virtwatch.storage.writer import StoreWriter
    from virtwatch.tui.app import VirtwatchApp

FALLBACK_URI = "qemu:///system"
PROBE_TIMEOUT_S = 5.0
# one-shot commands (snapshot, vm, health) give libvirtd this long to answer (to connect,
# and for each call); on top of it `vm` waits for the outcome (--timeout, per action)
ANSWER_S = 10.0
ONE_SHOT_CLOSE_S = 0.5  # at exit, how long a one-shot waits for a call still in libvirt
EXIT_FAILURE = 2
EXIT_NOT_VERIFIED = 1  # `vm`: the action ran but its outcome was IGNORED or FAILED
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
    "virtwatch.storage.timeline",
    "virtwatch.storage.writer",
)


def default_db_path() -> Path:
    return platformdirs.user_data_path("virtwatch") / "virtwatch.db"


def resolve_uri(flag: str | None) -> tuple[str, bool]:
    """(uri, explicit): --uri wins and is explicit (never falls back to the demo host)."""
    if flag:
        return flag, True
    return os.environ.get("LIBVIRT_DEFAULT_URI") or FALLBACK_URI, False


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _source_flags(parser: argparse.ArgumentParser, *, uri_default: str) -> None:
    """--uri, --db and --interval: where to look, where to keep it, how often."""
    parser.add_argument("--uri", help=f"libvirt URI (default: {uri_default})")
    parser.add_argument("--db", help=f"database file or URL (default: {default_db_path()})")
    parser.add_argument(
        "--interval",
        type=_positive,
        default=None,
        help=f"seconds between ticks (default: [collector] interval, else {DEFAULT_INTERVAL_S:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="virtwatch",
        description="A terminal dashboard for KVM/libvirt hosts.",
        epilog="`virtwatch COMMAND --help` shows a command's options.",
    )
    p.add_argument("--version", action="version", version=f"virtwatch {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    _source_flags(common, uri_default="$LIBVIRT_DEFAULT_URI or qemu:///system")
    # the dashboard's flags also work without the word `dashboard`, so they are listed
    _source_flags(
        p, uri_default="[[hosts]] in the config, else $LIBVIRT_DEFAULT_URI, else qemu:///system"
    )
    p.add_argument("--read-only", action="store_true", help="open read-only connections")
    p.add_argument(
        "--no-demo", action="store_true", help="never fall back to the bundled demo host"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    dash = sub.add_parser("dashboard", parents=[common], help="the live dashboard (default)")
    dash.add_argument("--read-only", action="store_true", help="open read-only connections")
    dash.add_argument("--no-demo", action="store_true", help="never fall back to the demo host")
    for parser in (p, dash):
        _dashboard_flags(parser)
    snap = sub.add_parser("snapshot", parents=[common], help="print one snapshot and exit")
    snap.add_argument("--json", action="store_true", help="JSON on stdout (the only output)")
    db = sub.add_parser("db", help="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    up = dbsub.add_parser("upgrade", help="run migrations up to the latest schema")
    up.add_argument("--db", help=f"database file or URL (default: {default_db_path()})")
    stats = dbsub.add_parser("stats", help="row counts per table and tier, sizes, time span")
    stats.add_argument("--db", help=f"database file or URL (default: {default_db_path()})")
    stats.add_argument("--json", action="store_true", help="JSON on stdout")
    rec = sub.add_parser(
        "record", parents=[common], help="collect and write to the database, without a screen"
    )
    rec.add_argument("--read-only", action="store_true", help="open read-only connections")
    rec.add_argument("--name", help="the host's name in the database (default: its URI)")
    rec.add_argument("--config", help="config file (default: platform config dir)")
    vm = sub.add_parser(
        "vm", help="act on one VM and verify the outcome (exit 0 only when verified)"
    )
    vm.add_argument("vm_action", metavar="ACTION", choices=[a.cli_name for a in Action])
    vm.add_argument("vm_name", metavar="NAME", help="the VM's libvirt name")
    vm.add_argument("--uri", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI or qemu:///system)")
    vm.add_argument("--db", help=f"database for the audit row (default: {default_db_path()})")
    vm.add_argument(
        "--timeout",
        type=_positive,
        help="seconds to wait for the outcome (default: per action); libvirtd gets "
        f"{ANSWER_S:g} s more to answer, then the command exits 2",
    )
    vm.add_argument("--read-only", action="store_true", help="open a read-only connection")
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--db", help=f"database file or URL (default: {default_db_path()})")
    window.add_argument("--since", required=True, help="'2h', '10:30', ISO 8601 or epoch s")
    window.add_argument("--until", default="now", help="same forms (default: now)")
    window.add_argument("--vm", action="append", default=[], help="a VM name or uuid")
    window.add_argument("--host", action="append", default=[], help="a host name")
    tl = sub.add_parser("timeline", parents=[window], help="the incident timeline of a window")
    tl.add_argument("--kind", action="append", default=[], help="event,error,health,...")
    tl.add_argument("--severity", default="info", help="at least: info|warning|error|critical")
    tl.add_argument("--json", action="store_true", help="JSON on stdout")
    ex = sub.add_parser("export", parents=[window], help="write a window as one JSON document")
    ex.add_argument("--output", default="-", help="file to write (default: stdout)")
    hc = sub.add_parser(
        "health", help="run every health check once; exit 0 ok, 1 warn (or unknown), 2 crit"
    )
    hc.add_argument("--uri", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI or qemu:///system)")
    hc.add_argument("--db", help="also check this database (and store the results in it)")
    hc.add_argument("--config", help="config file (default: platform config dir)")
    hc.add_argument("--json", action="store_true", help="JSON on stdout")
    return p


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
    if not args.uri and config.hosts():
        hosts = []
        for i, entry in enumerate(config.hosts()):
            prefix = f"hosts[{i}]"
            uri = get_typed(entry, "uri", "", prefix=prefix, path=config.path)
            if not uri:
                raise config_error(f"{prefix}.uri", "is required", config.path)
            username = get_typed(entry, "username", "", prefix=prefix, path=config.path)
            pw_file = get_typed(entry, "password_file", "", prefix=prefix, path=config.path)
            creds = None
            if pw_file:
                creds = Credentials.from_file(Path(pw_file).expanduser(), username=username)
            hosts.append(
                HostConfig(
                    uri,
                    name=get_typed(entry, "name", "", prefix=prefix, path=config.path) or None,
                    read_only=forced_ro
                    or get_typed(entry, "read_only", False, prefix=prefix, path=config.path),
                    interval_s=get_typed(
                        entry, "interval", interval, prefix=prefix, minimum=0.1, path=config.path
                    ),
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
    from virtwatch.tui.settings import default_config_path

    flag = getattr(args, "config", None)
    return load_config(Path(flag) if flag else default_config_path())


def _dashboard_flags(parser: argparse.ArgumentParser) -> None:
    """The dashboard's own flags (they override the config's [ui] table)."""
    parser.add_argument("--config", help="config file (default: platform config dir)")
    parser.add_argument(
        "--refresh", type=_positive, default=None, help="seconds between screen updates"
    )
    parser.add_argument("--theme", default=None, help="a Textual theme name")


def freeze_the_start() -> None:
    """Once started: collect what the start left, and freeze what survives (modules, the
    runtime, the store: they live as long as the process), so that no later full
    collection walks it again (each one holds the GIL: a stall of the event loop)."""
    gc.collect()
    gc.freeze()


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

    config_path = Path(args.config) if args.config else default_config_path()
    config = load_config(config_path)
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


async def run_db(args: argparse.Namespace) -> int:
    from virtwatch.storage.queries import Queries
    from virtwatch.storage.store import Store

    url = db_url(args.db or default_db_path())
    if args.db_command == "stats":
        path = sqlite_path(url)
        if path is not None and not path.exists():
            raise AppError(
                ErrorCode.RESOURCE_NOT_FOUND,
                f"no database at {path}",
                "pass --db, or run `virtwatch record` or the dashboard first",
            )
        async with Store(url, run_migrations=False) as store:
            stats = await Queries(store).stats()
        if args.json:
            json.dump(stats.as_dict(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print("\n".join(stats.lines()))
        return 0
    async with Store(url) as store:
        if store.migrated_from == store.revision:
            print(f"database at {redact_text(store.url)} is up to date (revision {store.revision})")
        else:
            print(
                f"database at {redact_text(store.url)} upgraded from revision "
                f"{store.migrated_from or '(empty)'} to {store.revision}"
            )
    return 0


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
    from virtwatch.storage.timeline import StoreRollupReader

    spikes = SpikeWatch(
        StoreRollupReader(store),
        rt.publish,
        spike_rules(config.section("spikes")),
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


async def run_record(args: argparse.Namespace) -> int:
    """Collect and write until SIGINT/SIGTERM, then flush and exit 0."""
    from virtwatch.storage.settings import parse_storage
    from virtwatch.storage.store import Store

    config = config_from(args)
    storage = parse_storage(config.section("storage"), config.path)
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
        async with Store(db_url(args.db or storage.db or default_db_path())) as store:
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


async def run_vm(args: argparse.Namespace) -> int:
    """One action as a background task; its audit row (and task log) go to the store.
    Exit 0 when verified, 1 when ignored/failed, 2 on an error (missing VM, ...)."""
    from virtwatch.storage.store import Store

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
    async with Store(db_url(args.db or default_db_path())) as store:
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


async def _history_store(db: str | None) -> Store:
    """The database to read history from: it must exist and be at the current schema."""
    from virtwatch.storage.revision import HEAD_REVISION
    from virtwatch.storage.store import Store

    url = db_url(db or default_db_path())
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise AppError(
            ErrorCode.RESOURCE_NOT_FOUND,
            f"no database at {path}",
            "pass --db, or run `virtwatch record` or the dashboard first",
        )
    store = await Store(url, run_migrations=False).open()
    if store.revision != HEAD_REVISION:
        await store.close()
        raise AppError(
            ErrorCode.DATABASE_ERROR,
            f"the database is at schema revision {store.revision}, not {HEAD_REVISION}",
            "run `virtwatch db upgrade` first",
        )
    return store


def _window_and_filter(args: argparse.Namespace) -> tuple[Window, TimelineFilter]:
    from virtwatch.core.triage.timeline import (
        TimelineFilter,
        Window,
        parse_kinds,
        parse_severity,
        parse_when,
    )

    now = time.time()
    window = Window(parse_when(args.since, now), parse_when(args.until, now))
    flt = TimelineFilter(
        hosts=frozenset(args.host),
        vms=frozenset(args.vm),
        kinds=parse_kinds(getattr(args, "kind", [])),
        min_severity=parse_severity(getattr(args, "severity", "info")),
    )
    return window, flt


async def run_timeline(args: argparse.Namespace) -> int:
    """The window's timeline from the database, oldest first (text, or --json)."""
    from virtwatch.core.triage.timeline import TIMELINE_SCHEMA_VERSION, entry_line, entry_to_dict
    from virtwatch.storage.export import dump_export, redact_document
    from virtwatch.storage.timeline import TimelineQueries

    window, flt = _window_and_filter(args)
    store = await _history_store(args.db)
    try:
        result = await TimelineQueries(store).timeline(window, flt)
    finally:
        await store.close()
    if args.json:
        doc = {
            "schema": "virtwatch.timeline",
            "schema_version": TIMELINE_SCHEMA_VERSION,
            "window": {"since": window.since, "until": window.until},
            "filter": flt.to_dict(),
            "truncated": result.truncated,
            "entries": [entry_to_dict(e) for e in result.entries],
        }
        dump_export(redact_document(doc), sys.stdout)
        return 0
    print(f"# {len(result.entries)} entries, {flt.describe()}", flush=True)
    for entry in result.entries:
        print(redact_text(entry_line(entry)))
    if result.truncated:
        print("# truncated: narrow the window or the filter", file=sys.stderr)
    return 0


async def run_export(args: argparse.Namespace) -> int:
    """The window as one JSON document (schema in README), to --output or stdout, each
    metric series written as soon as the database has it (never all of it in memory)."""
    from virtwatch.storage.export import export_to, write_window

    window, flt = _window_and_filter(args)
    store = await _history_store(args.db)
    by = f"virtwatch {__version__}"
    try:
        if args.output == "-":
            await export_to(store, window, sys.stdout, flt, generated_by=by)
        else:
            path = Path(args.output)
            words = await write_window(store, window, path, flt, generated_by=by)
            print(f"virtwatch: wrote {path}: " + "; ".join(words), file=sys.stderr)
    finally:
        await store.close()
    return 0


async def run_health(args: argparse.Namespace) -> int:
    """Every health check once, headless: a table (or --json) on stdout; the exit code is
    the worst state: 0 ok, 1 warn or unknown, 2 crit. Thresholds from the config's [health]."""
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
        if args.db:
            store = await stack.enter_async_context(Store(db_url(args.db)))
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


def _fail(message: str) -> int:
    print(f"virtwatch: {one_line(redact_text(message))}", file=sys.stderr)
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "dashboard"
    runner = {
        "dashboard": run_dashboard,
        "snapshot": run_snapshot,
        "db": run_db,
        "record": run_record,
        "vm": run_vm,
        "timeline": run_timeline,
        "export": run_export,
        "health": run_health,
    }[command]
    try:
        return asyncio.run(runner(args))
    except AppError as err:
        return _fail(err.one_line())
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # the last line of defence: one line, never a traceback
        if os.environ.get("VIRTWATCH_DEBUG"):
            raise
        bug = AppError(
            ErrorCode.INTERNAL_ERROR,
            f"unexpected {err.__class__.__name__}: {err}",
            "this is a bug; rerun with VIRTWATCH_DEBUG=1 for a traceback and report it",
            Severity.CRITICAL,
        )
        return _fail(bug.one_line())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
