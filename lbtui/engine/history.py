# SPDX-License-Identifier: Apache-2.0
"""The engine's history: one point per second of every proxy's and backend's series, and each
backend's latency over the last 10 s, 1 min and 5 min, recorded from the snapshots it publishes.

The engine publishes a snapshot at the start of every wall-clock second (and after commands); the
first one of each second is recorded (`observe`). Rates are the differences of the snapshot's
cumulative counters since the previous record, divided by the time between the two records;
active flows are as the snapshot counts them; failed handshakes are RSTs answering a SYN plus the
SYNs the sweep saw go unanswered; the latency windows subtract older samples of the data path's
cumulative histograms (observe/history.py `LatencyWindows`), and the `*_p99_ms` points are those
of the 10 s window (a proxy's merges its backends' histograms). Every snapshot then carries its
backends' windows (`LatencyView.windows`) and `history_s`; `answer` is `EngineHandle.history`.

Memory is bounded (docs/architecture.md#state): float32 rings of keep_s points per series, for the
targets recorded within the last keep_s seconds; of the targets that left (a backend removed, a
DNS answer that changed) at most RETIRED_MAX keep their past, the oldest are forgotten first.

Recording runs on the engine's loop; `answer` runs on its callers' threads (the runner's, the
control socket's pools) and holds the lock only while it copies points out of the rings.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from lbtui import model
from lbtui.control.supervisor import BackendKey
from lbtui.dataplane import structs
from lbtui.engine.clock import Clock
from lbtui.engine.measurements import add_counters
from lbtui.observe.history import HistoryStore, LatencyWindows, Target, answer

RETIRED_MAX = 64  # targets that left and still keep their past (their rings), at most
COUNTED = ("new_flows", "bytes_in", "bytes_out", "packets_in", "packets_out")  # model.Counters fields
FAILED = "failed_handshakes"

Point = dict[str, float | None]


@dataclass
class _Seen:
    """What a target's last record was made from: when, and its cumulative counters then."""

    mono: float
    cumulative: dict[str, int]


@dataclass
class _Merged:
    """Cumulative histograms of one target (a backend in several groups, or a proxy's backends)."""

    handshake: list[int] = field(default_factory=lambda: [0] * structs.HIST_BUCKETS)
    handshake_ms: float = 0.0
    duration: list[int] = field(default_factory=lambda: [0] * structs.HIST_BUCKETS)
    duration_ms: float = 0.0

    def add(self, view: model.LatencyView) -> None:
        if view.handshake is not None and len(view.handshake.counts) == len(self.handshake):
            self.handshake[:] = map(operator.add, self.handshake, view.handshake.counts)
            self.handshake_ms += view.handshake.sum_ms
        if view.duration is not None and len(view.duration.counts) == len(self.duration):
            self.duration[:] = map(operator.add, self.duration, view.duration.counts)
            self.duration_ms += view.duration.sum_ms


class HistoryRecorder:
    def __init__(
        self, clock: Clock, keep_s: int, syn_failures: Callable[[], Mapping[BackendKey, int]]
    ) -> None:
        """syn_failures: SYNs left unanswered per backend so far (cumulative, from the sweep)."""
        self._clock = clock
        self._syn_failures = syn_failures
        self.store = HistoryStore(keep_s)
        self.windows = LatencyWindows(structs.HIST_BOUNDS_MS)
        self._lock = threading.Lock()
        self._second: int | None = None  # the last second recorded
        self._seen: dict[Target, _Seen] = {}
        self._views: dict[Target, tuple[model.WindowLatency, ...]] = {}
        self._retired: dict[Target, int] = {}  # target -> the second it left, oldest first

    @property
    def keep_s(self) -> int:
        return self.store.keep_s

    def due(self) -> bool:
        """A new wall-clock second has begun and has no point yet: time to publish."""
        return int(self._clock.time()) != self._second

    def resize(self, keep_s: int) -> None:
        """settings.history_s changed (a reload): the newest points stay."""
        if keep_s != self.store.keep_s:
            with self._lock:
                self.store.resize(keep_s)

    # ---- recording ------------------------------------------------------------------------------

    def observe(self, snap: model.Snapshot) -> model.Snapshot:
        """Record the snapshot if it is the first of its second; it, with the latency windows."""
        second = int(snap.taken_at)
        if second != self._second:
            if snap.running:
                self._record(snap, second)
            else:
                self._second = second  # nothing to record, but the second is served: due() goes false
        latency = tuple(replace(v, windows=self._views.get((v.proxy, v.backend), ())) for v in snap.latency)
        return replace(snap, latency=latency, history_s=self.store.keep_s)

    def _record(self, snap: model.Snapshot, second: int) -> None:
        now = self._clock.monotonic()
        syn = self._syn_failures()
        points: dict[Target, Point] = {}
        for svc in snap.services:
            tcp = svc.protocol == "tcp"
            failed: float | None = 0.0
            for address, (counters, active) in _per_address(svc.all_backends()).items():
                cumulative = {name: getattr(counters, name) for name in COUNTED}
                if tcp:
                    cumulative[FAILED] = counters.conn_failures + syn.get(BackendKey(svc.name, address), 0)
                point = points[(svc.name, address)] = self._rates((svc.name, address), cumulative, now)
                point["active_flows"] = float(active)
                if tcp:
                    rate = point[FAILED]
                    failed = None if failed is None or rate is None else failed + rate
            whole = (svc.name, None)
            cumulative = {name: getattr(svc.counters, name) for name in COUNTED}
            seen = self._seen.get(whole)
            for reason, count in svc.drops.items():  # a reason gets a series once it happens
                name = model.DROPS_SERIES_PREFIX + reason
                if count or (seen is not None and name in seen.cumulative):
                    cumulative[name] = count
            point = points[whole] = self._rates(whole, cumulative, now)
            point["active_flows"] = float(svc.active_flows)
            if tcp:
                point[FAILED] = failed
        self._latency(snap, points, now)
        with self._lock:
            self.store.record(second, points)
            self._retire(points, second)
        self._second = second

    def _rates(self, target: Target, cumulative: dict[str, int], now: float) -> Point:
        """Per second since the target's last record; None first, and where a counter went back."""
        seen = self._seen.get(target)
        self._seen[target] = _Seen(now, cumulative)
        if seen is None or now <= seen.mono:
            return dict.fromkeys(cumulative)
        elapsed = now - seen.mono
        out: Point = {}
        for name, value in cumulative.items():
            before = seen.cumulative.get(name, 0)
            out[name] = (value - before) / elapsed if value >= before else None
        return out

    def _latency(self, snap: model.Snapshot, points: dict[Target, Point], now: float) -> None:
        """Feed the windows; set every target's p99 points and keep the backends' windows."""
        tcp = {s.name: s.protocol == "tcp" for s in snap.services}
        merged: dict[Target, _Merged] = {}
        for view in snap.latency:
            if view.proxy in tcp:
                targets: tuple[Target, Target] = ((view.proxy, view.backend), (view.proxy, None))
                for target in targets:
                    merged.setdefault(target, _Merged()).add(view)
        for target, m in merged.items():
            handshake = (m.handshake, m.handshake_ms) if tcp[target[0]] else None
            self.windows.observe(now, target, handshake, (m.duration, m.duration_ms))
        shortest = min(model.LATENCY_WINDOWS_S)
        views: dict[Target, tuple[model.WindowLatency, ...]] = {}
        for target, point in points.items():
            if target[1] is None:
                hs_p99 = self.windows.p99(target, "handshake", shortest)
                du_p99 = self.windows.p99(target, "duration", shortest)
            else:
                views[target] = windows = self.windows.windows(target)
                window = next(w for w in windows if w.seconds == shortest)
                hs_p99 = window.handshake.p99_ms if window.handshake else None
                du_p99 = window.duration.p99_ms if window.duration else None
            if tcp[target[0]]:
                point["handshake_p99_ms"] = hs_p99
            point["duration_p99_ms"] = du_p99
        self._views = views

    def _retire(self, current: Iterable[Target], second: int) -> None:
        """Targets that left keep their past (their rings age out after keep_s), RETIRED_MAX at most."""
        current = set(current)
        for target in current:
            self._retired.pop(target, None)
        for target in [t for t in self._seen if t not in current]:
            del self._seen[target]
            self.windows.forget(target)
            self._retired[target] = second
        for target in [t for t, left in self._retired.items() if left <= second - self.store.keep_s]:
            del self._retired[target]  # the store forgot it by itself
        while len(self._retired) > RETIRED_MAX:
            oldest = next(iter(self._retired))
            del self._retired[oldest]
            self.store.forget(oldest)

    # ---- reading (any thread) -------------------------------------------------------------------

    def answer(self, query: model.HistoryQuery, events: Iterable[model.Event]) -> model.HistoryAnswer:
        """EngineHandle.history; ValueError for a query the engine refuses."""
        return answer(self.store, query, events, self._clock.time(), self._lock)


def _per_address(backends: Iterable[model.BackendView]) -> dict[str, tuple[model.Counters, int]]:
    """A backend in several groups of a proxy (the default one and a route's) is one target."""
    out: dict[str, tuple[model.Counters, int]] = {}
    for b in backends:
        if b.address in out:
            counters, active = out[b.address]
            out[b.address] = (add_counters(counters, b.counters), active + b.active_flows)
        else:
            out[b.address] = (b.counters, b.active_flows)
    return out
