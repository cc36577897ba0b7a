"""The dashboard saves its [ui] settings into the user's config file, or says why not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.tui.conftest import AppFactory, settle

COMMENTED = '# mine\n[ui]\ntheme = "nord"  # calm\nrefresh_s = 1.0  # fast enough\n'


async def test_a_saved_refresh_keeps_the_users_comments(
    make_app: AppFactory, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(COMMENTED)
    from virtwatch.core.config import load_config
    from virtwatch.tui.settings import ui_settings

    app, _hub = make_app(settings=ui_settings(load_config(config, env={})), config_path=config)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.set_refresh(2.0)
        await settle(pilot)
    text = config.read_text()
    assert text.startswith('# mine\n[ui]\ntheme = "nord"  # calm\nrefresh_s = 2.0  # fast enough\n')


async def test_a_config_that_cannot_be_written_is_one_notice_naming_it(
    make_app: AppFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = blocker / "config.toml"  # its directory is a file: no write can succeed
    app, _hub = make_app(config_path=config)
    seen: list[tuple[str, dict[str, Any]]] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.notify = lambda message, **kw: seen.append((str(message), kw))  # type: ignore[method-assign]
        app.set_refresh(2.0)
        await settle(pilot)
    warnings = [m for m, kw in seen if kw.get("severity") == "warning"]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"could not save settings to {config}: ")  # and why


async def test_an_old_key_spelling_is_a_notice_at_start(tmp_path: Path) -> None:
    from virtwatch.core.config import load_config
    from virtwatch.core.hub import Hub
    from virtwatch.tui.factory import make_app

    config = tmp_path / "config.toml"
    config.write_text("[ui]\nstale_after = 20.0\n")
    app = make_app(Hub(), config=load_config(config, env={}), config_path=config)
    seen: list[str] = []
    real = app.notify

    def notify(message: str, **kw: Any) -> None:
        seen.append(str(message))
        real(message, **kw)

    app.notify = notify  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.settings.stale_after_s == 20.0
    assert any("'ui.stale_after' is now 'ui.stale_after_s'" in m for m in seen), seen
