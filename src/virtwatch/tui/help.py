"""The help screen: every key of every part of the screen it was opened from,
read from the bindings themselves so it cannot drift from what the keys do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

Section = tuple[str, Sequence[BindingType]]

NAVIGATION: Sequence[BindingType] = (
    Binding("up,down,pageup,pagedown,home,end", "", "move in a table"),
    Binding("tab,shift+tab", "", "next / previous pane (or click a pane)"),
    Binding("enter", "", "open the row under the cursor"),
    Binding("ctrl+p", "", "command palette (themes, refresh, every action)"),
)

_KEY_NAMES = {
    "question_mark": "?",
    "slash": "/",
    "space": "Space",
    "escape": "Esc",
    "enter": "Enter",
    "tab": "Tab",
    "shift+tab": "Shift+Tab",
    "pageup": "PgUp",
    "pagedown": "PgDn",
    "plus": "+",
    "minus": "-",
}


def key_label(keys: str) -> str:
    return " ".join(_KEY_NAMES.get(k, k) for k in keys.split(","))


def help_text(sections: Sequence[Section]) -> Text:
    text = Text()
    for i, (title, bindings) in enumerate(sections):
        rows = []
        for b in bindings:
            if isinstance(b, Binding):
                if b.description:
                    rows.append((key_label(b.key), b.description))
            elif len(b) >= 3:
                rows.append((key_label(b[0]), str(b[2])))
        if not rows:
            continue
        if i:
            text.append("\n")
        text.append(f"{title}\n", style="bold underline")
        for key, what in rows:
            text.append(f"  {key:<28}", style="bold cyan")
            text.append(f"{what}\n")
    return text


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close help")
    ]

    def __init__(self, sections: Sequence[Section]) -> None:
        super().__init__(classes="dialog-screen")
        self.sections = list(sections)

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide", id="help"):
            yield Static(help_text(self.sections), id="help-text")

    def text(self) -> str:
        return help_text(self.sections).plain

    def action_close(self) -> None:
        self.dismiss(None)
