"""The command line: its parser, flags and the contract it states (exit codes, how long
libvirtd gets to answer a one-shot command)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from virtwatch import __version__
from virtwatch.core.collect.collector import DEFAULT_INTERVAL_S
from virtwatch.core.ops.actions import Action

# Each command imports the rest of what it needs itself: the dashboard paints its first
# table without SQLAlchemy's migration tool, the export and timeline code, or Textual for
# the commands without a screen (each costs a noticeable part of a second at start)
if TYPE_CHECKING:
    pass


FALLBACK_URI = "qemu:///system"


PROBE_TIMEOUT_S = 5.0


# one-shot commands (snapshot, vm, health) give libvirtd this long to answer (to connect,
# and for each call); on top of it `vm` waits for the outcome (--timeout, per action)
ANSWER_S = 10.0


ONE_SHOT_CLOSE_S = 0.5  # at exit, how long a one-shot waits for a call still in libvirt


EXIT_FAILURE = 2


EXIT_NOT_VERIFIED = 1  # `vm`: the action ran but its outcome was IGNORED or FAILED


EXIT_UNKNOWN = 3  # `health` (Nagios UNKNOWN): virtwatch itself could not judge

HEALTH_HELP = (
    "run every health check once; exit 0 ok, 1 warn, 2 crit, 3 unknown (virtwatch could not "
    "judge: a bad config or argument, an internal failure). A check that has no data yet "
    "(state 'unknown' in the table) counts as warn (1): it could not be checked, which is "
    "not fine, but the plugin itself worked."
)


def default_db_path() -> Path:
    return platformdirs.user_data_path("virtwatch") / "virtwatch.db"


_DB_DEFAULT = "[storage] db in the config, else " + str(default_db_path())


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


def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="config file (default: platform config dir); VIRTWATCH_SECTION__KEY "
        "variables override it, flags override both",
    )


def _source_flags(parser: argparse.ArgumentParser, *, uri_default: str) -> None:
    """--uri, --db and --interval: where to look, where to keep it, how often."""
    parser.add_argument("--uri", help=f"libvirt URI (default: {uri_default})")
    parser.add_argument("--db", help=f"database file or URL (default: {_DB_DEFAULT})")
    parser.add_argument(
        "--interval",
        type=_positive,
        default=None,
        help="seconds between ticks "
        f"(default: [collector] interval_s, else {DEFAULT_INTERVAL_S:g})",
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
    up.add_argument("--db", help=f"database file or URL (default: {_DB_DEFAULT})")
    _config_flag(up)
    stats = dbsub.add_parser("stats", help="row counts per table and tier, sizes, time span")
    stats.add_argument("--db", help=f"database file or URL (default: {_DB_DEFAULT})")
    _config_flag(stats)
    stats.add_argument("--json", action="store_true", help="JSON on stdout")
    rec = sub.add_parser(
        "record", parents=[common], help="collect and write to the database, without a screen"
    )
    rec.add_argument("--read-only", action="store_true", help="open read-only connections")
    rec.add_argument("--name", help="the host's name in the database (default: its URI)")
    _config_flag(rec)
    vm = sub.add_parser(
        "vm", help="act on one VM and verify the outcome (exit 0 only when verified)"
    )
    vm.add_argument("vm_action", metavar="ACTION", choices=[a.cli_name for a in Action])
    vm.add_argument("vm_name", metavar="NAME", help="the VM's libvirt name")
    vm.add_argument("--uri", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI or qemu:///system)")
    vm.add_argument("--db", help=f"database for the audit row (default: {_DB_DEFAULT})")
    _config_flag(vm)
    vm.add_argument(
        "--timeout",
        type=_positive,
        help="seconds to wait for the outcome (default: per action); libvirtd gets "
        f"{ANSWER_S:g} s more to answer, then the command exits 2",
    )
    vm.add_argument("--read-only", action="store_true", help="open a read-only connection")
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--db", help=f"database file or URL (default: {_DB_DEFAULT})")
    _config_flag(window)
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
    hc = sub.add_parser("health", help=HEALTH_HELP, description=HEALTH_HELP)
    hc.add_argument("--uri", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI or qemu:///system)")
    hc.add_argument(
        "--db",
        help="also check this database and store the results in it (default: [storage] db "
        "when the config sets it, else none)",
    )
    _config_flag(hc)
    hc.add_argument("--json", action="store_true", help="JSON on stdout")
    cfg = sub.add_parser("config", help="show the effective configuration")
    cfgsub = cfg.add_subparsers(dest="config_command", metavar="CONFIG_COMMAND", required=True)
    show = cfgsub.add_parser(
        "show", help="the effective config (file + VIRTWATCH_* + defaults) as TOML, secrets masked"
    )
    _config_flag(show)
    return p


def _dashboard_flags(parser: argparse.ArgumentParser) -> None:
    """The dashboard's own flags (they override the config's [ui] table)."""
    _config_flag(parser)
    parser.add_argument(
        "--refresh", type=_positive, default=None, help="seconds between screen updates"
    )
    parser.add_argument("--theme", default=None, help="a Textual theme name")
