# SPDX-License-Identifier: Apache-2.0
"""The console over time (issue 15): sparklines, the chart view, latency windows, `/` in every pane,
`:` and the palette, export, and the notes of empty panes. Pilot tests against the real engine over
the in-memory dataplane after a story of traffic and events (tests/support/console_time.py)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import Static

from lbtui import model, wire
from lbtui.app import LbtuiApp
from lbtui.screens.chart import ChartScreen, time_ticks
from lbtui.widgets import fmt
from lbtui.widgets.backends import Trend
from lbtui.widgets.circuits import CircuitTable
from lbtui.widgets.conntrack import FlowTable
from lbtui.widgets.filter import PaneFilter
from lbtui.widgets.history_cache import SeriesCache
from lbtui.widgets.latency import bounds_legend
from lbtui.widgets.summary import summary_text
from tests.support import console_time
from tests.support.console_engine import LOGGED_PORT, START, UPTIME_S, ConsoleEngine
from tests.support.console_time import STORY_S

pytestmark = pytest.mark.anyio

SIZE = (160, 48)
B2 = "10.0.2.12:8080"
B2_KEY = f"web|default|{B2}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Make = Callable[..., ConsoleEngine]


@pytest.fixture
def make_engine() -> Iterator[Make]:
    """console_time.make_engine, each engine stopped after the test."""
    made: list[ConsoleEngine] = []

    def make(**knobs: object) -> ConsoleEngine:
        made.append(console_time.make_engine(**knobs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for engine in made:
        engine.shutdown()


async def wait_until(predicate: Callable[[], object], what: str, pilot: Pilot) -> None:
    for _ in range(500):
        if predicate():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def started(app: LbtuiApp, pilot: Pilot) -> None:
    await wait_until(lambda: app.refreshes >= 1, "the first snapshot", pilot)
    await pilot.pause()


def plain(value: object) -> str:
    return value.plain if isinstance(value, Text) else str(value)


def shown_text(widget: Static) -> str:
    """What a Static shows, as plain text (its content may be a Rich table or group)."""
    console = Console(width=240, color_system=None, file=io.StringIO())
    content = widget.content
    if isinstance(content, str):
        return content
    console.print(content)
    return console.file.getvalue()  # type: ignore[attr-defined]


def note(app: LbtuiApp, pane: str) -> str | None:
    widget = app.notes[pane]
    return shown_text(widget) if widget.display else None


def lines(log: object) -> list[str]:
    return [strip.text.rstrip() for strip in log.lines]  # type: ignore[attr-defined]


# ---- sparklines --------------------------------------------------------------------------------


async def test_backends_show_a_new_per_second_sparkline_fed_by_incremental_history(make_engine: Make) -> None:
    engine = make_engine(grow=True)
    app = LbtuiApp(engine, refresh_s=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.refreshes >= 4, "a few refreshes", pilot)
        cell = app.backends_table.get_cell(B2_KEY, "trend")
        assert isinstance(cell, Trend)
        points = cell.sparkline.data[1:]  # after the zero that pins the scale
        assert len(points) >= 120 and all(p > 0 for p in points)
        assert plain(app.backends_table.get_cell("web|default|10.0.2.13:8080", "trend")) != "—"
        # first the last two minutes of every target's new/s, then only what is new since
        first, *later = engine.history_queries
        snapshot_time = START + UPTIME_S + 1  # the first snapshot: grown by one second
        assert first == model.HistoryQuery(since=first.since, series=("new_flows",))
        assert first.since == pytest.approx(snapshot_time - 120)  # the manual clock adds fractions
        assert later and all(q.since is not None and q.since > snapshot_time - 10 for q in later)


async def test_an_engine_without_history_gets_no_history_requests_and_dashes(make_engine: Make) -> None:
    engine = make_engine(story_s=0)
    engine.keeps_history = False  # an instance from before history
    app = LbtuiApp(engine, refresh_s=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.refreshes >= 3, "a few refreshes", pilot)
        assert engine.history_queries == []
        assert plain(app.backends_table.get_cell(B2_KEY, "trend")) == "—"


# ---- the chart view ----------------------------------------------------------------------------


async def open_chart(app: LbtuiApp, pilot: Pilot, key: str = "g") -> ChartScreen:
    app.backends_table.select_key(B2_KEY)
    await pilot.press(key)
    await wait_until(lambda: isinstance(app.screen, ChartScreen), "the chart", pilot)
    chart = app.screen
    assert isinstance(chart, ChartScreen)
    await wait_until(lambda: chart.fetches >= 1, "the history", pilot)
    await pilot.pause()
    return chart


async def test_chart_of_the_selected_backend_with_events_on_its_time_axis(make_engine: Make) -> None:
    engine = make_engine(story_s=STORY_S)
    app = LbtuiApp(engine, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        chart = await open_chart(app, pilot)
        assert chart.target == ("web", B2)
        now = engine.snapshot().taken_at
        assert engine.history_queries[-1] == model.HistoryQuery("web", B2, since=now - 900)
        assert len(chart.cache.values(("web", B2), "new_flows")) == 900
        legend = shown_text(chart.query_one("#chart-conns-legend", Static))
        assert "connections (1/s)" in legend and "new/s" in legend and "failed/s" in legend
        marks = shown_text(chart.query_one("#chart-marks", Static))
        assert "drain: 10.0.2.12:8080 draining" in marks and "reload: reloaded" in marks
        assert "circuit" not in marks  # another backend's event
        plot = str(chart.query_one("#chart-conns").render())
        assert "D" in plot and "R" in plot  # the marks' letters on the chart
        ticks = time_ticks(int(now), 900, chart.query_one("#chart-conns").size.width - 6)[1]
        assert all(label in plot for label in ticks[1:-1])  # wall-clock labels on the time axis

        await pilot.press("p")  # the proxy as a whole
        await wait_until(lambda: chart.cache.end(("web", None)) is not None, "the proxy's history", pilot)
        assert engine.history_queries[-1] == model.HistoryQuery("web", None, since=now - 900)
        marks = shown_text(chart.query_one("#chart-marks", Static))
        assert "circuit: 10.0.2.13:8080" in marks  # every backend's events on the proxy's chart
        assert "drop rate_limit" in shown_text(chart.query_one("#chart-conns-legend", Static))

        await pilot.press("z")  # 15 min -> 1 h
        await wait_until(lambda: len(chart.cache.values(("web", None), "new_flows")) == 3600, "1 h", pilot)
        await pilot.press("escape")
        await wait_until(lambda: not isinstance(app.screen, ChartScreen), "back", pilot)


async def test_enter_on_a_backend_opens_its_chart_and_the_chart_follows_new_points(make_engine: Make) -> None:
    engine = make_engine(grow=True)
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        app.backends_table.focus()
        chart = await open_chart(app, pilot, key="enter")
        end = chart.cache.end(chart.target)
        assert end is not None
        await wait_until(lambda: (chart.cache.end(chart.target) or 0) > end, "new points", pilot)
        incremental = [q for q in engine.history_queries if q.proxy == "web" and q.since is not None]
        assert incremental[-1].since is not None and incremental[-1].since >= end  # only what is new


async def test_chart_of_an_instance_that_keeps_no_history_says_so(make_engine: Make) -> None:
    engine = make_engine(story_s=0)
    engine.keeps_history = False
    app = LbtuiApp(engine, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        chart = await open_chart(app, pilot)
        assert "keeps no history" in shown_text(chart.query_one("#chart-note", Static))


# ---- latency windows ---------------------------------------------------------------------------


async def test_t_switches_the_latency_window_shown_beside_lifetime(make_engine: Make) -> None:
    engine = make_engine(story_s=STORY_S)  # 10.0.2.12 was slow 6 to 8 minutes ago: lifetime lags
    view = engine.snapshot().latency_of("web", B2)
    assert view is not None and view.handshake is not None

    def p99(seconds: int) -> str:
        window = view.window(seconds) if view else None
        assert window is not None and window.handshake is not None
        return fmt.millis(window.handshake.p99_ms)

    lifetime = fmt.millis(view.handshake.p99_ms)
    assert float(lifetime) > 32 > float(p99(10))  # the slow period shows in the lifetime p99 only
    app = LbtuiApp(engine, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        table = app.backends_table

        def header(key: str) -> str:
            return next(c.label.plain for k, c in table.columns.items() if k.value == key)

        assert (header("p50"), header("p99"), header("p99life")) == ("p50 10s", "p99 10s", "p99 life")
        assert plain(table.get_cell(B2_KEY, "p99")) == p99(10)
        assert plain(table.get_cell(B2_KEY, "p99life")) == lifetime
        await pilot.press("t")
        assert header("p99") == "p99 1m" and plain(table.get_cell(B2_KEY, "p99")) == p99(60)
        await pilot.press("t")
        assert header("p99") == "p99 5m" and plain(table.get_cell(B2_KEY, "p99")) == p99(300)
        await pilot.press("t")
        assert header("p99") == "p99 life" and plain(table.get_cell(B2_KEY, "p99")) == lifetime
        await pilot.press("4")
        body = shown_text(app.latency.query_one("#latency-body", Static))
        assert "p99 life" in body and "p99 1m" not in body
        await pilot.press("t")  # back to 10 s, in both panes
        body = shown_text(app.latency.query_one("#latency-body", Static))
        assert "p99 10s" in body and "p99 life" in body
        assert plain(table.get_cell(B2_KEY, "p99")) == p99(10)


async def test_latency_pane_udp_rows_and_a_readable_legend(make_engine: Make) -> None:
    app = LbtuiApp(make_engine(), refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("4")
        body = shown_text(app.latency.query_one("#latency-body", Static))
        rows = {
            tuple(line.split()[:3]) for line in body.splitlines() if line.startswith((" web", "web", "dns"))
        }
        assert ("dns", "10.0.4.10:53", "duration") in rows and ("dns", "10.0.4.11:53", "duration") in rows
        assert not any(r[0] == "dns" and r[2] == "handshake" for r in rows)
        assert "bounds double from 1µs to 17.9min" in body and "e+" not in body


def test_legend_of_the_data_path_buckets_is_readable() -> None:
    bounds = tuple(2**k / 1000 for k in range(31))  # lbtui/dataplane/structs.py HIST_BOUNDS_MS
    text = bounds_legend(bounds)
    assert text == "bucket upper bounds double from 1µs to 17.9min, then +Inf"


# ---- `/` in every pane -------------------------------------------------------------------------


async def filter_pane(pilot: Pilot, app: LbtuiApp, pane_key: str, text: str) -> None:
    await pilot.press(pane_key, "slash", *text, "enter")
    await pilot.pause()


async def test_slash_filters_the_pane_you_are_in(make_engine: Make) -> None:
    engine = make_engine()
    app = LbtuiApp(engine, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await filter_pane(pilot, app, "1", "12:8080")
        assert app.tabs.active == "backends" and app.backends_table.row_keys == [B2_KEY]
        box = app.query_one("#backends-filter", PaneFilter)
        assert box.display and box.value == "12:8080"  # a filter in force stays in sight

        await filter_pane(pilot, app, "3", "open")
        assert app.tabs.active == "circuits"
        assert app.circuits.query_one(CircuitTable).row_keys == ["web|default|10.0.2.13:8080"]

        await filter_pane(pilot, app, "4", "dns")
        body = shown_text(app.latency.query_one("#latency-body", Static))
        assert "dns" in body and "10.0.2.11" not in body

        await pilot.press("5")
        await pilot.pause()
        every_line = len(lines(app.access_log))
        await filter_pane(pilot, app, "5", str(LOGGED_PORT + 1))
        assert app.tabs.active == "access"
        shown = lines(app.access_log)
        assert len(shown) == 1 and f'"client_port":{LOGGED_PORT + 1},' in shown[0]

        await filter_pane(pilot, app, "6", "circuit")
        shown = " ".join(lines(app.event_log))
        assert "circuit closed -> open" in shown and "load balancer running" not in shown

        await filter_pane(pilot, app, "2", "192.168")  # conntrack: answered by the engine
        assert app.tabs.active == "conntrack"
        await wait_until(lambda: model.FlowQuery(text="192.168") in engine.flow_queries, "the engine", pilot)
        assert all(
            k.split("|")[1].startswith("192.168.") for k in app.conntrack.query_one(FlowTable).row_keys
        )

        # escape in a filter clears it: every line again
        await pilot.press("5", "slash", "escape")
        await pilot.pause()
        assert len(lines(app.access_log)) == every_line
        assert every_line > 1 and not app.query_one("#access-filter", PaneFilter).display
        await pilot.press("1", "slash", "escape")
        await pilot.pause()
        assert len(app.backends_table.row_keys) == 6


async def test_a_filter_matching_nothing_says_so(make_engine: Make) -> None:
    app = LbtuiApp(make_engine(), refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await filter_pane(pilot, app, "1", "nosuchbackend")
        assert app.backends_table.row_count == 0
        assert "nothing matches the filter 'nosuchbackend'" in (note(app, "backends") or "")


# ---- `:` and the palette -----------------------------------------------------------------------


async def test_colon_opens_the_palette_with_textuals_commands_and_lbtuis(make_engine: Make) -> None:
    app = LbtuiApp(make_engine(), refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("colon")
        await wait_until(lambda: isinstance(app.screen, CommandPalette), "the palette", pilot)
        options = app.screen.query_one(CommandList)
        await wait_until(lambda: options.option_count >= 14, "every command", pilot)
        titles = [
            str(options.get_option_at_index(i).prompt).split("\n")[0] for i in range(options.option_count)
        ]
        joined = "\n".join(titles)
        for expected in (
            "Theme",
            "Keys",
            "Screenshot",
            "Chart of",
            "Latency window",
            "Export view",
            "Drain",
            "Quit",
        ):
            assert expected in joined, (expected, titles)
        assert sum(1 for t in titles if t.startswith("Quit")) == 1  # ours, which asks first
        await pilot.press(*"latency window", "enter")
        await wait_until(lambda: app.window_s == 60, "the window switched", pilot)


# ---- export ------------------------------------------------------------------------------------


async def test_export_writes_an_svg_and_the_snapshot_json_and_shows_where(
    tmp_path: Path, make_engine: Make
) -> None:
    engine = make_engine()
    app = LbtuiApp(engine, refresh_s=3600, export_dir=str(tmp_path / "exports"))
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("3", "e")
        await wait_until(lambda: len(list((tmp_path / "exports").glob("*"))) == 2, "two files", pilot)
        await pilot.press("e")
        await wait_until(lambda: len(list((tmp_path / "exports").glob("*"))) == 4, "two more", pilot)
        # never overwritten: a second export in the same second gets "-2" (or another second)
        svgs = sorted((tmp_path / "exports").glob("*.svg"), key=lambda p: p.stat().st_mtime_ns)
        jsons = sorted((tmp_path / "exports").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        assert len(svgs) == 2 and len(jsons) == 2 and all("-circuits" in p.name for p in svgs)
        assert svgs[0].read_text().lstrip().startswith("<svg") and "Circuits" in svgs[0].read_text()
        snapshot = wire.decode_snapshot(json.loads(jsons[0].read_text()))
        assert snapshot == app.snapshot
        shown = [f"{n.title}: {n.message}" for n in app._notifications]
        assert any(str(svgs[0]) in m and str(jsons[0]) in m for m in shown), shown


async def test_export_to_a_directory_it_cannot_write_says_why(tmp_path: Path, make_engine: Make) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    app = LbtuiApp(make_engine(), refresh_s=3600, export_dir=str(blocker / "sub"))
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("e")
        await pilot.pause()
        assert any("cannot export to" in n.message for n in app._notifications)


# ---- empty panes say why -----------------------------------------------------------------------


async def test_empty_panes_say_why(make_engine: Make) -> None:
    engine = make_engine(story_s=0, traffic=False, access_log=False, circuit_breaker=False)
    app = LbtuiApp(engine, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert note(app, "access") == (
            'no access log configured: set settings.access_log (file = "...", or stdout headless) '
            "to see a line per closed connection here"
        )
        assert (
            note(app, "circuits") == "no circuit breaker configured: add [proxy.circuit_breaker] to a proxy"
        )
        assert (note(app, "conntrack") or "").startswith("no flow in conntrack")
        assert note(app, "backends") is None and note(app, "events") is None
        await pilot.press("5")
        await pilot.pause()
        assert app.notes["access"].region.height >= 1  # on screen


async def test_access_log_configured_but_nothing_closed_yet(make_engine: Make) -> None:
    engine = make_engine(story_s=0, traffic=False)
    app = LbtuiApp(engine, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert note(app, "access") == f"access log {engine.access_log_path}: no connection has closed yet"


# ---- status line and pure parts ----------------------------------------------------------------


def test_status_line_shows_the_version_when_the_snapshot_has_one(make_engine: Make) -> None:
    base = make_engine().snapshot()
    assert "v1.4.2" in summary_text(replace(base, version="1.4.2"), "lbtui", False).plain
    # an older instance over the socket reports no version: nothing is shown
    assert " v" not in summary_text(replace(base, version=""), "lbtui", False).plain.split("new/s")[-1]


def test_series_cache_merges_incremental_answers() -> None:
    def answer(start: int, values: list[float | None], name: str = "new_flows") -> model.HistoryAnswer:
        series = (model.Series(name, tuple(values)),)
        return model.HistoryAnswer(
            taken_at=0, kept_s=60, histories=(model.History("web", None, float(start), 1.0, series),)
        )

    cache = SeriesCache(keep=5)
    cache.merge(answer(100, [1, 2, 3]))
    assert cache.since == 102 and cache.values(("web", None), "new_flows") == [1, 2, 3]
    cache.merge(answer(101, [2, 3, 4]))  # overlap: only 103 is new
    cache.merge(answer(106, [7]))  # 104 and 105 missed: None
    assert cache.values(("web", None), "new_flows") == [3, 4, None, None, 7]  # at most keep
    cache.merge(answer(107, [8], name="drops.rate_limit"))  # a new series lines up with the others
    assert cache.values(("web", None), "drops.rate_limit") == [None, None, None, None, 8]
    assert cache.values(("web", None), "new_flows")[-1] is None
    assert cache.end(("web", None)) == 107


def test_replace_keeps_history_fields(make_engine: Make) -> None:
    snap = make_engine().snapshot()
    assert replace(snap, history_s=5).history_s == 5


async def test_polls_survive_a_failing_history(make_engine: Make) -> None:
    engine = make_engine()
    engine.history_error = ConnectionResetError("gone")
    app = LbtuiApp(engine, refresh_s=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.refreshes >= 3, "refreshes despite history failing", pilot)
        assert app.history_error == "gone" and not app.banner.display
        await asyncio.sleep(0)
