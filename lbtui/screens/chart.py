# SPDX-License-Identifier: Apache-2.0
"""The chart view: the history of one backend or proxy, with events marked on the time axis.

Drawn with textual-plotext (Textualize's widget around plotext): real axes with scales, time
ticks labelled with the wall clock, several series per chart with a legend, vertical lines for
events, and it follows the app's theme. Textual's own Sparkline has none of the axes, so it stays
the backends table's in-row trend. The history comes from `EngineHandle.history`: the whole span
once, then every refresh only the points after the newest one held (widgets/history_cache.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState
from textual_plotext import PlotextPlot

from lbtui.model import DROPS_SERIES_PREFIX, Event, HistoryAnswer, HistoryQuery
from lbtui.widgets import fmt
from lbtui.widgets.history_cache import SeriesCache, Target

SPANS_S = (300, 900, 3600)  # z cycles through them
MARK_LETTERS = {"drain": "D", "maintenance": "M", "reload": "R", "circuit": "C", "health": "H"}
MARK_COLORS = {
    "drain": "yellow",
    "maintenance": "cyan",
    "reload": "white",
    "circuit": "red",
    "health": "magenta",
}
LINE_COLORS = (
    ("cyan", "cyan"),
    ("orange", "dark_orange"),
    ("green", "green"),
    ("blue", "blue"),
)  # plotext, Rich
SCALES = ((2**30, "Gi"), (2**20, "Mi"), (2**10, "Ki"))


class TimePlot(PlotextPlot):
    """A PlotextPlot whose time ticks are chosen for the width it has when it renders."""

    ticks: Callable[[int], tuple[list[float], list[str]]] | None = None

    def render(self) -> RenderResult:
        if self.ticks is not None:
            self.plt.xticks(*self.ticks(self.size.width - 6))  # minus the y axis and its labels
        return super().render()


@dataclass(frozen=True)
class ChartSpec:
    id: str
    title: str
    unit: str  # "1/s", "B/s", "flows", "ms"
    series: tuple[tuple[str, str], ...]  # (series name, legend label); "drops.*" = every drop reason


CHARTS = (
    ChartSpec(
        "chart-conns",
        "connections",
        "1/s",
        (("new_flows", "new/s"), ("failed_handshakes", "failed/s"), ("drops.*", "dropped/s")),
    ),
    ChartSpec("chart-active", "active flows", "flows", (("active_flows", "active"),)),
    ChartSpec("chart-bytes", "throughput", "B/s", (("bytes_in", "in"), ("bytes_out", "out"))),
    ChartSpec(
        "chart-latency",
        "p99 over 10 s",
        "ms",
        (("handshake_p99_ms", "handshake"), ("duration_p99_ms", "duration")),
    ),
)


TICK_STEPS_S = (60, 120, 180, 300, 600, 900, 1200, 1800)
TICK_CELLS = 9  # a label (HH:MM) and room around it: plotext drops colliding labels unpredictably


def time_ticks(end: int, span_s: int, width: int = 200) -> tuple[list[float], list[str]]:
    """x positions (seconds relative to `end`) at round wall-clock times, labelled HH:MM, no closer
    than TICK_CELLS columns on a plot `width` columns wide."""
    per_cell = span_s / max(width, 1)
    step = next((s for s in TICK_STEPS_S if s / per_cell >= TICK_CELLS), TICK_STEPS_S[-1])
    first = (end - span_s) // step * step + step
    positions, labels = [], []
    for t in range(first, end + 1, step):
        positions.append(float(t - end))
        labels.append(time.strftime("%H:%M", time.localtime(t)))
    return positions, labels


def scaled(unit: str, peak: float) -> tuple[float, str]:
    """Divide by this to show values in the returned unit (B/s -> KiB/s, MiB/s...)."""
    if unit == "B/s":
        for factor, prefix in SCALES:
            if peak >= factor:
                return float(factor), f"{prefix}B/s"
    return 1.0, unit


def points(values: Sequence[float | None], end: int) -> tuple[list[float], list[float]]:
    """(x, y) of the known points; x is seconds before `end` (0 = newest)."""
    start = end - len(values) + 1
    xs, ys = [], []
    for i, v in enumerate(values):
        if v is not None and math.isfinite(v):
            xs.append(float(start + i - end))
            ys.append(v)
    return xs, ys


class ChartScreen(Screen[None]):
    """Full screen: four charts of one target, the marks' legend, and keys to switch."""

    BINDINGS = [
        Binding("escape,q,g", "close", "Back"),
        Binding("p", "toggle_target", "Proxy/backend"),
        Binding("z", "zoom", "Span"),
    ]
    DEFAULT_CSS = """
    ChartScreen #chart-title { height: 1; padding: 0 1; background: $panel; }
    ChartScreen #chart-note { height: auto; padding: 0 1; color: $warning; display: none; }
    ChartScreen Grid { grid-size: 2 2; height: 1fr; }
    ChartScreen PlotextPlot { height: 1fr; }
    ChartScreen .legend { height: 1; padding: 0 1; }
    ChartScreen #chart-marks { height: auto; max-height: 6; padding: 0 1; }
    """

    def __init__(
        self,
        fetch: Callable[[HistoryQuery], HistoryAnswer],
        proxy: str,
        backend: str | None,
        *,
        now: float,
        refresh_s: float = 1.0,
        span_s: int = 900,
    ) -> None:
        super().__init__()
        self.fetch = fetch
        self.proxy = proxy
        self.backend = backend
        self.home_backend = backend  # `p` goes back to it from the proxy
        self.now = now  # the engine's time at the last snapshot: where the first fetch starts from
        self.refresh_s = refresh_s
        self.span_s = span_s
        self.cache = SeriesCache(keep=max(SPANS_S))
        self.fetches = 0  # answers merged, for tests
        self.error: str | None = None
        self._timer: Timer | None = None

    @property
    def target(self) -> Target:
        return (self.proxy, self.backend)

    def compose(self) -> ComposeResult:
        yield Static(id="chart-title")
        yield Static(id="chart-note")
        with Grid():
            for spec in CHARTS:
                with Vertical(classes="chart"):
                    yield Static(id=f"{spec.id}-legend", classes="legend")
                    yield TimePlot(id=spec.id)
        yield Static(id="chart-marks")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        self._show_title()
        self._fetch(HistoryQuery(self.proxy, self.backend, since=self.now - self.span_s))

    # ---- fetching -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="chart", exit_on_error=False)
    def _fetch(self, query: HistoryQuery) -> tuple[HistoryQuery, HistoryAnswer]:
        return query, self.fetch(query)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "chart" or not self.is_attached:
            return
        if event.state is WorkerState.SUCCESS and event.worker.result is not None:
            query, answer = event.worker.result
            if (query.proxy, query.backend) == self.target:  # not an answer for a target left since
                self.error = None
                self.cache.merge(answer)
                self.fetches += 1
                self.now = max(self.now, answer.taken_at)
                self.draw()
        elif event.state is WorkerState.ERROR:
            self.error = f"cannot fetch the history: {event.worker.error}"
            self._show_note(self.error)
        else:
            return
        self._timer = self.set_timer(self.refresh_s, self._fetch_new)

    def _fetch_new(self) -> None:
        since = self.cache.since
        if since is None:
            since = self.now - self.span_s
        self._fetch(HistoryQuery(self.proxy, self.backend, since=since))

    def _restart(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.cache.clear()
        self._show_title()
        self.draw()
        self._fetch(HistoryQuery(self.proxy, self.backend, since=self.now - self.span_s))

    # ---- actions ------------------------------------------------------------------------------

    def action_close(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.dismiss(None)

    def action_toggle_target(self) -> None:
        if self.backend is not None:
            self.backend = None
        elif self.home_backend is not None:
            self.backend = self.home_backend
        else:
            self.notify("this chart was opened for the proxy; select a backend for its own chart")
            return
        self._restart()

    def action_zoom(self) -> None:
        self.span_s = (
            SPANS_S[(SPANS_S.index(self.span_s) + 1) % len(SPANS_S)] if self.span_s in SPANS_S else 900
        )
        self._restart()

    # ---- drawing ------------------------------------------------------------------------------

    def _show_title(self) -> None:
        what = f"{self.proxy} {self.backend}" if self.backend else f"proxy {self.proxy} (all backends)"
        other = "proxy" if self.backend else "backend"
        hint = (
            f"  last {fmt.duration(self.span_s)}, one point per second · p: {other} · z: span · escape: back"
        )
        self.query_one("#chart-title", Static).update(Text.assemble((what, "bold"), (hint, "dim")))

    def _show_note(self, text: str | None) -> None:
        note = self.query_one("#chart-note", Static)
        note.update(text or "")
        note.display = bool(text)

    def draw(self) -> None:
        end = self.cache.end(self.target)
        if self.cache.kept_s == 0 and self.fetches:
            self._show_note(
                "this instance keeps no history (history_s 0): charts need an lbtui whose engine records it"
            )
        elif end is None and self.fetches:
            self._show_note("no history recorded for this target yet")
        else:
            self._show_note(self.error)
        for spec in CHARTS:
            self._draw_chart(spec, end)
        self._show_marks(end)

    def _names(self, spec: ChartSpec) -> list[tuple[str, str]]:
        out = []
        for name, label in spec.series:
            if name == "drops.*":
                reasons = [n for n in self.cache.names(self.target) if n.startswith(DROPS_SERIES_PREFIX)]
                out += [(n, f"drop {n[len(DROPS_SERIES_PREFIX) :]}") for n in reasons]
            else:
                out.append((name, label))
        return out

    def _draw_chart(self, spec: ChartSpec, end: int | None) -> None:
        widget = self.query_one(f"#{spec.id}", TimePlot)
        plt = widget.plt
        plt.clear_data()
        plt.clear_figure()
        widget.ticks = None
        lines = []
        peak = 0.0
        for name, label in self._names(spec) if end is not None else []:
            xs, ys = points(self.cache.values(self.target, name, self.span_s), end or 0)
            if xs:
                lines.append((label, xs, ys))
                peak = max(peak, max(ys))
        divisor, unit = scaled(spec.unit, peak)
        legend = Text.assemble((spec.title, "bold"), (f" ({unit})", "dim"))
        if not lines:
            legend.append("  nothing recorded", style="dim")
        for (label, _, _), (_, color) in zip(lines, LINE_COLORS, strict=False):
            legend.append("  ━ ", style=color)
            legend.append(label)
        self.query_one(f"#{spec.id}-legend", Static).update(legend)
        if end is not None:
            top = (peak / divisor) * 1.15 or 1.0
            for (_, xs, ys), (color, _) in zip(lines, LINE_COLORS, strict=False):
                plt.plot(xs, [y / divisor for y in ys], marker="braille", color=color)
            self._draw_marks(plt, end, top)
            plt.xlim(-self.span_s + 1, 0)
            plt.ylim(0, top)
            span = self.span_s
            widget.ticks = lambda width: time_ticks(end, span, width)
        widget.refresh()

    def _marks_in_view(self, end: int) -> list[Event]:
        return [m for m in self.cache.marks() if end - self.span_s < m.ts <= end + 1]

    def _draw_marks(self, plt: object, end: int, top: float) -> None:
        for mark in self._marks_in_view(end):
            x = mark.ts - end
            color = MARK_COLORS.get(mark.kind, "white")
            plt.vline(x, color)  # type: ignore[attr-defined]
            plt.text(MARK_LETTERS.get(mark.kind, "?"), x, top * 0.95, color=color)  # type: ignore[attr-defined]

    def _show_marks(self, end: int | None) -> None:
        marks = [] if end is None else self._marks_in_view(end)
        if not marks:
            self.query_one("#chart-marks", Static).update(
                Text("no drain, reload, circuit or health event in this span", style="dim")
            )
            return
        lines = [
            Text.assemble(
                (MARK_LETTERS.get(m.kind, "?"), f"bold {MARK_COLORS.get(m.kind, 'white')}"),
                " ",
                (fmt.clock(m.ts), "dim"),
                f" {m.kind}: {m.message.splitlines()[0] if m.message else ''}",
            )
            for m in marks[-5:]
        ]
        self.query_one("#chart-marks", Static).update(Text("\n").join(lines))
