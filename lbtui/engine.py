# SPDX-License-Identifier: Apache-2.0
"""The control-plane facade: runs the load balancer for one configuration, without any UI.

`Engine` owns the data path (lbtui.dataplane), turns the configuration into map contents, runs the
control loops (counters, health checks and circuit breakers, least-connections, DNS, conntrack
sweep, drains) on one asyncio loop, executes commands and publishes immutable snapshots and events.

Who gets traffic changes in one place only: `_write_group` composes the effective weights of a
group (control.weights) from its inputs (configured or runtime weight, health, drain, circuit,
algorithm factor) and writes the selection-table delta (control.selection).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import watchfiles

from lbtui import model
from lbtui.config import BackendConfig, Config, ConfigError, ProxyConfig, load_config
from lbtui.control import conntrack, selection
from lbtui.control.dns import DnsBackendResolver
from lbtui.control.supervisor import BackendKey, BackendSupervisor, Factors, Supervised, SynTimeoutCounter
from lbtui.control.weights import BackendState, compose
from lbtui.dataplane import Dataplane, DataplaneSpec, RawFlowEvent
from lbtui.dataplane import structs as _structs
from lbtui.dataplane.maps import FlowEntry, LatencyCounts, RateLimits
from lbtui.observe.histogram import histogram_from_counts
from lbtui.observe.hub import ObservabilityHub

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
MAX_PENDING_EVENTS = 65_536  # flow events waiting for the loop; beyond, they are dropped and counted
TOP_FLOWS = 200
FLOW_QUERY_KEEP_S = 30.0  # after a front end's last flow query, sweeps keep every flow this long
MAX_WEIGHT = 2**31 - 1
DEFAULT_GROUP = "default"
# Weights are scaled before composition so that fractional factors (slow start, half-open trickle,
# least-connections 1/(1+active)) keep their proportions after rounding to integer slot weights.
WEIGHT_SCALE = 1000
CONTROL_TICK_S = 0.25
RATE_BUCKET_IDLE_NS = 60_000_000_000
NEUTRAL = Factors(1.0, model.Health.UNKNOWN, 1.0, None)


@dataclass
class _Backend:
    """Runtime state of one backend in one group (mutable; never leaves the engine)."""

    id: int
    proxy: str
    group: str
    ip: str
    port: int
    configured: int  # from the configuration
    weight: int  # runtime weight: configured, or set by a command
    source: str = "static"
    drain: model.DrainState = model.DrainState.ACTIVE
    drain_deadline: float | None = None
    drain_cut: bool = False
    factors: Factors = NEUTRAL
    algorithm_factor: float = 1.0
    effective: int = 0
    reason: str = ""
    active_flows: int = 0
    expired: int = 0  # flows removed by the idle sweep without a close (least-connections bookkeeping)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def key(self) -> BackendKey:
        return BackendKey(self.proxy, self.address)


def _no_table() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


@dataclass
class _Group:
    id: int
    label: str
    backends: dict[str, _Backend] = field(default_factory=dict)
    table: np.ndarray = field(default_factory=lambda: _no_table())  # slot -> backend id, as in the map
    inputs: tuple[object, ...] = ()  # what the table was last built from
    panic: bool = False


@dataclass
class _Proxy:
    cfg: ProxyConfig
    service_id: int
    limits: RateLimits
    groups: dict[str, _Group] = field(default_factory=dict)


def config_limits(cfg: ProxyConfig) -> RateLimits:
    rl = cfg.rate_limit
    src = rl.per_source if rl else None
    be = rl.per_backend if rl else None
    return RateLimits(
        src_rate=src.rate if src else 0,
        src_burst=src.burst if src else 0,
        be_rate=be.rate if be else 0,
        be_burst=be.burst if be else 0,
    )


PIN_ROOT = "/run/lbtui/bpffs"


def instance_name(config: Config) -> str:
    """An instance is named after its control socket (one socket per running instance)."""
    base = config.settings.control_socket.rstrip("/").rsplit("/", 1)[-1]
    return base.removesuffix(".sock") or "lbtui"


def dataplane_spec(config: Config) -> DataplaneSpec:
    s = config.settings
    return DataplaneSpec(
        table_size=s.table_size,
        conntrack_entries=2 * s.max_connections,
        pin_dir=f"{PIN_ROOT}/{instance_name(config)}",
    )


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected a backend as ip:port, got {address!r}")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"expected an IPv4 address in {address!r}") from None
    p = int(port)
    if not 1 <= p <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return host, p


def _all_backends(p: ProxyConfig) -> list[BackendConfig]:
    return [*p.backends, *(b for r in p.source_routes for b in r.backends)]


def _valid_weight(w: object) -> bool:
    return isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_WEIGHT


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        dataplane: Dataplane | None = None,
        allow_stdout: bool = True,
        keep_dataplane: bool = False,
    ):
        self.config = config
        self.keep_dataplane = keep_dataplane
        # ids found in pinned maps of an earlier run, claimed by the matching configuration items
        self._adopt_services: dict[tuple[str, int, str], int] = {}
        self._adopt_groups: dict[tuple[int, str], int] = {}
        self._adopt_backends: dict[tuple[int, str], int] = {}
        self._adopt_tables: dict[int, np.ndarray] = {}
        self._allow_stdout = allow_stdout
        self.observability: ObservabilityHub | None = None
        self._dp = dataplane or Dataplane(dataplane_spec(config), config.settings.xdp_mode)
        self._proxies: dict[str, _Proxy] = {}
        self._backends_by_id: dict[int, _Backend] = {}
        self._free_backend_ids: collections.deque[int] = collections.deque()
        self._next_backend_id = 0
        self._free_groups: list[int] = []
        self._next_group = 0
        self._free_services: list[int] = []
        self._next_service = 0
        self._events: collections.deque[model.Event] = collections.deque(maxlen=MAX_EVENTS)
        self._events_lock = threading.Lock()
        self._seq = 0
        self._snapshot: model.Snapshot | None = None
        self._started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flow_event_flags = (False, False)  # (closed, new) flow events wanted from the data path
        self._latency: dict[int, LatencyCounts] = {}
        self._idle_durations: dict[int, tuple[list[int], int]] = {}  # flows closed by the idle sweep
        self._pending_events = 0  # flow events handed to the loop and not yet processed
        self._pending_lock = threading.Lock()
        self.flow_events_dropped = 0
        self.flow_observers: list[Callable[[model.FlowEvent], None]] = []
        self.snapshot_decorators: list[Callable[[model.Snapshot], model.Snapshot]] = []
        self._counters: dict[int, model.Counters] = {}
        self._closes: dict[int, int] = {}
        self._service_counters: dict[int, tuple[model.Counters, dict[str, int]]] = {}
        self._ct_summary = model.ConntrackSummary(capacity=2 * config.settings.max_connections)
        self._flows: tuple[model.FlowView, ...] = ()
        self._flows_matched = 0
        # every live flow of the last sweep, for front ends' queries; each query's answer is kept
        # until the next sweep (consoles refresh more often than the sweep runs)
        self._flow_table: conntrack.FlowTable | None = None
        self._query_cache: dict[model.FlowQuery, tuple[tuple[model.FlowView, ...], int]] = {}
        self._query_lock = threading.Lock()
        # the sweep keeps every flow only while front ends ask for queries (it costs a copy)
        self._flows_wanted_until = 0.0
        self._swept_total = 0
        self._rates: dict[tuple[int, str], tuple[float, int, float | None]] = {}
        self._running = False
        self._stopped = asyncio.Event()
        self._supervisor: BackendSupervisor | None = None
        self._dns: DnsBackendResolver | None = None
        self._syn_timeouts = SynTimeoutCounter()
        self._syn_failures: collections.Counter[BackendKey] = collections.Counter()
        self._last_least_conn = 0.0
        self._watch_ready = asyncio.Event()
        self.heartbeat = time.monotonic()  # the control loop's last tick (headless feeds systemd's watchdog)

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the programs, fill the maps from the configuration, attach, start the loops."""
        self._loop = asyncio.get_running_loop()
        self.observability = hub = ObservabilityHub(self.snapshot, allow_stdout=self._allow_stdout)
        self.flow_observers.append(hub.observe)
        self.snapshot_decorators.append(hub.decorate)
        self._supervisor = BackendSupervisor(
            on_change=self._on_factors,
            on_event=self._on_supervisor_event,
            on_health_latency=lambda key, s: hub.observe_health_check(key.proxy, key.address, s),
        )
        self._dns = DnsBackendResolver(self.config.settings.dns.nameservers, on_change=self._on_dns_change)
        try:
            await self._resolve_dns_names(self.config)
            self._dp.load()
            if self._dp.adopted:
                self._adopt()
            self._apply_config(self.config, first=True)
            if self._dp.adopted:
                self._release_unclaimed()
            self._dp.set_interfaces(self._wanted_interfaces(self.config))
            self._dp.start_event_reader(self._on_raw_events)
            hub.configure(self.config.settings)
        except BaseException:
            hub.close()
            self._dp.close()
            await self._supervisor.close()
            await self._dns.close()
            raise
        self._running = True
        self._refresh_counters()
        self._publish_snapshot()
        for coro in (self._control_loop(), self._sweep_loop(), self._watch_config()):
            self._tasks.append(asyncio.create_task(coro))
        if self.config.path:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watch_ready.wait(), timeout=5)
        ifaces = ", ".join(self._dp.interfaces)
        self._emit("started", f"load balancer running on {ifaces} with {len(self._proxies)} proxies")

    async def stop(self) -> None:
        if not self._running:
            self._dp.close()
            self._stopped.set()
            return
        self._running = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._supervisor is not None:
            await self._supervisor.close()
        if self._dns is not None:
            await self._dns.close()
        self._dp.close(keep=self.keep_dataplane)
        await asyncio.sleep(0)  # the reader's last hand-overs run on the loop before the logs close
        if self.observability is not None:
            self.observability.close()  # after the data path: the last events are flushed too
        how = (
            "programs left attached and maps pinned (--keep-dataplane)"
            if self.keep_dataplane
            else "programs detached and unpinned"
        )
        self._emit("stopped", f"load balancer stopped; {how}")
        self._publish_snapshot()
        self._stopped.set()

    @property
    def running(self) -> bool:
        return self._running

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ---- configuration -> maps ------------------------------------------------------------------

    @staticmethod
    def _wanted_interfaces(config: Config) -> list[str]:
        return list(dict.fromkeys(i for p in config.proxies for i in p.interfaces))

    def _alloc(self, free: list[int], attr: str, limit: int, what: str) -> int:
        if free:
            return free.pop()
        n = int(getattr(self, attr))
        if n >= limit:
            raise RuntimeError(f"too many {what} (the data path holds {limit})")
        setattr(self, attr, n + 1)
        return n

    def _alloc_backend_id(self) -> int:
        # fresh ids first, then the oldest freed: a removed backend's counters are not inherited soon
        if self._next_backend_id < self._dp.spec.max_backends:
            self._next_backend_id += 1
            return self._next_backend_id - 1
        if self._free_backend_ids:
            return self._free_backend_ids.popleft()
        raise RuntimeError(f"too many backends (the data path holds {self._dp.spec.max_backends})")

    def _apply_config(self, config: Config, first: bool = False) -> list[str]:
        """Make the maps match `config` (a difference against the running state); what changed."""
        changes: list[str] = []
        # ring-buffer events feed only the access log (latency histograms live in the data path):
        # without a log, a connection costs userspace nothing
        log_cfg = config.settings.access_log
        logging_on = bool(log_cfg.file or log_cfg.stdout or log_cfg.syslog)
        events = (logging_on, logging_on and log_cfg.log_new)
        if events != self._flow_event_flags:
            self._flow_event_flags = events
            for existing in self._proxies.values():
                self._write_service(existing)
        wanted = {p.name: p for p in config.proxies}
        for name in [n for n in self._proxies if n not in wanted]:
            self._remove_proxy(name)
            changes.append(f"removed proxy {name}")
        for pcfg in config.proxies:
            proxy = self._proxies.get(pcfg.name)
            if proxy is not None and (proxy.cfg.vip, proxy.cfg.port, proxy.cfg.protocol) != (
                pcfg.vip,
                pcfg.port,
                pcfg.protocol,
            ):
                self._remove_proxy(pcfg.name)
                changes.append(f"{pcfg.name}: moved to {pcfg.vip}:{pcfg.port}/{pcfg.protocol}")
                proxy = None
            if proxy is None:
                sid = self._adopt_services.pop((pcfg.vip, pcfg.port, pcfg.protocol), None)
                if sid is None:
                    sid = self._alloc(
                        self._free_services, "_next_service", self._dp.spec.max_services, "proxies"
                    )
                proxy = _Proxy(cfg=pcfg, service_id=sid, limits=config_limits(pcfg))
                self._proxies[pcfg.name] = proxy
                if not first:
                    changes.append(f"added proxy {pcfg.name}")
            elif config_limits(pcfg) != config_limits(proxy.cfg):
                proxy.limits = config_limits(pcfg)  # a changed file wins over a runtime command
                changes.append(f"{pcfg.name}: rate limits changed")
            if proxy.cfg != pcfg and proxy.cfg.algorithm != pcfg.algorithm:
                changes.append(f"{pcfg.name}: algorithm {proxy.cfg.algorithm} -> {pcfg.algorithm}")
                for g in proxy.groups.values():
                    g.table = _no_table()  # rebuild whole tables for the new index scheme
            proxy.cfg = pcfg
            wanted_groups = {DEFAULT_GROUP: self._group_members(pcfg.name, pcfg.backends)}
            for route in pcfg.source_routes:
                wanted_groups[route.cidr] = self._group_members(pcfg.name, route.backends)
            for label in [g for g in proxy.groups if g not in wanted_groups]:
                self._remove_group(proxy, label)
                changes.append(f"{pcfg.name}: removed route {label}")
            for label, members in wanted_groups.items():
                group = proxy.groups.get(label)
                if group is None:
                    gid = self._adopt_groups.pop((proxy.service_id, label), None)
                    if gid is None:
                        gid = self._alloc(
                            self._free_groups, "_next_group", self._dp.spec.max_groups, "groups"
                        )
                    group = _Group(id=gid, label=label, table=self._adopt_tables.pop(gid, _no_table()))
                    proxy.groups[label] = group
                    if label != DEFAULT_GROUP and not first:
                        changes.append(f"{pcfg.name}: added route {label}")
                changes += self._sync_group(proxy, group, members)
            self._write_service(proxy)
            for label, group in proxy.groups.items():
                if label != DEFAULT_GROUP:
                    self._dp.maps.set_route(proxy.service_id, label, group.id)
        self.config = config
        self._configure_supervisor()
        if self._dns is not None:
            self._dns.set_names(
                {
                    (p.name, b.host): b.dns_refresh_s
                    for p in config.proxies
                    for b in _all_backends(p)
                    if b.host
                }
            )
        return changes

    def _adopt(self) -> None:
        """Read the ids and tables an earlier run left in the pinned maps, to take them over."""
        maps = self._dp.maps
        services = maps.read_services()
        for vip, port, proto, sid, default_group in services:
            self._adopt_services[(vip, port, proto)] = sid
            self._adopt_groups[(sid, DEFAULT_GROUP)] = default_group
        for sid, cidr, gid in maps.read_routes():
            self._adopt_groups[(sid, cidr)] = gid
        backends = maps.read_backends()
        for gid in set(self._adopt_groups.values()):
            table = maps.read_table(gid)
            self._adopt_tables[gid] = np.asarray(table, dtype=np.int64)
            for bid in set(table) - {selection.EMPTY}:
                if bid in backends:
                    ip, port, _active = backends[bid]
                    self._adopt_backends[(gid, f"{ip}:{port}")] = bid
        # id allocation continues above everything the earlier run used
        self._next_service = max((sid for *_, sid, _ in services), default=-1) + 1
        self._next_group = max(self._adopt_groups.values(), default=-1) + 1
        self._next_backend_id = max(backends, default=-1) + 1
        used_groups = set(self._adopt_groups.values())
        self._free_groups = [g for g in range(self._next_group) if g not in used_groups]
        used_services = set(self._adopt_services.values())
        self._free_services = [i for i in range(self._next_service) if i not in used_services]
        used_backends = set(self._adopt_backends.values())
        self._free_backend_ids.extend(b for b in range(self._next_backend_id) if b not in used_backends)
        flows = maps.conntrack_count() // 2
        self._emit(
            "adopted",
            f"took over the data path of an earlier run: {len(services)} services, "
            f"{len(backends)} backends, about {flows} flows in conntrack",
        )

    def _release_unclaimed(self) -> None:
        """Pinned state the configuration no longer has: delete it (flows already tracked go on)."""
        maps = self._dp.maps
        for (vip, port, proto), sid in self._adopt_services.items():
            maps.delete_service(vip, port, proto)
            self._free_services.append(sid)
        for (sid, label), gid in self._adopt_groups.items():
            if label != DEFAULT_GROUP:
                maps.delete_route(sid, label)
            self._clear_table(gid)
            self._free_groups.append(gid)
        live = set(self._backends_by_id)
        for bid, (ip, port, active) in maps.read_backends().items():
            if active and bid not in live:
                maps.set_backend(bid, ip, port, active=False)
        self._adopt_services.clear()
        self._adopt_groups.clear()
        self._adopt_backends.clear()
        self._adopt_tables.clear()

    def _write_service(self, proxy: _Proxy) -> None:
        cfg = proxy.cfg
        self._dp.maps.set_service(
            cfg.vip,
            cfg.port,
            cfg.protocol,
            proxy.service_id,
            proxy.groups[DEFAULT_GROUP].id,
            cfg.algorithm,
            events=self._flow_event_flags[0],
            limits=proxy.limits,
            events_new=self._flow_event_flags[1],
        )

    def _group_members(self, proxy: str, backends: Sequence[BackendConfig]) -> dict[str, tuple[int, str]]:
        """address -> (weight, source) of a group: static backends, then the addresses of DNS names.

        The A records of a name share its weight (each gets weight // n, at least 1); an address that
        is also configured statically keeps its static entry.
        """
        members = {str(b.address): (b.weight, "static") for b in backends if b.address is not None}
        for b in backends:
            if not b.host or self._dns is None:
                continue
            addrs = self._dns.addresses(proxy, b.host)
            for ip in addrs:
                members.setdefault(f"{ip}:{b.port}", (max(1, b.weight // len(addrs)), f"dns:{b.host}"))
        return members

    def _sync_group(self, proxy: _Proxy, group: _Group, wanted: dict[str, tuple[int, str]]) -> list[str]:
        changes = []
        name = proxy.cfg.name
        # removed backends leave the selection table first and are deactivated after it is written:
        # a new flow must never pick a slot that still points at a deactivated backend
        removed = [group.backends.pop(a) for a in [a for a in group.backends if a not in wanted]]
        changes += [f"{name}: removed backend {be.address}" for be in removed]
        for address, (weight, source) in wanted.items():
            be = group.backends.get(address)
            if be is None:
                ip, port = split_address(address)
                adopted_id = self._adopt_backends.pop((group.id, address), None)
                be = _Backend(
                    id=self._alloc_backend_id() if adopted_id is None else adopted_id,
                    proxy=name,
                    group=group.label,
                    ip=ip,
                    port=port,
                    configured=weight,
                    weight=weight,
                    source=source,
                )
                if self._supervisor is not None:
                    be.factors = self._supervisor.factors(be.key)
                if adopted_id is None:
                    self._dp.maps.clear_backend_stats(be.id)  # adopted backends keep their counters
                    self._idle_durations.pop(be.id, None)
                self._dp.maps.set_backend(be.id, ip, port, active=True)
                group.backends[address] = be
                self._backends_by_id[be.id] = be
                changes.append(f"{name}: added backend {address} weight {weight}")
            elif be.configured != weight:
                changes.append(f"{name}: {address} weight {be.weight} -> {weight}")
                be.configured = weight
                be.weight = weight
        self._write_group(proxy, group, "configuration")
        for be in removed:
            self._retire_backend(be)
        return changes

    def _retire_backend(self, be: _Backend) -> None:
        # tracked flows keep working (conntrack holds the backend's address); only new picks stop,
        # because no selection table points at it any more
        self._dp.maps.set_backend(be.id, be.ip, be.port, active=False)
        self._backends_by_id.pop(be.id, None)
        self._free_backend_ids.append(be.id)

    def _remove_group(self, proxy: _Proxy, label: str) -> None:
        group = proxy.groups.pop(label)
        if label != DEFAULT_GROUP:
            self._dp.maps.delete_route(proxy.service_id, label)
        for be in group.backends.values():
            self._retire_backend(be)
        self._clear_table(group.id)
        self._free_groups.append(group.id)

    def _remove_proxy(self, name: str) -> None:
        proxy = self._proxies.pop(name)
        cfg = proxy.cfg
        self._dp.maps.delete_service(cfg.vip, cfg.port, cfg.protocol)
        for label in list(proxy.groups):
            self._remove_group(proxy, label)
        self._free_services.append(proxy.service_id)

    # ---- the one writer of selection state ------------------------------------------------------

    def _write_group(self, proxy: _Proxy, group: _Group, cause: str) -> None:
        least_conn = proxy.cfg.algorithm == "least-connections"
        comp = compose(
            [
                BackendState(
                    key=b.address,
                    configured=b.weight * WEIGHT_SCALE,
                    health=b.factors.health,
                    drained=b.drain != model.DrainState.ACTIVE,
                    circuit=b.factors.circuit,
                    algorithm=b.algorithm_factor if least_conn else 1.0,
                )
                for b in group.backends.values()
            ]
        )
        by_id = {b.id: comp.weights.get(b.address, 0) for b in group.backends.values()}
        size = self._dp.spec.table_size
        inputs = (proxy.cfg.algorithm, tuple(sorted(by_id.items())))
        built = len(group.table) == size
        if inputs != group.inputs or not built:  # the same weights make the same table: skip
            if proxy.cfg.algorithm == "maglev":
                named = {b.id: (b.address, by_id[b.id]) for b in group.backends.values() if by_id[b.id] > 0}
                new = np.asarray(
                    selection.maglev_table(named, size) if named else [selection.EMPTY] * size, dtype=np.int64
                )
            else:
                new = selection.weighted_table_array(by_id, size, group.table if built else None)
            self._write_table(group, new)
            group.inputs = inputs
        where = f"{proxy.cfg.name}/{group.label}"
        if comp.panic and not group.panic:
            self._emit(
                "panic",
                f"{where}: every backend is out of rotation; spreading traffic over all non-drained backends",
                level=model.Level.WARNING,
                proxy=proxy.cfg.name,
            )
        elif group.panic and not comp.panic:
            self._emit("panic", f"{where}: panic over, normal selection again", proxy=proxy.cfg.name)
        group.panic = comp.panic
        for b in group.backends.values():
            scaled = comp.weights.get(b.address, 0)
            eff = max(1, round(scaled / WEIGHT_SCALE)) if scaled > 0 else 0
            b.reason = comp.reasons.get(b.address, "")
            if eff != b.effective and cause != "least-connections":
                self._emit(
                    "weight",
                    f"{b.address} effective weight {b.effective} -> {eff} ({b.reason}; {cause})",
                    proxy=b.proxy,
                    backend=b.address,
                )
            b.effective = eff
        if group.backends and not any(comp.weights.values()) and cause != "least-connections":
            self._emit(
                "weight",
                f"{where}: no backend can take new connections; they are refused",
                level=model.Level.WARNING,
                proxy=proxy.cfg.name,
            )

    # ---- inputs of the writer: health/circuit, DNS ----------------------------------------------

    def _configure_supervisor(self) -> None:
        if self._supervisor is None:
            return
        items: dict[BackendKey, Supervised] = {}
        for proxy in self._proxies.values():
            for group in proxy.groups.values():
                for be in group.backends.values():
                    items[be.key] = Supervised(
                        key=be.key,
                        ip=be.ip,
                        port=be.port,
                        health=proxy.cfg.health,
                        circuit=proxy.cfg.circuit_breaker,
                    )
        self._supervisor.configure(list(items.values()))

    def _on_factors(self, key: BackendKey, factors: Factors) -> None:
        proxy = self._proxies.get(key.proxy)
        if proxy is None:
            return
        for group in proxy.groups.values():
            be = group.backends.get(key.address)
            if be is not None:
                be.factors = factors
                self._write_group(proxy, group, factors.reason or "health/circuit")

    def _on_supervisor_event(
        self, kind: str, message: str, level: model.Level, proxy: str | None, backend: str | None
    ) -> None:
        self._emit(kind, message, level=level, proxy=proxy, backend=backend)

    async def _resolve_dns_names(self, config: Config) -> None:
        """First resolution before traffic, so DNS backends exist from the start."""
        assert self._dns is not None
        names = sorted({(p.name, b.host) for p in config.proxies for b in _all_backends(p) if b.host})
        results = await asyncio.gather(*(self._dns.resolve_now(p, h) for p, h in names))
        for (p, h), res in zip(names, results, strict=True):
            if res is None:
                self._emit(
                    "dns",
                    f"{p}: {h} did not resolve; it has no backends until it does",
                    level=model.Level.WARNING,
                    proxy=p,
                )
            else:
                self._emit("dns", f"{p}: {h} resolves to {', '.join(res.addresses)}", proxy=p)

    def _on_dns_change(self, proxy: str, host: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        self._emit(
            "dns",
            f"{proxy}: {host} now resolves to {', '.join(new) or 'nothing'} "
            f"(was {', '.join(old) or 'nothing'})",
            proxy=proxy,
        )
        if self._running:
            self._apply_config(self.config)
            self._publish_snapshot()

    # ---- commands -------------------------------------------------------------------------------

    async def execute(self, cmd: model.Command) -> model.CommandResult:
        try:
            result = self._execute(cmd)
        except Exception as exc:  # a command never takes the engine down
            log.exception("command %s", cmd)
            result = model.CommandResult(False, f"internal error: {exc}")
        if not result.ok:  # a successful command shows as its own event (drain, weight, reload, ...)
            self._emit(
                "command",
                f"{type(cmd).__name__} refused: {result.message}",
                level=model.Level.ERROR,
                proxy=getattr(cmd, "proxy", None),
                backend=getattr(cmd, "backend", None),
            )
        self._publish_snapshot()
        return result

    def _find(self, proxy_name: str, address: str) -> tuple[_Proxy, list[_Backend]]:
        proxy = self._proxies.get(proxy_name)
        if proxy is None:
            have = ", ".join(sorted(self._proxies)) or "none"
            raise LookupError(f"no proxy named {proxy_name!r} (have: {have})")
        found = [g.backends[address] for g in proxy.groups.values() if address in g.backends]
        if not found:
            raise LookupError(f"proxy {proxy_name!r} has no backend {address}")
        return proxy, found

    def _proxy(self, name: str) -> _Proxy:
        proxy = self._proxies.get(name)
        if proxy is None:
            raise LookupError(f"no proxy named {name!r}")
        return proxy

    def _execute(self, cmd: model.Command) -> model.CommandResult:
        try:
            match cmd:
                case model.SetWeight():
                    return self._set_weight(cmd)
                case model.Drain():
                    return self._drain(cmd)
                case model.Undrain(proxy=p, backend=a):
                    proxy, bes = self._find(p, a)
                    for be in bes:
                        be.drain, be.drain_deadline = model.DrainState.ACTIVE, None
                        self._write_group(proxy, proxy.groups[be.group], "undrain")
                    self._emit("drain", f"{a} back in rotation", proxy=p, backend=a)
                    return model.CommandResult(True, f"{a} back in rotation")
                case model.AddBackend(proxy=p, backend=a, weight=w):
                    proxy = self._proxy(p)
                    split_address(a)
                    if not _valid_weight(w):
                        return model.CommandResult(
                            False, f"weight must be an integer 1..{MAX_WEIGHT}, got {w!r}"
                        )
                    group = proxy.groups[DEFAULT_GROUP]
                    if a in group.backends:
                        return model.CommandResult(False, f"{p} already has backend {a}")
                    wanted = {addr: (b.weight, b.source) for addr, b in group.backends.items()}
                    wanted[a] = (w, "static")
                    self._sync_group(proxy, group, wanted)
                    self._configure_supervisor()
                    return model.CommandResult(True, f"added {a} weight {w} to {p}")
                case model.RemoveBackend(proxy=p, backend=a):
                    proxy = self._proxy(p)
                    group = proxy.groups[DEFAULT_GROUP]
                    if a not in group.backends:
                        return model.CommandResult(False, f"{p} has no backend {a} in its default group")
                    wanted = {addr: (b.weight, b.source) for addr, b in group.backends.items() if addr != a}
                    self._sync_group(proxy, group, wanted)
                    self._configure_supervisor()
                    return model.CommandResult(True, f"removed {a} from {p}; its established flows continue")
                case model.SetRateLimit():
                    return self._set_rate_limit(cmd)
                case model.CircuitCommand(proxy=p, backend=a, action=action):
                    self._find(p, a)
                    assert self._supervisor is not None
                    return self._supervisor.circuit_command(BackendKey(p, a), action)
                case model.Reload(path=path):
                    return self.reload(path)
                case model.Stop():
                    assert self._loop is not None
                    self._loop.create_task(self.stop())
                    return model.CommandResult(True, "stopping")
                case _:
                    return model.CommandResult(False, f"unknown command {type(cmd).__name__}")
        except (LookupError, ValueError) as exc:
            return model.CommandResult(False, str(exc))

    def _set_weight(self, cmd: model.SetWeight) -> model.CommandResult:
        if not _valid_weight(cmd.weight):
            return model.CommandResult(
                False, f"weight must be an integer 1..{MAX_WEIGHT}, got {cmd.weight!r}"
            )
        proxy, bes = self._find(cmd.proxy, cmd.backend)
        for be in bes:
            be.weight = cmd.weight
            self._write_group(proxy, proxy.groups[be.group], f"weight set to {cmd.weight}")
        return model.CommandResult(True, f"{cmd.backend} weight {cmd.weight}")

    def _drain(self, cmd: model.Drain) -> model.CommandResult:
        proxy, bes = self._find(cmd.proxy, cmd.backend)
        timeout = self.config.settings.drain_timeout_s if cmd.timeout_s is None else cmd.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            return model.CommandResult(
                False, f"drain timeout must be a number of seconds >= 0, got {timeout!r}"
            )
        for be in bes:
            be.drain_cut = bool(cmd.cut)
            be.drain = model.DrainState.DRAINING
            be.drain_deadline = time.monotonic() + timeout
            self._write_group(proxy, proxy.groups[be.group], "drain")
        msg = (
            f"{cmd.backend} draining (timeout {timeout:g} s): no new connections, "
            f"{sum(b.active_flows for b in bes)} flows continue"
        )
        if all(len(proxy.groups[be.group].backends) == 1 for be in bes):
            msg += "; it is the only backend of its group, so new connections are refused"
        self._emit("drain", msg, proxy=cmd.proxy, backend=cmd.backend)
        return model.CommandResult(True, msg)

    def _restore_tables(
        self, saved: dict[tuple[str, str], tuple[int, np.ndarray, tuple[object, ...]]]
    ) -> None:
        """After a rollback, put back the exact slot layouts (a recomputed table has the same shares
        but may place them differently, which would move flows of source-hash/Maglev services)."""
        for (name, label), (gid, table, inputs) in saved.items():
            proxy = self._proxies.get(name)
            group = proxy.groups.get(label) if proxy else None
            if group is None or group.id != gid or np.array_equal(group.table, table):
                continue
            self._write_table(group, table)
            group.inputs = inputs

    def _clear_table(self, gid: int) -> None:
        size = self._dp.spec.table_size
        self._dp.maps.write_slot_array(gid, np.arange(size), np.full(size, selection.EMPTY, dtype=np.int64))

    def _write_table(self, group: _Group, new: np.ndarray) -> None:
        """Write only the slots that differ from what the map holds (all of them the first time)."""
        if len(group.table) == len(new):
            slots = np.flatnonzero(group.table != new)
        else:
            slots = np.arange(len(new))
        self._dp.maps.write_slot_array(group.id, slots, new[slots])
        group.table = new

    def _set_rate_limit(self, cmd: model.SetRateLimit) -> model.CommandResult:
        proxy = self._proxy(cmd.proxy)
        values = (cmd.per_source_rate, cmd.per_source_burst, cmd.per_backend_rate, cmd.per_backend_burst)
        for v in values:
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_WEIGHT):
                return model.CommandResult(
                    False, f"rates and bursts must be integers 0..{MAX_WEIGHT}, got {v!r}"
                )
        old = proxy.limits
        src_rate = old.src_rate if cmd.per_source_rate is None else cmd.per_source_rate
        src_burst = old.src_burst if cmd.per_source_burst is None else cmd.per_source_burst
        be_rate = old.be_rate if cmd.per_backend_rate is None else cmd.per_backend_rate
        be_burst = old.be_burst if cmd.per_backend_burst is None else cmd.per_backend_burst
        # a rate without a burst gets one second's worth; a rate of 0 removes the limit
        src_burst = 0 if src_rate == 0 else (src_burst or src_rate)
        be_burst = 0 if be_rate == 0 else (be_burst or be_rate)
        proxy.limits = RateLimits(src_rate, src_burst, be_rate, be_burst)
        self._write_service(proxy)

        def show(rate: int, burst: int) -> str:
            return f"{rate}/s burst {burst}" if rate else "off"

        msg = (
            f"{cmd.proxy} rate limits: per source {show(src_rate, src_burst)}, "
            f"per backend {show(be_rate, be_burst)}"
        )
        self._emit("ratelimit", msg, proxy=cmd.proxy)
        return model.CommandResult(True, msg)

    def reload(self, path: str | None = None) -> model.CommandResult:
        """Parse, validate, apply the difference; on any failure roll back to the running state."""
        path = path or self.config.path
        if not path:
            return model.CommandResult(False, "no configuration file to reload (started from a string)")
        t0 = time.perf_counter()
        try:
            new = load_config(path)
        except ConfigError as exc:
            self._emit("reload", f"reload refused, configuration unchanged:\n{exc}", level=model.Level.ERROR)
            return model.CommandResult(False, str(exc))
        old = self.config
        if dataplane_spec(new) != dataplane_spec(old) or new.settings.xdp_mode != old.settings.xdp_mode:
            msg = (
                f"{path}: settings.table_size, settings.max_connections and settings.xdp_mode need a "
                "restart; configuration unchanged"
            )
            self._emit("reload", msg, level=model.Level.ERROR)
            return model.CommandResult(False, msg)
        if new == old:
            self._emit("reload", f"reloaded {path}: nothing changed")
            return model.CommandResult(True, "nothing changed")
        saved_tables = {
            (name, label): (g.id, g.table.copy(), g.inputs)
            for name, p in self._proxies.items()
            for label, g in p.groups.items()
        }
        try:
            changes = self._apply_config(new)
            self._dp.set_interfaces(self._wanted_interfaces(new))
            if self.observability is not None:
                self.observability.configure(new.settings)
        except Exception as exc:
            log.exception("reload")
            self._apply_config(old)
            self._restore_tables(saved_tables)
            self._dp.set_interfaces(self._wanted_interfaces(old))
            if self.observability is not None:
                self.observability.configure(old.settings)
            msg = f"reload of {path} failed and was rolled back: {exc}"
            self._emit("reload", msg, level=model.Level.ERROR)
            return model.CommandResult(False, msg)
        summary = "; ".join(changes) if changes else "settings changed"
        took_ms = (time.perf_counter() - t0) * 1000
        self._emit("reload", f"reloaded {path} in {took_ms:.1f} ms: {summary}")
        return model.CommandResult(True, f"{summary} (applied in {took_ms:.1f} ms)")

    # ---- events ---------------------------------------------------------------------------------

    def _emit(
        self,
        kind: str,
        message: str,
        level: model.Level = model.Level.INFO,
        proxy: str | None = None,
        backend: str | None = None,
    ) -> None:
        with self._events_lock:
            self._seq += 1
            ev = model.Event(
                seq=self._seq,
                ts=time.time(),
                kind=kind,
                message=message,
                level=level,
                proxy=proxy,
                backend=backend,
            )
            self._events.append(ev)
        log.log(
            {
                model.Level.INFO: logging.INFO,
                model.Level.WARNING: logging.WARNING,
                model.Level.ERROR: logging.ERROR,
            }[level],
            "%s: %s",
            kind,
            message,
        )

    def events_since(self, seq: int, limit: int = 1000) -> list[model.Event]:
        with self._events_lock:
            return [e for e in self._events if e.seq > seq][:limit]

    def _on_raw_events(self, batch: list[RawFlowEvent]) -> None:
        """Ring-buffer reader (its own thread): hand a batch to the loop without ever blocking.

        Batches waiting for the loop are bounded (MAX_PENDING_EVENTS): past that, events are
        dropped and counted instead of queueing without limit.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._pending_lock:
            room = MAX_PENDING_EVENTS - self._pending_events
            if room < len(batch):
                self.flow_events_dropped += len(batch) - max(room, 0)
                batch = batch[: max(room, 0)]
            if not batch:
                return
            self._pending_events += len(batch)
        try:
            loop.call_soon_threadsafe(self._handle_raw_events, batch)
        except RuntimeError:  # loop closed while stopping
            pass

    def _handle_raw_events(self, batch: list[RawFlowEvent]) -> None:
        with self._pending_lock:
            self._pending_events -= len(batch)
        for raw in batch:
            self._notify_flow(self._to_flow_event(raw))

    def _notify_flow(self, ev: model.FlowEvent) -> None:
        for observer in self.flow_observers:
            try:
                observer(ev)
            except Exception:
                log.exception("flow observer")

    def _proxy_name(self, service_id: int) -> str:
        return next((p.cfg.name for p in self._proxies.values() if p.service_id == service_id), "?")

    def _to_flow_event(self, raw: RawFlowEvent) -> model.FlowEvent:
        mono_to_unix = time.time() - time.monotonic()
        closed = raw.type != _structs.EV_NEW
        return model.FlowEvent(
            kind="closed" if closed else "new",
            ts=raw.ts_ns / 1e9 + mono_to_unix,
            proxy=self._proxy_name(raw.service_id),
            protocol=raw.protocol,
            client_ip=raw.client[0],
            client_port=raw.client[1],
            vip_ip=raw.vip[0],
            vip_port=raw.vip[1],
            backend_ip=raw.backend[0],
            backend_port=raw.backend[1],
            packets_in=raw.packets_in,
            bytes_in=raw.bytes_in,
            packets_out=raw.packets_out,
            bytes_out=raw.bytes_out,
            duration_s=(raw.ts_ns - raw.created_ns) / 1e9 if closed else None,
            handshake_s=(raw.synack_ns - raw.created_ns) / 1e9 if raw.synack_ns else None,
            close_reason=raw.reason,
        )

    def _idle_close_event(self, f: FlowEntry, r: FlowEntry | None) -> model.FlowEvent:
        last = max(f.last_seen_ns, r.last_seen_ns if r else 0)
        return model.FlowEvent(
            kind="closed",
            ts=time.time(),
            proxy=self._proxy_name(f.service_id),
            protocol=f.protocol,
            client_ip=f.client[0],
            client_port=f.client[1],
            vip_ip=f.vip[0],
            vip_port=f.vip[1],
            backend_ip=f.backend[0],
            backend_port=f.backend[1],
            packets_in=f.packets,
            bytes_in=f.bytes,
            packets_out=r.packets if r else 0,
            bytes_out=r.bytes if r else 0,
            duration_s=max(0.0, (last - f.created_ns) / 1e9),
            handshake_s=(f.synack_ns - f.created_ns) / 1e9 if f.synack_ns else None,
            close_reason="idle",
        )

    # ---- periodic loops -------------------------------------------------------------------------

    async def _control_loop(self) -> None:
        """Every 250 ms: counters, circuit breakers, slow start, least-connections; snapshot each 1 s."""
        tick = 0
        while True:
            await asyncio.sleep(CONTROL_TICK_S)
            tick += 1
            self.heartbeat = time.monotonic()
            try:
                self._refresh_counters()
                self._feed_supervisor()
                self._least_connections()
                if tick % 4 == 0:
                    self._publish_snapshot()
            except Exception:
                log.exception("control tick")

    def _refresh_counters(self) -> None:
        maps = self._dp.maps
        now = time.monotonic()
        for bid, (counters, closes) in maps.backend_counters(list(self._backends_by_id)).items():
            self._counters[bid] = counters
            self._closes[bid] = closes
            for name in ("new_flows", "bytes_in", "bytes_out", "packets_in", "packets_out"):
                self._rate((bid, name), getattr(counters, name), now)
        for proxy in self._proxies.values():
            self._service_counters[proxy.service_id] = maps.service_counters(proxy.service_id)

    def _rate(self, key: tuple[int, str], value: int, now: float) -> None:
        """Per-second rate over the last ≥1 s window (finer ticks would make it jumpy)."""
        prev = self._rates.get(key)
        if prev is None:
            self._rates[key] = (now, value, None)
        elif now - prev[0] >= 1.0:
            rate = (value - prev[1]) / (now - prev[0]) if value >= prev[1] else None
            self._rates[key] = (now, value, rate)

    def _rate_of(self, bid: int, name: str) -> float | None:
        r = self._rates.get((bid, name))
        return r[2] if r else None

    def _feed_supervisor(self) -> None:
        if self._supervisor is None:
            return
        totals: dict[BackendKey, list[int]] = {}
        for be in self._backends_by_id.values():
            c = self._counters.get(be.id)
            if c is not None:
                t = totals.setdefault(be.key, [0, 0])
                t[0] += c.handshakes
                t[1] += c.conn_failures
        for key, (handshakes, failures) in totals.items():
            self._supervisor.observe_counters(key, handshakes, failures + self._syn_failures[key])
        self._supervisor.tick()

    def _least_connections(self) -> None:
        """weight / (1 + live flows), live = new flows - closes - idle expiries (from counters)."""
        now = time.monotonic()
        for proxy in self._proxies.values():
            if proxy.cfg.algorithm != "least-connections":
                continue
            if now - self._last_least_conn < proxy.cfg.least_connections_interval_ms / 1000:
                continue
            for group in proxy.groups.values():
                for be in group.backends.values():
                    c = self._counters.get(be.id)
                    live = max(0, (c.new_flows if c else 0) - self._closes.get(be.id, 0) - be.expired)
                    be.algorithm_factor = 1.0 / (1 + live)
                self._write_group(proxy, group, "least-connections")
            self._last_least_conn = now

    async def _watch_config(self) -> None:
        """Reload when the configuration file changes (editors that replace the file included)."""
        path = self.config.path
        if not path:
            return
        target = os.path.realpath(path)
        directory = os.path.dirname(target)

        def is_ours(_change: watchfiles.Change, changed: str) -> bool:
            return os.path.realpath(changed) == target

        ready = False
        try:
            async for changes in watchfiles.awatch(
                directory,
                watch_filter=is_ours,
                debounce=200,
                step=50,
                rust_timeout=500,
                yield_on_timeout=True,
            ):
                if not ready:
                    # the watcher is live; a change made while it was starting would be missed
                    ready = True
                    self._watch_ready.set()
                    if self._file_differs(target):
                        self.reload()
                        self._publish_snapshot()
                if changes and os.path.exists(target):
                    self.reload()
                    self._publish_snapshot()
        except Exception:
            log.exception("watching %s: reloads need SIGHUP or `lbtui ctl reload` now", path)
        finally:
            self._watch_ready.set()

    def _file_differs(self, path: str) -> bool:
        try:
            return load_config(path) != self.config
        except ConfigError:
            return True  # reload() reports the error

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.settings.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("conntrack sweep")

    async def sweep(self) -> None:
        """Expire idle flows, count active flows per backend, keep the bounded top-N view.

        Reading and analysing the map (up to millions of entries) runs on a worker thread, so
        commands and the control tick go on meanwhile; the results are applied on the loop.
        """
        s = self.config.settings
        timeouts = conntrack.Timeouts(
            tcp_s=s.tcp_timeout_s, tcp_closing_s=s.tcp_closing_timeout_s, udp_s=s.udp_timeout_s
        )
        proxy_of = {p.service_id: p.cfg.name for p in self._proxies.values()}
        track_syns = any(p.cfg.circuit_breaker is not None for p in self._proxies.values())
        maps = self._dp.maps

        def work() -> tuple[conntrack.SweepResult, int]:
            now_ns = time.monotonic_ns()
            keys, vals = maps.conntrack_arrays()
            keep = time.monotonic() < self._flows_wanted_until
            res = conntrack.sweep(keys, vals, now_ns, timeouts, TOP_FLOWS, proxy_of, track_syns, keep)
            if res.expired_keys is not None and res.expired_created is not None and len(res.expired_keys):
                maps.reap_conntrack(res.expired_keys, res.expired_created)
            maps.sweep_rate_buckets(idle_ns=RATE_BUCKET_IDLE_NS, now_ns=now_ns)
            return res, now_ns

        res, now_ns = await asyncio.to_thread(work)
        self._swept_total += res.expired_count
        for be in self._backends_by_id.values():
            be.active_flows = res.active.get(be.id, 0)
        for f, r in res.expired_flows:
            gone = self._backends_by_id.get(f.backend_id)
            if gone is not None:
                gone.expired += 1
                last = max(f.last_seen_ns, r.last_seen_ns if r else 0)
                us = max(0, (last - f.created_ns) // 1000)  # the data path only sees FIN/RST closes
                counts, total = self._idle_durations.setdefault(gone.id, ([0] * _structs.HIST_BUCKETS, 0))
                counts[_structs.hist_bucket(us)] += 1
                self._idle_durations[gone.id] = (counts, total + us)
            self._notify_flow(self._idle_close_event(f, r))
        self._flows = tuple(res.top)
        self._flows_matched = res.matched
        with self._query_lock:
            self._flow_table = res.flows
            self._query_cache = {}
        self._ct_summary = model.ConntrackSummary(
            entries=res.entries - res.expired_count,
            flows=res.tcp + res.udp,
            tcp=res.tcp,
            udp=res.udp,
            closing=res.closing,
            capacity=2 * s.max_connections,
            swept_total=self._swept_total,
        )
        self._count_syn_timeouts(res.unanswered)
        self._check_drains()

    def _count_syn_timeouts(self, unanswered: list[tuple[Any, int, float]]) -> None:
        """A SYN left unanswered past the circuit breaker's syn_timeout_ms is a connection failure."""
        by_timeout: dict[float, list[Any]] = {}
        for flow_id, backend_id, age in unanswered:
            be = self._backends_by_id.get(backend_id)
            proxy = self._proxies.get(be.proxy) if be else None
            if be is not None and proxy is not None and proxy.cfg.circuit_breaker is not None:
                timeout = proxy.cfg.circuit_breaker.syn_timeout_ms / 1000
                by_timeout.setdefault(timeout, []).append((flow_id, be.key, age))
        for timeout, items in by_timeout.items():
            for key, n in self._syn_timeouts.observe(items, timeout).items():
                self._syn_failures[key] += n

    def _cut_flows(self, backend_id: int) -> int:
        """Remove every conntrack entry of a backend: its flows' next packets are no longer forwarded
        (a TCP client then gets a reset from the load-balancer host)."""
        keys, vals = self._dp.maps.conntrack_arrays()
        mine = vals["backend_id"] == backend_id
        flows = int((mine & (vals["dir"] == _structs.DIR_FORWARD)).sum())
        self._dp.maps.reap_conntrack(keys[mine].copy(), vals["created_ns"][mine].copy())
        return flows

    def _check_drains(self) -> None:
        now = time.monotonic()
        for be in self._backends_by_id.values():
            if be.drain != model.DrainState.DRAINING:
                continue
            if be.active_flows == 0:
                be.drain = model.DrainState.DRAINED
                self._emit("drain", f"{be.address} drained: 0 flows left", proxy=be.proxy, backend=be.address)
            elif be.drain_deadline is not None and now >= be.drain_deadline:
                be.drain = model.DrainState.DRAINED
                left = f"{be.active_flows} flows still open"
                if be.drain_cut:
                    left = f"{self._cut_flows(be.id)} flows cut (conntrack entries removed)"
                self._emit(
                    "drain",
                    f"{be.address} drain timeout: {left}",
                    level=model.Level.WARNING,
                    proxy=be.proxy,
                    backend=be.address,
                )

    # ---- snapshots ------------------------------------------------------------------------------

    def snapshot(self, flows: model.FlowQuery | None = None) -> model.Snapshot:
        """The latest snapshot; its flow view answers `flows` (default: the biggest flows by bytes).

        Sweeps keep every flow for queries only while front ends ask: after a pause, the first
        query gets the default view (its flow_query says so) and the answer comes from the next
        sweep on. Raises ValueError for a query the engine refuses. Safe from any thread.
        """
        snap = self._snapshot
        if snap is None:
            return model.Snapshot(
                taken_at=time.time(),
                started_at=self._started_at,
                config_path=self.config.path,
                services=(),
                conntrack=self._ct_summary,
                flows=(),
                running=self._running,
            )
        if flows is None or flows == model.FlowQuery():
            return snap
        problem = flows.problem()
        if problem:
            raise ValueError(problem)
        answer = self._query_flows(flows)
        if answer is None:  # answered from the next sweep on: for now the default view, marked so
            return snap
        view, matched = answer
        return replace(snap, flows=view, flow_query=flows, flows_matched=matched)

    def _query_flows(self, q: model.FlowQuery) -> tuple[tuple[model.FlowView, ...], int] | None:
        self._flows_wanted_until = time.monotonic() + FLOW_QUERY_KEEP_S
        with self._query_lock:
            table, cache = self._flow_table, self._query_cache
            cached = cache.get(q)
        if cached is not None:
            return cached
        if table is None:
            return None
        view, matched = conntrack.query(table, q, TOP_FLOWS)
        answer = (tuple(view), matched)
        with self._query_lock:
            if self._query_cache is cache:  # no sweep since: keep it (a few queries at most)
                if len(cache) >= 32:
                    cache.clear()
                cache[q] = answer
        return answer

    def _backend_view(self, be: _Backend) -> model.BackendView:
        hs = self._latency_view(be).handshake
        return model.BackendView(
            proxy=be.proxy,
            address=be.address,
            group=be.group,
            configured_weight=be.weight,
            effective_weight=be.effective,
            counters=self._counters.get(be.id, model.Counters()),
            active_flows=be.active_flows,
            health=be.factors.health_state,
            circuit=be.factors.circuit_state,
            drain=be.drain,
            source=be.source,
            new_flows_per_s=self._rate_of(be.id, "new_flows"),
            bytes_in_per_s=self._rate_of(be.id, "bytes_in"),
            bytes_out_per_s=self._rate_of(be.id, "bytes_out"),
            packets_in_per_s=self._rate_of(be.id, "packets_in"),
            packets_out_per_s=self._rate_of(be.id, "packets_out"),
            health_check_ms=be.factors.health_check_ms,
            last_change=be.reason,
            handshake_p50_ms=hs.p50_ms if hs else None,
            handshake_p99_ms=hs.p99_ms if hs else None,
        )

    def _latency_view(self, be: _Backend) -> model.LatencyView:
        """The data path's histograms of one backend (plus the durations of flows the sweep closed)."""
        lat = self._latency.get(be.id)
        idle_counts, idle_sum = self._idle_durations.get(be.id, ((0,) * _structs.HIST_BUCKETS, 0))
        if lat is None:
            return model.LatencyView(proxy=be.proxy, backend=be.address)
        duration = [a + b for a, b in zip(lat.duration, idle_counts, strict=True)]
        return model.LatencyView(
            proxy=be.proxy,
            backend=be.address,
            handshake=histogram_from_counts(
                _structs.HIST_BOUNDS_MS, lat.handshake, lat.handshake_sum_us / 1000
            ),
            duration=histogram_from_counts(
                _structs.HIST_BOUNDS_MS, duration, (lat.duration_sum_us + idle_sum) / 1000
            ),
        )

    def _publish_snapshot(self) -> None:
        if self._running:
            try:
                self._latency = self._dp.maps.latency(list(self._backends_by_id))
            except Exception:
                log.exception("reading latency histograms")
        services = []
        totals = model.Counters()
        for proxy in self._proxies.values():
            cfg = proxy.cfg
            counters, drops = self._service_counters.get(proxy.service_id, (model.Counters(), {}))
            totals = _add(totals, counters)
            default = proxy.groups.get(DEFAULT_GROUP)
            routes = tuple(
                model.RouteView(
                    cidr=label, backends=tuple(self._backend_view(b) for b in g.backends.values())
                )
                for label, g in proxy.groups.items()
                if label != DEFAULT_GROUP
            )
            lim = proxy.limits
            services.append(
                model.ServiceView(
                    name=cfg.name,
                    vip=cfg.vip,
                    port=cfg.port,
                    protocol=cfg.protocol,
                    algorithm=cfg.algorithm,
                    interfaces=tuple(cfg.interfaces),
                    backends=tuple(self._backend_view(b) for b in default.backends.values())
                    if default
                    else (),
                    routes=routes,
                    counters=counters,
                    active_flows=sum(
                        b.active_flows for g in proxy.groups.values() for b in g.backends.values()
                    ),
                    drops=drops,
                    panic=any(g.panic for g in proxy.groups.values()),
                    rate_limit=model.RateLimitView(
                        per_source_rate=lim.src_rate or None,
                        per_source_burst=lim.src_burst or None,
                        per_backend_rate=lim.be_rate or None,
                        per_backend_burst=lim.be_burst or None,
                    ),
                )
            )
        snap = model.Snapshot(
            taken_at=time.time(),
            started_at=self._started_at,
            config_path=self.config.path,
            services=tuple(services),
            conntrack=self._ct_summary,
            flows=self._flows,
            flows_matched=self._flows_matched,
            totals=totals,
            dns=self._dns.status() if self._dns else (),
            latency=tuple(self._latency_view(b) for b in self._backends_by_id.values()),
            circuit_log=self._supervisor.transitions() if self._supervisor else (),
            events_dropped=self.flow_events_dropped,
            running=self._running,
        )
        for decorate in self.snapshot_decorators:
            try:
                snap = decorate(snap)
            except Exception:
                log.exception("snapshot decorator")
        self._snapshot = snap

    # ---- for tests and tools --------------------------------------------------------------------

    @property
    def dataplane(self) -> Dataplane:
        return self._dp

    def group_table(self, proxy: str, label: str = DEFAULT_GROUP) -> Sequence[int]:
        return tuple(int(x) for x in self._proxies[proxy].groups[label].table.tolist())

    def backend_id(self, proxy: str, address: str, label: str = DEFAULT_GROUP) -> int:
        return self._proxies[proxy].groups[label].backends[address].id


def _add(a: model.Counters, b: model.Counters) -> model.Counters:
    return replace(
        a,
        **{
            f: getattr(a, f) + getattr(b, f)
            for f in (
                "packets_in",
                "bytes_in",
                "packets_out",
                "bytes_out",
                "new_flows",
                "handshakes",
                "conn_failures",
            )
        },
    )
