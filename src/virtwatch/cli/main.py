"""`virtwatch`'s entry point: parse, run one command, turn any failure into one line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from virtwatch.cli.commands.config import run_config
from virtwatch.cli.commands.dashboard import run_dashboard
from virtwatch.cli.commands.db import run_db
from virtwatch.cli.commands.health import run_health
from virtwatch.cli.commands.history import run_export, run_timeline
from virtwatch.cli.commands.record import run_record
from virtwatch.cli.commands.snapshot import run_snapshot
from virtwatch.cli.commands.vm import run_vm
from virtwatch.cli.parser import EXIT_FAILURE, EXIT_UNKNOWN, build_parser
from virtwatch.core.errors import AppError, ErrorCode, Severity, one_line
from virtwatch.core.libvirt.uri import redact_text

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    pass


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"virtwatch: {one_line(redact_text(message))}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(words)
    except SystemExit as exit_:
        # `health` is a Nagios plugin: a bad argument is UNKNOWN (3), not CRITICAL (2)
        if exit_.code == EXIT_FAILURE and _command_word(words) == "health":
            return EXIT_UNKNOWN
        raise
    command = args.command or "dashboard"
    # a failure of virtwatch itself: 2, but 3 for `health` (2 is its "critical")
    failed = EXIT_UNKNOWN if command == "health" else EXIT_FAILURE
    runner = {
        "dashboard": run_dashboard,
        "snapshot": run_snapshot,
        "db": run_db,
        "record": run_record,
        "vm": run_vm,
        "timeline": run_timeline,
        "export": run_export,
        "health": run_health,
        "config": run_config,
    }[command]
    try:
        return asyncio.run(runner(args))
    except AppError as err:
        return _fail(err.one_line(), failed)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # the last line of defence: one line, never a traceback
        if isinstance(err, OSError) and err.filename is not None:  # a file: its name, why
            return _fail(f"cannot access {err.filename}: {err.strerror or err}", failed)
        if os.environ.get("VIRTWATCH_DEBUG"):
            raise
        bug = AppError(
            ErrorCode.INTERNAL_ERROR,
            f"unexpected {err.__class__.__name__}: {err}",
            "this is a bug; rerun with VIRTWATCH_DEBUG=1 for a traceback and report it",
            Severity.CRITICAL,
        )
        return _fail(bug.one_line(), failed)


def _command_word(words: Sequence[str]) -> str | None:
    """The subcommand named in `words` (the first word that is one), if any."""
    commands = {
        "dashboard",
        "snapshot",
        "db",
        "record",
        "vm",
        "timeline",
        "export",
        "health",
        "config",
    }
    return next((w for w in words if w in commands), None)
