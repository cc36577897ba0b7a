"""The dashboard's own settings — the [ui] section of the TOML config — read with
the config's typed parser and written back without touching any other section.

    [ui]
    theme = "textual-dark"   # any Textual theme name (Ctrl+P, "theme")
    refresh = 1.0            # seconds between screen updates (0.2 .. 10)
    stale_after = 10.0       # seconds without news before a host's rows are dimmed
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from virtwatch.core.atomic_file import AtomicFile
from virtwatch.core.config import Config, config_error, get_typed

DEFAULT_THEME = "textual-dark"
REFRESH_CHOICES = (0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class UiSettings:
    theme: str = DEFAULT_THEME
    refresh_s: float = 1.0
    stale_after_s: float = 10.0


def ui_settings(config: Config) -> UiSettings:
    ui = config.section("ui")
    known = {"theme", "refresh", "stale_after"}
    for key in ui:
        if key not in known:
            raise config_error(
                f"ui.{key}", f"unknown key; known: {', '.join(sorted(known))}", config.path
            )
    return UiSettings(
        theme=get_typed(ui, "theme", DEFAULT_THEME, prefix="ui", path=config.path),
        refresh_s=get_typed(
            ui, "refresh", 1.0, prefix="ui", minimum=0.2, maximum=10.0, path=config.path
        ),
        stale_after_s=get_typed(
            ui, "stale_after", 10.0, prefix="ui", minimum=1.0, maximum=3600.0, path=config.path
        ),
    )


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def with_ui_section(text: str, settings: UiSettings) -> str:
    """`text` (a TOML document) with its [ui] table replaced by `settings`; every
    other line is kept as it was. A missing [ui] table is appended."""
    section = (
        "[ui]\n"
        f"theme = {json.dumps(settings.theme)}\n"
        f"refresh = {settings.refresh_s!r}\n"
        f"stale_after = {settings.stale_after_s!r}\n"
    )
    out: list[str] = []
    in_ui = False
    placed = False
    for line in text.splitlines(keepends=True):
        m = _HEADER.match(line)
        if m is not None:
            in_ui = m.group(1) == "ui" and not line.lstrip().startswith("[[")
            if in_ui:
                out.append(section)
                placed = True
                continue
        if not in_ui:
            out.append(line)
    if not placed:
        if out and not out[-1].endswith("\n"):
            out.append("\n")
        if out and out[-1].strip():
            out.append("\n")
        out.append(section)
    return "".join(out)


def save_ui_settings(path: Path, settings: UiSettings) -> None:
    """Write the [ui] table of the config at `path` (created with its directory, owner
    only; an existing file keeps its permissions), replaced whole."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path, keep_mode=True) as fh:
        fh.write(with_ui_section(old, settings))


def default_config_path() -> Path:
    """~/.config/virtwatch/config.toml (the platform's config dir)."""
    import platformdirs

    return platformdirs.user_config_path("virtwatch") / "config.toml"
