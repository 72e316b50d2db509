# SPDX-License-Identifier: Apache-2.0
"""Console behaviour through Textual's Pilot, against the real Engine over the in-memory dataplane
(tests/support/console_engine.py: the engine on its own thread, as `lbtui` embeds it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import Input, RichLog, Static
from textual.widgets.data_table import ColumnKey, RowKey

from lbtui.app import QUIT_ATTACHED, QUIT_EMBEDDED, LbtuiApp
from lbtui.config import ConfigError, load_config
from lbtui.model import (
    CircuitCommand,
    Drain,
    DrainState,
    FlowQuery,
    RateLimitView,
    Reload,
    RemoveBackend,
    SetRateLimit,
    SetWeight,
    Snapshot,
    Stop,
    Undrain,
)
from lbtui.screens.circuit import CircuitScreen
from lbtui.screens.confirm import ConfirmScreen
from lbtui.screens.help import HelpScreen
from lbtui.screens.ratelimit import RateLimitScreen, rate_limit_command
from lbtui.screens.weight import MAX_WEIGHT, WeightScreen, parse_weight
from lbtui.widgets.conntrack import FlowTable
from lbtui.widgets.keyed_table import KeyedTable
from lbtui.widgets.logs import new_tail_items
from tests.support.console_engine import ConsoleEngine

pytestmark = pytest.mark.anyio

SIZE = (120, 40)
WEB1 = "10.0.2.11:8080"
WEB1_KEY = f"web|default|{WEB1}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def engine() -> Iterator[ConsoleEngine]:
    handle = ConsoleEngine()
    yield handle
    handle.shutdown()


@pytest.fixture
def growing() -> Iterator[ConsoleEngine]:
    handle = ConsoleEngine(grow=True)
    yield handle
    handle.shutdown()


async def wait_until(predicate: Callable[[], object], what: str, pilot: Pilot | None = None) -> None:
    """Let the app run until `predicate()` holds (bounded, so a broken app fails instead of hanging)."""
    for _ in range(500):
        if predicate():
            return
        if pilot is not None:
            await pilot.pause(0.01)
        else:
            await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def started(app: LbtuiApp, pilot: Pilot) -> None:
    await wait_until(lambda: app.refreshes >= 1, "the first snapshot", pilot)
    await pilot.pause()


def cell_text(app: LbtuiApp, row_key: str, column: str) -> str:
    value = app.backends_table.get_cell(row_key, column)
    return value.plain if isinstance(value, Text) else str(value)


def log_lines(log: RichLog) -> list[str]:
    return [strip.text.rstrip() for strip in log.lines]


def log_text(log: RichLog) -> str:
    """The log's text with wrapped lines joined and runs of spaces collapsed."""
    return " ".join(" ".join(log_lines(log)).split())


async def pane_text(pilot: Pilot, app: LbtuiApp, key: str, log: RichLog) -> str:
    """Text of a log pane; RichLog renders only once it is shown, so show it first."""
    await pilot.press(key)
    await pilot.pause()
    return log_text(log)


def notifications(app: LbtuiApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def static_text(widget: Static) -> str:
    return str(widget.render())


async def confirm(pilot: Pilot, app: LbtuiApp, yes: bool = True) -> str:
    """Answer the confirmation on top; returns its question."""
    await wait_until(lambda: isinstance(app.screen, ConfirmScreen), "a confirmation", pilot)
    screen = app.screen
    assert isinstance(screen, ConfirmScreen)
    await pilot.press("y" if yes else "n")
    await pilot.pause()
    return screen.question


# ---- the tables ------------------------------------------------------------------------------


async def test_backends_table_shows_every_backend_of_every_proxy(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert app.backends_table.row_keys == [
            "web|default|10.0.2.11:8080",
            "web|default|10.0.2.12:8080",
            "web|default|10.0.2.13:8080",
            "web|192.168.0.0/16|10.0.3.10:8080",
            "dns|default|10.0.4.10:53",
            "dns|default|10.0.4.11:53",
        ]
        assert cell_text(app, WEB1_KEY, "cfg") == "3"
        assert cell_text(app, "web|default|10.0.2.13:8080", "health") == "down"
        assert cell_text(app, "web|default|10.0.2.13:8080", "circuit") == "open"
        # Values the engine has not measured show a dash, never "None".
        assert cell_text(app, "dns|default|10.0.4.10:53", "p50") == "—"
        assert cell_text(app, "dns|default|10.0.4.10:53", "circuit") == "—"
        summary = static_text(app.summary)
        assert "demo.toml" in summary and "up 1h02m" in summary and "conntrack 104/393k" in summary


async def test_polls_keep_coming_and_never_overlap(growing: ConsoleEngine) -> None:
    app = LbtuiApp(growing, refresh_s=0.01)
    overlapping: list[bool] = []
    real_snapshot = growing.snapshot
    in_flight = 0

    def snapshot(flows: FlowQuery | None = None) -> Snapshot:
        nonlocal in_flight
        in_flight += 1
        overlapping.append(in_flight > 1)
        try:
            return real_snapshot(flows)
        finally:
            in_flight -= 1

    growing.snapshot = snapshot  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.refreshes >= 5, "five refreshes", pilot)
    assert not any(overlapping)


async def test_cursor_stays_on_its_backend_when_rows_above_go_away(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("down", "down")
        assert app.backends_table.selected_key() == "web|default|10.0.2.13:8080"
        assert engine.runner.submit(RemoveBackend("web", WEB1)).ok  # e.g. by `lbtui ctl`
        await wait_until(lambda: WEB1_KEY not in app.backends_table.row_keys, "the row to go", pilot)
        assert app.backends_table.selected_key() == "web|default|10.0.2.13:8080"


async def test_keyed_table_updates_only_changed_cells() -> None:
    class TableApp(App[None]):
        def compose(self) -> ComposeResult:
            yield KeyedTable([("name", "name"), ("value", "value")], ("name",))

    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(KeyedTable)
        table.sync([("a", 1), ("b", 2), ("c", 3)])
        updated: list[tuple[object, object]] = []
        real_update = table.update_cell

        def spy(
            row_key: RowKey | str, column_key: ColumnKey | str, value: Any, *, update_width: bool = False
        ) -> None:
            updated.append((row_key, column_key))
            real_update(row_key, column_key, value, update_width=update_width)

        table.update_cell = spy  # type: ignore[method-assign]
        table.sync([("c", 3), ("a", 1), ("b", 20), ("d", 4)])
        await pilot.pause()
        assert updated == [("b", "value")]
        assert table.row_keys == ["c", "a", "b", "d"]
        table.sync([("a", 1), ("d", 4)])
        assert table.row_keys == ["a", "d"]
        assert [str(v) for v in table.get_row("d")] == ["d", "4"]


# ---- drain, weight, rate limits, reload --------------------------------------------------------


async def test_drain_then_undrain_after_confirmation(
    engine: ConsoleEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("d")
        question = await confirm(pilot, app)
        assert question == "Drain 10.0.2.11:8080 of web? New connections stop; existing ones continue."
        await wait_until(lambda: cell_text(app, WEB1_KEY, "drain") == "draining", "draining cell", pilot)
        assert engine.backend("web", WEB1).drain is DrainState.DRAINING
        assert engine.commands == [Drain("web", WEB1)]
        assert any("drain web 10.0.2.11:8080: done" in n for n in notifications(app))
        events = await pane_text(pilot, app, "6", app.event_log)
        assert (
            "drain web 10.0.2.11:8080: 10.0.2.11:8080 draining (timeout 10 s): no new connections" in events
        )
        await pilot.press("1")

        await pilot.press("d")
        question = await confirm(pilot, app)
        assert question.startswith("Undrain 10.0.2.11:8080 of web?")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "drain") == "active", "active cell", pilot)
        assert engine.commands[-1] == Undrain("web", WEB1)
    # The console draws on the terminal only; nothing is printed to stdout.
    assert capsys.readouterr().out == ""


async def test_drain_cancelled_submits_nothing(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("d")
        await confirm(pilot, app, yes=False)
        await pilot.pause(0.1)
        assert engine.commands == []


async def test_reweight_rejects_invalid_values_then_sets_weight(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("w")
        await wait_until(lambda: isinstance(app.screen, WeightScreen), "the weight dialog", pilot)
        screen = app.screen
        box = screen.query_one("#weight", Input)
        error = screen.query_one("#error", Static)
        for bad in ("abc", "0", "-5"):
            box.value = ""
            await pilot.press(*bad, "enter")
            await pilot.pause()
            assert app.screen is screen, f"{bad!r} closed the dialog"
            assert error.display and static_text(error), f"no error shown for {bad!r}"
            assert engine.backend("web", WEB1).configured_weight == 3
        assert "not a whole number" in static_text(error) or "between 1 and" in static_text(error)
        assert engine.commands == []

        box.value = ""
        await pilot.press("7", "enter")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "cfg") == "7", "weight 7 in the table", pilot)
        assert engine.commands == [SetWeight("web", WEB1, 7)]
        assert cell_text(app, WEB1_KEY, "eff") == "7"


async def test_rate_limit_dialog_validates_and_submits_only_changes(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("l")
        await wait_until(lambda: isinstance(app.screen, RateLimitScreen), "the rate limit dialog", pilot)
        screen = app.screen
        # Prefilled from the snapshot.
        assert screen.query_one("#per_source_rate", Input).value == "100"
        assert screen.query_one("#per_backend_burst", Input).value == "10000"

        screen.query_one("#per_source_rate", Input).value = "lots"
        screen.query_one("#per_source_rate", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        error = screen.query_one("#error", Static)
        assert app.screen is screen and error.display
        assert "per source: rate" in static_text(error)
        assert engine.commands == []

        screen.query_one("#per_source_rate", Input).value = "50"
        screen.query_one("#per_backend_burst", Input).value = "0"
        screen.query_one("#per_source_burst", Input).value = ""  # empty = unchanged
        await pilot.click("#ok")
        await wait_until(lambda: engine.commands, "the command", pilot)
        assert engine.commands == [SetRateLimit("web", per_source_rate=50, per_backend_burst=0)]
        # a burst of 0 with a rate set means one second's worth
        await wait_until(
            lambda: app.snapshot and app.snapshot.service("web").rate_limit.per_source_rate == 50,
            "the limits",
            pilot,
        )
        assert app.snapshot is not None and app.snapshot.service("web").rate_limit == RateLimitView(
            per_source_rate=50, per_source_burst=200, per_backend_rate=5000, per_backend_burst=5000
        )


async def test_circuit_dialog_holds_open_after_confirmation_then_resets(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("c")
        await wait_until(lambda: isinstance(app.screen, CircuitScreen), "the circuit dialog", pilot)
        await pilot.press("escape")  # cancel: nothing submitted
        await pilot.pause()
        assert engine.commands == []

        await pilot.press("c")
        await wait_until(lambda: isinstance(app.screen, CircuitScreen), "the circuit dialog", pilot)
        await pilot.press("o")
        question = await confirm(pilot, app)
        assert question.startswith("Hold the circuit of 10.0.2.11:8080 of web open?")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "circuit") == "open (held)", "held open", pilot)
        assert engine.commands == [CircuitCommand("web", WEB1, "force_open")]
        assert any("circuit web 10.0.2.11:8080 force-open: done" in n for n in notifications(app))

        await pilot.press("c")
        await wait_until(lambda: isinstance(app.screen, CircuitScreen), "the circuit dialog", pilot)
        await pilot.press("r")  # reset: back to automatic, no confirmation
        await wait_until(lambda: cell_text(app, WEB1_KEY, "circuit") == "closed", "closed circuit", pilot)
        assert engine.commands[-1] == CircuitCommand("web", WEB1, "reset")


async def test_circuit_key_on_a_backend_without_breaker_explains_and_submits_nothing(
    engine: ConsoleEngine,
) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        table = app.backends_table
        table.move_cursor(row=table.row_keys.index("dns|default|10.0.4.10:53"))
        await pilot.pause()
        await pilot.press("c")
        await pilot.pause()
        assert not isinstance(app.screen, CircuitScreen)
        assert any("dns has no circuit breaker configured" in n for n in notifications(app))
        assert engine.commands == []


async def test_reload_with_a_broken_file_reports_the_error_and_keeps_the_config(
    engine: ConsoleEngine,
) -> None:
    with open(engine.config_path) as f:
        good = f.read()
    with open(engine.config_path, "w") as f:
        f.write(good.replace("port = 80\n", "port = 0\n", 1))
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        rows_before = app.backends_table.row_keys
        await pilot.press("r")  # the dry run finds the error: nothing to ask
        with pytest.raises(ConfigError) as refused:
            load_config(engine.config_path)
        error = str(refused.value)
        title = f"reload of {engine.config_path} would be refused"
        await wait_until(lambda: f"{title}: {error}" in notifications(app), "the error", pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert engine.commands == [Reload(dry_run=True)]
        assert app.backends_table.row_keys == rows_before
        assert cell_text(app, WEB1_KEY, "cfg") == "3"


async def test_reload_shows_what_would_change_and_asks_before_applying(engine: ConsoleEngine) -> None:
    with open(engine.config_path) as f:
        good = f.read()
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("r")  # the file says what runs
        await wait_until(lambda: any("nothing to reload" in n for n in notifications(app)), "nothing", pilot)
        with open(engine.config_path, "w") as f:
            f.write(good.replace("weight = 3\n", "weight = 5\n", 1))
        await pilot.press("r")
        question = await confirm(pilot, app, yes=False)
        assert question == f"Reload {engine.config_path}? 1 change:\n• web: {WEB1} weight 3 -> 5"
        assert cell_text(app, WEB1_KEY, "cfg") == "3"  # asked, refused: nothing applied
        await pilot.press("r")
        await confirm(pilot, app)
        await wait_until(lambda: cell_text(app, WEB1_KEY, "cfg") == "5", "the new weight", pilot)
        assert engine.commands == [Reload(dry_run=True)] * 3 + [Reload()]


# ---- quitting --------------------------------------------------------------------------------


async def test_quit_confirmed_stops_the_engine_and_exits(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("q")
        assert await confirm(pilot, app) == QUIT_EMBEDDED
        await wait_until(lambda: app.return_value is not None, "the app to exit")
    assert engine.runner.wait(10) and not engine.engine.running
    assert engine.commands == [Stop()]
    assert app.return_value is not None and app.return_value.ok


async def test_quit_cancelled_keeps_running(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("q")
        await confirm(pilot, app, yes=False)
        refreshes = app.refreshes
        await wait_until(lambda: app.refreshes > refreshes, "refreshes to go on", pilot)
        assert app.is_running and engine.engine.running
        assert engine.commands == []


async def test_quit_when_attached_leaves_the_load_balancer_running(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05, attached=True)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("q")
        assert await confirm(pilot, app) == QUIT_ATTACHED
        await wait_until(lambda: not app.is_running, "the app to exit")
    assert engine.engine.running
    assert engine.commands == []


# ---- help, palette, conntrack ------------------------------------------------------------------


async def test_help_lists_every_binding(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("question_mark")
        await wait_until(lambda: isinstance(app.screen, HelpScreen), "the help screen", pilot)
        screen = app.screen
        assert isinstance(screen, HelpScreen)
        listed = [key for keys, _ in screen.keys for key in keys.split()]
        for binding in app.BINDINGS:
            assert isinstance(binding, Binding)
            assert app.get_key_display(binding) in listed, binding
        assert {"d", "w", "l", "r", "/", "s", "?", "^p", "q", "1", "6"} <= set(listed)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_filter_narrows_the_conntrack_rows_and_asks_the_engine(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        table = app.conntrack.query_one(FlowTable)
        assert table.row_count == 52
        await pilot.press("2", "slash")  # `/` filters the pane you are in
        assert app.tabs.active == "conntrack"
        await pilot.press(*"192.168", "enter")
        await pilot.pause()
        assert table.row_count == 4  # the routed clients
        assert all(key.split("|")[1].startswith("192.168.") for key in table.row_keys)
        # the engine is asked for the matching flows among all of them, not just the ones shown
        answered = lambda: app.snapshot and app.snapshot.flow_query.text == "192.168"  # noqa: E731
        await wait_until(answered, "the answer", pilot)
        assert FlowQuery(text="192.168") in engine.flow_queries
        await pilot.pause()
        status = static_text(app.conntrack.query_one("#ct-status", Static))
        assert "showing 4 of 4 matching flows (52 in conntrack)" in status and "'192.168'" in status

        await pilot.press("slash", "escape")
        await pilot.pause()
        assert table.row_count == 52


async def test_sort_cycles_bytes_age_idle_backend(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        flows = app.snapshot.flows if app.snapshot else ()
        table = app.conntrack.query_one(FlowTable)

        def first_flow() -> str:
            return table.row_keys[0]

        def key(f: Any) -> str:
            return f"{f.protocol}|{f.client}|{f.vip}"

        assert first_flow() == key(max(flows, key=lambda f: f.bytes_in + f.bytes_out))
        await pilot.press("s")
        assert app.conntrack.sort == "age"
        oldest = max(f.age_s for f in flows)
        assert next(f for f in flows if key(f) == first_flow()).age_s == oldest
        await pilot.press("s")
        assert app.conntrack.sort == "idle"
        most_idle = max(f.idle_s for f in flows)
        assert next(f for f in flows if key(f) == first_flow()).idle_s == most_idle
        await pilot.press("s")
        assert app.conntrack.sort == "backend"
        assert [k for k in table.row_keys] == sorted(table.row_keys, key=lambda k: str(table.get_row(k)[2]))
        await pilot.press("s")
        assert app.conntrack.sort == "bytes"
        await wait_until(lambda: FlowQuery(sort="backend") in engine.flow_queries, "the engine asked", pilot)


async def test_flows_are_asked_for_only_while_the_conntrack_pane_is_shown(engine: ConsoleEngine) -> None:
    """The engine reads every flow in conntrack while a front end asks for flows (with a million
    flows a tenth of a core and hundreds of MB): a console on any other pane asks for none."""
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await wait_until(lambda: len(engine.flow_queries) >= 5, "refreshes on the backends pane", pilot)
        assert [q for q in engine.flow_queries if q is not None] == []
        await pilot.press("2")
        await wait_until(lambda: engine.flow_queries[-1] == FlowQuery(), "the conntrack pane's query", pilot)
        for key in ("3", "4", "5", "6", "1"):  # circuits, latency, access log, events, backends
            await pilot.press(key)
            shown = len(engine.flow_queries) + 1  # a poll in flight may have asked before the switch
            more = lambda n=shown + 3: len(engine.flow_queries) >= n  # noqa: E731
            await wait_until(more, f"refreshes on pane {key}", pilot)
            assert [q for q in engine.flow_queries[shown:] if q is not None] == [], key
        await pilot.press("2", "s")
        await wait_until(lambda: engine.flow_queries[-1] == FlowQuery(sort="age"), "the sorted query", pilot)


async def test_showing_the_conntrack_pane_asks_for_flows_at_once(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=60)  # the next refresh is a minute away
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert engine.flow_queries == [None]
        await pilot.press("2")
        await wait_until(lambda: engine.flow_queries[-1] == FlowQuery(), "the conntrack pane's query", pilot)


async def test_big_conntrack_shows_the_bounded_view_and_the_real_total() -> None:
    engine = ConsoleEngine(big_flows=100_000)
    try:
        app = LbtuiApp(engine, refresh_s=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await started(app, pilot)
            await pilot.press("2")
            status = static_text(app.conntrack.query_one("#ct-status", Static))
            assert "showing 200 of 100,052 flows" in status
            assert app.conntrack.query_one(FlowTable).row_count == 200
            assert "conntrack 200k/393k" in static_text(app.summary)
    finally:
        engine.shutdown()


async def test_command_palette_offers_the_actions(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("ctrl+p")
        await wait_until(lambda: isinstance(app.screen, CommandPalette), "the palette", pilot)
        options = app.screen.query_one(CommandList)
        await wait_until(lambda: options.option_count >= 8, "the palette's actions", pilot)
        titles = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        joined = "\n".join(titles)
        for expected in (
            "Drain 10.0.2.11:8080 of web",
            "Reweight 10.0.2.11:8080 of web",
            "Rate limits of web",
            "Reload configuration",
            "Help",
            "Quit",
        ):
            assert expected in joined, (expected, titles)
        # No built-in "Quit the application" that would bypass the confirmation.
        assert "Quit the application" not in joined

        await pilot.press(*"reload", "enter")  # the dry run first: the file says what runs
        await wait_until(lambda: any("nothing to reload" in n for n in notifications(app)), "the plan", pilot)
        assert engine.commands == [Reload(dry_run=True)]


# ---- events, access log, lost connection --------------------------------------------------------


async def test_events_and_access_log_panes(growing: ConsoleEngine) -> None:
    app = LbtuiApp(growing, refresh_s=0.01)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.refreshes >= 4, "a few refreshes", pilot)
        events = await pane_text(pilot, app, "6", app.event_log)
        assert "load balancer running on lb0 with 2 proxies" in events
        assert events.count("circuit closed -> open") == 1  # each event once, however many polls
        growing.grow = False  # hold the log still while reading it
        await pilot.press("5")
        last = app.refreshes
        await wait_until(lambda: app.refreshes > last + 1, "a refresh", pilot)
        access = log_lines(app.access_log)
        # Every line of the log exactly once, in order: the client port counts up by one per line.
        ports = [json.loads(line)["client_port"] for line in access]
        assert len(ports) > 3 and ports == list(range(41000, 41000 + len(ports)))
        assert app.snapshot is not None and access[-1] == app.snapshot.access_log_tail[-1]


async def test_lost_connection_shows_a_banner_and_recovers(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.02, attached=True)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        engine.snapshot_error = ConnectionRefusedError("/run/lbtui/lbtui.sock: connection refused")
        await wait_until(lambda: app.banner.display, "the banner", pilot)
        assert static_text(app.banner).startswith(
            "lost connection to the instance: /run/lbtui/lbtui.sock: connection refused"
        )
        calls = engine.snapshot_calls
        await wait_until(lambda: engine.snapshot_calls > calls + 2, "retries", pilot)
        assert app.is_running

        engine.snapshot_error = None
        await wait_until(lambda: not app.banner.display, "the banner to go", pilot)
        assert "connection to the instance is back" in await pane_text(pilot, app, "6", app.event_log)


async def test_a_stopped_engine_is_shown(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.02, attached=True)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert not app.banner.display
        assert engine.runner.submit(Stop()).ok  # e.g. stopped with `lbtui ctl` while the console is attached
        await wait_until(lambda: app.banner.display, "the banner", pilot)
        assert static_text(app.banner) == "the load balancer has stopped"
        assert "stopped" in static_text(app.summary)


# ---- pure helpers ------------------------------------------------------------------------------


def test_parse_weight() -> None:
    assert parse_weight(" 7 ") == 7
    assert parse_weight(str(MAX_WEIGHT)) == MAX_WEIGHT
    for bad in ("", "abc", "0", "-5", "1.5", str(MAX_WEIGHT + 1)):
        with pytest.raises(ValueError):
            parse_weight(bad)


def test_rate_limit_command() -> None:
    current = RateLimitView(per_source_rate=100, per_source_burst=200)
    texts = {
        "per_source_rate": "100",
        "per_source_burst": "",
        "per_backend_rate": "0",
        "per_backend_burst": "",
    }
    assert rate_limit_command("web", current, texts) is None  # unchanged, and 0 on an unset limit
    texts["per_source_rate"] = "0"
    texts["per_backend_rate"] = "5000"
    assert rate_limit_command("web", current, texts) == SetRateLimit(
        "web", per_source_rate=0, per_backend_rate=5000
    )
    with pytest.raises(ValueError, match="per backend: burst"):
        rate_limit_command("web", current, {"per_backend_burst": "-1"})


def test_new_tail_items() -> None:
    assert new_tail_items([], ["a", "b"]) == ["a", "b"]
    assert new_tail_items(["a", "b"], ["a", "b"]) == []
    assert new_tail_items(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_tail_items(["a", "b"], ["x", "y"]) == ["x", "y"]
