"""Time from starting `virtwatch` to the first painted machine table, with a database
holding 30 days of history for 100 VMs (bench/storage_history.py's generator), against
the same start on an empty database in the same run (target: under 1 s).

The real binary runs in tmux on libvirt's test driver (a private 100-VM fleet, so no
daemon is timed); the clock stops when the screen shows the table's rows.

    .venv/bin/python -m bench.ui_startup [--db PATH_OF_A_GENERATED_DB] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import fleet_xml

from bench.storage_history import generate
from virtwatch.storage.engine import db_url
from virtwatch.storage.store import Store

BIN = str(Path(sys.executable).with_name("virtwatch"))


def tmux(*args: str) -> str:
    out = subprocess.run(["tmux", *args], capture_output=True, text=True, check=False)
    return out.stdout


def first_paint_s(uri: str, db: Path, config: Path, vms: int) -> float:
    """Seconds from spawning the binary to a screen showing the last VM's row."""
    session = f"vws-{uuid.uuid4().hex[:6]}"
    last = f"vm-{vms - 1:04d}"
    cmd = f"{BIN} --uri '{uri}' --db {db} --config {config} --interval 1 --no-demo"
    t0 = time.monotonic()
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "200", cmd], check=True
    )
    try:
        while time.monotonic() - t0 < 60:
            screen = tmux("capture-pane", "-p", "-t", session)
            if "vm-0000" in screen and last in screen:
                return time.monotonic() - t0
            time.sleep(0.02)
        raise SystemExit(f"no table after 60 s; screen:\n{screen}")
    finally:
        tmux("send-keys", "-t", session, "q")
        time.sleep(1.0)
        tmux("kill-session", "-t", session)


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
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if not shutil.which("tmux"):
        raise SystemExit("tmux is needed")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        reuse = a.db is not None and a.db.exists()
        empty, full = asyncio.run(prepare(tmp, a.db, reuse, a.vms, a.days))
        fleet = tmp / "fleet.xml"
        fleet.write_text(fleet_xml(a.vms, states=(1,)))
        config = tmp / "config.toml"
        config.write_text("")
        uri = f"test://{fleet}"
        first_paint_s(uri, empty, config, a.vms)  # warm the page cache and imports once
        base: list[float] = []
        hist: list[float] = []
        for _ in range(a.runs):  # interleaved, so load changes hit both alike
            base.append(first_paint_s(uri, empty, config, a.vms))
            hist.append(first_paint_s(uri, full, config, a.vms))
        size = full.stat().st_size / 1024 / 1024
        b, h = statistics.median(base), statistics.median(hist)
        print(f"start to first painted table, {a.vms} VMs, median of {a.runs}:")
        print(f"  empty database:                 {b:.2f} s")
        print(f"  {a.days} days of history ({size:,.0f} MiB): {h:.2f} s  (ratio {h / b:.2f})")


if __name__ == "__main__":
    main()
