"""What the command line loads before a command runs: each command imports its own heavy
modules (SQLAlchemy, Alembic, Textual) itself, so none of them slows the others' start;
and the dashboard paints its first table before it loads the database code."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "sqlalchemy",
    "alembic",
    "textual",
    "virtwatch.storage.export",
    "virtwatch.storage.timeline_queries",
)

# imports the entry point (every command's module), parses one command line of every
# command, then names the HEAVY modules it loaded
PARSE_ALL = """
import sys
import virtwatch.cli.main
from virtwatch.cli.parser import build_parser

parser = build_parser()
for argv in (
    [], ["dashboard"], ["db", "stats"], ["db", "upgrade"], ["timeline", "--since", "1h"],
    ["export", "--since", "1h"], ["health"], ["record"], ["snapshot", "--json"],
    ["vm", "start", "x"],
):
    parser.parse_args(argv)
print(" ".join(m for m in sys.argv[1:] if m in sys.modules) or "-")
"""


def heavy_loaded_by(script: str) -> list[str]:
    """The HEAVY modules a fresh interpreter has loaded after `script` ("-": none)."""
    out = subprocess.run(
        [sys.executable, "-c", script, *HEAVY],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.split()


def test_parsing_any_command_line_loads_no_database_or_screen_code() -> None:
    assert heavy_loaded_by(PARSE_ALL) == ["-"]


# what `run_dashboard` imports before its first table (the store side loads after it)
DASHBOARD_BEFORE_PAINT = """
import sys
import virtwatch.storage.intake
import virtwatch.tui.bindings
import virtwatch.cli.commands.dashboard
import virtwatch.cli.compose
import virtwatch.cli.main
import virtwatch.tui.factory
import virtwatch.tui.settings
print(" ".join(m for m in sys.argv[1:] if m in sys.modules) or "-")
"""


def test_the_dashboard_paints_without_the_database_code() -> None:
    assert heavy_loaded_by(DASHBOARD_BEFORE_PAINT) == ["textual"]  # the screen's own only
