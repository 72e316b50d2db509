# SPDX-License-Identifier: Apache-2.0
"""Latency histograms per backend, one text sparkline per histogram (one character per bucket)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from lbtui.model import Histogram, LatencyView, Snapshot
from lbtui.widgets import fmt

BLOCKS = "▁▂▃▄▅▆▇█"


def bound_label(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf"
    return f"{bound:g}"


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


def histogram_row(view: LatencyView, kind: str, hist: Histogram | None) -> list[Any]:
    if hist is None or hist.count == 0:
        return [
            view.proxy,
            view.backend,
            kind,
            fmt.right(fmt.count(0 if hist else None)),
            fmt.right(fmt.DASH),
            fmt.right(fmt.DASH),
            fmt.right(fmt.DASH),
            Text("no samples yet", "dim"),
        ]
    return [
        view.proxy,
        view.backend,
        kind,
        fmt.right(fmt.count(hist.count)),
        fmt.right(fmt.millis(hist.p50_ms)),
        fmt.right(fmt.millis(hist.p95_ms)),
        fmt.right(fmt.millis(hist.p99_ms)),
        sparkline(hist.counts),
    ]


def latency_renderable(views: tuple[LatencyView, ...]) -> Group:
    table = Table(box=None, pad_edge=False, expand=False, header_style="bold")
    for name, justify in (
        ("proxy", "left"),
        ("backend", "left"),
        ("kind", "left"),
        ("count", "right"),
        ("p50 ms", "right"),
        ("p95 ms", "right"),
        ("p99 ms", "right"),
        ("buckets", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    bounds: tuple[float, ...] = ()
    for view in views:
        shown = False
        for kind, hist in (("handshake", view.handshake), ("duration", view.duration)):
            if hist is not None:
                table.add_row(*histogram_row(view, kind, hist))
                bounds = bounds or hist.bounds_ms
                shown = True
        if not shown:
            table.add_row(*histogram_row(view, "handshake", None))
    if not views:
        return Group(Text("no latency data yet", style="dim"))
    legend = Text("one character per bucket, upper bounds in ms: ", style="dim")
    legend.append(" ".join(bound_label(b) for b in bounds) or fmt.DASH, style="dim")
    return Group(table, Text(""), legend)


class LatencyPane(VerticalScroll):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._views: tuple[LatencyView, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="latency-body")

    def show(self, snapshot: Snapshot) -> None:
        if snapshot.latency == self._views:
            return  # unchanged: skip re-rendering the whole table
        self._views = snapshot.latency
        self.query_one("#latency-body", Static).update(latency_renderable(snapshot.latency))
