"""The screens as the snapshot tests and scripts/screenshots.py show them: one app
factory, fixed data, a frozen clock, no cursor blink, toasts cleared."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from textual.pilot import Pilot

from tests.canned import (
    NOW,
    all_records,
    filled_history,
    fleet_snapshot,
    second_host_snapshot,
)
from virtwatch.core.hub import Hub
from virtwatch.core.ops.actions import Action
from virtwatch.tui.app import VirtwatchApp
from virtwatch.tui.ports import VmRef
from virtwatch.tui.settings import UiSettings

Scene = Callable[[Pilot[Any]], Awaitable[None]]


class _NoActions:
    def request(self, action: Action, targets: Sequence[VmRef]) -> None:
        """The scenes only look: nothing is sent anywhere."""


def build_app(*, read_only: bool = False) -> tuple[VirtwatchApp, Hub]:
    hub = Hub()
    app = VirtwatchApp(
        hub,
        clock=lambda: NOW,
        history=filled_history(),
        actions=None if read_only else _NoActions(),
        read_only=read_only,
        settings=UiSettings(refresh_s=0.01),
        cursor_blink=False,
    )
    return app, hub


async def _settle(pilot: Pilot[Any], rounds: int = 6) -> None:
    for _ in range(rounds):
        await pilot.pause()


def dashboard(hub: Hub, *, hosts: int = 1) -> Scene:
    async def run(pilot: Pilot[Any]) -> None:
        hub.publish(fleet_snapshot())
        if hosts > 1:
            hub.publish(second_host_snapshot())
        for record in all_records():
            hub.publish(record)
        await _settle(pilot)
        await pilot.pause(0.05)
        await _settle(pilot)
        pilot.app.clear_notifications()
        await _settle(pilot)

    return run


def then(first: Scene, *keys: str, select: str | None = None) -> Scene:
    async def run(pilot: Pilot[Any]) -> None:
        await first(pilot)
        app = pilot.app
        assert isinstance(app, VirtwatchApp)
        if select is not None:
            table = app.dashboard.machines
            shown = table.shown()
            order = [shown[k][2] for k in table.shown_order()]
            table.move_cursor(row=order.index(select))
            await _settle(pilot)
        for key in keys:
            await pilot.press(key)
            await _settle(pilot)
        app.clear_notifications()
        await _settle(pilot)

    return run
