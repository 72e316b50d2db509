# SPDX-License-Identifier: Apache-2.0
"""Screenshots of every pane at the smallest supported terminal (80x24) and a large one (160x48).

The engine is the real one over the in-memory dataplane (tests/support/console_engine.py), frozen:
a fixed clock, no background loops, traffic made the same way every time; event times are shown in
UTC. So the pictures only change when the console's looks (or what the engine reports) change.
Update them after an intended change with
`pytest tests/unit/test_app_snapshots.py --snapshot-update` and review the SVG diffs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from textual.pilot import Pilot

from lbtui.app import LbtuiApp
from tests.support.console_engine import ConsoleEngine

PANE_KEYS = {"backends": "1", "conntrack": "2", "circuits": "3", "latency": "4", "access": "5", "events": "6"}
SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def show_pane(app: LbtuiApp, key: str) -> Callable[[Pilot], object]:
    async def run_before(pilot: Pilot) -> None:
        for _ in range(500):
            if app.refreshes >= 1:
                break
            await pilot.pause(0.01)
        await pilot.press(key)
        await pilot.pause()
        await pilot.pause()  # a pane's auto-height parts are laid out on the refresh after their update

    return run_before


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pane", PANE_KEYS)
def test_pane(snap_compare: Callable[..., bool], pane: str, size: str) -> None:
    engine = ConsoleEngine(loops=False)
    try:
        app = LbtuiApp(engine, refresh_s=3600)  # one poll: nothing moves while the picture is taken
        assert snap_compare(app, terminal_size=SIZES[size], run_before=show_pane(app, PANE_KEYS[pane]))
    finally:
        engine.shutdown()
