"""A dashboard pane: a titled box that can be maximised to fill the screen."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.containers import Vertical


class Pane(Vertical):
    """Holds one pane's widgets; `z` on the dashboard maximises the pane with focus."""

    ALLOW_MAXIMIZE: ClassVar[bool | None] = True
    DEFAULT_CSS = """
    Pane { height: 1fr; }
    """

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.border_title = title
        self._subtitle = ""

    def set_subtitle(self, text: str) -> None:
        """Set the subtitle as plain text (a filter may hold '['), and only when it
        changed: every assignment repaints the whole pane."""
        if text != self._subtitle:
            self._subtitle = text
            self.border_subtitle = Text(text)
