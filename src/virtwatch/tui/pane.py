"""A dashboard pane: a titled box that can be maximised to fill the screen."""

from __future__ import annotations

from typing import ClassVar

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
