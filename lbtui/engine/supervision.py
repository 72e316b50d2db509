# SPDX-License-Identifier: Apache-2.0
"""What watches the backends for the engine: health checks and circuit breakers (control.supervisor)
and DNS names (control.dns).

Both are made when the engine starts (they run tasks on its loop), follow the topology after every
change, and report back through callbacks: new factors of a backend (its groups are written again),
events, and DNS answers that changed (the desired state is composed again).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

from lbtui import model
from lbtui.config import Config, ProxyConfig
from lbtui.control.dns import DnsBackendResolver, OnChange, ResolveFn, record_type
from lbtui.control.dns_screen import Address, is_local_address
from lbtui.control.health import CheckFn, Tunnel
from lbtui.control.supervisor import NEUTRAL, BackendKey, BackendSupervisor, Factors, Supervised
from lbtui.dataplane.structs import PROBE_MARK
from lbtui.engine.clock import Clock
from lbtui.engine.desired import Desired, all_backends, split_address
from lbtui.engine.events import EventLog
from lbtui.engine.measurements import Measurements
from lbtui.engine.overrides import Overrides
from lbtui.engine.topology import Topology
from lbtui.observe.hub import ObservabilityHub


def dns_names(config: Config) -> dict[tuple[str, str], tuple[float, str]]:
    """(proxy, host name) -> (refresh interval, record type: AAAA for an IPv6 proxy, else A)."""
    return {
        (p.name, b.host): (b.dns_refresh_s, record_type(p.vip))
        for p in config.proxies
        for b in all_backends(p)
        if b.host
    }


class Supervision:
    def __init__(
        self,
        clock: Clock,
        events: EventLog,
        topology: Topology,
        health_check: CheckFn,
        resolve: ResolveFn | None,
        is_local: Callable[[Address], bool] = is_local_address,
    ):
        """is_local: whether an address is this host's (a DNS answer must not name one)."""
        self._clock = clock
        self._is_local = is_local
        self._vips: frozenset[Address] = frozenset()
        self._events = events
        self._topology = topology
        self._health_check = health_check
        self._resolve = resolve
        self.supervisor: BackendSupervisor | None = None
        self.dns: DnsBackendResolver | None = None

    def start(
        self,
        config: Config,
        hub: ObservabilityHub,
        on_factors: Callable[[BackendKey, Factors], None],
        on_dns_change: OnChange,
    ) -> None:
        """Make the supervisor and the resolver (on the running loop)."""
        self._vips = vips_of(config)
        self.supervisor = BackendSupervisor(
            on_change=on_factors,
            on_event=self._on_event,
            on_health_latency=lambda key, s: hub.observe_health_check(key.proxy, key.address, s),
            clock=self._clock.monotonic,
            wall=self._clock.time,
            check=self._health_check,
        )
        self.dns = DnsBackendResolver(
            config.settings.dns.nameservers,
            on_change=on_dns_change,
            clock=self._clock.time,
            resolve_fn=self._resolve,
            max_records=config.settings.dns.max_records,
            refuse=self._refuse,
            on_warning=self._on_dns_warning,
        )

    async def close(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.close()
        if self.dns is not None:
            await self.dns.close()

    def _on_event(
        self, kind: str, message: str, level: model.Level, proxy: str | None, backend: str | None
    ) -> None:
        self._events.emit(kind, message, level=level, proxy=proxy, backend=backend)

    def _refuse(self, address: Address) -> str | None:
        """A DNS answer's address that is ours: one of the VIPs, or an address of this host."""
        if address in self._vips:
            return "a VIP of this load balancer"
        if self._is_local(address):
            return "an address of this host"
        return None

    def _on_dns_warning(self, proxy: str, host: str, refused: str) -> None:
        self._events.emit("dns", f"{proxy}: {host}: {refused}", level=model.Level.WARNING, proxy=proxy)

    # ---- following the topology -----------------------------------------------------------------

    def configure(self, config: Config, desired: Desired, overrides: Overrides) -> None:
        """Supervise exactly the backends of `desired`, with the operators' holds of `overrides`;
        follow exactly the configured names.

        Called before the topology applies `desired`, so a backend that comes (back) with a hold
        (a circuit held open, health forced down) never gets a slot it should not have."""
        if self.supervisor is not None:
            items: dict[BackendKey, Supervised] = {}
            for name, spec in desired.proxies.items():
                for group in spec.groups.values():
                    for address in group:
                        ref = (name, address)
                        ip, port = split_address(address)
                        items[BackendKey(name, address)] = Supervised(
                            key=BackendKey(name, address),
                            ip=ip,
                            port=port,
                            health=spec.cfg.health,
                            circuit=spec.cfg.circuit_breaker,
                            paused=ref in overrides.maintenance,
                            forced_health=overrides.health.get(ref),
                            circuit_hold=overrides.circuits.get(ref),
                            tunnel=tunnel_of(spec.cfg),
                        )
            self.supervisor.configure(list(items.values()))
        self._vips = vips_of(config)
        if self.dns is not None:
            self.dns.max_records = config.settings.dns.max_records
            names = dns_names(config)
            self.dns.set_names({k: v[0] for k, v in names.items()}, {k: v[1] for k, v in names.items()})

    async def resolve_first(self, config: Config) -> None:
        """First resolution before traffic, so DNS backends exist from the start."""
        assert self.dns is not None
        types = {key: rdtype for key, (_, rdtype) in dns_names(config).items()}
        names = sorted(types)
        results = await asyncio.gather(*(self.dns.resolve_now(p, h, rdtype=types[(p, h)]) for p, h in names))
        for (p, h), res in zip(names, results, strict=True):
            if res is None:
                self._events.emit(
                    "dns",
                    f"{p}: {h} did not resolve; it has no backends until it does",
                    level=model.Level.WARNING,
                    proxy=p,
                )
            else:
                self._events.emit("dns", f"{p}: {h} resolves to {', '.join(res.addresses)}", proxy=p)

    # ---- reading --------------------------------------------------------------------------------

    def factors(self, key: BackendKey) -> Factors:
        return self.supervisor.factors(key) if self.supervisor is not None else NEUTRAL

    def addresses(self, proxy: str, host: str) -> tuple[str, ...]:
        return self.dns.addresses(proxy, host) if self.dns is not None else ()

    def dns_status(self) -> tuple[model.DnsStatus, ...]:
        return self.dns.status() if self.dns is not None else ()

    def transitions(self) -> tuple[model.CircuitTransition, ...]:
        return self.supervisor.transitions() if self.supervisor is not None else ()

    # ---- the control tick -----------------------------------------------------------------------

    def feed(self, measurements: Measurements, syn_failures: dict[BackendKey, int]) -> None:
        """The data path's handshakes and failures (plus SYNs left unanswered) to the circuit
        breakers; then their time-driven changes and slow-start ramps."""
        if self.supervisor is None:
            return
        totals: dict[BackendKey, list[int]] = {}
        for m in self._topology.backends.values():
            c = measurements.counters.get(m.id)
            if c is not None:
                t = totals.setdefault(m.key, [0, 0])
                t[0] += c.handshakes
                t[1] += c.conn_failures
        for key, (handshakes, failures) in totals.items():
            self.supervisor.observe_counters(key, handshakes, failures + syn_failures.get(key, 0))
        self.supervisor.tick()


def tunnel_of(cfg: ProxyConfig) -> Tunnel | None:
    """DSR backends are checked on the VIP through the tunnel (bpf/lb_encap.h, tc_ipip_probe), by the
    proxy's first interface: proof that the backend answers what clients' packets become."""
    if cfg.forwarding != "ipip":
        return None
    return Tunnel(vip=cfg.vip, interface=cfg.interfaces[0], mark=PROBE_MARK)


def vips_of(config: Config) -> frozenset[Address]:
    return frozenset(ipaddress.ip_address(p.vip) for p in config.proxies)
