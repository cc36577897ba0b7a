"""Regenerate screenshots/ from the same scenes and canned fixtures the snapshot tests
use (tests/tui/scenes.py): fixed data, a frozen clock.

.venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.canned import fleet_snapshot  # noqa: E402
from tests.tui.scenes import Scene, build_app, dashboard, then  # noqa: E402
from textual.pilot import Pilot  # noqa: E402

from virtwatch.core.hub import Hub  # noqa: E402

SHOTS = ROOT / "screenshots"
DEMO_NOTICE = (
    "DEMO HOST (fictional values) — qemu:///system did not answer: "
    "Failed to connect socket to '/var/run/libvirt/libvirt-sock'. Start libvirtd or pass --uri."
)


def demo(hub: Hub) -> Scene:
    async def run(pilot: Pilot[Any]) -> None:
        hub.publish(fleet_snapshot(notice=DEMO_NOTICE))
        for _ in range(6):
            await pilot.pause()

    return run


async def shoot(name: str, size: tuple[int, int], scene: str) -> Path:
    app, hub = build_app(read_only=name == "read-only")
    scenes = {
        "dashboard": dashboard(hub),
        "two-hosts": then(dashboard(hub, hosts=2), "slash", "w", "e", "b", "enter"),
        "maximised": then(dashboard(hub), "o", "o", "o", "O", "z"),
        "confirm": then(dashboard(hub), "d", select="web-01"),
        "detail": then(dashboard(hub), "enter", select="web-01"),
        "tasks": then(dashboard(hub), "t"),
        "error-record": then(dashboard(hub), "tab", "tab", "tab", "down", "enter"),
        "help": then(dashboard(hub), "question_mark"),
        "read-only": dashboard(hub),
        "demo-host": demo(hub),
    }
    run = scenes[scene]
    async with app.run_test(size=size) as pilot:
        await run(pilot)
        out = app.save_screenshot(f"{name}.svg", str(SHOTS))
    return Path(out)


SHOTLIST: list[tuple[str, tuple[int, int], str]] = [
    ("dashboard", (160, 48), "dashboard"),
    ("dashboard-80x24", (80, 24), "dashboard"),
    ("dashboard-200x60", (200, 60), "dashboard"),
    ("two-hosts", (160, 48), "two-hosts"),
    ("maximised", (120, 36), "maximised"),
    ("confirm", (120, 36), "confirm"),
    ("detail", (160, 48), "detail"),
    ("tasks", (120, 30), "tasks"),
    ("error-record", (120, 36), "error-record"),
    ("help", (120, 48), "help"),
    ("demo-host", (120, 30), "demo-host"),
]


async def main() -> None:
    SHOTS.mkdir(exist_ok=True)
    for name, size, scene in SHOTLIST:
        print(await shoot(name, size, scene))


if __name__ == "__main__":
    asyncio.run(main())
