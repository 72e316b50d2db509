# SPDX-License-Identifier: Apache-2.0
"""Values exchanged between the engine and its front ends: snapshots, events, commands, results.

Everything here is a frozen dataclass of plain Python values (no map layouts, no UI types), so the
same objects travel to the in-process console, the headless front end and, serialised as JSON, to
the control socket. Fields a feature has not filled yet are None; front ends show "—" for them.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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


# ---- commands: what a front end may ask the engine to do ---------------------------------------


@dataclass(frozen=True)
class SetWeight:
    proxy: str
    backend: str  # "ip:port"
    weight: int


@dataclass(frozen=True)
class AdjustWeight:
    """A weight relative to the present one (`step`, e.g. +1 or -1) or to the configured one
    (`percent` of it, e.g. 50); exactly one of the two."""

    proxy: str
    backend: str
    step: int = 0
    percent: float | None = None


@dataclass(frozen=True)
class AddBackend:
    proxy: str
    backend: str
    weight: int = 1
    group: str | None = None  # None: the default group; else a source route's CIDR


@dataclass(frozen=True)
class RemoveBackend:
    proxy: str
    backend: str
    cut: bool = False  # also cut its established flows (their conntrack entries removed)


@dataclass(frozen=True)
class Maintenance:
    """No new connections and no health checks until Ready; established flows continue."""

    proxy: str
    backend: str


@dataclass(frozen=True)
class Ready:
    """Back to normal: out of maintenance and of any drain."""

    proxy: str
    backend: str


HEALTH_ACTIONS = ("up", "down", "auto")


@dataclass(frozen=True)
class ForceHealth:
    proxy: str
    backend: str
    state: str  # "up" | "down" (held until "auto") | "auto" (the health checks decide again)


@dataclass(frozen=True)
class Drain:
    proxy: str
    backend: str
    timeout_s: float | None = None  # None: settings.drain_timeout_s
    cut: bool = False  # at the timeout, cut the flows still open (their conntrack entries removed)


@dataclass(frozen=True)
class Undrain:
    proxy: str
    backend: str


@dataclass(frozen=True)
class SetRateLimit:
    proxy: str
    per_source_rate: int | None = None  # None: unchanged; 0: limit removed
    per_source_burst: int | None = None
    per_backend_rate: int | None = None
    per_backend_burst: int | None = None


@dataclass(frozen=True)
class Reload:
    path: str | None = None  # None: the file the running configuration came from
    dry_run: bool = False  # say what a reload would change (result.changes), change nothing


@dataclass(frozen=True)
class ClearOverrides:
    """Back to what the configuration says: every runtime override, a proxy's, or one backend's."""

    proxy: str | None = None
    backend: str | None = None  # needs proxy


@dataclass(frozen=True)
class CircuitCommand:
    proxy: str
    backend: str
    action: str  # "force_open" | "force_close" | "reset"


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Announce:
    """Take VIPs out of BGP rotation ("withdraw") or put them back ("announce"): one proxy's VIP, or
    every VIP (proxy None). The load balancer keeps running and keeps its flows either way."""

    action: str  # "withdraw" | "announce"
    proxy: str | None = None


Command = (
    SetWeight
    | AdjustWeight
    | AddBackend
    | RemoveBackend
    | Drain
    | Undrain
    | Maintenance
    | Ready
    | ForceHealth
    | SetRateLimit
    | Reload
    | CircuitCommand
    | ClearOverrides
    | Stop
    | Announce
)

COMMAND_TYPES: dict[str, type] = {
    c.__name__: c
    for c in (
        SetWeight,
        AdjustWeight,
        AddBackend,
        RemoveBackend,
        Drain,
        Undrain,
        Maintenance,
        Ready,
        ForceHealth,
        SetRateLimit,
        Reload,
        CircuitCommand,
        ClearOverrides,
        Stop,
        Announce,
    )
}


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    message: str
    changes: tuple[str, ...] = ()  # a reload's (or a dry run's) change list, one line each


# ---- history: per-second series of a proxy or backend, fetched on demand ----------------------

# Every series the engine records, with its unit; one point per second. Per backend and per proxy
# (a proxy's point sums its backends; its p99 merges their histograms), plus per proxy one
# "drops.<reason>" series per drop reason (1/s). Rates are per second over that second; the
# percentiles are those of the 10 s window ending at that second (None: no observation in it).
HISTORY_SERIES: dict[str, str] = {
    "new_flows": "1/s",  # new connections
    "bytes_in": "B/s",  # client -> backend
    "bytes_out": "B/s",  # backend -> client
    "packets_in": "1/s",
    "packets_out": "1/s",
    "active_flows": "flows",
    "failed_handshakes": "1/s",  # RST answering a SYN, SYN unanswered
    "handshake_p99_ms": "ms",
    "duration_p99_ms": "ms",
}
DROPS_SERIES_PREFIX = "drops."  # + reason, proxies only
# events marked on a chart's time axis
HISTORY_MARK_KINDS = ("drain", "maintenance", "reload", "circuit", "health")
MAX_HISTORY_SERIES = 64  # most series names in one query


def series_unit(name: str) -> str | None:
    if name.startswith(DROPS_SERIES_PREFIX) and len(name) > len(DROPS_SERIES_PREFIX):
        return "1/s"
    return HISTORY_SERIES.get(name)


@dataclass(frozen=True)
class HistoryQuery:
    """Which series a front end wants.

    proxy and backend: that backend; proxy alone: the proxy as a whole; neither: every proxy and
    every backend (for sparklines: ask for few series and a recent `since`). `since`: unix time;
    only points after it (None: all that is kept). `series`: names (HISTORY_SERIES or
    "drops.<reason>"); empty: all.
    """

    proxy: str | None = None
    backend: str | None = None
    since: float | None = None
    series: tuple[str, ...] = ()

    def problem(self) -> str | None:
        """Why the engine refuses this query, or None."""
        if self.backend is not None and self.proxy is None:
            return "a backend needs its proxy"
        if len(self.series) > MAX_HISTORY_SERIES:
            return f"more than {MAX_HISTORY_SERIES} series"
        unknown = [name for name in self.series if series_unit(name) is None]
        if unknown:
            known = ", ".join(HISTORY_SERIES)
            return f"unknown series {unknown[0]!r} (known: {known}, {DROPS_SERIES_PREFIX}<reason>)"
        if self.since is not None and not math.isfinite(self.since):
            return "since must be a finite time"
        return None


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float | None, ...]  # one per step, oldest first; None: nothing recorded then


@dataclass(frozen=True)
class History:
    """The series of one proxy (backend None) or one backend: values[i] is the second start + i * step_s."""

    proxy: str
    backend: str | None
    start: float
    step_s: float = 1.0
    series: tuple[Series, ...] = ()

    def get(self, name: str) -> Series | None:
        return next((s for s in self.series if s.name == name), None)

    @property
    def end(self) -> float:
        """Time of the newest point (start - step_s when empty)."""
        points = max((len(s.values) for s in self.series), default=0)
        return self.start + (points - 1) * self.step_s


@dataclass(frozen=True)
class HistoryAnswer:
    taken_at: float
    kept_s: int = 0  # how far back the engine keeps history; 0: it keeps none
    histories: tuple[History, ...] = ()
    marks: tuple[Event, ...] = ()  # HISTORY_MARK_KINDS events of the targets inside the answered span


class EngineHandle(Protocol):
    """What a front end (console, headless, control socket) needs from an engine.

    Two implementations: the in-process runner (engine on its own thread and event loop) and the
    control-socket client. All methods are safe to call from any thread.
    """

    def snapshot(self, flows: FlowQuery | None = None) -> Snapshot: ...

    def submit(self, command: Command, timeout: float = 10.0) -> CommandResult: ...

    def events_since(self, seq: int, limit: int = 1000) -> Sequence[Event]: ...

    def history(self, query: HistoryQuery) -> HistoryAnswer: ...

    def close(self) -> None: ...


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
