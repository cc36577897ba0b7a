"""The dashboard's own settings — the [ui] section of the TOML config — read with
the config schema and written back with tomlkit, keeping the user's comments and layout.

    [ui]
    theme = "textual-dark"   # any Textual theme name (Ctrl+P, "theme")
    refresh_s = 1.0          # seconds between screen updates (0.2 .. 10)
    stale_after_s = 10.0     # seconds without news before a host's rows are dimmed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from virtwatch.core.atomic_file import AtomicFile
from virtwatch.core.config import Config, validate
from virtwatch.core.config_schema import UiSection

DEFAULT_THEME = "textual-dark"
REFRESH_CHOICES = (0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class UiSettings:
    theme: str = DEFAULT_THEME
    refresh_s: float = 1.0
    stale_after_s: float = 10.0


def ui_settings(config: Config) -> UiSettings:
    """`[ui]` (the schema's `UiSection`) -> UiSettings; a bad value names the key."""
    ui = validate(UiSection, config.section("ui"), prefix="ui", path=config.path)
    return UiSettings(theme=ui.theme, refresh_s=ui.refresh_s, stale_after_s=ui.stale_after_s)


# (key, its old spelling) -> the UiSettings value written there
_WRITTEN: tuple[tuple[str, str | None, str], ...] = (
    ("theme", None, "theme"),
    ("refresh_s", "refresh", "refresh_s"),
    ("stale_after_s", "stale_after", "stale_after_s"),
)


def with_ui_section(text: str, settings: UiSettings) -> str:
    """`text` (a TOML document) with the keys of its [ui] table set to `settings`.
    Comments, formatting, other keys and other tables stay as they were; a value that did
    not change is not rewritten; an old key spelling is replaced by the new one. A missing
    [ui] table is appended."""
    import tomlkit  # only when settings are saved: ~40 ms off every start
    from tomlkit.items import Table

    doc = tomlkit.parse(text)
    ui = doc.get("ui")
    if not isinstance(ui, Table):
        ui = tomlkit.table()
        doc["ui"] = ui
    for key, old, attr in _WRITTEN:
        value = getattr(settings, attr)
        if old is not None and old in ui:
            if key not in ui:
                ui[key] = ui[old]  # keeps its place and comment
            del ui[old]
        if key not in ui or ui[key] != value:
            ui[key] = value
    return tomlkit.dumps(doc)


def save_ui_settings(path: Path, settings: UiSettings) -> None:
    """Write the [ui] table of the config at `path` (created with its directory, owner
    only; an existing file keeps its permissions), replaced whole; an OSError says why
    it could not."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path, keep_mode=True) as fh:
        fh.write(with_ui_section(old, settings))


def default_config_path() -> Path:
    """~/.config/virtwatch/config.toml (the platform's config dir)."""
    import platformdirs

    return platformdirs.user_config_path("virtwatch") / "config.toml"
