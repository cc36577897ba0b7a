"""`virtwatch timeline` and `virtwatch export`: a window of recorded history."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from virtwatch import __version__
from virtwatch.cli.compose import config_from, database_of
from virtwatch.core.errors import AppError, ErrorCode, write_error
from virtwatch.core.libvirt.uri import redact_text
from virtwatch.storage.engine import db_url, sqlite_path

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    from virtwatch.core.triage.timeline import TimelineFilter
    from virtwatch.core.triage.when import Window
    from virtwatch.storage.store import Store


async def _history_store(args: argparse.Namespace) -> Store:
    """The database to read history from (--db, else [storage] db, else the default): it
    must exist and be at the current schema."""
    from virtwatch.storage.revision import HEAD_REVISION
    from virtwatch.storage.store import Store

    url = db_url(database_of(args, config_from(args)))
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
    from virtwatch.core.triage.timeline import TimelineFilter, parse_kinds, parse_severity
    from virtwatch.core.triage.when import Window, parse_when

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
    from virtwatch.core.triage.entries import TIMELINE_SCHEMA_VERSION, entry_to_dict
    from virtwatch.core.triage.timeline import entry_line
    from virtwatch.storage.export_json import dump_export
    from virtwatch.storage.redaction import redact_document
    from virtwatch.storage.timeline_queries import TimelineQueries

    window, flt = _window_and_filter(args)
    store = await _history_store(args)
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
    """The window as one JSON document (schema: docs/export-schema.md), to --output or stdout, each
    metric series written as soon as the database has it (never all of it in memory)."""
    from virtwatch.storage.export import export_to, write_window

    window, flt = _window_and_filter(args)
    store = await _history_store(args)
    by = f"virtwatch {__version__}"
    try:
        if args.output == "-":
            await export_to(store, window, sys.stdout, flt, generated_by=by)
        else:
            path = Path(args.output)
            try:
                words = await write_window(store, window, path, flt, generated_by=by)
            except OSError as err:
                raise write_error(path, err) from err
            print(f"virtwatch: wrote {path}: " + "; ".join(words), file=sys.stderr)
    finally:
        await store.close()
    return 0
