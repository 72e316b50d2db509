# SPDX-License-Identifier: Apache-2.0
"""The backends table: one row per backend of every proxy, default group and source-route groups."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from lbtui.model import BackendView, Circuit, DrainState, Health, Snapshot
from lbtui.widgets import fmt
from lbtui.widgets.keyed_table import KeyedTable

HEALTH_STYLE = {Health.UP: "green", Health.DOWN: "bold red", Health.UNKNOWN: "dim"}
CIRCUIT_STYLE = {Circuit.CLOSED: "green", Circuit.OPEN: "bold red", Circuit.HALF_OPEN: "yellow"}
DRAIN_STYLE = {DrainState.ACTIVE: "", DrainState.DRAINING: "bold yellow", DrainState.DRAINED: "magenta"}

# Identity of a row: the same address may sit in two groups of one proxy.
KEY_COLUMNS = ("proxy", "group", "address")


def backend_key(b: BackendView) -> str:
    return f"{b.proxy}|{b.group}|{b.address}"


def all_backends(snapshot: Snapshot) -> list[BackendView]:
    return [b for service in snapshot.services for b in service.all_backends()]


def find_backend(snapshot: Snapshot | None, key: str | None) -> BackendView | None:
    if snapshot is None or key is None:
        return None
    return next((b for b in all_backends(snapshot) if backend_key(b) == key), None)


def health_cell(health: Health) -> Text:
    return Text(str(health), style=HEALTH_STYLE[health])


def circuit_cell(circuit: Circuit | None) -> Text:
    if circuit is None:
        return Text(fmt.DASH, style="dim")
    return Text(str(circuit).replace("_", "-"), style=CIRCUIT_STYLE[circuit])


def drain_cell(drain: DrainState) -> Text:
    return Text(str(drain), style=DRAIN_STYLE[drain])


def effective_weight_cell(b: BackendView) -> Text:
    # Highlight when something (health, circuit, drain, algorithm) moved it away from the config.
    style = "" if b.effective_weight == b.configured_weight else "yellow"
    return fmt.right(f"{b.effective_weight:,}", style)


class BackendsTable(KeyedTable):
    COLUMNS = (
        ("proxy", "proxy"),
        ("group", "group"),
        ("backend", "address"),
        ("cfg w", "cfg"),
        ("eff w", "eff"),
        ("health", "health"),
        ("circuit", "circuit"),
        ("drain", "drain"),
        ("active", "active"),
        ("new/s", "new"),
        ("bytes in", "in"),
        ("bytes out", "out"),
        ("p50 ms", "p50"),
        ("p99 ms", "p99"),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.COLUMNS, KEY_COLUMNS, **kwargs)

    def show(self, snapshot: Snapshot) -> None:
        self.sync([self.cells(b) for b in all_backends(snapshot)])

    @staticmethod
    def cells(b: BackendView) -> tuple[object, ...]:
        return (
            b.proxy,
            b.group,
            b.address,
            fmt.right(f"{b.configured_weight:,}"),
            effective_weight_cell(b),
            health_cell(b.health),
            circuit_cell(b.circuit),
            drain_cell(b.drain),
            fmt.right(fmt.count(b.active_flows)),
            fmt.right(fmt.rate(b.new_flows_per_s)),
            fmt.right(fmt.size(b.counters.bytes_in)),
            fmt.right(fmt.size(b.counters.bytes_out)),
            fmt.right(fmt.millis(b.handshake_p50_ms)),
            fmt.right(fmt.millis(b.handshake_p99_ms)),
        )


def limit_text(rate: int | None, burst: int | None) -> str:
    """ "100/s (200)": new connections per second, then the burst."""
    if not rate:
        return "off"
    return f"{rate:,}/s" + (f" ({burst:,})" if burst else "")


def drops_text(drops: dict[str, int]) -> str:
    shown = [f"{reason} {count:,}" for reason, count in sorted(drops.items()) if count]
    return ", ".join(shown) if shown else fmt.DASH


class ProxiesSummary(Static):
    """One line per proxy under the backends table: where it listens, how it picks, its limits, drops."""

    def show(self, snapshot: Snapshot) -> None:
        table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="dim")
        for name in ("proxy", "vip", "algorithm", "flows", "source limit", "backend limit", "drops"):
            table.add_column(name, no_wrap=True, overflow="ellipsis")
        for s in snapshot.services:
            proxy = Text(s.name, style="bold")
            if s.panic:
                proxy.append(" PANIC", style="bold red")
            rl = s.rate_limit
            table.add_row(
                proxy,
                f"{s.protocol} {s.vip}:{s.port}",
                s.algorithm,
                fmt.count(s.active_flows),
                limit_text(rl.per_source_rate, rl.per_source_burst),
                limit_text(rl.per_backend_rate, rl.per_backend_burst),
                drops_text(s.drops),
            )
        self.update(table)
