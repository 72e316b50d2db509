# SPDX-License-Identifier: Apache-2.0
"""Flow views: front ends choose which flows their bounded view holds, among every flow in conntrack.

Conntrack is read whole only while front ends look at flows: a snapshot request that names a flow
query (the console's conntrack pane, `lbtui ctl flows`; the default query counts) makes the sweep
read both tables into a compact flow table (control.flowtable) for FLOW_QUERY_KEEP_S after the
last such request, at most every `refresh_s` (a few seconds, longer for big tables: the interval is
REFRESH_FACTOR times what the last read took). With nobody asking the table is dropped, so an idle
engine neither reads a million entries nor keeps them. Each query's answer is cached until the next
read. Queries come from any thread (the control socket's workers, the console's runner).
"""

from __future__ import annotations

import dataclasses
import threading

from lbtui import model
from lbtui.control import flowtable
from lbtui.engine.clock import Clock

TOP_FLOWS = 200
FLOW_QUERY_KEEP_S = 30.0  # after a front end's last flow query, the table is kept fresh this long
MIN_REFRESH_S = 2.0
REFRESH_FACTOR = 10.0  # a read that took 0.5 s is made again after 5 s at the soonest
MAX_CACHED = 32

Answer = tuple[tuple[model.FlowView, ...], int]  # (the view, how many flows matched)


class FlowQueries:
    def __init__(self, clock: Clock):
        self._clock = clock
        self._table: flowtable.FlowTable | None = None  # every live flow of the last read
        self._cache: dict[model.FlowQuery, Answer] = {}
        self._lock = threading.Lock()
        self._wanted_until = 0.0
        self._read_at = -1e18
        self._read_cost_s = 0.0

    @property
    def wanted(self) -> bool:
        """Did a front end ask for flows recently?"""
        return self._clock.monotonic() < self._wanted_until

    def ask(self) -> None:
        """A front end looks at flows: keep the table fresh for FLOW_QUERY_KEEP_S."""
        self._wanted_until = self._clock.monotonic() + FLOW_QUERY_KEEP_S

    @property
    def refresh_s(self) -> float:
        return max(MIN_REFRESH_S, REFRESH_FACTOR * self._read_cost_s)

    def due(self) -> bool:
        """Should the next sweep read every flow?"""
        return self.wanted and self._clock.monotonic() - self._read_at >= self.refresh_s

    def replace(self, table: flowtable.FlowTable | None, cost_s: float = 0.0) -> None:
        """The flows of a new read (None: drop them); cached answers are stale now."""
        with self._lock:
            self._table = table
            self._cache = {}
        if table is not None:
            self._read_at = self._clock.monotonic()
            self._read_cost_s = cost_s

    @property
    def table(self) -> flowtable.FlowTable | None:
        return self._table

    def answer(self, q: model.FlowQuery) -> Answer | None:
        """The view for `q`, or None until a read has kept every flow (then: from the next one)."""
        self.ask()
        with self._lock:
            table, cache = self._table, self._cache
            cached = cache.get(q)
        if cached is not None:
            return cached
        if table is None:
            return None
        view, matched = flowtable.query(table, q, TOP_FLOWS)
        answer = (tuple(view), matched)
        with self._lock:
            if self._cache is cache:  # no read since: keep it (a few queries at most)
                if len(cache) >= MAX_CACHED:
                    cache.clear()
                cache[q] = answer
        return answer

    def view(self, snap: model.Snapshot, q: model.FlowQuery) -> model.Snapshot:
        """`snap` with its flow view answering `q`: `snap` itself for the default query, and until a
        read has kept every flow (its flow_query says which query it answers). ValueError for a
        query the engine refuses."""
        if q == model.FlowQuery():
            return snap
        problem = q.problem()
        if problem:
            raise ValueError(problem)
        answer = self.answer(q)
        if answer is None:
            return snap
        view, matched = answer
        return dataclasses.replace(snap, flows=view, flow_query=q, flows_matched=matched)
