"""Regenerate screenshots/ from the same canned fixtures the tests use.

.venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.canned import NOW, fleet_snapshot  # noqa: E402

from virtwatch.core.hub import Hub  # noqa: E402
from virtwatch.tui.app import VirtwatchApp  # noqa: E402

SHOTS = ROOT / "screenshots"


async def shoot(name: str, size: tuple[int, int], *, notice: str | None = None) -> Path:
    hub = Hub()
    app = VirtwatchApp(hub, clock=lambda: NOW)
    async with app.run_test(size=size) as pilot:
        hub.publish(fleet_snapshot(notice=notice))
        await pilot.pause()
        await pilot.pause()
        out = app.save_screenshot(f"{name}.svg", str(SHOTS))
    return Path(out)


async def main() -> None:
    SHOTS.mkdir(exist_ok=True)
    print(await shoot("dashboard", (120, 30)))
    print(
        await shoot(
            "demo-host",
            (120, 30),
            notice="DEMO HOST (fictional values) — qemu:///system did not answer: "
            "Failed to connect socket to '/var/run/libvirt/libvirt-sock'. "
            "Start libvirtd or pass --uri.",
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
