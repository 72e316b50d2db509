# SPDX-License-Identifier: Apache-2.0
"""Calling pyroute2's synchronous API from anywhere, including a thread that runs an asyncio loop.

pyroute2 0.9 drives an asyncio loop of its own in the calling thread, which fails inside a running
loop (the engine's). Netlink calls here are rare (attach, announce, set up), so a short-lived
thread each is fine. (dataplane/loader.py has the same wrapper, private; one of the two can go.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def off_loop(fn: Callable[..., T]) -> Callable[..., T]:
    """Run `fn` on a thread of its own when the calling thread runs an asyncio loop."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(fn, *args, **kwargs).result()

    return wrapper
