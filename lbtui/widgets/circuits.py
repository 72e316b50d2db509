# SPDX-License-Identifier: Apache-2.0
"""Circuit breakers: the state of every backend's breaker and the log of its transitions."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import RichLog

from lbtui.model import BackendView, CircuitTransition, Snapshot
from lbtui.widgets import fmt
from lbtui.widgets.backends import (
    KEY_COLUMNS,
    all_backends,
    backend_text,
    circuit_cell,
    drain_cell,
    effective_weight_cell,
    health_cell,
)
from lbtui.widgets.keyed_table import KeyedTable
from lbtui.widgets.logs import new_tail_items


class CircuitTable(KeyedTable):
    COLUMNS = (
        ("proxy", "proxy"),
        ("group", "group"),
        ("backend", "address"),
        ("circuit", "circuit"),
        ("health", "health"),
        ("drain", "drain"),
        ("eff w", "eff"),
        ("last change", "change"),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.COLUMNS, KEY_COLUMNS, **kwargs)
        self.needle = ""
        self.shown = 0
        self._snapshot: Snapshot | None = None

    def show(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._refresh_rows()

    def set_filter(self, needle: str) -> None:
        self.needle = needle
        self._refresh_rows()

    def _refresh_rows(self) -> None:
        if self._snapshot is None:
            return
        rows = [
            b
            for b in all_backends(self._snapshot)
            if fmt.matches(self.needle, *backend_text(b), b.last_change)
        ]
        self.shown = len(rows)
        self.sync([self.cells(b) for b in rows])

    @staticmethod
    def cells(b: BackendView) -> tuple[object, ...]:
        return (
            b.proxy,
            b.group,
            b.address,
            circuit_cell(b.circuit, b.circuit_held),
            health_cell(b.health, b.health_forced),
            drain_cell(b.drain, b.maintenance),
            effective_weight_cell(b),
            b.last_change or fmt.DASH,
        )


def transition_line(t: CircuitTransition) -> Text:
    new_cell = circuit_cell(t.new)
    return Text.assemble(
        (fmt.clock(t.ts), "dim"),
        " ",
        (f"{t.proxy} {t.backend}", "bold"),
        " ",
        circuit_cell(t.old),
        " → ",
        new_cell,
        "  ",
        (t.reason, "italic"),
    )


class CircuitsPane(Vertical):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._log_seen: tuple[CircuitTransition, ...] = ()

    def compose(self) -> ComposeResult:
        yield CircuitTable(id="circuit-table")
        log = RichLog(id="circuit-log", wrap=False, markup=False, highlight=False, max_lines=1000)
        log.border_title = "transitions"
        yield log

    def show(self, snapshot: Snapshot) -> None:
        self.query_one(CircuitTable).show(snapshot)
        log = self.query_one("#circuit-log", RichLog)
        for transition in new_tail_items(self._log_seen, snapshot.circuit_log):
            log.write(transition_line(transition))
        self._log_seen = snapshot.circuit_log
