# SPDX-License-Identifier: Apache-2.0
"""Ask for a backend's new weight; nothing is submitted until the value is valid."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

MAX_WEIGHT = 2**31 - 1


def parse_weight(text: str) -> int:
    """The weight typed by the operator; ValueError with a message an operator can act on."""
    value = text.strip()
    if not value.lstrip("-").isdigit():
        raise ValueError(f"{value or 'empty'!r} is not a whole number; enter 1..{MAX_WEIGHT}")
    weight = int(value)
    if not 1 <= weight <= MAX_WEIGHT:
        raise ValueError(f"weight must be between 1 and {MAX_WEIGHT}, got {weight}")
    return weight


class WeightScreen(ModalScreen[int | None]):
    """Dismisses with the new weight, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, proxy: str, backend: str, current: int) -> None:
        super().__init__()
        self.proxy = proxy
        self.backend = backend
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = "Weight"
            yield Label(f"Weight of {self.backend} in {self.proxy} (now {self.current:,})", markup=False)
            yield Input(value=str(self.current), placeholder=f"1..{MAX_WEIGHT}", id="weight")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Set weight", variant="primary", id="ok", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _submit(self) -> None:
        error = self.query_one("#error", Static)
        try:
            weight = parse_weight(self.query_one("#weight", Input).value)
        except ValueError as exc:
            error.update(str(exc))
            error.display = True
            return
        self.dismiss(weight)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
