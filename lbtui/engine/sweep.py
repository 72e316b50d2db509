# SPDX-License-Identifier: Apache-2.0
"""The conntrack sweep and what follows from it (docs/datapath.md#conntrack).

Every sweep_interval_s, on a worker thread, for each address family (IPv4, then IPv6: the same
work on the lb_ct6_* twins): the whole transient table (embryonic and closing flows, small) and
one slice of the established table (a whole pass takes about conntrack_pass_s,
so a million idle flows cost a few milliseconds a sweep, not a full read) are checked for flows
idle past their timeout, which lbtui_reap removes if they are still idle and still the same flows.
While a front end looks at flows, both tables are also read whole into the flow table its views
come from (engine.flowquery). The results are applied on the loop: idle closes (access log,
duration histograms), the conntrack summary and the default flow view, unanswered SYNs
(connection failures for the circuit breakers). Live flow counts do not come from here: the data
path counts them (engine.measurements).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lbtui import model
from lbtui.config import Settings
from lbtui.control import conntrack, flowtable
from lbtui.control.supervisor import BackendKey, SynTimeoutCounter
from lbtui.dataplane.port import CT_TABLES_OF, ESTABLISHED, Dataplane, FlowEntry
from lbtui.dataplane.records import CT_DTYPES, entry_from_record
from lbtui.dataplane.structs import CT_F_CLOSED, CT_F_EST, DIR_FORWARD
from lbtui.engine.clock import Clock
from lbtui.engine.flowquery import TOP_FLOWS, FlowQueries
from lbtui.engine.flows import FlowEvents
from lbtui.engine.measurements import Measurements
from lbtui.engine.topology import Topology

RATE_BUCKET_IDLE_NS = 60_000_000_000
RATE_SWEEP_EVERY = 5  # sweeps between two passes over the per-source rate buckets
SLICE_MIN = 4096  # established entries read per sweep, at least (a small table: all of it)
SLICE_MAX = 65536  # ... and at most


@dataclass(frozen=True)
class SweepView:
    """What the last sweep found, for snapshots."""

    summary: model.ConntrackSummary
    flows: tuple[model.FlowView, ...] = ()  # the default view: the biggest flows by bytes
    matched: int = 0


@dataclass
class _Found:
    """What one sweep's worker found."""

    scans: list[conntrack.TransientScan] = field(default_factory=list)  # one per family
    removed_entries: int = 0
    closed: list[tuple[FlowEntry, int, int, int]] = field(
        default_factory=list
    )  # flow, out pkts/bytes, last ns
    cursors: dict[str, int] = field(default_factory=dict)  # established table -> where the next slice starts
    table: flowtable.FlowTable | None = None
    table_cost_s: float = 0.0
    top: list[model.FlowView] = field(default_factory=list)
    matched: int = 0


def conntrack_capacity(settings: Settings) -> int:
    """Entries the established tables of both families hold (ConntrackSummary.capacity)."""
    return 2 * (settings.max_connections + settings.ipv6_max_connections)


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
        self.passes = 0  # whole passes over the established table
        self.last_slice = 0  # established entries the last sweep read
        self._cursors = {ESTABLISHED: 0}  # per established table (CT_TABLES_OF)
        self._sweeps = 0
        self._syn_timeouts = SynTimeoutCounter()
        self.syn_failures: collections.Counter[BackendKey] = collections.Counter()  # for the breakers

    async def sweep(self, settings: Settings) -> None:
        """Expire idle flows (the transient table and a slice of the established one), keep the
        summary, the flow table front ends ask for and the unanswered SYNs."""
        timeouts = conntrack.Timeouts(
            tcp_s=settings.tcp_timeout_s,
            tcp_closing_s=settings.tcp_closing_timeout_s,
            udp_s=settings.udp_timeout_s,
        )
        proxies = self._topology.proxies.values()
        proxy_of = {p.service_id: p.name for p in proxies}
        track_syns = any(p.cfg.circuit_breaker is not None for p in proxies)
        established = 2 * sum(m.active_flows for m in self._topology.backends.values())
        budget = conntrack.slice_size(
            established, settings.sweep_interval_s, settings.conntrack_pass_s, SLICE_MIN, SLICE_MAX
        )
        self.last_slice = budget
        read_all, cursors = self._queries.due(), dict(self._cursors)
        buckets = self._sweeps % RATE_SWEEP_EVERY == 0
        self._sweeps += 1
        dp, clock = self._dp, self._clock

        def work() -> _Found:
            now_ns = clock.monotonic_ns()
            found = _Found()
            for established, transient in CT_TABLES_OF.values():
                tkeys, tvals = _whole(dp, transient)
                scan = conntrack.scan_transient(tkeys, tvals, now_ns, timeouts, track_syns)
                found.scans.append(scan)
                _expire(dp, tkeys, tvals, scan.expiry, found)
                skeys, svals, found.cursors[established] = dp.conntrack_slice(
                    cursors.get(established, 0), budget, established
                )
                candidates = conntrack.established_candidates(skeys, svals, now_ns, timeouts)
                _expire(dp, skeys, svals, candidates, found)
            if read_all:  # after the slices: their arrays may share the reader's buffers
                start = time.perf_counter()
                builder = flowtable.FlowTableBuilder()
                for family, tables in CT_TABLES_OF.items():
                    for table in tables:
                        for _, vals in dp.conntrack_chunks(table):
                            builder.add(vals, family)
                found.table = builder.build(now_ns, proxy_of)
                found.top, found.matched = flowtable.query(found.table, model.FlowQuery(), TOP_FLOWS)
                found.table_cost_s = time.perf_counter() - start
            if buckets:
                dp.sweep_rate_buckets(idle_ns=RATE_BUCKET_IDLE_NS, now_ns=now_ns)
            return found

        found = await asyncio.to_thread(work)
        self._apply(found, capacity=conntrack_capacity(settings))

    def _apply(self, found: _Found, capacity: int) -> None:
        self.swept_total += found.removed_entries
        if found.cursors[ESTABLISHED] == 0:
            self.passes += 1
        self._cursors = found.cursors
        backends = self._topology.backends
        for f, packets_out, bytes_out, last in found.closed:
            gone = backends.get(f.backend_id)
            if gone is not None and f.flags & CT_F_EST:  # durations of established flows only
                self._measurements.idle_closed(gone.id, max(0, (last - f.created_ns) // 1000))
            self._flow_events.notify(self._flow_events.idle_closed(f, packets_out, bytes_out, last))
        flows, matched = self.view.flows, self.view.matched
        if found.table is not None:
            self._queries.replace(found.table, found.table_cost_s)
            flows, matched = tuple(found.top), found.matched
        elif not self._queries.wanted and self._queries.table is not None:
            self._queries.replace(None)  # nobody looks at flows: the table's memory goes
            flows, matched = (), 0
        self.view = SweepView(self._summary(found.scans, capacity), flows, matched)
        self._count_syn_timeouts([u for scan in found.scans for u in scan.unanswered])

    def _summary(self, scans: Sequence[conntrack.TransientScan], capacity: int) -> model.ConntrackSummary:
        """Established flows from the data path's live counts, the others from the transient scans
        (both families)."""
        tcp = udp = 0
        for m in self._topology.backends.values():
            proxy = self._topology.proxies.get(m.proxy)
            if proxy is not None and proxy.cfg.protocol == "udp":
                udp += m.active_flows
            else:
                tcp += m.active_flows
        return model.ConntrackSummary(
            entries=2 * (tcp + udp) + sum(s.entries for s in scans),
            flows=tcp + udp + sum(s.flows for s in scans),
            tcp=tcp + sum(s.tcp for s in scans),
            udp=udp + sum(s.udp for s in scans),
            closing=sum(s.closing for s in scans),
            capacity=capacity,
            swept_total=self.swept_total,
            embryonic=sum(s.embryonic for s in scans),
        )

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


def _whole(dp: Dataplane, table: str) -> tuple[np.ndarray, np.ndarray]:
    """Every entry of a (small) table, copied out of the reader's buffers."""
    parts = [(k.copy(), v.copy()) for k, v in dp.conntrack_chunks(table)]
    if not parts:
        key_dtype, entry_dtype, _ = CT_DTYPES[6 if table in CT_TABLES_OF[6] else 4]
        return np.zeros(0, dtype=key_dtype), np.zeros(0, dtype=entry_dtype)
    return np.concatenate([k for k, _ in parts]), np.concatenate([v for _, v in parts])


def _expire(dp: Dataplane, keys: np.ndarray, vals: np.ndarray, exp: conntrack.Expiry, found: _Found) -> None:
    """Propose the expired flows to lbtui_reap; note the ones it removed that had not closed."""
    if not len(exp):
        return
    out = dp.expire_conntrack(exp.keys, exp.created, exp.idle_before)
    gone = np.flatnonzero(out["created_ns"] == 0)
    found.removed_entries += 2 * len(gone)
    for i in gone:
        row = int(exp.rows[i])
        v = vals[row]
        if int(v["dir"]) == DIR_FORWARD and not int(v["flags"]) & CT_F_CLOSED:
            found.closed.append(
                (
                    entry_from_record(keys[row], v),
                    int(out["packets"][i]),
                    int(out["bytes"][i]),
                    int(out["idle_before_ns"][i]),
                )
            )
