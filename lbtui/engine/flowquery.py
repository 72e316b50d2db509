# SPDX-License-Identifier: Apache-2.0
"""Flow queries: front ends choose which flows their bounded view holds, among every flow in
conntrack.

Sweeps keep every live flow (a copy) only while front ends ask: for FLOW_QUERY_KEEP_S after the
last query. Each query's answer is cached until the next sweep (consoles refresh more often than
the sweep runs). Queries come from any thread (the control socket's workers, the console's runner).
"""

from __future__ import annotations

import threading

from lbtui import model
from lbtui.control import conntrack
from lbtui.engine.clock import Clock

TOP_FLOWS = 200
FLOW_QUERY_KEEP_S = 30.0  # after a front end's last flow query, sweeps keep every flow this long
MAX_CACHED = 32

Answer = tuple[tuple[model.FlowView, ...], int]  # (the view, how many flows matched)


class FlowQueries:
    def __init__(self, clock: Clock):
        self._clock = clock
        self._table: conntrack.FlowTable | None = None  # every live flow of the last sweep
        self._cache: dict[model.FlowQuery, Answer] = {}
        self._lock = threading.Lock()
        self._wanted_until = 0.0

    @property
    def wanted(self) -> bool:
        """Should the sweep keep every flow for queries (a front end asked recently)?"""
        return self._clock.monotonic() < self._wanted_until

    def replace(self, table: conntrack.FlowTable | None) -> None:
        """The flows of a new sweep; cached answers are stale now."""
        with self._lock:
            self._table = table
            self._cache = {}

    def answer(self, q: model.FlowQuery) -> Answer | None:
        """The view for `q`, or None until a sweep has kept every flow (then: from the next one)."""
        self._wanted_until = self._clock.monotonic() + FLOW_QUERY_KEEP_S
        with self._lock:
            table, cache = self._table, self._cache
            cached = cache.get(q)
        if cached is not None:
            return cached
        if table is None:
            return None
        view, matched = conntrack.query(table, q, TOP_FLOWS)
        answer = (tuple(view), matched)
        with self._lock:
            if self._cache is cache:  # no sweep since: keep it (a few queries at most)
                if len(cache) >= MAX_CACHED:
                    cache.clear()
                cache[q] = answer
        return answer
