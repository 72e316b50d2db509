# SPDX-License-Identifier: Apache-2.0
"""The console's runtime operations through Textual's Pilot, against the real Engine over the
in-memory dataplane: maintenance (asked first, shown apart from a drain), forced health, + and -,
adding and removing backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbtui.app import LbtuiApp
from lbtui.model import AddBackend, AdjustWeight, ForceHealth, Maintenance, Ready, RemoveBackend
from lbtui.screens.add_backend import AddBackendScreen, parse_address
from lbtui.screens.choice import ChoiceScreen
from tests.support.console_engine import ConsoleEngine
from tests.unit.test_app import SIZE, WEB1, WEB1_KEY, cell_text, confirm, started, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def engine() -> Iterator[ConsoleEngine]:
    handle = ConsoleEngine()
    yield handle
    handle.shutdown()


async def test_maintenance_asks_first_and_is_shown_apart_from_a_drain(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("m")
        question = await confirm(pilot, app, yes=False)
        assert question.startswith(
            f"Put {WEB1} of web in maintenance? No new connections and no health checks"
        )
        assert engine.commands == []
        await pilot.press("m")
        await confirm(pilot, app)
        await wait_until(lambda: cell_text(app, WEB1_KEY, "drain") == "maint", "the maint cell", pilot)
        assert engine.commands == [Maintenance("web", WEB1)]
        assert cell_text(app, WEB1_KEY, "eff") == "0"
        await pilot.press("d")  # a drain makes no sense now: it says why and asks nothing
        await pilot.pause()
        assert not isinstance(app.screen, ChoiceScreen) and len(engine.commands) == 1
        await pilot.press("m")
        assert (await confirm(pilot, app)).startswith(f"End the maintenance of {WEB1} of web?")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "drain") == "active", "active again", pilot)
        assert engine.commands[-1] == Ready("web", WEB1)


async def test_plus_and_minus_step_the_weight_at_once(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("plus")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "cfg") == "4", "weight 4", pilot)
        await pilot.press("minus", "minus")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "cfg") == "2", "weight 2", pilot)
        assert engine.commands == [
            AdjustWeight("web", WEB1, step=1),
            AdjustWeight("web", WEB1, step=-1),
            AdjustWeight("web", WEB1, step=-1),
        ]


async def test_health_is_forced_and_released(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("h")
        await wait_until(lambda: isinstance(app.screen, ChoiceScreen), "the health dialog", pilot)
        await pilot.press("d")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "health") == "down (forced)", "forced down", pilot)
        await pilot.press("h")
        await wait_until(lambda: isinstance(app.screen, ChoiceScreen), "the health dialog", pilot)
        await pilot.press("a")
        await wait_until(lambda: cell_text(app, WEB1_KEY, "health") == "up", "its checks again", pilot)
        assert engine.commands == [ForceHealth("web", WEB1, "down"), ForceHealth("web", WEB1, "auto")]


async def test_a_backend_is_added_and_removed_with_its_flows_cut(engine: ConsoleEngine) -> None:
    new = "10.0.2.20:8080"
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("a")
        await wait_until(lambda: isinstance(app.screen, AddBackendScreen), "the add dialog", pilot)
        await pilot.press(*"10.0.2.20", "enter")  # no port: said, nothing submitted
        await pilot.pause()
        assert isinstance(app.screen, AddBackendScreen) and engine.commands == []
        await pilot.press(*":8080", "enter")
        key = f"web|default|{new}"
        await wait_until(lambda: key in app.backends_table.row_keys, "the new row", pilot)
        assert engine.commands == [AddBackend("web", new, 1, None)]
        app.backends_table.select_key(key)
        await pilot.press("x")
        await wait_until(lambda: isinstance(app.screen, ChoiceScreen), "the remove dialog", pilot)
        await pilot.press("c")
        await wait_until(lambda: key not in app.backends_table.row_keys, "the row gone", pilot)
        assert engine.commands[-1] == RemoveBackend("web", new, cut=True)


def test_addresses_are_checked_before_anything_is_sent():
    assert parse_address(" 10.0.2.20:8080 ") == "10.0.2.20:8080"
    for bad in ("", "10.0.2.20", "host:80", "10.0.2.20:0", "10.0.2.20:70000", "10.0.2.300:80"):
        with pytest.raises(ValueError, match="is not an IPv4 ip:port"):
            parse_address(bad)
