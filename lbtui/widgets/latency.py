# SPDX-License-Identifier: Apache-2.0
"""Latency per backend: percentiles over the chosen window beside lifetime, and the lifetime buckets."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from lbtui.model import Histogram, LatencyView, Percentiles, Snapshot
from lbtui.widgets import fmt

BLOCKS = "▁▂▃▄▅▆▇█"


def bounds_legend(bounds: tuple[float, ...]) -> str:
    """The bucket bounds in words: "doubling from ≤1µs to ≤1.07s, then +Inf" or the list of them."""
    finite = [b for b in bounds if not math.isinf(b)]
    if not finite:
        return fmt.DASH
    doubling = len(finite) > 2 and all(
        math.isclose(b / a, 2.0) for a, b in zip(finite, finite[1:], strict=False)
    )
    if doubling:
        first, last = fmt.latency(finite[0]), fmt.latency(finite[-1])
        return f"bucket upper bounds double from {first} to {last}, then +Inf"
    return "bucket upper bounds " + " ".join(fmt.latency(b) for b in bounds)


def sparkline(counts: tuple[int, ...]) -> Text:
    """One block per bucket, height relative to the fullest bucket; empty buckets are a dim dot."""
    peak = max(counts, default=0)
    text = Text()
    for n in counts:
        if n == 0 or peak == 0:
            text.append("·", style="dim")
        else:
            level = max(0, math.ceil(n / peak * len(BLOCKS)) - 1)
            text.append(BLOCKS[level], style="green" if level < 4 else "bold green")
    return text


def window_cells(p: Percentiles | Histogram | None) -> list[Text]:
    if p is None:
        return [fmt.right(fmt.DASH, "dim")] * 4
    return [
        fmt.right(fmt.count(p.count)),
        fmt.right(fmt.millis(p.p50_ms)),
        fmt.right(fmt.millis(p.p95_ms)),
        fmt.right(fmt.millis(p.p99_ms)),
    ]


def latency_rows(view: LatencyView, protocol: str, window_s: int | None) -> list[list[Any]]:
    """One row per kind this backend measures: handshake (TCP only) and connection duration."""
    kinds: list[tuple[str, Histogram | None]] = [("duration", view.duration)]
    if protocol != "udp":
        kinds.insert(0, ("handshake", view.handshake))
    present = [(kind, hist) for kind, hist in kinds if hist is not None] or kinds[:1]
    rows = []
    for kind, lifetime in present:
        shown: Percentiles | Histogram | None = lifetime
        if window_s is not None:
            window = view.window(window_s)
            shown = getattr(window, kind) if window else None
        row: list[Any] = [view.proxy, view.backend, kind, *window_cells(shown)]
        if window_s is not None:
            row.append(fmt.right(fmt.millis(lifetime.p99_ms if lifetime else None)))
        if lifetime is None or lifetime.count == 0:
            row.append(Text("no samples yet", "dim"))
        else:
            row.append(sparkline(lifetime.counts))
        rows.append(row)
    return rows


def latency_renderable(snapshot: Snapshot, window_s: int | None, needle: str = "") -> Group:
    views = [v for v in snapshot.latency if fmt.matches(needle, v.proxy, v.backend)]
    if not snapshot.latency:
        return Group(Text("no latency data yet: no backend has finished a handshake or a connection", "dim"))
    if not views:
        return Group(Text(f"no backend matches {needle!r}", "dim"))
    name = fmt.window(window_s)
    table = Table(box=None, pad_edge=False, expand=False, header_style="bold")
    columns = [("proxy", "left"), ("backend", "left"), ("kind", "left")]
    columns += [
        (f"n {name}", "right"),
        (f"p50 {name}", "right"),
        (f"p95 {name}", "right"),
        (f"p99 {name}", "right"),
    ]
    if window_s is not None:
        columns.append(("p99 life", "right"))
    columns.append(("lifetime buckets", "left"))
    for label, justify in columns:
        table.add_column(label, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    bounds: tuple[float, ...] = ()
    for view in views:
        service = snapshot.service(view.proxy)
        for row in latency_rows(view, service.protocol if service else "tcp", window_s):
            table.add_row(*row)
        for hist in (view.handshake, view.duration):
            bounds = bounds or (hist.bounds_ms if hist else ())
    legend = Text(
        f"milliseconds; {'lifetime' if window_s is None else f'over the last {name}'} (t: 10s, 1m, 5m, "
        "lifetime); UDP has no handshakes. One character per bucket, ",
        style="dim",
    )
    legend.append(bounds_legend(bounds), style="dim")
    return Group(table, Text(""), legend)


class LatencyPane(VerticalScroll):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_s: int | None = 10
        self.needle = ""
        self._snapshot: Snapshot | None = None
        self._shown: tuple[object, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="latency-body")

    def show(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._redraw()

    def set_window(self, window_s: int | None) -> None:
        self.window_s = window_s
        self._redraw()

    def set_filter(self, needle: str) -> None:
        self.needle = needle
        self._redraw()

    def _redraw(self) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            return
        what = (
            snapshot.latency,
            [(s.name, s.protocol) for s in snapshot.services],
            self.window_s,
            self.needle,
        )
        if what == self._shown:
            return  # unchanged: skip re-rendering the whole table
        self._shown = what
        self.query_one("#latency-body", Static).update(
            latency_renderable(snapshot, self.window_s, self.needle)
        )
