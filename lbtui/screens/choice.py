# SPDX-License-Identifier: Apache-2.0
"""Choose one of a few actions (each with a key and what it does), or cancel."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


@dataclass(frozen=True)
class Choice:
    id: str  # what the screen dismisses with
    label: str  # the button
    key: str  # one letter that chooses it
    effect: str  # what it does, shown above the buttons
    danger: bool = False  # it takes traffic away: shown as such


class ChoiceScreen(ModalScreen[str | None]):
    """Dismisses with the id of the chosen action, or None when cancelled (escape, Cancel)."""

    BINDINGS = [Binding("escape", "choose(None)", "Cancel", show=False)]

    def __init__(self, title: str, question: str, choices: tuple[Choice, ...]) -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = self.title_text
            yield Label(self.question, id="question")
            for c in self.choices:
                yield Label(f"{c.label}: {c.effect}")
            with Horizontal(classes="buttons"):
                for c in self.choices:
                    label = f"{c.label} ({c.key})"
                    if c.danger:
                        yield Button(label, id=c.id, variant="error", compact=True)
                    else:
                        yield Button(label, id=c.id, variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_key(self, event: events.Key) -> None:
        for c in self.choices:
            if event.key == c.key:
                event.stop()
                self.dismiss(c.id)
                return

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        known = {c.id for c in self.choices}
        self.dismiss(event.button.id if event.button.id in known else None)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)
