# SPDX-License-Identifier: Apache-2.0
"""A stop during start-up (docs/architecture.md#stopping), on the real Engine over the in-memory
dataplane: the start is cancelled after 0, 1, 2, ... steps of the event loop, so at every await of
Engine.start (the first DNS answers, the load, adoption, attaching, the loops), and each time the
data path ends detached and unpinned (pinned and attached with keep_dataplane), no task of the
engine goes on, and a later start works. A data path an earlier run kept (--keep-dataplane) is
taken over by the load: a stop after it detaches that too, a stop before it leaves it as it was.
tests/e2e/test_stop.py does the same with signals and the kernel data path."""

from __future__ import annotations

import asyncio

import pytest

from lbtui.dataplane.memory import MemoryPins
from tests.support.engine import Probes, make_engine
from tests.unit.test_engine_dns import NAME, dns_proxy

pytestmark = pytest.mark.anyio

HEALTH = """
[proxy.health]
type = "tcp"
interval_ms = 100
timeout_ms = 50
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def others(before: set[asyncio.Task[object]]) -> list[asyncio.Task[object]]:
    """Tasks started since `before` that still run."""
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]


async def start_and_cancel(
    steps: int | None, pins: MemoryPins, keep: bool = False, from_file: bool = False
) -> tuple[bool | None, object]:
    """Start an engine, cancel the start after `steps` loop steps (None: never); (whether it was
    cancelled, None if before its first step, the dataplane)."""
    engine, dp = make_engine(
        dns_proxy("web", 80) + HEALTH,
        probes=Probes(dns={NAME: ("10.0.5.1", "10.0.5.2")}),
        pins=pins,
        loops=True,
        from_file=from_file,  # a file to watch: the start waits for the watcher (wall-clock time)
        keep_dataplane=keep,
    )
    task = asyncio.create_task(engine.start())
    for _ in range(steps or 0):
        await asyncio.sleep(0)
    if steps is not None:
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        assert not engine.running
        return (None if engine._loop is None else True), dp
    await engine.stop()  # the start had finished: an ordinary stop
    return False, dp


@pytest.mark.parametrize(
    ("adopting", "from_file"),
    [(False, True), (True, False)],
    ids=["fresh, watching its file", "adopting an earlier run"],
)
async def test_a_start_cancelled_at_any_step_leaves_nothing_attached_or_pinned(
    adopting: bool, from_file: bool
):
    cancelled = 0
    before = set(asyncio.all_tasks())
    for steps in range(60):
        pins = MemoryPins()
        if adopting:  # an earlier run left its programs attached and its maps pinned
            _, earlier = await start_and_cancel(None, pins, keep=True)
            assert pins.states and next(iter(pins.states.values())).interfaces == ("lb0",)
        was_cancelled, dp = await start_and_cancel(steps, pins, from_file=from_file)
        cancelled += bool(was_cancelled)
        assert dp.interfaces == (), steps  # type: ignore[attr-defined]
        if adopting and not dp.adopted:  # type: ignore[attr-defined]
            # stopped before it loaded: the earlier run's kept data path is not this run's to undo
            assert next(iter(pins.states.values())).interfaces == ("lb0",), steps
            pins.states.clear()
        assert pins.states == {}, steps
        assert others(before) == [], steps
    assert cancelled >= 5  # the start has that many awaits at least: each was hit


async def test_a_cancelled_start_keeps_the_data_path_with_keep_dataplane():
    before = set(asyncio.all_tasks())
    for steps in range(1, 60):  # the first step at which the start has loaded and not yet finished
        pins = MemoryPins()
        was_cancelled, dp = await start_and_cancel(steps, pins, keep=True)
        if was_cancelled and pins.states:
            break
    else:
        pytest.fail("no step of the start was cancelled after the load")
    assert others(before) == []
    # what stays is what a later start adopts: a new engine takes it over and then stops cleanly
    assert list(pins.states) and dp.closed  # type: ignore[attr-defined]
    again, dp2 = await start_and_cancel(None, pins)
    assert not again and dp2.adopted and pins.states == {}  # type: ignore[attr-defined]
