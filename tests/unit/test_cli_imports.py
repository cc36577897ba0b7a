"""What the command line loads before a command runs: each command imports its own heavy
modules (SQLAlchemy, Alembic, Textual) itself, so none of them slows the others' start."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "sqlalchemy",
    "alembic",
    "textual",
    "virtwatch.storage.export",
    "virtwatch.storage.timeline",
)

# parses one command line of every command, then names the HEAVY modules it loaded
PARSE_ALL = """
import sys
from virtwatch.tui.cli import build_parser

parser = build_parser()
for argv in (
    [], ["dashboard"], ["db", "stats"], ["db", "upgrade"], ["timeline", "--since", "1h"],
    ["export", "--since", "1h"], ["health"], ["record"], ["snapshot", "--json"],
    ["vm", "start", "x"],
):
    parser.parse_args(argv)
print(" ".join(m for m in sys.argv[1:] if m in sys.modules) or "-")
"""


def test_parsing_any_command_line_loads_no_database_or_screen_code() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PARSE_ALL, *HEAVY],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == ["-"]
