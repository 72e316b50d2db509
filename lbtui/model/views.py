# SPDX-License-Identifier: Apache-2.0
"""What front ends read: snapshots of the engine's state and its events, and the values inside them
(services, backends, flows, latency, announcements, overrides), plus the data path's flow events.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass, field
from typing import Any

from lbtui import __version__
from lbtui.addresses import format_endpoint, search_terms


class Health(enum.StrEnum):
    UNKNOWN = "unknown"  # no health check configured yet / not checked yet
    UP = "up"
    DOWN = "down"


class Circuit(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class DrainState(enum.StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"  # no new flows; existing ones still counted down
    DRAINED = "drained"  # drain finished (0 flows left or timeout); still excluded until undrain


@dataclass(frozen=True)
class Counters:
    """Monotonic data-path counters of one backend or service (summed over CPUs)."""

    packets_in: int = 0  # client -> backend
    bytes_in: int = 0
    packets_out: int = 0  # backend -> client (replies)
    bytes_out: int = 0
    new_flows: int = 0
    handshakes: int = 0  # TCP SYN-ACK seen on the reply path
    conn_failures: int = 0  # RST answering a SYN (+ SYNs left unanswered, counted by userspace)


@dataclass(frozen=True)
class BackendView:
    proxy: str
    address: str  # "ip:port", as written in the config
    group: str  # "default" or the source route's CIDR
    configured_weight: int
    effective_weight: int
    counters: Counters
    active_flows: int = 0
    health: Health = Health.UNKNOWN
    circuit: Circuit | None = None  # None: no circuit breaker configured
    drain: DrainState = DrainState.ACTIVE
    source: str = "static"  # "static" or "dns:<hostname>"
    new_flows_per_s: float | None = None
    bytes_in_per_s: float | None = None
    bytes_out_per_s: float | None = None
    packets_in_per_s: float | None = None
    packets_out_per_s: float | None = None
    handshake_p50_ms: float | None = None
    handshake_p99_ms: float | None = None
    health_check_ms: float | None = None
    last_change: str = ""  # human reason of the last weight change
    maintenance: bool = False  # in maintenance: no new flows, health checks paused (not a drain)
    health_forced: bool = False  # `health` is what an operator forced, not what the checks say
    circuit_held: bool = False  # `circuit` is held open or closed by an operator


@dataclass(frozen=True)
class RouteView:
    cidr: str
    backends: tuple[BackendView, ...]


@dataclass(frozen=True)
class RateLimitView:
    per_source_rate: int | None = None
    per_source_burst: int | None = None
    per_backend_rate: int | None = None
    per_backend_burst: int | None = None


@dataclass(frozen=True)
class ServiceView:
    name: str
    vip: str
    port: int
    protocol: str  # "tcp" | "udp"
    algorithm: str
    interfaces: tuple[str, ...]
    backends: tuple[BackendView, ...]  # default group
    routes: tuple[RouteView, ...] = ()
    counters: Counters = field(default_factory=Counters)
    active_flows: int = 0
    drops: dict[str, int] = field(default_factory=dict)  # reason -> count
    rate_limit: RateLimitView = field(default_factory=RateLimitView)
    panic: bool = False  # every backend had weight 0: traffic spread over all non-drained

    def all_backends(self) -> tuple[BackendView, ...]:
        return self.backends + tuple(b for r in self.routes for b in r.backends)


@dataclass(frozen=True)
class FlowView:
    """One connection as seen in conntrack (the forward entry plus its reverse counters)."""

    protocol: str
    client: str  # "ip:port"
    vip: str  # "ip:port"
    backend: str  # "ip:port"
    proxy: str
    state: str  # "syn_sent" | "established" | "closing" | "udp"
    age_s: float
    idle_s: float
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int


FLOW_SORTS = ("bytes", "age", "idle", "backend")  # bytes, age, idle: largest first; backend: address
MAX_QUERY_TEXT = 200


@dataclass(frozen=True)
class FlowQuery:
    """Which flows a front end wants in its bounded view, chosen among all flows in conntrack.

    `text`: whitespace-separated terms, all of which must match (case-insensitive); a term matches
    a flow when it is part of its client, VIP or backend "ip:port" (IPv6: "[ip]:port"), its proxy,
    state or protocol. An address or endpoint term in any spelling is made canonical first.
    """

    text: str = ""
    sort: str = "bytes"

    def terms(self) -> tuple[str, ...]:
        return search_terms(self.text)

    def problem(self) -> str | None:
        """Why the engine refuses this query, or None."""
        if self.sort not in FLOW_SORTS:
            return f"unknown sort {self.sort!r} (expected one of {', '.join(FLOW_SORTS)})"
        if len(self.text) > MAX_QUERY_TEXT:
            return f"filter text longer than {MAX_QUERY_TEXT} characters"
        return None


@dataclass(frozen=True)
class ConntrackSummary:
    entries: int = 0  # map entries (forward + reverse) of both tables
    flows: int = 0  # forward entries
    tcp: int = 0
    udp: int = 0
    closing: int = 0
    capacity: int = 0  # entries the established tables of both families hold (2 x max_connections each)
    swept_total: int = 0  # entries removed by the idle sweep since start
    embryonic: int = 0  # flows not established yet: TCP handshakes not completed, UDP not answered


@dataclass(frozen=True)
class NextHopWatchCounts:
    """What the fast path's next-hop watch (lbtui/dataplane/nexthop_watch.py) did since it started:
    the rtnetlink messages it read and how often it made the next-hop caches forget."""

    batches: int = 0  # wake-ups with something to read
    messages: int = 0
    skipped: int = 0  # messages that change no answer (a known neighbour's state within NUD_VALID)
    forgets: int = 0  # generation bumps
    lost: int = 0  # ENOBUFS, truncated or undecodable datagrams (each forgets)
    evicted: int = 0  # neighbours dropped from the watch's table to keep it bounded


@dataclass(frozen=True)
class FastPathView:
    """The data path's fast path (docs/datapath.md#fast-path) since its maps were created: packets
    it forwarded itself, by direction (forward: client to backend, from XDP; reply: backend to
    client, from TC ingress), and packets that fell back to the kernel's forwarding, by reason; and
    since this run started, what the next-hop watch did."""

    forwarded: dict[str, int] = field(default_factory=dict)  # "forward" | "reply" -> packets
    fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> packets
    watch: NextHopWatchCounts = field(default_factory=NextHopWatchCounts)

    def share(self) -> float | None:
        """The part of the packets it decided on that went fast (0..1); None before any."""
        fast = sum(self.forwarded.values())
        total = fast + sum(self.fallbacks.values())
        return fast / total if total else None


@dataclass(frozen=True)
class DnsStatus:
    hostname: str
    proxy: str
    addresses: tuple[str, ...] = ()
    last_success: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0


@dataclass(frozen=True)
class CircuitTransition:
    ts: float
    proxy: str
    backend: str
    old: Circuit
    new: Circuit
    reason: str


@dataclass(frozen=True)
class Histogram:
    """Cumulative-free histogram: counts[i] = observations in (bounds[i-1], bounds[i]]; last = +Inf."""

    bounds_ms: tuple[float, ...]
    counts: tuple[int, ...]
    count: int = 0
    sum_ms: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


LATENCY_WINDOWS_S = (10, 60, 300)  # the windows of LatencyView.windows, shortest first


@dataclass(frozen=True)
class Percentiles:
    """Percentiles of the observations inside one window (no buckets: a snapshot stays small)."""

    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True)
class WindowLatency:
    """Handshake and connection-lifetime percentiles over the last `seconds` (histogram differences).

    None: not measured or not known (a UDP backend has no handshakes; an engine that keeps no
    windows; fewer than two samples yet). count 0: known, and nothing was observed in the window.
    """

    seconds: int
    handshake: Percentiles | None = None
    duration: Percentiles | None = None


@dataclass(frozen=True)
class LatencyView:
    proxy: str
    backend: str
    handshake: Histogram | None = None  # lifetime (since the data path's counters began)
    duration: Histogram | None = None
    windows: tuple[WindowLatency, ...] = ()  # one per LATENCY_WINDOWS_S, when the engine keeps them

    def window(self, seconds: int) -> WindowLatency | None:
        return next((w for w in self.windows if w.seconds == seconds), None)


@dataclass(frozen=True)
class VipAnnouncement:
    """One VIP's BGP announcement on this host (docs/scale-out.md#announcing-vips)."""

    vip: str
    proxies: tuple[str, ...]  # the proxies serving it (any one with enough usable backends announces)
    announced: bool  # the route is in lbtui's table (BIRD exports it)
    reason: str  # why it is (or is not) announced, for the operator
    usable_backends: int  # of its best proxy
    held: bool = False  # withdrawn by an operator command until "announce" undoes it
    since: float = 0.0  # wall-clock time of the last change
    error: str | None = None  # the last route change the kernel refused


@dataclass(frozen=True)
class BgpSessionView:
    """A BGP session of BIRD, as its control socket reports it."""

    name: str
    state: str  # "Established", "Active", "Connect", "Idle", ...
    neighbor: str | None = None
    neighbor_as: int | None = None
    since: str = ""
    last_error: str | None = None


@dataclass(frozen=True)
class AnnounceView:
    """[settings.announce] at work: each VIP's state and BIRD's sessions (read every few seconds)."""

    enabled: bool = False
    table: int = 0
    vips: tuple[VipAnnouncement, ...] = ()
    bgp: tuple[BgpSessionView, ...] = ()
    bird_error: str | None = None  # BIRD's socket could not be read (its sessions then unknown)

    def vip(self, address: str) -> VipAnnouncement | None:
        return next((v for v in self.vips if v.vip == address), None)


@dataclass(frozen=True)
class TableFingerprint:
    """A digest of one selection table as backend addresses per slot: equal on two hosts exactly
    when their tables send every slot to the same backend (ids and insertion order do not count)."""

    proxy: str
    group: str  # "default" or a source route's CIDR
    algorithm: str
    slots: int
    backends: int  # with at least one slot
    fingerprint: str  # 16 hex digits of SHA-256


@dataclass(frozen=True)
class OverrideView:
    """One runtime override (README.md#runtime-state): what an operator changed at run time."""

    # "weight", "drain", "maintenance", "health", "circuit", "added", "removed", "rate_limit", "withdrawn"
    kind: str
    proxy: str
    backend: str | None = None  # None: the proxy's own (rate limits)
    group: str | None = None  # added and removed backends: the group ("default" or a route's CIDR)
    value: str = ""  # "5", "draining, timeout in 25 s", "forced down", "held open", ...


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    started_at: float
    config_path: str | None
    services: tuple[ServiceView, ...]
    conntrack: ConntrackSummary
    flows: tuple[FlowView, ...]  # bounded top-N of the flows matching flow_query, never the whole table
    totals: Counters = field(default_factory=Counters)
    dns: tuple[DnsStatus, ...] = ()
    circuit_log: tuple[CircuitTransition, ...] = ()
    latency: tuple[LatencyView, ...] = ()
    access_log_tail: tuple[str, ...] = ()
    events_dropped: int = 0
    running: bool = True
    flow_query: FlowQuery = field(default_factory=FlowQuery)  # what `flows` was chosen by
    flows_matched: int = 0  # live flows matching flow_query (all live flows for the default query)
    access_log_target: str | None = None  # where closed connections are logged; None: no access log
    history_s: int = 0  # seconds of history the engine keeps (EngineHandle.history); 0: none
    announce: AnnounceView = field(default_factory=AnnounceView)
    tables: tuple[TableFingerprint, ...] = ()  # one per selection table (docs/scale-out.md)
    overrides: tuple[OverrideView, ...] = ()  # every runtime override in force
    state_file: str | None = None  # where the overrides are kept across restarts; None: nowhere
    fast_path: FastPathView | None = None  # None: settings.fast_path is off
    version: str = __version__  # of the lbtui that built the snapshot

    def service(self, name: str) -> ServiceView | None:
        return next((s for s in self.services if s.name == name), None)

    def backend(self, proxy: str, address: str) -> BackendView | None:
        svc = self.service(proxy)
        if svc is None:
            return None
        return next((b for b in svc.all_backends() if b.address == address), None)

    def latency_of(self, proxy: str, address: str) -> LatencyView | None:
        return next((v for v in self.latency if v.proxy == proxy and v.backend == address), None)


class Level(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    """Something the engine did or saw; shown by the console's events pane and logged headless."""

    seq: int
    ts: float
    kind: str  # "started", "weight", "drain", "health", "circuit", "panic", "command", "reload", ...
    message: str
    level: Level = Level.INFO
    proxy: str | None = None
    backend: str | None = None


def now() -> float:
    return time.time()


def to_jsonable(value: Any) -> Any:
    """A dataclass tree as plain JSON values (enums become their strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class FlowEvent:
    """A connection opened or closed, as reported by the data path (ring buffer) or the idle sweep."""

    kind: str  # "new" | "closed"
    ts: float  # unix time of the event
    proxy: str
    protocol: str  # "tcp" | "udp"
    client_ip: str
    client_port: int
    vip_ip: str
    vip_port: int
    backend_ip: str
    backend_port: int
    packets_in: int = 0  # client -> backend
    bytes_in: int = 0
    packets_out: int = 0  # backend -> client
    bytes_out: int = 0
    duration_s: float | None = None  # closed events: first packet -> close
    handshake_s: float | None = None  # TCP: SYN -> SYN-ACK, measured in the data path
    close_reason: str | None = None  # "fin" | "rst" | "idle" | "evicted"

    @property
    def backend(self) -> str:
        return format_endpoint(self.backend_ip, self.backend_port)
