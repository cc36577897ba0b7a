"""Modal dialogs: confirm an action, type a count for a mass force-off, read an
error's whole record. Untrusted text (VM names, messages) is plain `Text`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from virtwatch.core.incidents import ErrorReport
from virtwatch.core.ops.actions import Action
from virtwatch.tui.ports import VmRef

MAX_NAMED = 8


def targets_text(targets: Sequence[VmRef]) -> Text:
    """'web-01 on hv-07' or a list grouped by host; long lists end with '… and N more'."""
    by_host: dict[str, list[str]] = {}
    for t in targets:
        by_host.setdefault(t.host, []).append(t.name)
    text = Text()
    for i, (host, names) in enumerate(sorted(by_host.items())):
        if i:
            text.append("\n")
        shown = names[:MAX_NAMED]
        text.append(", ".join(shown), style="bold")
        if len(names) > len(shown):
            text.append(f" … and {len(names) - len(shown)} more")
        text.append(" on ")
        text.append(host, style="bold")
    return text


def confirm_text(action: Action, targets: Sequence[VmRef]) -> Text:
    n = len(targets)
    what = "this VM" if n == 1 else f"these {n} VMs"
    text = Text(f"{action.label.capitalize()} {what}?\n\n")
    text.append_text(targets_text(targets))
    if action is Action.FORCE_OFF:
        text.append("\n\nForce off cuts the power: unsaved guest data is lost.", style="yellow")
    return text


def needs_typed_count(action: Action, targets: Sequence[VmRef]) -> bool:
    return action is Action.FORCE_OFF and len(targets) > 1


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no for one destructive action; `y` confirms, `n`/Esc cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, action: Action, targets: Sequence[VmRef]) -> None:
        super().__init__(classes="dialog-screen")
        self.action_kind = action
        self.targets = list(targets)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(confirm_text(self.action_kind, self.targets), id="confirm-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    f"{self.action_kind.label.capitalize()} (y)", id="yes", variant="error"
                )
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TypeCountScreen(ModalScreen[bool]):
    """For force off of several VMs: the admin types how many, or it does not happen."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, action: Action, targets: Sequence[VmRef], *, cursor_blink: bool = True
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.action_kind = action
        self.targets = list(targets)
        self._blink = cursor_blink

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(confirm_text(self.action_kind, self.targets))
            yield Static(
                Text(f"Type {len(self.targets)} to confirm, Esc to cancel:"), id="count-prompt"
            )
            box = Input(placeholder="how many VMs", id="count")
            box.cursor_blink = self._blink
            yield box
            yield Static("", id="count-error", markup=False)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == str(len(self.targets)):
            self.dismiss(True)
        else:
            self.query_one("#count-error", Static).update(
                Text(f"that is not {len(self.targets)}; nothing was done", style="red")
            )
            event.input.value = ""

    def action_cancel(self) -> None:
        self.dismiss(False)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def error_record_text(report: ErrorReport) -> Text:
    """The whole record: code, severity, where, message, hint, context, cause, times."""
    e = report.error
    text = Text()

    def field(name: str, value: str, style: str = "") -> None:
        text.append(f"{name:<10}", style="bold")
        text.append(value, style=style)
        text.append("\n")

    field("code", f"{e.code} ({e.code.category})")
    field("severity", e.severity.label)
    field("host", report.host or "—")
    field("vm", report.vm or "—")
    field("message", e.message)
    field("hint", e.hint or "—", "green")
    field("count", str(report.count))
    field("first", _when(report.first_at if report.first_at is not None else report.at))
    field("last", _when(report.at))
    if e.libvirt_code is not None:
        field("libvirt", f"code {e.libvirt_code}, domain {e.libvirt_domain}")
    if e.context:
        text.append("context\n", style="bold")
        for k, v in sorted(e.context.items()):
            text.append(f"  {k} = {v}\n")
    cause = e.__cause__
    if cause is not None:
        field("cause", f"{cause.__class__.__name__}: {cause}")
    return text


class ErrorRecordScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, report: ErrorReport) -> None:
        super().__init__(classes="dialog-screen")
        self.report = report

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Static(error_record_text(self.report), id="error-record")

    def action_close(self) -> None:
        self.dismiss(None)


class QuitScreen(ModalScreen[bool]):
    """Asked only while an action is running."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Quit"),
        Binding("n,escape", "answer(False)", "Stay"),
    ]

    def __init__(self, running: Sequence[str]) -> None:
        super().__init__(classes="dialog-screen")
        self.running = list(running)

    def compose(self) -> ComposeResult:
        text = Text(f"{len(self.running)} action(s) still running:\n")
        for name in self.running[:MAX_NAMED]:
            text.append(f"  {name}\n")
        text.append("\nQuit anyway? Their outcome will not be shown (y/n)")
        with Vertical(classes="dialog"):
            yield Static(text, id="quit-text")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
