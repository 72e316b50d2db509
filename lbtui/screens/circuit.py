# SPDX-License-Identifier: Apache-2.0
"""Choose an operator action on one backend's circuit breaker: hold it open, hold it closed, reset."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

# action id (as the engine's CircuitCommand takes it) -> (button label, what it does)
CIRCUIT_ACTIONS = {
    "force_open": ("Open (o)", "held open, it gets no new connections until a reset"),
    "force_close": ("Close (c)", "held closed, it gets new connections whatever fails"),
    "reset": ("Reset (r)", "back to automatic, starting closed"),
}


class CircuitScreen(ModalScreen[str | None]):
    """Dismisses with an action id of CIRCUIT_ACTIONS, or None when cancelled."""

    BINDINGS = [
        Binding("o", "choose('force_open')", "Open", show=False),
        Binding("c", "choose('force_close')", "Close", show=False),
        Binding("r", "choose('reset')", "Reset", show=False),
        Binding("escape", "choose(None)", "Cancel", show=False),
    ]

    def __init__(self, proxy: str, backend: str, state: str) -> None:
        super().__init__()
        self.proxy = proxy
        self.backend = backend
        self.state = state

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = "Circuit breaker"
            yield Label(f"Circuit of {self.backend} in {self.proxy}: {self.state}", id="state", markup=False)
            for label, effect in CIRCUIT_ACTIONS.values():
                yield Label(f"{label.rsplit(' (', 1)[0]}: {effect}")
            with Horizontal(classes="buttons"):
                for action, (label, _) in CIRCUIT_ACTIONS.items():
                    yield Button(label, id=action, compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id if event.button.id in CIRCUIT_ACTIONS else None)

    def action_choose(self, action: str | None) -> None:
        self.dismiss(action)
