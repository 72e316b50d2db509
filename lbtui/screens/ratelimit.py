# SPDX-License-Identifier: Apache-2.0
"""Edit a proxy's rate limits: per source address and per backend, new connections per second."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from lbtui.model import RateLimitView, SetRateLimit

MAX_LIMIT = 2**31 - 1
FIELDS = (
    ("per_source_rate", "per source: rate (new conns/s)"),
    ("per_source_burst", "per source: burst"),
    ("per_backend_rate", "per backend: rate (new conns/s)"),
    ("per_backend_burst", "per backend: burst"),
)


def parse_limit(label: str, text: str, current: int | None) -> int | None:
    """None = leave unchanged (empty, or the value it already has), 0 = remove the limit."""
    value = text.strip()
    if not value:
        return None
    if not value.lstrip("-").isdigit():
        raise ValueError(f"{label}: {value!r} is not a whole number (0 = off, empty = unchanged)")
    number = int(value)
    if not 0 <= number <= MAX_LIMIT:
        raise ValueError(f"{label}: must be between 0 and {MAX_LIMIT}, got {number}")
    if number == (current or 0):
        return None
    return number


def rate_limit_command(proxy: str, current: RateLimitView, texts: dict[str, str]) -> SetRateLimit | None:
    """The SetRateLimit for what the operator changed, None if nothing changed; ValueError if invalid."""
    changes = {
        name: parse_limit(label, texts.get(name, ""), getattr(current, name)) for name, label in FIELDS
    }
    if all(v is None for v in changes.values()):
        return None
    return SetRateLimit(proxy=proxy, **changes)


class RateLimitScreen(ModalScreen[SetRateLimit | None]):
    """Dismisses with the command to submit, or None (cancelled, or nothing changed)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, proxy: str, current: RateLimitView) -> None:
        super().__init__()
        self.proxy = proxy
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = f"Rate limits · {self.proxy}"
            yield Label(f"New connections per second into {self.proxy}. Empty = unchanged, 0 = off.")
            with Grid(id="limits"):
                for name, label in FIELDS:
                    value = getattr(self.current, name)
                    yield Label(label)
                    yield Input(
                        value="" if value is None else str(value), placeholder="off", id=name, compact=True
                    )
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply", variant="primary", id="ok", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _submit(self) -> None:
        texts = {name: self.query_one(f"#{name}", Input).value for name, _ in FIELDS}
        try:
            command = rate_limit_command(self.proxy, self.current, texts)
        except ValueError as exc:
            error = self.query_one("#error", Static)
            error.update(str(exc))
            error.display = True
            return
        self.dismiss(command)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
