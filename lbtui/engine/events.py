# SPDX-License-Identifier: Apache-2.0
"""The engine's event log: what it did or saw, numbered, bounded, readable from any thread."""

from __future__ import annotations

import collections
import logging
import threading

from lbtui import model
from lbtui.engine.clock import Clock

log = logging.getLogger("lbtui.engine")

MAX_EVENTS = 10_000
_LOG_LEVELS = {
    model.Level.INFO: logging.INFO,
    model.Level.WARNING: logging.WARNING,
    model.Level.ERROR: logging.ERROR,
}


class EventLog:
    def __init__(self, clock: Clock, maxlen: int = MAX_EVENTS):
        self._clock = clock
        self._events: collections.deque[model.Event] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._seq = 0

    def emit(
        self,
        kind: str,
        message: str,
        level: model.Level = model.Level.INFO,
        proxy: str | None = None,
        backend: str | None = None,
    ) -> model.Event:
        """Record an event (and log it): the console's events pane, `lbtui ctl events`, stderr."""
        with self._lock:
            self._seq += 1
            ev = model.Event(
                seq=self._seq,
                ts=self._clock.time(),
                kind=kind,
                message=message,
                level=level,
                proxy=proxy,
                backend=backend,
            )
            self._events.append(ev)
        log.log(_LOG_LEVELS[level], "%s: %s", kind, message)
        return ev

    def since(self, seq: int, limit: int = 1000) -> list[model.Event]:
        """Events with a number above `seq`, oldest first, at most `limit`."""
        with self._lock:
            return [e for e in self._events if e.seq > seq][:limit]
