# SPDX-License-Identifier: Apache-2.0
"""The conntrack sweep and what follows from it.

Reading and analysing the map (up to millions of entries) runs on a worker thread, so commands and
the control tick go on meanwhile; the results are applied on the loop: active flows per backend,
expired flows (removed through the data path's compare-and-delete, reported as idle closes,
counted for least-connections and the duration histograms), the conntrack summary and the default
flow view, the flows kept for queries, and TCP SYNs left unanswered (connection failures for the
circuit breakers).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from lbtui import model
from lbtui.config import Settings
from lbtui.control import conntrack
from lbtui.control.supervisor import BackendKey, SynTimeoutCounter
from lbtui.dataplane.port import Dataplane
from lbtui.engine.clock import Clock
from lbtui.engine.flowquery import TOP_FLOWS, FlowQueries
from lbtui.engine.flows import FlowEvents
from lbtui.engine.measurements import Measurements
from lbtui.engine.topology import Topology

RATE_BUCKET_IDLE_NS = 60_000_000_000


@dataclass(frozen=True)
class SweepView:
    """What the last sweep found, for snapshots."""

    summary: model.ConntrackSummary
    flows: tuple[model.FlowView, ...] = ()  # the default view: the biggest flows by bytes
    matched: int = 0


class Sweeper:
    def __init__(
        self,
        dp: Dataplane,
        clock: Clock,
        topology: Topology,
        measurements: Measurements,
        flow_events: FlowEvents,
        queries: FlowQueries,
        capacity: int,
    ):
        self._dp = dp
        self._clock = clock
        self._topology = topology
        self._measurements = measurements
        self._flow_events = flow_events
        self._queries = queries
        self.view = SweepView(model.ConntrackSummary(capacity=capacity))
        self.swept_total = 0
        self._syn_timeouts = SynTimeoutCounter()
        self.syn_failures: collections.Counter[BackendKey] = collections.Counter()  # for the breakers

    async def sweep(self, settings: Settings) -> None:
        """Expire idle flows, count active flows per backend, keep the bounded top-N view."""
        timeouts = conntrack.Timeouts(
            tcp_s=settings.tcp_timeout_s,
            tcp_closing_s=settings.tcp_closing_timeout_s,
            udp_s=settings.udp_timeout_s,
        )
        proxies = self._topology.proxies.values()
        proxy_of = {p.service_id: p.name for p in proxies}
        track_syns = any(p.cfg.circuit_breaker is not None for p in proxies)
        dp, clock, keep = self._dp, self._clock, self._queries.wanted

        def work() -> conntrack.SweepResult:
            now_ns = clock.monotonic_ns()
            keys, vals = dp.conntrack_arrays()
            res = conntrack.sweep(keys, vals, now_ns, timeouts, TOP_FLOWS, proxy_of, track_syns, keep)
            if res.expired_keys is not None and res.expired_created is not None and len(res.expired_keys):
                dp.reap_conntrack(res.expired_keys, res.expired_created)
            dp.sweep_rate_buckets(idle_ns=RATE_BUCKET_IDLE_NS, now_ns=now_ns)
            return res

        res = await asyncio.to_thread(work)
        self._apply(res, capacity=2 * settings.max_connections)

    def _apply(self, res: conntrack.SweepResult, capacity: int) -> None:
        self.swept_total += res.expired_count
        backends = self._topology.backends
        for m in backends.values():
            m.active_flows = res.active.get(m.id, 0)
        for f, r in res.expired_flows:
            gone = backends.get(f.backend_id)
            if gone is not None:
                gone.expired += 1
                last = max(f.last_seen_ns, r.last_seen_ns if r else 0)
                self._measurements.idle_closed(gone.id, max(0, (last - f.created_ns) // 1000))
            self._flow_events.notify(self._flow_events.idle_closed(f, r))
        self._queries.replace(res.flows)
        self.view = SweepView(
            model.ConntrackSummary(
                entries=res.entries - res.expired_count,
                flows=res.tcp + res.udp,
                tcp=res.tcp,
                udp=res.udp,
                closing=res.closing,
                capacity=capacity,
                swept_total=self.swept_total,
            ),
            tuple(res.top),
            res.matched,
        )
        self._count_syn_timeouts(res.unanswered)

    def _count_syn_timeouts(self, unanswered: Sequence[tuple[Hashable, int, float]]) -> None:
        """A SYN left unanswered past its proxy's syn_timeout_ms is a connection failure (once)."""
        flows = []
        for flow_id, backend_id, age in unanswered:
            m = self._topology.backends.get(backend_id)
            proxy = self._topology.proxies.get(m.proxy) if m else None
            if m is not None and proxy is not None and proxy.cfg.circuit_breaker is not None:
                flows.append((flow_id, m.key, age, proxy.cfg.circuit_breaker.syn_timeout_ms / 1000))
        for key, n in self._syn_timeouts.observe(flows).items():
            self.syn_failures[key] += n
