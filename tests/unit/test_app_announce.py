# SPDX-License-Identifier: Apache-2.0
"""The console and VIP announcement: the `b` key withdraws the selected proxy's VIP after a
confirmation and announces it again; the proxies summary and the header show the state."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from rich.console import Console
from textual.widgets import Static

from lbtui.app import LbtuiApp
from lbtui.model import Announce
from tests.support.console_engine import ConsoleEngine
from tests.unit.test_app import SIZE, confirm, notifications, started, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def announcing() -> Iterator[ConsoleEngine]:
    handle = ConsoleEngine(announce=True)
    yield handle
    handle.shutdown()


@pytest.fixture
def engine() -> Iterator[ConsoleEngine]:
    handle = ConsoleEngine()
    yield handle
    handle.shutdown()


def text_of(app: LbtuiApp, selector: str) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(app.query_one(selector, Static).content)
    return console.export_text()


def summary(app: LbtuiApp) -> str:
    return text_of(app, "#summary")


def proxies(app: LbtuiApp) -> str:
    return text_of(app, "#proxies")


async def test_withdraw_and_announce_again_with_b(announcing: ConsoleEngine) -> None:
    app = LbtuiApp(announcing, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert announcing.routes.routes == {"10.0.0.1"}  # web and dns share their VIP
        await wait_until(lambda: "1/1 VIPs announced" in summary(app), "the header's BGP state", pilot)
        assert "BIRD unreachable" in summary(app)  # no BIRD in a unit test
        assert "announced" in proxies(app)
        await pilot.press("b")
        question = await confirm(pilot, app)
        assert question == (
            "Withdraw 10.0.0.1 (web) from BGP? New flows go to other hosts; it keeps running."
        )
        await wait_until(lambda: "HELD" in proxies(app), "HELD in the proxies summary", pilot)
        assert announcing.commands == [Announce("withdraw", "web")]
        assert announcing.routes.routes == set()
        assert "0/1 VIPs announced" in summary(app)
        await pilot.press("b")
        question = await confirm(pilot, app)
        assert question.startswith("Announce 10.0.0.1 (web) again?")
        await wait_until(lambda: "HELD" not in proxies(app), "announced again", pilot)
        assert announcing.routes.routes == {"10.0.0.1"}


async def test_b_says_when_announcement_is_off(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        await pilot.press("b")
        await wait_until(
            lambda: any("VIP announcement is off" in n for n in notifications(app)), "the warning", pilot
        )
        assert engine.commands == []
        assert "BGP" not in summary(app)


class GonePeer:
    """A peer whose control socket does not answer."""

    def snapshot(self, flows=None):
        raise ConnectionError("no such socket")

    def close(self) -> None:
        pass


async def test_peers_line_shows_each_peer_and_one_that_is_gone(
    engine: ConsoleEngine, announcing: ConsoleEngine
) -> None:
    peers = {"h2": announcing, "h3": GonePeer()}
    app = LbtuiApp(engine, refresh_s=0.05, peers=peers)  # type: ignore[dict-item]
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        line = lambda: text_of(app, "#peers")  # noqa: E731
        await wait_until(lambda: "h2: BGP" in line(), "h2's state on the peers line", pilot)
        assert "1/1 VIPs announced" in line() and "new/s" in line()
        assert "h3: unreachable (no such socket)" in line()
        announcing.submit(Announce("withdraw"))
        await wait_until(lambda: "0/1 VIPs announced" in line(), "h2's withdrawal", pilot)


async def test_no_peers_line_without_peers(engine: ConsoleEngine) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, pilot)
        assert not app.query_one("#peers", Static).display
