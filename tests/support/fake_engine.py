# SPDX-License-Identifier: Apache-2.0
"""An in-memory EngineHandle for console tests: two proxies, flows, counters, commands applied.

Deterministic by default in what it shows (fixed data); `grow=True` makes counters, flows and the
access log advance on every snapshot() call, as a live engine would. `clock` fixes time for
snapshot tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from lbtui.model import (
    BackendView,
    Circuit,
    CircuitCommand,
    CircuitTransition,
    Command,
    CommandResult,
    ConntrackSummary,
    Counters,
    Drain,
    DrainState,
    Event,
    FlowQuery,
    FlowView,
    Health,
    Histogram,
    HistoryAnswer,
    HistoryQuery,
    LatencyView,
    Level,
    Percentiles,
    RateLimitView,
    Reload,
    RouteView,
    ServiceView,
    SetRateLimit,
    SetWeight,
    Snapshot,
    Stop,
    Undrain,
    WindowLatency,
)
from lbtui.widgets.conntrack import select_flows
from tests.support import fake_history

BAD_RELOAD_MESSAGE = "configs/bad.toml: proxy[0].port: expected an integer 1..65535, got 0"
START = 1_700_000_000.0
BOUNDS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, float("inf"))


@dataclass
class _Backend:
    proxy: str
    address: str
    group: str
    weight: int
    health: Health = Health.UP
    circuit: Circuit | None = Circuit.CLOSED
    drain: DrainState = DrainState.ACTIVE
    active: int = 0
    base_bytes: int = 0
    new_per_s: float | None = None
    p50: float | None = None
    p99: float | None = None
    last_change: str = ""

    def effective_weight(self) -> int:
        if self.drain is not DrainState.ACTIVE or self.health is Health.DOWN:
            return 0
        if self.circuit is Circuit.OPEN:
            return 0
        return self.weight


@dataclass
class _Proxy:
    name: str
    vip: str
    port: int
    protocol: str
    algorithm: str
    backends: list[_Backend]
    routes: dict[str, list[_Backend]] = field(default_factory=dict)
    rate_limit: RateLimitView = field(default_factory=RateLimitView)

    def all_backends(self) -> list[_Backend]:
        return self.backends + [b for group in self.routes.values() for b in group]


def _web() -> _Proxy:
    return _Proxy(
        name="web",
        vip="10.0.0.1",
        port=80,
        protocol="tcp",
        algorithm="weighted-random",
        backends=[
            _Backend(
                "web",
                "10.0.2.11:8080",
                "default",
                3,
                active=42,
                base_bytes=9_000_000,
                new_per_s=31.5,
                p50=0.42,
                p99=3.1,
            ),
            _Backend(
                "web",
                "10.0.2.12:8080",
                "default",
                2,
                active=27,
                base_bytes=6_100_000,
                new_per_s=20.9,
                p50=0.47,
                p99=4.8,
            ),
            _Backend(
                "web",
                "10.0.2.13:8080",
                "default",
                1,
                health=Health.DOWN,
                circuit=Circuit.OPEN,
                active=0,
                base_bytes=800_000,
                new_per_s=0.0,
                p50=12.5,
                p99=250.0,
                last_change="health: down",
            ),
        ],
        routes={
            "192.168.0.0/16": [
                _Backend(
                    "web",
                    "10.0.3.10:8080",
                    "192.168.0.0/16",
                    1,
                    circuit=Circuit.HALF_OPEN,
                    active=5,
                    base_bytes=400_000,
                    new_per_s=2.2,
                    p50=0.9,
                    p99=7.7,
                ),
            ]
        },
        rate_limit=RateLimitView(
            per_source_rate=100, per_source_burst=200, per_backend_rate=5000, per_backend_burst=10000
        ),
    )


def _dns() -> _Proxy:
    return _Proxy(
        name="dns",
        vip="10.0.0.1",
        port=53,
        protocol="udp",
        algorithm="source-hash",
        backends=[
            _Backend(
                "dns",
                "10.0.4.10:53",
                "default",
                1,
                health=Health.UNKNOWN,
                circuit=None,
                active=12,
                base_bytes=120_000,
                new_per_s=8.0,
            ),
            _Backend(
                "dns",
                "10.0.4.11:53",
                "default",
                1,
                health=Health.UNKNOWN,
                circuit=None,
                active=9,
                base_bytes=98_000,
                new_per_s=7.5,
            ),
        ],
    )


class FakeEngine:
    """EngineHandle in memory. Thread-safe: the console calls it from worker threads."""

    def __init__(
        self,
        *,
        grow: bool = False,
        clock: Callable[[], float] | None = None,
        flows: int = 24,
        config_path: str = "configs/demo.toml",
    ) -> None:
        self.grow = grow
        self.clock = clock or (lambda: START + 3723.0)
        self.started_at = self.clock() - 3723.0  # up 1h02m03s when the snapshot is taken
        self.config_path = config_path
        self.proxies = [_web(), _dns()]
        self.running = True
        self.closed = False
        self.reload_should_fail = False
        self.snapshot_error: Exception | None = None  # set to make snapshot() raise
        self.commands: list[Command] = []
        self.snapshot_calls = 0
        self.flow_queries: list[FlowQuery | None] = []  # what each snapshot() call asked for
        self._flow_rows = flows
        self.access_log_target: str | None = "/var/log/lbtui/access.log"  # None: no access log
        self.history_kept_s = fake_history.KEPT_S  # 0: an engine that keeps no history
        self.history_error: Exception | None = None  # set to make history() raise
        self.history_queries: list[HistoryQuery] = []
        self._flow_total: int | None = None
        self._tick = 0
        self._events: list[Event] = []
        self._lock = threading.Lock()
        for message, kind, level, backend in (
            ("engine started with configs/demo.toml: 2 proxies, 6 backends", "started", Level.INFO, None),
            (
                "10.0.2.13:8080 health check failed 3 times: connection refused",
                "health",
                Level.WARNING,
                "10.0.2.13:8080",
            ),
            (
                "10.0.2.13:8080 circuit closed -> open: error rate 0.62 over 10s",
                "circuit",
                Level.ERROR,
                "10.0.2.13:8080",
            ),
        ):
            self._event(kind, message, level, proxy="web" if backend else None, backend=backend)

    # ---- test knobs -------------------------------------------------------------------------

    def big_flows(self, n: int = 1_000_000) -> FakeEngine:
        """Report `n` flows in conntrack but hand over only the bounded top-200 view, like the engine."""
        self._flow_total = n
        self._flow_rows = 200
        return self

    def backend(self, proxy: str, address: str) -> _Backend:
        for p in self.proxies:
            if p.name == proxy:
                for b in p.all_backends():
                    if b.address == address:
                        return b
        raise KeyError(f"{proxy} {address}")

    def proxy(self, name: str) -> _Proxy:
        return next(p for p in self.proxies if p.name == name)

    # ---- EngineHandle -----------------------------------------------------------------------

    def snapshot(self, flows: FlowQuery | None = None) -> Snapshot:
        with self._lock:
            self.snapshot_calls += 1
            self.flow_queries.append(flows)
            if self.snapshot_error is not None:
                raise self.snapshot_error
            if self.grow:
                self._tick += 1
            snap = self._build()
        if flows is None or flows == FlowQuery():
            return snap
        # the engine's answer: the matching flows in the query's order (the fake has few flows)
        chosen = select_flows(snap.flows, flows.text, flows.sort)
        matched = len(chosen)
        if self._flow_total is not None and not flows.text:
            matched = self._flow_total
        return replace(snap, flows=tuple(chosen), flow_query=flows, flows_matched=matched)

    def submit(self, command: Command, timeout: float = 10.0) -> CommandResult:
        with self._lock:
            self.commands.append(command)
            result = self._apply(command)
            level = Level.INFO if result.ok else Level.ERROR
            self._event("command", f"{type(command).__name__}: {result.message}", level)
            return result

    def events_since(self, seq: int, limit: int = 1000) -> Sequence[Event]:
        with self._lock:
            return [e for e in self._events if e.seq > seq][:limit]

    def history(self, query: HistoryQuery) -> HistoryAnswer:
        """The story of tests/support/fake_history.py, up to the time of the last snapshot."""
        with self._lock:
            self.history_queries.append(query)
            if self.history_error is not None:
                raise self.history_error
            now = self.clock() + self._tick
        if not self.history_kept_s:
            return HistoryAnswer(taken_at=now)
        return fake_history.answer(query, now, self.history_kept_s)

    def close(self) -> None:
        self.closed = True

    # ---- internals --------------------------------------------------------------------------

    def _event(self, kind: str, message: str, level: Level = Level.INFO, **where: str | None) -> None:
        seq = len(self._events) + 1
        ts = self.started_at + seq
        self._events.append(Event(seq=seq, ts=ts, kind=kind, message=message, level=level, **where))

    def _apply(self, command: Command) -> CommandResult:
        if isinstance(command, Stop):
            self.running = False
            return CommandResult(True, "stopped")
        if isinstance(command, Reload):
            if self.reload_should_fail:
                return CommandResult(False, BAD_RELOAD_MESSAGE)
            return CommandResult(True, f"reloaded {command.path or self.config_path}: no changes")
        if isinstance(command, SetRateLimit):
            return self._set_rate_limit(command)
        if isinstance(command, CircuitCommand):
            return self._circuit(command)
        if isinstance(command, SetWeight | Drain | Undrain):
            try:
                backend = self.backend(command.proxy, command.backend)
            except KeyError:
                return CommandResult(False, f"no backend {command.backend} in proxy {command.proxy}")
            if isinstance(command, SetWeight):
                if command.weight < 1:
                    return CommandResult(False, f"weight must be a positive integer, got {command.weight}")
                backend.weight = command.weight
                backend.last_change = f"set to {command.weight} by operator"
                return CommandResult(True, f"{command.proxy} {command.backend}: weight {command.weight}")
            if isinstance(command, Drain):
                if backend.drain is not DrainState.ACTIVE:
                    return CommandResult(False, f"{command.backend} is already {backend.drain}")
                backend.drain = DrainState.DRAINING
                return CommandResult(True, f"{command.proxy} {command.backend}: draining")
            if backend.drain is DrainState.ACTIVE:
                return CommandResult(False, f"{command.backend} is not draining")
            backend.drain = DrainState.ACTIVE
            return CommandResult(True, f"{command.proxy} {command.backend}: active again")
        return CommandResult(False, f"{type(command).__name__} is not supported by the fake engine")

    def _circuit(self, command: CircuitCommand) -> CommandResult:
        try:
            backend = self.backend(command.proxy, command.backend)
        except KeyError:
            return CommandResult(False, f"no backend {command.backend} in proxy {command.proxy}")
        if backend.circuit is None:
            return CommandResult(False, f"{command.backend} has no circuit breaker configured")
        backend.circuit = Circuit.OPEN if command.action == "force_open" else Circuit.CLOSED
        return CommandResult(True, f"circuit of {command.backend} {backend.circuit}")

    def _set_rate_limit(self, command: SetRateLimit) -> CommandResult:
        try:
            proxy = self.proxy(command.proxy)
        except StopIteration:
            return CommandResult(False, f"no proxy {command.proxy}")
        changes = {}
        for name in ("per_source_rate", "per_source_burst", "per_backend_rate", "per_backend_burst"):
            value = getattr(command, name)
            if value is not None:
                changes[name] = value or None  # 0 removes the limit
        proxy.rate_limit = replace(proxy.rate_limit, **changes)
        return CommandResult(True, f"{command.proxy}: rate limits updated")

    def _build(self) -> Snapshot:
        t = self._tick
        services = tuple(self._service(p, t) for p in self.proxies)
        flows = self._flows(t)
        total_flows = self._flow_total if self._flow_total is not None else len(flows)
        totals = Counters(
            packets_in=sum(s.counters.packets_in for s in services),
            bytes_in=sum(s.counters.bytes_in for s in services),
            packets_out=sum(s.counters.packets_out for s in services),
            bytes_out=sum(s.counters.bytes_out for s in services),
            new_flows=sum(s.counters.new_flows for s in services),
        )
        return Snapshot(
            version="0.0.0",  # fixed: console snapshots must not change with every release
            taken_at=self.clock() + t,
            started_at=self.started_at,
            config_path=self.config_path,
            services=services,
            conntrack=ConntrackSummary(
                entries=2 * total_flows,
                flows=total_flows,
                tcp=sum(1 for f in flows if f.protocol == "tcp") if self._flow_total is None else total_flows,
                udp=sum(1 for f in flows if f.protocol == "udp") if self._flow_total is None else 0,
                closing=sum(1 for f in flows if f.state == "closing"),
                capacity=2_097_152 if self._flow_total else 262_144,
            ),
            flows=flows,
            flows_matched=total_flows,
            totals=totals,
            circuit_log=self._circuit_log(),
            latency=self._latency(),
            access_log_tail=self._access_log(t) if self.access_log_target else (),
            running=self.running,
            access_log_target=self.access_log_target,
            history_s=self.history_kept_s,
        )

    def _backend_view(self, b: _Backend, t: int) -> BackendView:
        grown = b.base_bytes + t * int((b.new_per_s or 0) * 1500)
        return BackendView(
            proxy=b.proxy,
            address=b.address,
            group=b.group,
            configured_weight=b.weight,
            effective_weight=b.effective_weight(),
            counters=Counters(
                packets_in=grown // 700,
                bytes_in=grown // 9,
                packets_out=grown // 1100,
                bytes_out=grown,
                new_flows=grown // 20_000,
            ),
            active_flows=b.active,
            health=b.health,
            circuit=b.circuit,
            drain=b.drain,
            new_flows_per_s=b.new_per_s,
            bytes_in_per_s=None if b.new_per_s is None else b.new_per_s * 180,
            bytes_out_per_s=None if b.new_per_s is None else b.new_per_s * 1500,
            handshake_p50_ms=b.p50,
            handshake_p99_ms=b.p99,
            last_change=b.last_change,
        )

    def _service(self, p: _Proxy, t: int) -> ServiceView:
        backends = tuple(self._backend_view(b, t) for b in p.backends)
        routes = tuple(
            RouteView(cidr, tuple(self._backend_view(b, t) for b in group))
            for cidr, group in p.routes.items()
        )
        every = backends + tuple(b for r in routes for b in r.backends)
        return ServiceView(
            name=p.name,
            vip=p.vip,
            port=p.port,
            protocol=p.protocol,
            algorithm=p.algorithm,
            interfaces=("lbt0",),
            backends=backends,
            routes=routes,
            counters=Counters(
                packets_in=sum(b.counters.packets_in for b in every),
                bytes_in=sum(b.counters.bytes_in for b in every),
                packets_out=sum(b.counters.packets_out for b in every),
                bytes_out=sum(b.counters.bytes_out for b in every),
                new_flows=sum(b.counters.new_flows for b in every),
            ),
            active_flows=sum(b.active_flows for b in every),
            rate_limit=p.rate_limit,
        )

    def _flows(self, t: int) -> tuple[FlowView, ...]:
        web = [b.address for b in self.proxy("web").all_backends()]
        dns = [b.address for b in self.proxy("dns").backends]
        rows = []
        for i in range(self._flow_rows):
            udp = i % 4 == 3
            backends = dns if udp else web
            rows.append(
                FlowView(
                    protocol="udp" if udp else "tcp",
                    client=f"192.0.2.{10 + i % 200}:{40000 + i * 7}"
                    if i % 5
                    else f"192.168.7.{i % 250}:{50000 + i}",
                    vip="10.0.0.1:53" if udp else "10.0.0.1:80",
                    backend=backends[i % len(backends)],
                    proxy="dns" if udp else "web",
                    state="udp" if udp else ("established" if i % 7 else "closing"),
                    age_s=float(5 + (i * 37) % 900 + t),
                    idle_s=float((i * 13) % 60),
                    packets_in=10 + i * 3,
                    bytes_in=600 + (i * 7919) % 50_000 + t * 100,
                    packets_out=12 + i * 4,
                    bytes_out=1500 + (i * 104_729) % 2_000_000 + t * 1000,
                )
            )
        return tuple(rows)

    def _circuit_log(self) -> tuple[CircuitTransition, ...]:
        s = self.started_at
        return (
            CircuitTransition(
                s + 3,
                "web",
                "10.0.2.13:8080",
                Circuit.CLOSED,
                Circuit.OPEN,
                "error rate 0.62 over 10s (25 of 40)",
            ),
            CircuitTransition(
                s + 600,
                "web",
                "10.0.3.10:8080",
                Circuit.CLOSED,
                Circuit.OPEN,
                "error rate 0.55 over 10s (22 of 40)",
            ),
            CircuitTransition(
                s + 630, "web", "10.0.3.10:8080", Circuit.OPEN, Circuit.HALF_OPEN, "open for 30s"
            ),
        )

    def _latency(self) -> tuple[LatencyView, ...]:
        views = []
        shapes = {
            "10.0.2.11:8080": (3, 40, 120, 90, 30, 8, 3, 1, 0, 0, 0, 0),
            "10.0.2.12:8080": (1, 25, 100, 110, 45, 12, 5, 2, 1, 0, 0, 0),
            "10.0.2.13:8080": (0, 0, 2, 5, 9, 14, 22, 30, 18, 9, 4, 2),
            "10.0.3.10:8080": (0, 4, 12, 20, 10, 4, 2, 1, 0, 0, 0, 0),
        }
        present = {b.address: b for b in self.proxy("web").all_backends()}
        for address, counts in shapes.items():
            b = present.get(address)
            if b is None:
                continue
            hist = Histogram(
                bounds_ms=BOUNDS_MS,
                counts=counts,
                count=sum(counts),
                sum_ms=float(sum(counts)) * (b.p50 or 1.0),
                p50_ms=b.p50,
                p95_ms=None if b.p99 is None else round(b.p99 * 0.6, 2),
                p99_ms=b.p99,
            )
            views.append(
                LatencyView(
                    proxy="web", backend=address, handshake=hist, windows=_windows(b.p50, b.p99, address)
                )
            )
        views.append(LatencyView(proxy="dns", backend="10.0.4.10:53"))  # no samples yet
        duration = Histogram(
            bounds_ms=BOUNDS_MS,
            counts=(0, 0, 3, 20, 30, 9, 2, 0, 0, 0, 0, 0),
            count=64,
            sum_ms=90.0,
            p50_ms=1.4,
            p95_ms=3.9,
            p99_ms=4.6,
        )
        windows = tuple(
            WindowLatency(seconds=s, duration=Percentiles(count=c, p50_ms=1.3, p95_ms=3.1, p99_ms=4.2))
            for s, c in ((10, 6), (60, 31), (300, 64))
        )
        views.append(LatencyView(proxy="dns", backend="10.0.4.11:53", duration=duration, windows=windows))
        return tuple(views)

    def _access_log(self, t: int) -> tuple[str, ...]:
        lines = []
        first = max(0, 2 * t - 38)
        for n in range(first, 12 + 2 * t):
            ts = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(self.started_at + 60 + n))
            backend = ("10.0.2.11:8080", "10.0.2.12:8080", "10.0.2.11:8080", "10.0.3.10:8080")[n % 4]
            lines.append(
                f'192.0.2.{10 + n % 50}:{41000 + n} - - [{ts}] "TCP web {backend}" fin '
                f"{300 + n * 17 % 900} {4000 + n * 331 % 90000} {0.010 + (n % 9) / 100:.3f}s"
            )
        return tuple(lines)


def _windows(p50: float | None, p99: float | None, address: str) -> tuple[WindowLatency, ...]:
    """Handshake percentiles over 10 s, 1 min, 5 min: 10.0.2.12 is getting slower, the others steady."""
    if p50 is None or p99 is None:
        return ()
    worse = {10: 12.0, 60: 4.0, 300: 1.5} if address == "10.0.2.12:8080" else {10: 0.9, 60: 1.0, 300: 1.0}
    counts = {10: 310, 60: 1_870, 300: 9_400}
    return tuple(
        WindowLatency(
            seconds=s,
            handshake=Percentiles(
                count=counts[s],
                p50_ms=round(p50 * min(worse[s], 3.0), 2),
                p95_ms=round(p99 * 0.6 * worse[s], 2),
                p99_ms=round(p99 * worse[s], 2),
            ),
        )
        for s in (10, 60, 300)
    )
