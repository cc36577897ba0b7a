"""`virtwatch db upgrade | stats`: database maintenance."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from virtwatch.cli.compose import config_from, database_of
from virtwatch.core.errors import AppError, ErrorCode
from virtwatch.core.libvirt.uri import redact_text
from virtwatch.storage.engine import db_url, sqlite_path

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    pass


async def run_db(args: argparse.Namespace) -> int:
    from virtwatch.storage.queries import Queries
    from virtwatch.storage.store import Store

    url = db_url(database_of(args, config_from(args)))
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
