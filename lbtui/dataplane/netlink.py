# SPDX-License-Identifier: Apache-2.0
"""Calling pyroute2's synchronous API from anywhere, including a thread that runs an asyncio loop;
and `SocketWatch`, a thread that hands each batch of a netlink socket's notifications to its owner.

pyroute2 0.9 drives an asyncio loop of its own in the calling thread, which fails inside a running
loop (the engine's). Netlink calls here are rare (attach, announce, set up), so a short-lived
thread each is fine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import select
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


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


class SocketWatch:
    """A thread of its own waits on `sock` (a non-blocking netlink socket bound to the groups of
    interest) and calls `batch()` whenever datagrams are queued; `batch` reads them all. An exception
    in `batch` is logged and the watch goes on (while it is not closing: a closing engine's maps may
    be gone under it)."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self._sock = sock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def batch(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.5)
            if not ready:
                continue
            try:
                self.batch()
            except Exception:
                if not self._stop.is_set():
                    log.exception("%s", self._thread.name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
