# SPDX-License-Identifier: Apache-2.0
"""Snapshot building: the engine's state as one immutable model.Snapshot for the front ends.

A snapshot is built on the engine's loop from the topology (proxies, groups, members), the
measurements (counters, rates, latency), the last sweep and the supervisors' status, then replaced
whole; front ends on any thread read the latest one and never see a half-built state.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbtui import model
from lbtui.engine.group import Member
from lbtui.engine.ids import DEFAULT_GROUP
from lbtui.engine.measurements import Measurements, add_counters
from lbtui.engine.sweep import SweepView
from lbtui.engine.topology import Proxy, Topology


@dataclass(frozen=True)
class Status:
    """What a snapshot says beyond the topology and its measurements."""

    taken_at: float
    started_at: float
    config_path: str | None
    running: bool
    dns: tuple[model.DnsStatus, ...] = ()
    circuit_log: tuple[model.CircuitTransition, ...] = ()
    events_dropped: int = 0
    overrides: tuple[model.OverrideView, ...] = ()
    state_file: str | None = None


def backend_view(m: Member, measured: Measurements) -> model.BackendView:
    hs = measured.latency_view(m).handshake
    return model.BackendView(
        proxy=m.proxy,
        address=m.address,
        group=m.group,
        configured_weight=m.weight,
        effective_weight=m.effective,
        counters=measured.counters.get(m.id, model.Counters()),
        active_flows=m.active_flows,
        health=m.factors.health_state,
        circuit=m.factors.circuit_state,
        drain=m.drain,
        source=m.source,
        new_flows_per_s=measured.rate(m.id, "new_flows"),
        bytes_in_per_s=measured.rate(m.id, "bytes_in"),
        bytes_out_per_s=measured.rate(m.id, "bytes_out"),
        packets_in_per_s=measured.rate(m.id, "packets_in"),
        packets_out_per_s=measured.rate(m.id, "packets_out"),
        health_check_ms=m.factors.health_check_ms,
        last_change=m.reason,
        handshake_p50_ms=hs.p50_ms if hs else None,
        handshake_p99_ms=hs.p99_ms if hs else None,
        maintenance=m.maintenance,
        health_forced=m.factors.health_forced,
        circuit_held=m.factors.circuit_held,
    )


def service_view(proxy: Proxy, measured: Measurements) -> model.ServiceView:
    cfg = proxy.cfg
    counters, drops = measured.services.get(proxy.service_id, (model.Counters(), {}))
    default = proxy.groups.get(DEFAULT_GROUP)
    routes = tuple(
        model.RouteView(cidr=label, backends=tuple(backend_view(m, measured) for m in g.members.values()))
        for label, g in proxy.groups.items()
        if label != DEFAULT_GROUP
    )
    lim = proxy.limits
    return model.ServiceView(
        name=cfg.name,
        vip=cfg.vip,
        port=cfg.port,
        protocol=cfg.protocol,
        algorithm=cfg.algorithm,
        interfaces=tuple(cfg.interfaces),
        backends=tuple(backend_view(m, measured) for m in default.members.values()) if default else (),
        routes=routes,
        counters=counters,
        active_flows=sum(m.active_flows for g in proxy.groups.values() for m in g.members.values()),
        drops=drops,
        panic=any(g.panic for g in proxy.groups.values()),
        rate_limit=model.RateLimitView(
            per_source_rate=lim.src_rate or None,
            per_source_burst=lim.src_burst or None,
            per_backend_rate=lim.be_rate or None,
            per_backend_burst=lim.be_burst or None,
        ),
    )


def build_snapshot(
    status: Status, topology: Topology, measured: Measurements, sweep: SweepView
) -> model.Snapshot:
    services = tuple(service_view(p, measured) for p in topology.proxies.values())
    totals = model.Counters()
    for s in services:
        totals = add_counters(totals, s.counters)
    return model.Snapshot(
        taken_at=status.taken_at,
        started_at=status.started_at,
        config_path=status.config_path,
        services=services,
        conntrack=sweep.summary,
        flows=sweep.flows,
        flows_matched=sweep.matched,
        totals=totals,
        dns=status.dns,
        latency=tuple(measured.latency_view(m) for m in topology.backends.values()),
        circuit_log=status.circuit_log,
        events_dropped=status.events_dropped,
        running=status.running,
        overrides=status.overrides,
        state_file=status.state_file,
        fast_path=measured.fast_path,
    )


def empty_snapshot(status: Status, sweep: SweepView) -> model.Snapshot:
    """Before the first publication."""
    return model.Snapshot(
        taken_at=status.taken_at,
        started_at=status.started_at,
        config_path=status.config_path,
        services=(),
        conntrack=sweep.summary,
        flows=(),
        running=status.running,
    )
