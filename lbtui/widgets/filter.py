# SPDX-License-Identifier: Apache-2.0
"""`/` in a pane: a one-line filter under the pane's rows or lines (the rule of fmt.matches).

Enter keeps the filter and goes back to the rows (the line stays visible while it filters);
escape clears it. The conntrack pane has its own (its filter is answered by the engine).
"""

from __future__ import annotations

from typing import Protocol

from textual.binding import Binding
from textual.widgets import Input

from lbtui.model import MAX_QUERY_TEXT


class PaneFilter(Input):
    BINDINGS = [Binding("escape", "clear", "Clear filter", show=False)]

    def __init__(self, pane: str, what: str) -> None:
        super().__init__(
            placeholder=f"filter {what}: every word must match; enter keeps it, escape clears",
            id=f"{pane}-filter",
            classes="pane-filter",
            compact=True,
            max_length=MAX_QUERY_TEXT,
        )
        self.pane = pane

    @property
    def needle(self) -> str:
        return self.value.strip()

    def open(self) -> None:
        self.display = True
        self.focus()

    def action_clear(self) -> None:
        self.value = ""
        self.display = False
        self.post_message(self.Submitted(self, ""))


class Filterable(Protocol):
    """A pane's rows or lines that `/` narrows."""

    needle: str

    def set_filter(self, needle: str) -> None: ...
