# SPDX-License-Identifier: Apache-2.0
"""Awaiting with a deadline, without Python 3.11's `asyncio.wait_for` race.

On 3.11, `asyncio.wait_for` returns the inner result when the awaited thing completes in the same
loop step as a `cancel()` of the task awaiting it: the cancellation is lost (CPython gh-86296, fixed
in 3.12 by reimplementing wait_for on `asyncio.timeout`). A refresh loop that lost its cancellation
runs on forever, and whoever awaits its end (`close()`, the engine's stop) waits forever. lbtui
therefore awaits with `asyncio.timeout`, which leaves a cancellation from outside alone (see
docs/architecture.md, "Stopping"); ruff bans `asyncio.wait_for` in the package (pyproject.toml).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(timeout_s: float | None, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`; TimeoutError after `timeout_s` seconds (None: no deadline)."""
    async with asyncio.timeout(timeout_s):
        return await awaitable
