# SPDX-License-Identifier: Apache-2.0
"""Console behaviour through Textual's Pilot, against the in-memory FakeEngine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
from lbtui.model import (
    CircuitCommand,
    Drain,
    DrainState,
    FlowQuery,
    RateLimitView,
    Reload,
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
from tests.support.fake_engine import BAD_RELOAD_MESSAGE, FakeEngine

pytestmark = pytest.mark.anyio

SIZE = (120, 40)
WEB1 = "10.0.2.11:8080"
WEB1_KEY = f"web|default|{WEB1}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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


async def test_backends_table_shows_every_backend_of_every_proxy() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
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
        assert "demo.toml" in summary and "up 1h02m" in summary and "conntrack 48/262k" in summary


async def test_polls_keep_coming_and_never_overlap() -> None:
    fake = FakeEngine(grow=True)
    app = LbtuiApp(fake, refresh_s=0.01)
    overlapping: list[bool] = []
    real_snapshot = fake.snapshot
    in_flight = 0

    def snapshot(flows: FlowQuery | None = None) -> Snapshot:
        nonlocal in_flight
        in_flight += 1
        overlapping.append(in_flight > 1)
        try:
            return real_snapshot(flows)
        finally:
            in_flight -= 1

    fake.snapshot = snapshot  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.refreshes >= 5, "five refreshes", pilot)
    assert not any(overlapping)


async def test_cursor_stays_on_its_backend_when_rows_above_go_away() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("down", "down")
        assert app.backends_table.selected_key() == "web|default|10.0.2.13:8080"
        web = fake.proxy("web")
        web.backends = web.backends[1:]  # 10.0.2.11 removed from the config
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


async def test_drain_then_undrain_after_confirmation(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("d")
        question = await confirm(pilot, app)
        assert question == "Drain 10.0.2.11:8080 of web? New connections stop; existing ones continue."
        await wait_until(lambda: cell_text(app, WEB1_KEY, "drain") == "draining", "draining cell", pilot)
        assert fake.backend("web", WEB1).drain is DrainState.DRAINING
        assert fake.commands == [Drain("web", WEB1)]
        assert any("drain web 10.0.2.11:8080: done" in n for n in notifications(app))
        events = await pane_text(pilot, app, "6", app.event_log)
        assert "drain web 10.0.2.11:8080: web 10.0.2.11:8080: draining" in events
        await pilot.press("1")

        await pilot.press("d")
        question = await confirm(pilot, app)
        assert question.startswith("Undrain 10.0.2.11:8080 of web?")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "drain") == "active", "active cell", pilot)
        assert fake.commands[-1] == Undrain("web", WEB1)
    # The console draws on the terminal only; nothing is printed to stdout.
    assert capsys.readouterr().out == ""


async def test_drain_cancelled_submits_nothing() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("d")
        await confirm(pilot, app, yes=False)
        await pilot.pause(0.1)
        assert fake.commands == []


async def test_reweight_rejects_invalid_values_then_sets_weight() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
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
            assert fake.backend("web", WEB1).weight == 3
        assert "not a whole number" in static_text(error) or "between 1 and" in static_text(error)
        assert fake.commands == []

        box.value = ""
        await pilot.press("7", "enter")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "cfg") == "7", "weight 7 in the table", pilot)
        assert fake.commands == [SetWeight("web", WEB1, 7)]
        assert cell_text(app, WEB1_KEY, "eff") == "7"


async def test_rate_limit_dialog_validates_and_submits_only_changes() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
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
        assert fake.commands == []

        screen.query_one("#per_source_rate", Input).value = "50"
        screen.query_one("#per_backend_burst", Input).value = "0"
        screen.query_one("#per_source_burst", Input).value = ""  # empty = unchanged
        await pilot.click("#ok")
        await wait_until(lambda: fake.commands, "the command", pilot)
        assert fake.commands == [SetRateLimit("web", per_source_rate=50, per_backend_burst=0)]
        assert fake.proxy("web").rate_limit == RateLimitView(
            per_source_rate=50, per_source_burst=200, per_backend_rate=5000, per_backend_burst=None
        )


async def test_circuit_dialog_holds_open_after_confirmation_then_resets() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("c")
        await wait_until(lambda: isinstance(app.screen, CircuitScreen), "the circuit dialog", pilot)
        await pilot.press("escape")  # cancel: nothing submitted
        await pilot.pause()
        assert fake.commands == []

        await pilot.press("c")
        await wait_until(lambda: isinstance(app.screen, CircuitScreen), "the circuit dialog", pilot)
        await pilot.press("o")
        question = await confirm(pilot, app)
        assert question.startswith("Hold the circuit of 10.0.2.11:8080 of web open?")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "circuit") == "open", "open circuit cell", pilot)
        assert fake.commands == [CircuitCommand("web", WEB1, "force_open")]
        assert any("circuit web 10.0.2.11:8080 force-open: done" in n for n in notifications(app))

        await pilot.press("c")
        await wait_until(lambda: isinstance(app.screen, CircuitScreen), "the circuit dialog", pilot)
        await pilot.press("r")  # reset: back to automatic, no confirmation
        await wait_until(lambda: cell_text(app, WEB1_KEY, "circuit") == "closed", "closed circuit", pilot)
        assert fake.commands[-1] == CircuitCommand("web", WEB1, "reset")


async def test_circuit_key_on_a_backend_without_breaker_explains_and_submits_nothing() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        table = app.backends_table
        table.move_cursor(row=table.row_keys.index("dns|default|10.0.4.10:53"))
        await pilot.pause()
        await pilot.press("c")
        await pilot.pause()
        assert not isinstance(app.screen, CircuitScreen)
        assert any("dns has no circuit breaker configured" in n for n in notifications(app))
        assert fake.commands == []


async def test_reload_with_a_broken_file_reports_the_error_and_keeps_the_config() -> None:
    fake = FakeEngine()
    fake.reload_should_fail = True
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        rows_before = app.backends_table.row_keys
        await pilot.press("r")
        question = await confirm(pilot, app)
        assert question.startswith("Reload configs/demo.toml?")
        await wait_until(lambda: fake.commands, "the command", pilot)
        await pilot.press("6")
        await wait_until(lambda: BAD_RELOAD_MESSAGE in log_text(app.event_log), "the error event", pilot)
        assert fake.commands == [Reload()]
        assert f"reload: failed: {BAD_RELOAD_MESSAGE}" in notifications(app)
        assert app.backends_table.row_keys == rows_before
        assert cell_text(app, WEB1_KEY, "cfg") == "3"


# ---- quitting --------------------------------------------------------------------------------


async def test_quit_confirmed_stops_the_engine_and_exits() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("q")
        assert await confirm(pilot, app) == QUIT_EMBEDDED
        await wait_until(lambda: app.return_value is not None, "the app to exit")
    assert fake.running is False
    assert fake.commands == [Stop()]
    assert app.return_value is not None and app.return_value.ok


async def test_quit_cancelled_keeps_running() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("q")
        await confirm(pilot, app, yes=False)
        refreshes = app.refreshes
        await wait_until(lambda: app.refreshes > refreshes, "refreshes to go on", pilot)
        assert app.is_running and fake.running
        assert fake.commands == []


async def test_quit_when_attached_leaves_the_load_balancer_running() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05, attached=True)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("q")
        assert await confirm(pilot, app) == QUIT_ATTACHED
        await wait_until(lambda: not app.is_running, "the app to exit")
    assert fake.running is True
    assert fake.commands == []


# ---- help, palette, conntrack ------------------------------------------------------------------


async def test_help_lists_every_binding() -> None:
    app = LbtuiApp(FakeEngine(), refresh_s=0.05)
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


async def test_filter_narrows_the_conntrack_rows_and_asks_the_engine() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        table = app.conntrack.query_one(FlowTable)
        assert table.row_count == 24
        await pilot.press("slash")
        assert app.tabs.active == "conntrack"
        await pilot.press(*"192.168", "enter")
        await pilot.pause()
        assert 0 < table.row_count < 24
        assert all(key.split("|")[1].startswith("192.168.") for key in table.row_keys)
        # the engine is asked for the matching flows among all of them, not just the ones shown
        answered = lambda: app.snapshot and app.snapshot.flow_query.text == "192.168"  # noqa: E731
        await wait_until(answered, "the answer", pilot)
        assert FlowQuery(text="192.168") in fake.flow_queries
        await pilot.pause()
        status = static_text(app.conntrack.query_one("#ct-status", Static))
        n = table.row_count
        assert f"showing {n} of {n} matching flows (24 in conntrack)" in status and "'192.168'" in status

        await pilot.press("slash", "escape")
        await pilot.pause()
        assert table.row_count == 24


async def test_sort_cycles_bytes_age_idle_backend() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        flows = app.snapshot.flows if app.snapshot else ()
        table = app.conntrack.query_one(FlowTable)

        def first_client() -> str:
            return table.row_keys[0].split("|")[1]

        assert first_client() == max(flows, key=lambda f: f.bytes_in + f.bytes_out).client
        await pilot.press("s")
        assert app.conntrack.sort == "age"
        assert first_client() == max(flows, key=lambda f: f.age_s).client
        await pilot.press("s")
        assert app.conntrack.sort == "idle"
        assert first_client() == max(flows, key=lambda f: f.idle_s).client
        await pilot.press("s")
        assert app.conntrack.sort == "backend"
        assert [k for k in table.row_keys] == sorted(table.row_keys, key=lambda k: table.get_row(k)[2])
        await pilot.press("s")
        assert app.conntrack.sort == "bytes"
        await wait_until(lambda: FlowQuery(sort="backend") in fake.flow_queries, "the engine asked", pilot)


async def test_big_conntrack_shows_the_bounded_view_and_the_real_total() -> None:
    app = LbtuiApp(FakeEngine().big_flows(1_000_000), refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("2")
        status = static_text(app.conntrack.query_one("#ct-status", Static))
        assert "showing 200 of 1,000,000 flows" in status
        assert app.conntrack.query_one(FlowTable).row_count == 200
        assert "conntrack 2.0M/2.1M" in static_text(app.summary)


async def test_command_palette_offers_the_actions() -> None:
    app = LbtuiApp(FakeEngine(), refresh_s=0.05)
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

        await pilot.press(*"reload", "enter")
        question = await confirm(pilot, app, yes=False)
        assert question.startswith("Reload")


# ---- events, access log, lost connection --------------------------------------------------------


async def test_events_and_access_log_panes() -> None:
    fake = FakeEngine(grow=True)
    app = LbtuiApp(fake, refresh_s=0.01)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.refreshes >= 4, "a few refreshes", pilot)
        events = await pane_text(pilot, app, "6", app.event_log)
        assert "engine started with configs/demo.toml" in events
        assert events.count("circuit closed -> open") == 1  # each event once, however many polls
        fake.grow = False  # hold the log still while reading it
        await pilot.press("5")
        last = app.refreshes
        await wait_until(lambda: app.refreshes > last + 1, "a refresh", pilot)
        access = log_lines(app.access_log)
        # Every line of the log exactly once, in order: the client port counts up by one per line.
        ports = [int(line.split()[0].rsplit(":", 1)[1]) for line in access]
        assert ports == list(range(41000, 41000 + len(ports)))
        assert app.snapshot is not None and access[-1] == app.snapshot.access_log_tail[-1]


async def test_lost_connection_shows_a_banner_and_recovers() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.02, attached=True)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        fake.snapshot_error = ConnectionRefusedError("/run/lbtui/lbtui.sock: connection refused")
        await wait_until(lambda: app.banner.display, "the banner", pilot)
        assert static_text(app.banner).startswith(
            "lost connection to the instance: /run/lbtui/lbtui.sock: connection refused"
        )
        calls = fake.snapshot_calls
        await wait_until(lambda: fake.snapshot_calls > calls + 2, "retries", pilot)
        assert app.is_running

        fake.snapshot_error = None
        await wait_until(lambda: not app.banner.display, "the banner to go", pilot)
        assert "connection to the instance is back" in await pane_text(pilot, app, "6", app.event_log)


async def test_a_stopped_engine_is_shown() -> None:
    fake = FakeEngine()
    app = LbtuiApp(fake, refresh_s=0.02, attached=True)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert not app.banner.display
        fake.running = False  # e.g. stopped with `lbtui ctl` while the console is attached
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
