# SPDX-License-Identifier: Apache-2.0
"""Screenshots of the console's time views: the chart, the sparklines, a latency window, an empty pane.

The real engine over the in-memory dataplane after the story of tests/support/console_time.py,
frozen (a manual clock, no background loops), UTC, one poll. Update after an intended change with
`pytest tests/unit/test_console_time_snapshots.py --snapshot-update` and review the SVG diffs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from textual.pilot import Pilot

from lbtui.app import LbtuiApp
from lbtui.screens.chart import ChartScreen
from tests.support.console_engine import ConsoleEngine
from tests.support.console_time import STORY_S, make_engine


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def after(app: LbtuiApp, keys: Sequence[str], chart: bool = False) -> Callable[[Pilot], object]:
    async def run_before(pilot: Pilot) -> None:
        for _ in range(500):
            if app.refreshes >= 1:
                break
            await pilot.pause(0.01)
        await pilot.press(*keys)
        if chart:
            for _ in range(500):
                screen = app.screen
                if isinstance(screen, ChartScreen) and screen.fetches >= 1:
                    break
                await pilot.pause(0.01)
        await pilot.pause()
        await pilot.pause()  # auto-height parts are laid out on the refresh after their update

    return run_before


@pytest.fixture
def frozen() -> Iterator[Callable[..., LbtuiApp]]:
    """The console on an engine after the whole story (make_engine's knobs); stopped afterwards."""
    made: list[ConsoleEngine] = []

    def make(**knobs: object) -> LbtuiApp:
        knobs.setdefault("story_s", STORY_S)
        made.append(make_engine(**knobs))  # type: ignore[arg-type]
        return LbtuiApp(made[-1], refresh_s=3600)  # one poll: nothing moves while the picture is taken

    yield make
    for engine in made:
        engine.shutdown()


Frozen = Callable[..., LbtuiApp]


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_chart_of_a_backend(snap_compare: Callable[..., bool], frozen: Frozen, size: tuple[int, int]) -> None:
    app = frozen()
    assert snap_compare(app, terminal_size=size, run_before=after(app, ["down", "g"], chart=True))


def test_chart_of_a_proxy(snap_compare: Callable[..., bool], frozen: Frozen) -> None:
    app = frozen()
    assert snap_compare(app, terminal_size=(120, 40), run_before=after(app, ["g", "p"], chart=True))


def test_backends_with_sparklines(snap_compare: Callable[..., bool], frozen: Frozen) -> None:
    app = frozen()
    assert snap_compare(app, terminal_size=(160, 20), run_before=after(app, []))


def test_latency_over_one_minute(snap_compare: Callable[..., bool], frozen: Frozen) -> None:
    app = frozen()
    assert snap_compare(app, terminal_size=(120, 24), run_before=after(app, ["4", "t"]))


def test_access_log_not_configured(snap_compare: Callable[..., bool], frozen: Frozen) -> None:
    app = frozen(story_s=0, access_log=False)
    assert snap_compare(app, terminal_size=(120, 12), run_before=after(app, ["5"]))


def test_backends_filtered(snap_compare: Callable[..., bool], frozen: Frozen) -> None:
    app = frozen()
    assert snap_compare(app, terminal_size=(120, 16), run_before=after(app, ["slash", *"web default"]))
