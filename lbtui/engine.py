"""The control-plane facade: runs the load balancer for one configuration, without any UI.

`Engine` owns the data path (lbtui.dataplane), turns the configuration into map contents, runs the
periodic loops (counters, conntrack sweep, drain progress) on one asyncio loop, executes commands
and publishes immutable snapshots and events. Every change of who gets traffic goes through one
place: `_write_group`, which composes effective weights (control.weights) and writes the selection
table delta (control.selection).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from lbtui import model
from lbtui.config import Config, ConfigError, ProxyConfig, load_config
from lbtui.control import selection
from lbtui.control.weights import BackendState, compose
from lbtui.dataplane import Dataplane, DataplaneSpec, FlowEntry, RawFlowEvent
from lbtui.dataplane import structs as _structs

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
TOP_FLOWS = 200
MAX_WEIGHT = 2**31 - 1
DEFAULT_GROUP = "default"


@dataclass
class _Backend:
    """Runtime state of one backend in one group (mutable; never leaves the engine)."""

    id: int
    proxy: str
    group: str
    ip: str
    port: int
    configured: int
    weight: int  # runtime weight (configured, or set by a command)
    source: str = "static"
    drain: model.DrainState = model.DrainState.ACTIVE
    drain_deadline: float | None = None
    health: model.Health = model.Health.UNKNOWN
    effective: int = 0
    reason: str = ""
    active_flows: int = 0

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass
class _Group:
    id: int
    label: str
    backends: dict[str, _Backend] = field(default_factory=dict)
    table: list[int] = field(default_factory=list)
    panic: bool = False


@dataclass
class _Proxy:
    cfg: ProxyConfig
    service_id: int
    groups: dict[str, _Group] = field(default_factory=dict)


def dataplane_spec(config: Config) -> DataplaneSpec:
    s = config.settings
    return DataplaneSpec(table_size=s.table_size, conntrack_entries=2 * s.max_connections)


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"expected ip:port, got {address!r}")
    ipaddress.IPv4Address(host)
    p = int(port)
    if not 1 <= p <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return host, p


class Engine:
    def __init__(self, config: Config, *, dataplane: Dataplane | None = None):
        self.config = config
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
        self._flow_events: asyncio.Queue[RawFlowEvent] | None = None
        self.flow_events_dropped = 0
        self.flow_observers: list[Callable[[model.FlowEvent], None]] = []
        self._counters: dict[int, model.Counters] = {}
        self._service_counters: dict[int, tuple[model.Counters, dict[str, int]]] = {}
        self._ct_summary = model.ConntrackSummary(capacity=2 * config.settings.max_connections)
        self._flows: tuple[model.FlowView, ...] = ()
        self._swept_total = 0
        self._rates: dict[tuple[int, str], tuple[float, int, float | None]] = {}
        self._running = False
        self._stopped = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the programs, fill the maps from the configuration, attach, start the loops."""
        self._loop = asyncio.get_running_loop()
        self._flow_events = asyncio.Queue(maxsize=65536)
        try:
            self._dp.load()
            self._apply_config(self.config, first=True)
            self._dp.set_interfaces(self._wanted_interfaces(self.config))
            self._dp.start_event_reader(self._on_raw_event)
        except Exception:
            self._dp.close()
            raise
        self._running = True
        self._refresh_counters()
        self._publish_snapshot()
        for coro in (self._counter_loop(), self._sweep_loop(), self._flow_event_loop()):
            self._tasks.append(asyncio.create_task(coro))
        ifaces = ", ".join(self._dp.interfaces)
        self._emit("started", f"load balancer running on {ifaces} with {len(self._proxies)} proxies")

    async def stop(self) -> None:
        if not self._running:
            self._dp.close()
            return
        self._running = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._dp.close()
        self._emit("stopped", "load balancer stopped; programs detached")
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
        seen: dict[str, None] = {}
        for p in config.proxies:
            for i in p.interfaces:
                seen[i] = None
        return list(seen)

    def _alloc(self, free: list[int], attr: str, limit: int, what: str) -> int:
        if free:
            return free.pop()
        n = getattr(self, attr)
        if n >= limit:
            raise RuntimeError(f"too many {what} (the data path holds {limit})")
        setattr(self, attr, n + 1)
        return int(n)

    def _alloc_backend_id(self) -> int:
        # reuse ids oldest-freed first, so a removed backend's counters are not inherited at once
        if self._next_backend_id < self._dp.spec.max_backends:
            self._next_backend_id += 1
            return self._next_backend_id - 1
        if self._free_backend_ids:
            return self._free_backend_ids.popleft()
        raise RuntimeError(f"too many backends (the data path holds {self._dp.spec.max_backends})")

    def _apply_config(self, config: Config, first: bool = False) -> list[str]:
        """Make the maps match `config`: returns what changed, for the reload event."""
        changes: list[str] = []
        maps = self._dp.maps
        wanted = {p.name: p for p in config.proxies}
        for name in [n for n in self._proxies if n not in wanted]:
            self._remove_proxy(name)
            changes.append(f"removed proxy {name}")
        for pcfg in config.proxies:
            current = self._proxies.get(pcfg.name)
            if current is not None and (current.cfg.vip, current.cfg.port, current.cfg.protocol) != (
                pcfg.vip,
                pcfg.port,
                pcfg.protocol,
            ):
                self._remove_proxy(pcfg.name)
                current = None
            if current is None:
                sid = self._alloc(self._free_services, "_next_service", self._dp.spec.max_services, "proxies")
                current = _Proxy(cfg=pcfg, service_id=sid)
                self._proxies[pcfg.name] = current
                if not first:
                    changes.append(f"added proxy {pcfg.name}")
            current.cfg = pcfg
            # groups: the default one plus one per source route
            wanted_groups: dict[str, dict[str, int]] = {
                DEFAULT_GROUP: {str(b.address): b.weight for b in pcfg.backends if b.address is not None}
            }
            for route in pcfg.source_routes:
                wanted_groups[route.cidr] = {
                    str(b.address): b.weight for b in route.backends if b.address is not None
                }
            for label in [g for g in current.groups if g not in wanted_groups]:
                self._remove_group(current, label)
                changes.append(f"{pcfg.name}: removed route {label}")
            for label, backends in wanted_groups.items():
                group = current.groups.get(label)
                if group is None:
                    gid = self._alloc(self._free_groups, "_next_group", self._dp.spec.max_groups, "groups")
                    group = _Group(id=gid, label=label)
                    current.groups[label] = group
                    if label != DEFAULT_GROUP and not first:
                        changes.append(f"{pcfg.name}: added route {label}")
                changes += self._sync_group(current, group, backends)
            default = current.groups[DEFAULT_GROUP]
            maps.set_service(
                pcfg.vip,
                pcfg.port,
                pcfg.protocol,
                current.service_id,
                default.id,
                pcfg.algorithm,
                events=True,
            )
            for label, group in current.groups.items():
                if label != DEFAULT_GROUP:
                    maps.set_route(current.service_id, label, group.id)
            for host in {b.host for b in pcfg.backends if b.host}:
                self._emit(
                    "dns",
                    f"{pcfg.name}: DNS backend {host} is not resolved by this version; ignored",
                    level=model.Level.WARNING,
                    proxy=pcfg.name,
                )
        self.config = config
        return changes

    def _sync_group(self, proxy: _Proxy, group: _Group, wanted: dict[str, int]) -> list[str]:
        changes = []
        maps = self._dp.maps
        name = proxy.cfg.name
        for address in [a for a in group.backends if a not in wanted]:
            self._retire_backend(group.backends.pop(address))
            changes.append(f"{name}: removed backend {address}")
        for address, weight in wanted.items():
            be = group.backends.get(address)
            if be is None:
                ip, port = _split_address(address)
                be = _Backend(
                    id=self._alloc_backend_id(),
                    proxy=name,
                    group=group.label,
                    ip=ip,
                    port=port,
                    configured=weight,
                    weight=weight,
                )
                maps.clear_backend_stats(be.id)
                maps.set_backend(be.id, ip, port, active=True)
                group.backends[address] = be
                self._backends_by_id[be.id] = be
                changes.append(f"{name}: added backend {address} weight {weight}")
            elif be.configured != weight:
                changes.append(f"{name}: {address} weight {be.weight} -> {weight}")
                be.configured = weight
                be.weight = weight
        self._write_group(proxy, group, "configuration")
        return changes

    def _retire_backend(self, be: _Backend) -> None:
        # the backend entry stays valid for flows already tracked (conntrack keeps its address);
        # only new picks stop, because the selection tables no longer point at it
        self._dp.maps.set_backend(be.id, be.ip, be.port, active=False)
        self._backends_by_id.pop(be.id, None)
        self._free_backend_ids.append(be.id)

    def _remove_group(self, proxy: _Proxy, label: str) -> None:
        group = proxy.groups.pop(label)
        if label != DEFAULT_GROUP:
            self._dp.maps.delete_route(proxy.service_id, label)
        for be in group.backends.values():
            self._retire_backend(be)
        self._dp.maps.write_slots(group.id, [(i, selection.EMPTY) for i in range(self._dp.spec.table_size)])
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
        states = [
            BackendState(
                key=b.address,
                configured=b.weight,
                health=0.0 if b.health == model.Health.DOWN else 1.0,
                drained=b.drain != model.DrainState.ACTIVE,
            )
            for b in group.backends.values()
        ]
        comp = compose(states)
        by_id = {b.id: comp.weights.get(b.address, 0) for b in group.backends.values()}
        size = self._dp.spec.table_size
        if proxy.cfg.algorithm == "maglev":
            named = {b.id: (b.address, by_id[b.id]) for b in group.backends.values() if by_id[b.id] > 0}
            new = selection.maglev_table(named, size) if named else [selection.EMPTY] * size
        else:
            new = selection.weighted_table(by_id, size, group.table or None)
        changed = selection.diff_slots(group.table, new) if group.table else list(enumerate(new))
        self._dp.maps.write_slots(group.id, changed)
        group.table = new
        if comp.panic and not group.panic:
            self._emit(
                "panic",
                f"{proxy.cfg.name}/{group.label}: every backend is out of rotation; "
                "spreading traffic over all non-drained backends",
                level=model.Level.WARNING,
                proxy=proxy.cfg.name,
            )
        group.panic = comp.panic
        for b in group.backends.values():
            eff = comp.weights.get(b.address, 0)
            if eff != b.effective:
                self._emit(
                    "weight",
                    f"{b.address} effective weight {b.effective} -> {eff} "
                    f"({comp.reasons.get(b.address, cause)}; {cause})",
                    proxy=b.proxy,
                    backend=b.address,
                )
            b.effective = eff
            b.reason = comp.reasons.get(b.address, "")
        if group.backends and not any(comp.weights.values()):
            self._emit(
                "weight",
                f"{proxy.cfg.name}/{group.label}: no backend can take new connections; they are refused",
                level=model.Level.WARNING,
                proxy=proxy.cfg.name,
            )

    # ---- commands -------------------------------------------------------------------------------

    async def execute(self, cmd: model.Command) -> model.CommandResult:
        try:
            result = self._execute(cmd)
        except Exception as exc:  # a command never takes the engine down
            log.exception("command %s", cmd)
            result = model.CommandResult(False, f"internal error: {exc}")
        self._emit(
            "command",
            f"{type(cmd).__name__}: {'ok' if result.ok else 'refused'}: {result.message}",
            level=model.Level.INFO if result.ok else model.Level.ERROR,
            proxy=getattr(cmd, "proxy", None),
            backend=getattr(cmd, "backend", None),
        )
        self._publish_snapshot()
        return result

    def _find(self, proxy_name: str, address: str) -> tuple[_Proxy, list[_Backend]]:
        proxy = self._proxies.get(proxy_name)
        if proxy is None:
            raise LookupError(
                f"no proxy named {proxy_name!r} (have: {', '.join(sorted(self._proxies)) or 'none'})"
            )
        found = [g.backends[address] for g in proxy.groups.values() if address in g.backends]
        if not found:
            raise LookupError(f"proxy {proxy_name!r} has no backend {address}")
        return proxy, found

    def _execute(self, cmd: model.Command) -> model.CommandResult:
        try:
            match cmd:
                case model.SetWeight(proxy=p, backend=a, weight=w):
                    if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WEIGHT:
                        return model.CommandResult(
                            False, f"weight must be an integer 1..{MAX_WEIGHT}, got {w!r}"
                        )
                    proxy, bes = self._find(p, a)
                    for be in bes:
                        be.weight = w
                        self._write_group(proxy, proxy.groups[be.group], f"weight set to {w}")
                    return model.CommandResult(True, f"{a} weight {w}")
                case model.Drain(proxy=p, backend=a, timeout_s=t):
                    proxy, bes = self._find(p, a)
                    timeout = self.config.settings.drain_timeout_s if t is None else t
                    if timeout < 0:
                        return model.CommandResult(False, "drain timeout must be >= 0")
                    for be in bes:
                        be.drain = model.DrainState.DRAINING
                        be.drain_deadline = time.monotonic() + timeout
                        self._write_group(proxy, proxy.groups[be.group], "drain")
                    alone = all(len(proxy.groups[be.group].backends) == 1 for be in bes)
                    msg = (
                        f"{a} draining: no new connections, {sum(b.active_flows for b in bes)} flows continue"
                    )
                    if alone:
                        msg += "; it is the only backend of its group, so new connections are refused"
                    self._emit("drain", msg, proxy=p, backend=a)
                    return model.CommandResult(True, msg)
                case model.Undrain(proxy=p, backend=a):
                    proxy, bes = self._find(p, a)
                    for be in bes:
                        be.drain = model.DrainState.ACTIVE
                        be.drain_deadline = None
                        self._write_group(proxy, proxy.groups[be.group], "undrain")
                    self._emit("drain", f"{a} back in rotation", proxy=p, backend=a)
                    return model.CommandResult(True, f"{a} back in rotation")
                case model.AddBackend(proxy=p, backend=a, weight=w):
                    found = self._proxies.get(p)
                    if found is None:
                        return model.CommandResult(False, f"no proxy named {p!r}")
                    proxy = found
                    _split_address(a)
                    if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WEIGHT:
                        return model.CommandResult(
                            False, f"weight must be an integer 1..{MAX_WEIGHT}, got {w!r}"
                        )
                    group = proxy.groups[DEFAULT_GROUP]
                    if a in group.backends:
                        return model.CommandResult(False, f"{p} already has backend {a}")
                    wanted = {addr: b.weight for addr, b in group.backends.items()}
                    wanted[a] = w
                    self._sync_group(proxy, group, wanted)
                    return model.CommandResult(True, f"added {a} weight {w} to {p}")
                case model.RemoveBackend(proxy=p, backend=a):
                    found = self._proxies.get(p)
                    if found is None:
                        return model.CommandResult(False, f"no proxy named {p!r}")
                    proxy = found
                    group = proxy.groups[DEFAULT_GROUP]
                    if a not in group.backends:
                        return model.CommandResult(False, f"{p} has no backend {a} in its default group")
                    wanted = {addr: b.weight for addr, b in group.backends.items() if addr != a}
                    self._sync_group(proxy, group, wanted)
                    return model.CommandResult(True, f"removed {a} from {p}; its established flows continue")
                case model.Reload(path=path):
                    return self._reload(path)
                case model.Stop():
                    assert self._loop is not None
                    self._loop.create_task(self.stop())
                    return model.CommandResult(True, "stopping")
                case _:
                    return model.CommandResult(
                        False, f"{type(cmd).__name__} is not supported by this version"
                    )
        except (LookupError, ValueError) as exc:
            return model.CommandResult(False, str(exc))

    def _reload(self, path: str | None) -> model.CommandResult:
        path = path or self.config.path
        if not path:
            return model.CommandResult(False, "no configuration file to reload (started from a string)")
        try:
            new = load_config(path)
        except ConfigError as exc:
            self._emit("reload", f"reload refused, configuration unchanged:\n{exc}", level=model.Level.ERROR)
            return model.CommandResult(False, str(exc))
        old = self.config
        if dataplane_spec(new) != dataplane_spec(old) or new.settings.xdp_mode != old.settings.xdp_mode:
            msg = "settings.table_size, max_connections and xdp_mode need a restart; configuration unchanged"
            self._emit("reload", msg, level=model.Level.ERROR)
            return model.CommandResult(False, msg)
        try:
            changes = self._apply_config(new)
            self._dp.set_interfaces(self._wanted_interfaces(new))
        except Exception as exc:
            log.exception("reload")
            self._apply_config(old)
            self._dp.set_interfaces(self._wanted_interfaces(old))
            msg = f"reload failed and was rolled back: {exc}"
            self._emit("reload", msg, level=model.Level.ERROR)
            return model.CommandResult(False, msg)
        summary = "; ".join(changes) if changes else "nothing changed"
        self._emit("reload", f"reloaded {path}: {summary}")
        return model.CommandResult(True, summary)

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

    def _on_raw_event(self, raw: RawFlowEvent) -> None:
        """Ring-buffer callback (reader thread): hand over to the loop without ever blocking."""
        loop, queue = self._loop, self._flow_events
        if loop is None or queue is None:
            return

        def put() -> None:
            try:
                queue.put_nowait(raw)
            except asyncio.QueueFull:
                self.flow_events_dropped += 1

        loop.call_soon_threadsafe(put)

    async def _flow_event_loop(self) -> None:
        assert self._flow_events is not None
        while True:
            raw = await self._flow_events.get()
            ev = self._to_flow_event(raw)
            if ev is not None:
                self._notify_flow(ev)

    def _notify_flow(self, ev: model.FlowEvent) -> None:
        for observer in self.flow_observers:
            try:
                observer(ev)
            except Exception:
                log.exception("flow observer")

    def _to_flow_event(self, raw: RawFlowEvent) -> model.FlowEvent | None:
        be = self._backends_by_id.get(raw.backend_id)
        proxy = (
            be.proxy
            if be
            else next((p.cfg.name for p in self._proxies.values() if p.service_id == raw.service_id), "?")
        )
        mono_to_unix = time.time() - time.monotonic()
        return model.FlowEvent(
            kind="new" if raw.type == _structs.EV_NEW else "closed",
            ts=raw.ts_ns / 1e9 + mono_to_unix,
            proxy=proxy,
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
            duration_s=(raw.ts_ns - raw.created_ns) / 1e9 if raw.type != _structs.EV_NEW else None,
            handshake_s=(raw.synack_ns - raw.created_ns) / 1e9 if raw.synack_ns else None,
            close_reason=raw.reason,
        )

    # ---- periodic loops -------------------------------------------------------------------------

    async def _counter_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self._refresh_counters()
                self._publish_snapshot()
            except Exception:
                log.exception("counter refresh")

    def _refresh_counters(self) -> None:
        maps = self._dp.maps
        now = time.monotonic()
        for bid, (counters, _closes) in maps.backend_counters(list(self._backends_by_id)).items():
            self._counters[bid] = counters
            for name in ("new_flows", "bytes_in", "bytes_out"):
                self._rate((bid, name), getattr(counters, name), now)
        for proxy in self._proxies.values():
            self._service_counters[proxy.service_id] = maps.service_counters(proxy.service_id)

    def _rate(self, key: tuple[int, str], value: int, now: float) -> None:
        prev = self._rates.get(key)
        rate = None
        if prev is not None and now > prev[0] and value >= prev[1]:
            rate = (value - prev[1]) / (now - prev[0])
        self._rates[key] = (now, value, rate)

    def _rate_of(self, bid: int, name: str) -> float | None:
        r = self._rates.get((bid, name))
        return r[2] if r else None

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.settings.sweep_interval_s)
            try:
                self.sweep()
            except Exception:
                log.exception("conntrack sweep")

    def sweep(self) -> None:
        """Expire idle flows, count active flows per backend, keep the bounded top-N view."""
        s = self.config.settings
        entries = self._dp.maps.conntrack()
        now_ns = time.monotonic_ns()
        forward: dict[tuple[str, int, str, int, str], tuple[object, FlowEntry]] = {}
        reverse: dict[tuple[str, int, str, int, str], tuple[object, FlowEntry]] = {}
        for raw_key, e in entries:
            flow_id = (*e.client, *e.vip, e.protocol)
            (forward if e.direction == _structs.DIR_FORWARD else reverse)[flow_id] = (raw_key, e)
        expired: list[object] = []
        active: collections.Counter[int] = collections.Counter()
        views: list[model.FlowView] = []
        tcp = udp = closing = 0
        closes: list[model.FlowEvent] = []
        for flow_id, (raw_key, f) in forward.items():
            r = reverse.get(flow_id)
            last = max(f.last_seen_ns, r[1].last_seen_ns if r else 0)
            idle_s = (now_ns - last) / 1e9
            is_closing = bool(f.flags & (_structs.CT_F_CLOSED | _structs.CT_F_RST))
            if f.protocol == "udp":
                timeout = s.udp_timeout_s
            elif is_closing or not f.flags & _structs.CT_F_SYNACK:
                timeout = s.tcp_closing_timeout_s if is_closing else max(s.tcp_closing_timeout_s, 30.0)
            else:
                timeout = s.tcp_timeout_s
            if idle_s > timeout:
                expired.append(raw_key)
                if r:
                    expired.append(r[0])
                if not f.flags & _structs.CT_F_CLOSED:
                    closes.append(self._idle_close_event(f, r[1] if r else None, now_ns))
                continue
            if f.protocol == "udp":
                udp += 1
            else:
                tcp += 1
            if is_closing:
                closing += 1
            else:
                active[f.backend_id] += 1
            be = self._backends_by_id.get(f.backend_id)
            views.append(
                model.FlowView(
                    protocol=f.protocol,
                    client=f"{f.client[0]}:{f.client[1]}",
                    vip=f"{f.vip[0]}:{f.vip[1]}",
                    backend=f"{f.backend[0]}:{f.backend[1]}",
                    proxy=be.proxy if be else "?",
                    state="udp"
                    if f.protocol == "udp"
                    else "closing"
                    if is_closing
                    else "established"
                    if f.flags & _structs.CT_F_SYNACK
                    else "syn_sent",
                    age_s=(now_ns - f.created_ns) / 1e9,
                    idle_s=idle_s,
                    packets_in=f.packets,
                    bytes_in=f.bytes,
                    packets_out=r[1].packets if r else 0,
                    bytes_out=r[1].bytes if r else 0,
                )
            )
        # reverse entries whose forward entry is gone (LRU) and that went idle
        for flow_id, (raw_key, r_entry) in reverse.items():
            if flow_id not in forward and (now_ns - r_entry.last_seen_ns) / 1e9 > s.tcp_closing_timeout_s:
                expired.append(raw_key)
        self._dp.maps.delete_conntrack(expired)
        self._swept_total += len(expired)
        for be in self._backends_by_id.values():
            be.active_flows = active.get(be.id, 0)
        views.sort(key=lambda v: v.bytes_in + v.bytes_out, reverse=True)
        self._flows = tuple(views[:TOP_FLOWS])
        self._ct_summary = model.ConntrackSummary(
            entries=len(entries) - len(expired),
            flows=tcp + udp,
            tcp=tcp,
            udp=udp,
            closing=closing,
            capacity=2 * s.max_connections,
            swept_total=self._swept_total,
        )
        for ev in closes:
            self._notify_flow(ev)
        self._check_drains()

    def _idle_close_event(self, f: FlowEntry, r: FlowEntry | None, now_ns: int) -> model.FlowEvent:
        be = self._backends_by_id.get(f.backend_id)
        mono_to_unix = time.time() - time.monotonic()
        return model.FlowEvent(
            kind="closed",
            ts=now_ns / 1e9 + mono_to_unix,
            proxy=be.proxy if be else "?",
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
            duration_s=(max(f.last_seen_ns, r.last_seen_ns if r else 0) - f.created_ns) / 1e9,
            handshake_s=(f.synack_ns - f.created_ns) / 1e9 if f.synack_ns else None,
            close_reason="idle",
        )

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
                self._emit(
                    "drain",
                    f"{be.address} drain timeout: {be.active_flows} flows still open",
                    level=model.Level.WARNING,
                    proxy=be.proxy,
                    backend=be.address,
                )

    # ---- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> model.Snapshot:
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
        return snap

    def _backend_view(self, be: _Backend) -> model.BackendView:
        return model.BackendView(
            proxy=be.proxy,
            address=be.address,
            group=be.group,
            configured_weight=be.weight,
            effective_weight=be.effective,
            counters=self._counters.get(be.id, model.Counters()),
            active_flows=be.active_flows,
            health=be.health,
            drain=be.drain,
            source=be.source,
            new_flows_per_s=self._rate_of(be.id, "new_flows"),
            bytes_in_per_s=self._rate_of(be.id, "bytes_in"),
            bytes_out_per_s=self._rate_of(be.id, "bytes_out"),
            last_change=be.reason,
        )

    def _publish_snapshot(self) -> None:
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
            backends = tuple(self._backend_view(b) for b in default.backends.values()) if default else ()
            rl = cfg.rate_limit
            services.append(
                model.ServiceView(
                    name=cfg.name,
                    vip=cfg.vip,
                    port=cfg.port,
                    protocol=cfg.protocol,
                    algorithm=cfg.algorithm,
                    interfaces=tuple(cfg.interfaces),
                    backends=backends,
                    routes=routes,
                    counters=counters,
                    active_flows=sum(
                        b.active_flows for g in proxy.groups.values() for b in g.backends.values()
                    ),
                    drops=drops,
                    panic=any(g.panic for g in proxy.groups.values()),
                    rate_limit=model.RateLimitView(
                        per_source_rate=rl.per_source.rate if rl and rl.per_source else None,
                        per_source_burst=rl.per_source.burst if rl and rl.per_source else None,
                        per_backend_rate=rl.per_backend.rate if rl and rl.per_backend else None,
                        per_backend_burst=rl.per_backend.burst if rl and rl.per_backend else None,
                    ),
                )
            )
        self._snapshot = model.Snapshot(
            taken_at=time.time(),
            started_at=self._started_at,
            config_path=self.config.path,
            services=tuple(services),
            conntrack=self._ct_summary,
            flows=self._flows,
            totals=totals,
            events_dropped=self.flow_events_dropped,
            running=self._running,
        )

    # ---- for tests and tools --------------------------------------------------------------------

    @property
    def dataplane(self) -> Dataplane:
        return self._dp

    def group_table(self, proxy: str, label: str = DEFAULT_GROUP) -> Sequence[int]:
        return tuple(self._proxies[proxy].groups[label].table)

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
