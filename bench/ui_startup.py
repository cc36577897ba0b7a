"""Time from starting `virtwatch` to the first painted Machines table, with a database
holding 30 days of history of the very VMs it watches (bench/storage_history.py's
generator: host hv1, 100 VMs x 10 metrics), the target of issue #6 (under 1 s).

The real binary runs in tmux (160x200, so that every row fits) on libvirt's test driver
(a private fleet of the generator's VMs, named hv1 in a [[hosts]] config, so no daemon is
timed); the clock starts before tmux spawns the process and stops when the screen shows
the table's first and last VM. Baselines measured the same way in the same run,
interleaved with it: the bare interpreter printing a line, `import textual.app`, the
least a Textual program does to paint a table of as many rows (bench/ui_floor.py), and
virtwatch on an empty database. Medians of --runs rounds.

    .venv/bin/python -m bench.ui_startup [--db PATH_OF_A_GENERATED_DB] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.storage_history import HOST, generate
from virtwatch.storage.engine import db_url
from virtwatch.storage.store import Store

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = str(Path(sys.executable).with_name("virtwatch"))
SIZE = ("160", "200")
POLL_S = 0.02
EXITED = "__bench_exited__"


def tmux(*args: str) -> subprocess.CompletedProcess[str]:
    # a server of its own: other tmux users on the machine neither see nor end its sessions
    return subprocess.run(
        ["tmux", "-L", "vw-ui-startup", *args], capture_output=True, text=True, check=False
    )


def screen_s(cmd: str, ready: Callable[[str], bool], *, quit_key: str | None = "q") -> float:
    """Seconds from spawning `cmd` in a new tmux session to a screen where `ready` holds;
    then quit it (and wait until it has exited, so it cannot slow the next run down)."""
    session = f"vwb-{uuid.uuid4().hex[:8]}"
    wrapped = f"{cmd}; echo {EXITED} $?; sleep 600"
    t0 = time.monotonic()
    made = tmux(
        "new-session", "-d", "-s", session, "-x", SIZE[0], "-y", SIZE[1], "-c", str(ROOT), wrapped
    )
    if made.returncode != 0:
        raise SystemExit(f"tmux new-session failed: {made.stderr.strip()}")
    try:
        screen = ""
        while time.monotonic() - t0 < 60:
            screen = tmux("capture-pane", "-p", "-t", session).stdout
            if ready(screen):
                return time.monotonic() - t0
            if EXITED in screen:
                break
            time.sleep(POLL_S)
        raise SystemExit(f"not ready after {time.monotonic() - t0:.0f} s: {cmd}\n{screen}")
    finally:
        if quit_key is not None:
            tmux("send-keys", "-t", session, quit_key)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if EXITED in tmux("capture-pane", "-p", "-t", session).stdout:
                    break
                time.sleep(0.1)
        tmux("kill-session", "-t", session)


def fleet_xml(vms: int) -> str:
    """A test-driver node running the generator's VMs (same names and uuids)."""
    parts = [
        "<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>",
        "<cpu><mhz>2000</mhz><model>t</model><active>8</active><nodes>1</nodes>"
        "<sockets>1</sockets><cores>4</cores><threads>2</threads></cpu>",
        "<memory>33554432</memory>",
    ]
    for v in range(vms):
        parts.append(
            f"<domain type='test'><name>vm-{v:03d}</name>"
            f"<uuid>00000000-0000-4000-8000-{v:012d}</uuid>"
            f"<memory unit='MiB'>{256 * (1 + v % 4)}</memory><vcpu>{1 + v % 4}</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os>"
            "<test:runstate>1</test:runstate></domain>"
        )
    parts.append("</node>")
    return "\n".join(parts)


async def prepare(
    tmp: Path, db: Path | None, reuse: bool, vms: int, days: int
) -> tuple[Path, Path]:
    empty = tmp / "empty.db"
    async with Store(db_url(empty)):
        pass
    if db is not None and reuse:
        return empty, db
    full = db or tmp / "history.db"
    async with Store(db_url(full)):
        pass
    print(f"generating {days} days of {vms} VMs (bench/storage_history.py) ...", flush=True)
    t = time.perf_counter()
    await asyncio.to_thread(generate, full, vms, int(time.time() * 1000), days)
    print(f"  generated in {time.perf_counter() - t:.0f} s", flush=True)
    return empty, full


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, help="a database made by bench.storage_history")
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument(
        "--also-src",
        type=Path,
        help="also time virtwatch from this other source tree (a before/after comparison)",
    )
    a = ap.parse_args()
    if not shutil.which("tmux"):
        raise SystemExit("tmux is needed")
    first, last = "vm-000", f"vm-{a.vms - 1:03d}"

    def table(screen: str) -> bool:
        return first in screen and last in screen

    def printed(screen: str) -> bool:
        return "ready" in screen

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        reuse = a.db is not None and a.db.exists()
        empty, full = asyncio.run(prepare(tmp, a.db, reuse, a.vms, a.days))
        fleet = tmp / "fleet.xml"
        fleet.write_text(fleet_xml(a.vms))
        config = tmp / "config.toml"
        config.write_text(f'[[hosts]]\nuri = "test://{fleet}"\nname = "{HOST}"\n')
        py = shlex.quote(PYTHON)

        def virtwatch(db: Path, src: Path | None = None) -> str:
            env = f"env PYTHONPATH={shlex.quote(str(src.resolve()))} " if src else ""
            flags = f"--db {shlex.quote(str(db))} --config {config} --interval 1"
            return f"{env}{shlex.quote(BIN)} {flags}"

        programs: dict[str, tuple[str, Callable[[str], bool], str | None]] = {
            "python, print a line": (f"{py} -c \"print('ready')\"", printed, None),
            "python, import textual.app": (
                f"{py} -c \"import textual.app; print('ready')\"",
                printed,
                None,
            ),
            f"least Textual app, {a.vms}-row table": (
                f"{py} -m bench.ui_floor {a.vms}",
                table,
                "q",
            ),
            "virtwatch, empty database": (virtwatch(empty), table, "q"),
            f"virtwatch, {a.days} days of history": (virtwatch(full), table, "q"),
        }
        if a.also_src is not None:
            programs[f"virtwatch from {a.also_src}, history"] = (
                virtwatch(full, a.also_src),
                table,
                "q",
            )
        # one server for the whole run (a server that ends with its last session can
        # refuse the next one while it exits)
        tmux("new-session", "-d", "-s", "keep", "sleep 86400")
        try:
            for cmd, ready, key in programs.values():  # warm the page cache and .pyc files
                screen_s(cmd, ready, quit_key=key)
            times: dict[str, list[float]] = {name: [] for name in programs}
            for i in range(a.runs):  # interleaved: a change of load hits every program alike
                for name, (cmd, ready, key) in programs.items():
                    times[name].append(screen_s(cmd, ready, quit_key=key))
                print(f"  round {i + 1}: " + ", ".join(f"{t[-1]:.2f}" for t in times.values()))
        finally:
            tmux("kill-server")
        size = full.stat().st_size / 1024 / 1024
        med = {name: statistics.median(ts) for name, ts in times.items()}
        floor = med[f"least Textual app, {a.vms}-row table"]
        empty_s = med["virtwatch, empty database"]
        print(f"start to first painted table, {a.vms} VMs, {'x'.join(SIZE)}, median of {a.runs}:")
        for name, m in med.items():
            spread = f"[{min(times[name]):.2f} .. {max(times[name]):.2f}]"
            print(f"  {name:38} {m:5.2f} s  {spread}  x{m / floor:.2f} of the least app")
        hist = med[f"virtwatch, {a.days} days of history"]
        print(
            f"  history ({size:,.0f} MiB) / empty database: {hist / empty_s:.2f}; "
            f"target: under 1 s ({'met' if hist < 1.0 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
