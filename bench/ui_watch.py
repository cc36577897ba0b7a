"""The dashboard as an admin runs it — real terminal (tmux), real Hub, idle keyboard —
fed with synthetic snapshots where every value of every VM changes each tick.
Measures the process's CPU share and RSS. `ui_cpu.py` and `ui_rss.py` call this.

    .venv/bin/python -m bench.ui_watch --vms 100 --seconds 60 --interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.ui_common import fleet, peak_rss_mib, rss_mib

WARMUP_S = 5.0


async def child(vms: int, seconds: float, interval: float, out: Path, static: bool) -> None:
    from virtwatch.core.hub import Hub
    from virtwatch.tui.factory import make_app

    hub = Hub()
    app = make_app(hub, interval_s=interval, refresh_s=1.0)
    result: dict[str, object] = {
        "vms": vms,
        "seconds": seconds,
        "interval_s": interval,
        "static": static,
    }
    samples: list[tuple[float, float]] = []

    async def feed() -> None:
        t0 = time.time()
        tick = 0
        await asyncio.sleep(1.0)  # let the first frame paint
        start_wall = start_cpu = 0.0
        next_at = time.monotonic()
        while True:
            # static: the same values every tick (the baseline: no cell changes)
            hub.publish(fleet(vms, tick, t0=t0, step_s=interval, static=static))
            tick += 1
            elapsed = tick * interval
            if start_wall == 0.0 and elapsed >= WARMUP_S:
                start_wall, start_cpu = time.monotonic(), time.process_time()
            if start_wall and int(elapsed) % 60 == 0:
                samples.append((elapsed, rss_mib()))
            if start_wall and time.monotonic() - start_wall >= seconds:
                wall = time.monotonic() - start_wall
                cpu = time.process_time() - start_cpu
                result.update(
                    ticks=tick,
                    cpu_pct_of_core=100.0 * cpu / wall,
                    rss_mib=rss_mib(),
                    peak_rss_mib=peak_rss_mib(),
                    rss_samples=samples,
                    rows=app.dashboard.machines.row_count,
                )
                app.exit()
                return
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def run() -> None:
        task = asyncio.create_task(feed())
        await app.run_async()
        task.cancel()

    await run()
    payload = json.dumps(result)
    await asyncio.to_thread(out.write_text, payload)


def parent(vms: int, seconds: float, interval: float, *, static: bool = False) -> dict[str, object]:
    if not shutil.which("tmux"):
        raise SystemExit("tmux is needed: the dashboard runs in a real terminal")
    out = Path(f"/tmp/vw-bench-{uuid.uuid4().hex[:8]}.json")
    session = f"vwb-{uuid.uuid4().hex[:6]}"
    root = Path(__file__).resolve().parents[1]
    cmd = (
        f"cd {root} && {sys.executable} -m bench.ui_watch --child --vms {vms} "
        f"--seconds {seconds} --interval {interval} --out {out}" + (" --static" if static else "")
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "60", cmd], check=True
    )
    try:
        deadline = time.monotonic() + seconds + WARMUP_S + 120
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(1.0)
        if not out.exists():
            raise SystemExit("the dashboard did not report; see `tmux attach -t " + session + "`")
        data: dict[str, object] = json.loads(out.read_text())
        return data
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
        out.unlink(missing_ok=True)


def report(data: dict[str, object]) -> None:
    what = "no value changing (baseline)" if data.get("static") else "every value changing"
    print(
        f"{data['vms']} VMs, {what} every {data['interval_s']} s, screen refresh"
        f" 1 s, idle keyboard, {data['seconds']} s in tmux at 200x60 (load avg "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):"
    )
    print(f"  process CPU: {data['cpu_pct_of_core']:.2f}% of one core")
    print(f"  RSS at the end: {data['rss_mib']:.0f} MiB (peak {data['peak_rss_mib']:.0f} MiB)")
    samples = data.get("rss_samples")
    if isinstance(samples, list) and samples:
        trail = ", ".join(f"{int(t)}s {m:.0f}" for t, m in samples)
        print(f"  RSS over time (MiB): {trail}")
    print(f"  rows shown: {data['rows']}, ticks published: {data['ticks']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--static", action="store_true", help="republish the same values")
    a = ap.parse_args()
    if a.child:
        asyncio.run(child(a.vms, a.seconds, a.interval, a.out, a.static))
    else:
        report(parent(a.vms, a.seconds, a.interval, static=a.static))


if __name__ == "__main__":
    main()
