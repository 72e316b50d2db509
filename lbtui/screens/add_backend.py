# SPDX-License-Identifier: Apache-2.0
"""Ask for a backend to add at run time: its address, weight and group; nothing is submitted until
the values are valid (the engine checks them again)."""

from __future__ import annotations

import ipaddress

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from lbtui.model import AddBackend
from lbtui.screens.weight import parse_weight

DEFAULT_GROUP = "default"


def parse_address(text: str) -> str:
    """ "10.0.2.20:8080" as typed; ValueError with a message an operator can act on."""
    value = text.strip()
    host, sep, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        ok = bool(sep) and port.isdigit() and 1 <= int(port) <= 65535
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{value or 'empty'!r} is not an IPv4 ip:port such as 10.0.2.20:8080")
    return value


class AddBackendScreen(ModalScreen[AddBackend | None]):
    """Dismisses with the AddBackend command, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, proxy: str, groups: tuple[str, ...]) -> None:
        super().__init__()
        self.proxy = proxy
        self.groups = groups or (DEFAULT_GROUP,)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = "Add a backend"
            yield Label(f"Add a backend to {self.proxy}; it takes new connections at once.")
            yield Input(placeholder="ip:port, e.g. 10.0.2.20:8080", id="address")
            yield Input(value="1", placeholder="weight", id="weight")
            yield Select([(g, g) for g in self.groups], value=self.groups[0], allow_blank=False, id="group")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Add", variant="primary", id="ok", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _submit(self) -> None:
        error = self.query_one("#error", Static)
        try:
            address = parse_address(self.query_one("#address", Input).value)
            weight = parse_weight(self.query_one("#weight", Input).value)
        except ValueError as exc:
            error.update(str(exc))
            error.display = True
            return
        group = str(self.query_one("#group", Select).value)
        self.dismiss(AddBackend(self.proxy, address, weight, None if group == DEFAULT_GROUP else group))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
