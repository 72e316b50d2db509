# SPDX-License-Identifier: Apache-2.0
"""The backends table: one row per backend of every proxy, default group and source-route groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from textual.renderables.sparkline import Sparkline
from textual.widgets import Static

from lbtui.addresses import format_endpoint
from lbtui.model import BackendView, Circuit, DrainState, Health, Snapshot, VipAnnouncement
from lbtui.widgets import fmt
from lbtui.widgets.keyed_table import KeyedTable

TREND_S = 120  # the sparkline column: new connections per second over the last two minutes
TREND_WIDTH = 16

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


MAINTENANCE_STYLE = "bold cyan"  # shown apart from a drain: a different word and colour


def health_cell(health: Health, forced: bool = False) -> Text:
    text = Text(str(health), style=HEALTH_STYLE[health])
    if forced:  # an operator's, not the checks'
        text.append(" (forced)", style="italic")
    return text


def circuit_cell(circuit: Circuit | None, held: bool = False) -> Text:
    if circuit is None:
        return Text(fmt.DASH, style="dim")
    text = Text(str(circuit).replace("_", "-"), style=CIRCUIT_STYLE[circuit])
    if held:
        text.append(" (held)", style="italic")
    return text


def drain_cell(drain: DrainState, maintenance: bool = False) -> Text:
    if maintenance:
        return Text("maint", style=MAINTENANCE_STYLE)
    return Text(str(drain), style=DRAIN_STYLE[drain])


def effective_weight_cell(b: BackendView) -> Text:
    # Highlight when something (health, circuit, drain, algorithm) moved it away from the config.
    style = "" if b.effective_weight == b.configured_weight else "yellow"
    return fmt.right(f"{b.effective_weight:,}", style)


def backend_text(b: BackendView) -> tuple[str, ...]:
    """What `/` matches in a backend row."""
    circuit = b.circuit.value.replace("_", "-") if b.circuit else ""
    marks = (
        "maint" if b.maintenance else "",
        "forced" if b.health_forced else "",
        "held" if b.circuit_held else "",
    )
    return (b.proxy, b.group, b.address, b.health.value, circuit, b.drain.value, b.source, *marks)


class Trend:
    """Textual's Sparkline at a fixed width in a table cell.

    (Sparkline's own measure gives its height as the maximum width, so a DataTable column would
    shrink to its header.)"""

    def __init__(self, sparkline: Sparkline[float]) -> None:
        self.sparkline = sparkline

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trend):
            return NotImplemented
        return list(self.sparkline.data) == list(other.sparkline.data)

    __hash__ = None  # type: ignore[assignment]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.sparkline

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(TREND_WIDTH, TREND_WIDTH)


def trend_cell(points: Sequence[float | None]) -> object:
    """Textual's sparkline of the points (None counts as 0), scaled from zero, not from their minimum."""
    known = [0.0 if p is None else p for p in points]
    if len(known) < 2:
        return Text(fmt.DASH, style="dim")
    # with max() per character, a leading zero shares the first character with real points: it
    # is never drawn, but pins the scale at 0 so a steady rate reads as steady
    return Trend(
        Sparkline(
            [0.0, *known],
            width=TREND_WIDTH,
            min_color=Color.parse("#2e7d32"),
            max_color=Color.parse("#9ccc65"),
        )
    )


def latency_cells(b: BackendView, snapshot: Snapshot, window_s: int | None) -> tuple[Text, Text, Text]:
    """p50 and p99 of the handshake over the window (lifetime when None), and the lifetime p99.

    UDP backends have no handshake: their dashes are dim."""
    service = snapshot.service(b.proxy)
    if service is not None and service.protocol == "udp":
        return fmt.right(fmt.DASH, "dim"), fmt.right(fmt.DASH, "dim"), fmt.right(fmt.DASH, "dim")
    lifetime = (b.handshake_p50_ms, b.handshake_p99_ms)
    shown: tuple[float | None, float | None] = lifetime
    if window_s is not None:
        view = snapshot.latency_of(b.proxy, b.address)
        window = view.window(window_s) if view else None
        hs = window.handshake if window else None
        shown = (hs.p50_ms, hs.p99_ms) if hs else (None, None)
    return (
        fmt.right(fmt.millis(shown[0])),
        fmt.right(fmt.millis(shown[1])),
        fmt.right(fmt.millis(lifetime[1])),
    )


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
        ("new/s 2m", "trend"),
        ("bytes in", "in"),
        ("bytes out", "out"),
        ("p50 10s", "p50"),
        ("p99 10s", "p99"),
        ("p99 life", "p99life"),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.COLUMNS, KEY_COLUMNS, **kwargs)
        self.needle = ""
        self.window_s: int | None = 10
        self.shown = 0  # rows after the filter
        self._snapshot: Snapshot | None = None
        self._trends: dict[tuple[str, str], Sequence[float | None]] = {}

    def show(
        self, snapshot: Snapshot, trends: dict[tuple[str, str], Sequence[float | None]] | None = None
    ) -> None:
        """Rows for every backend matching the filter; `trends`: (proxy, address) -> new/s points."""
        self._snapshot = snapshot
        if trends is not None:
            self._trends = trends
        self._refresh_rows()

    def set_filter(self, needle: str) -> None:
        self.needle = needle
        self._refresh_rows()

    def set_window(self, window_s: int | None) -> None:
        self.window_s = window_s
        name = fmt.window(window_s)
        self.relabel("p50", f"p50 {name}")
        self.relabel("p99", f"p99 {name}")
        self._refresh_rows()

    def _refresh_rows(self) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            return
        rows = [b for b in all_backends(snapshot) if fmt.matches(self.needle, *backend_text(b))]
        self.shown = len(rows)
        self.sync(
            [self.cells(b, snapshot, self.window_s, self._trends.get((b.proxy, b.address), ())) for b in rows]
        )

    @staticmethod
    def cells(
        b: BackendView, snapshot: Snapshot, window_s: int | None = 10, trend: Sequence[float | None] = ()
    ) -> tuple[object, ...]:
        return (
            b.proxy,
            b.group,
            b.address,
            fmt.right(f"{b.configured_weight:,}"),
            effective_weight_cell(b),
            health_cell(b.health, b.health_forced),
            circuit_cell(b.circuit, b.circuit_held),
            drain_cell(b.drain, b.maintenance),
            fmt.right(fmt.count(b.active_flows)),
            fmt.right(fmt.rate(b.new_flows_per_s)),
            trend_cell(trend),
            fmt.right(fmt.size(b.counters.bytes_in)),
            fmt.right(fmt.size(b.counters.bytes_out)),
            *latency_cells(b, snapshot, window_s),
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
        announce = snapshot.announce
        columns = ("proxy", "vip", "algorithm", "flows", "source limit", "backend limit", "drops")
        for name in columns + (("bgp",) if announce.enabled else ()):
            table.add_column(name, no_wrap=True, overflow="ellipsis")
        for s in snapshot.services:
            proxy = Text(s.name, style="bold")
            if s.panic:
                proxy.append(" PANIC", style="bold red")
            rl = s.rate_limit
            table.add_row(
                proxy,
                f"{s.protocol} {format_endpoint(s.vip, s.port)}",
                s.algorithm,
                fmt.count(s.active_flows),
                limit_text(rl.per_source_rate, rl.per_source_burst),
                limit_text(rl.per_backend_rate, rl.per_backend_burst),
                drops_text(s.drops),
                *((bgp_text(announce.vip(s.vip)),) if announce.enabled else ()),
            )
        self.update(table)


def bgp_text(vip: VipAnnouncement | None) -> Text:
    """A VIP's announcement: announced (green), withdrawn with its reason, held by the operator."""
    if vip is None:
        return Text("-", style="dim")
    if vip.announced:
        return Text("announced", style="green")
    text = Text("HELD" if vip.held else "withdrawn", style="bold yellow" if vip.held else "bold red")
    text.append(f" {vip.error or vip.reason}", style="dim")
    return text
