# SPDX-License-Identifier: Apache-2.0
"""What the engine measures of the data path: counters and their rates, live flows per backend,
latency histograms, the durations of flows the idle sweep closed, and the least-connections weights
computed from them.

Everything is read on the engine's loop (the control tick and snapshot publication). Live flows come
from the data path's own counts (a flow is counted when it is established and uncounted once when
it closes or is removed: docs/datapath.md#conntrack), so they are as fresh as the last tick.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable

from lbtui import model
from lbtui.dataplane import structs
from lbtui.dataplane.port import Dataplane, LatencyCounts
from lbtui.engine.group import Member
from lbtui.engine.topology import Topology
from lbtui.observe.histogram import histogram_from_counts

log = logging.getLogger(__name__)

RATE_FIELDS = ("new_flows", "bytes_in", "bytes_out", "packets_in", "packets_out")
COUNTER_FIELDS = tuple(f.name for f in dataclasses.fields(model.Counters))


class Measurements:
    def __init__(self) -> None:
        self.counters: dict[int, model.Counters] = {}  # by backend id
        self.services: dict[int, tuple[model.Counters, dict[str, int]]] = {}  # by service id
        self.latency: dict[int, LatencyCounts] = {}
        self._idle: dict[int, tuple[list[int], int]] = {}  # flows closed by the idle sweep: counts, sum
        self._rates: dict[tuple[int, str], tuple[float, int, float | None]] = {}
        self.fast_path: model.FastPathView | None = None

    def refresh(self, dp: Dataplane, topology: Topology, now: float) -> None:
        """Read every backend's and service's counters and live flows; rates over windows of at
        least 1 s."""
        for bid, counts in dp.backend_counters(list(topology.backends)).items():
            counters = counts.counters
            self.counters[bid] = counters
            member = topology.backends.get(bid)
            if member is not None:
                member.active_flows = counts.live_flows
            for name in RATE_FIELDS:
                self._rate((bid, name), getattr(counters, name), now)
        for proxy in topology.proxies.values():
            self.services[proxy.service_id] = dp.service_counters(proxy.service_id)

    def read_latency(self, dp: Dataplane, backend_ids: Iterable[int]) -> None:
        try:
            self.latency = dp.latency(list(backend_ids))
        except Exception:
            log.exception("reading latency histograms")

    def read_fast_path(self, dp: Dataplane) -> None:
        """The fast path's counters (None while settings.fast_path is off: there is none)."""
        if not dp.spec.fast_path:
            self.fast_path = None
            return
        try:
            self.fast_path = fast_path_view(dp.global_counters(), dp.next_hop_watch())
        except Exception:
            log.exception("reading the fast path's counters")

    def forget(self, backend_id: int) -> None:
        """A backend id starts over (a new backend): the idle sweep's durations go too."""
        self._idle.pop(backend_id, None)

    def idle_closed(self, backend_id: int, duration_us: int) -> None:
        """The data path sees only FIN/RST closes; the idle sweep reports the others here."""
        counts, total = self._idle.setdefault(backend_id, ([0] * structs.HIST_BUCKETS, 0))
        counts[structs.hist_bucket(duration_us)] += 1
        self._idle[backend_id] = (counts, total + duration_us)

    def _rate(self, key: tuple[int, str], value: int, now: float) -> None:
        """Per-second rate over the last >= 1 s window (finer ticks would make it jumpy)."""
        prev = self._rates.get(key)
        if prev is None:
            self._rates[key] = (now, value, None)
        elif now - prev[0] >= 1.0:
            rate = (value - prev[1]) / (now - prev[0]) if value >= prev[1] else None
            self._rates[key] = (now, value, rate)

    def rate(self, backend_id: int, name: str) -> float | None:
        r = self._rates.get((backend_id, name))
        return r[2] if r else None

    def live_flows(self, m: Member) -> int:
        """Established flows not closed or expired (least-connections), from the data path."""
        return m.active_flows

    def latency_view(self, m: Member) -> model.LatencyView:
        """The data path's histograms of one backend (plus the durations of flows the sweep closed)."""
        lat = self.latency.get(m.id)
        idle_counts, idle_sum = self._idle.get(m.id, ([0] * structs.HIST_BUCKETS, 0))
        if lat is None:
            return model.LatencyView(proxy=m.proxy, backend=m.address)
        duration = [a + b for a, b in zip(lat.duration, idle_counts, strict=True)]
        return model.LatencyView(
            proxy=m.proxy,
            backend=m.address,
            handshake=histogram_from_counts(
                structs.HIST_BOUNDS_MS, lat.handshake, lat.handshake_sum_us / 1000
            ),
            duration=histogram_from_counts(
                structs.HIST_BOUNDS_MS, duration, (lat.duration_sum_us + idle_sum) / 1000
            ),
        )


def fast_path_view(
    counters: dict[str, int], watch: model.NextHopWatchCounts | None = None
) -> model.FastPathView:
    """The fast path's share of the data path's global counters (structs.FAST_PATH_*), and what its
    next-hop watch did."""
    return model.FastPathView(
        forwarded={d: counters.get(name, 0) for d, name in structs.FAST_PATH_FORWARDED.items()},
        fallbacks={r: counters.get(structs.FAST_PATH_PREFIX + r, 0) for r in structs.FAST_PATH_FALLBACKS},
        watch=watch or model.NextHopWatchCounts(),
    )


def add_counters(a: model.Counters, b: model.Counters) -> model.Counters:
    return model.Counters(**{f: getattr(a, f) + getattr(b, f) for f in COUNTER_FIELDS})


class LeastConnections:
    """weight / (1 + live flows) for the members of least-connections proxies, every
    least_connections_interval_ms."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}  # proxy -> when its weights were last updated

    def update(self, topology: Topology, measurements: Measurements, now: float) -> None:
        for name in [n for n in self._last if n not in topology.proxies]:
            del self._last[name]
        for proxy in topology.proxies.values():
            if proxy.cfg.algorithm != "least-connections":
                continue
            if now - self._last.get(proxy.name, -math.inf) < proxy.cfg.least_connections_interval_ms / 1000:
                continue
            for group in proxy.groups.values():
                for m in group.members.values():
                    m.algorithm_factor = 1.0 / (1 + measurements.live_flows(m))
                topology.write_group(proxy, group, "least-connections")
            self._last[proxy.name] = now
