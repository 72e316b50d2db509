# SPDX-License-Identifier: Apache-2.0
"""Prometheus metrics: a collector over the latest snapshot, histograms fed by events, an HTTP endpoint.

`METRICS` declares every metric once (name, type, help, labels); the collector builds its families
from it and docs/metrics.md is generated from it (scripts/metrics-doc). Every name starts `lbtui_`.
Everything lives in the instance's own CollectorRegistry (never prometheus_client's global one), so two
engines or two tests in one process do not clash. The HTTP side is lbtui.observe.scrape.

Only what exists is exported: per-backend series come from the latest snapshot, so a removed backend's
series leave the page with it; the health-check histogram (fed by events) drops the labels of
backends missing from the latest snapshot.

Counter rule (why exported counters never go down): the data path's counters are monotonic per
backend while the backend exists, but start again from zero when a backend is removed and re-added,
or when maps are recreated. For every exported counter series the collector keeps the last raw value
it saw and an offset (the sum of earlier lifetimes); the exported value is offset + raw. A new
lifetime starts, adding the last raw value to the offset, when a raw value is below the last one
(reset) or when the series comes back after missing from a snapshot (a snapshot lists every existing
backend and drop reason, so a missing series means its source was removed). The state of a removed
series is kept for FORGET_AFTER_S (a backend that comes back soon continues where it stopped), then
forgotten, so backends that come and go through DNS do not grow memory; a series that returns after
that starts from its raw value, which Prometheus' rate() reads as an ordinary counter reset.
Snapshots older than one already processed are not used to update. Only snapshots the collector
sees count: call track() on every snapshot the engine builds (not only at scrape time) so a
remove/re-add between two scrapes is noticed.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from lbtui import __version__, model
from lbtui.observe.histogram import DEFAULT_BOUNDS_MS
from lbtui.observe.scrape import ScrapeServer

log = logging.getLogger(__name__)

BUCKETS_S: tuple[float, ...] = tuple(round(b / 1000.0, 9) for b in DEFAULT_BOUNDS_MS)

CIRCUIT_VALUE = {model.Circuit.CLOSED: 0, model.Circuit.HALF_OPEN: 1, model.Circuit.OPEN: 2}
HEALTH_VALUE = {model.Health.UP: 1, model.Health.DOWN: 0}  # unknown: series not exported

# Drop reasons (ServiceView.drops keys) that mean "rate limited"; the rest of the name is the scope,
# e.g. "rate_limit_source" -> scope "source". Such drops are exported in both lbtui_drops_total and
# lbtui_rate_limited_total.
RATE_LIMIT_PREFIXES = ("rate_limited_", "rate_limit_", "rate_")

# no `_created` series: they would double the health-check histogram's series for nothing lbtui uses
disable_created_metrics()

FORGET_AFTER_S = 300.0  # a removed series' counter state is kept this long (snapshot time)
MAX_REMOVED_SERIES = 20_000  # and at most this many removed series are remembered


def rate_limit_scope(reason: str) -> str | None:
    for prefix in RATE_LIMIT_PREFIXES:
        if reason.startswith(prefix) and len(reason) > len(prefix):
            return reason[len(prefix) :]
    return None


# ---- the one declaration of every metric ------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed; counters end in _total, histograms get _bucket/_sum/_count samples
    type: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...] = ()


PB = ("proxy", "backend")
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "lbtui_build_info", "gauge", "Always 1; the label says which lbtui version runs.", ("version",)
    ),
    MetricSpec("lbtui_start_time_seconds", "gauge", "When the running engine started (Unix time)."),
    MetricSpec("lbtui_connections_total", "counter", "Connections sent to a backend.", PB),
    MetricSpec("lbtui_connections_active", "gauge", "Connections open to a backend.", PB),
    MetricSpec(
        "lbtui_handshakes_total", "counter", "TCP handshakes completed by a backend (SYN-ACK seen).", PB
    ),
    MetricSpec(
        "lbtui_connection_failures_total",
        "counter",
        "Connection attempts refused (RST to SYN) or left unanswered.",
        PB,
    ),
    MetricSpec(
        "lbtui_bytes_total",
        "counter",
        "Bytes forwarded; direction in = client to backend, out = backend to client.",
        (*PB, "direction"),
    ),
    MetricSpec(
        "lbtui_packets_total",
        "counter",
        "Packets forwarded; direction in = client to backend, out = backend to client.",
        (*PB, "direction"),
    ),
    MetricSpec(
        "lbtui_drops_total", "counter", "Packets dropped by the data path, by reason.", ("proxy", "reason")
    ),
    MetricSpec(
        "lbtui_rate_limited_total", "counter", "New connections refused by a rate limit.", ("proxy", "scope")
    ),
    MetricSpec(
        "lbtui_backend_health", "gauge", "Health check result: 1 up, 0 down (absent: not checked).", PB
    ),
    MetricSpec("lbtui_backend_effective_weight", "gauge", "Weight used for new connections right now.", PB),
    MetricSpec("lbtui_backend_draining", "gauge", "1 while a backend is draining or drained, else 0.", PB),
    MetricSpec("lbtui_circuit_breaker_state", "gauge", "Circuit breaker: 0 closed, 1 half_open, 2 open.", PB),
    MetricSpec(
        "lbtui_backend_handshake_seconds",
        "histogram",
        "TCP handshake time through the balancer (SYN to SYN-ACK), measured in the data path.",
        PB,
    ),
    MetricSpec(
        "lbtui_connection_duration_seconds",
        "histogram",
        "Connection lifetime, first packet to close (FIN both ways, RST, or idle expiry).",
        PB,
    ),
    MetricSpec(
        "lbtui_health_check_latency_seconds", "histogram", "Time a health check took (successful or not).", PB
    ),
    MetricSpec(
        "lbtui_dns_resolution_status",
        "gauge",
        "1 if the last resolution of a backend hostname succeeded, 0 if failing or never resolved.",
        ("proxy", "hostname"),
    ),
    MetricSpec(
        "lbtui_fast_path_packets_total",
        "counter",
        "Packets the fast path forwarded itself: forward = client to backend (from XDP), "
        "reply = backend to client (from TC ingress).",
        ("direction",),
    ),
    MetricSpec(
        "lbtui_fast_path_fallbacks_total",
        "counter",
        "Packets the fast path left to the kernel's forwarding, by reason.",
        ("reason",),
    ),
    MetricSpec(
        "lbtui_fast_path_netlink_messages_total",
        "counter",
        "Kernel announcements (links, neighbours, addresses, routes) the fast path's next-hop watch "
        "read: changes = may change a next hop, none = a known neighbour staying usable.",
        ("effect",),
    ),
    MetricSpec(
        "lbtui_fast_path_next_hop_forgets_total",
        "counter",
        "Times the fast path's remembered next hops were all forgotten after an announcement.",
    ),
    MetricSpec(
        "lbtui_fast_path_netlink_lost_total",
        "counter",
        "Announcements the next-hop watch lost (socket overrun, truncated or undecodable); each forgets.",
    ),
    MetricSpec(
        "lbtui_fast_path_neighbours_evicted_total",
        "counter",
        "Neighbours the next-hop watch dropped from its bounded table (a large or hostile LAN).",
    ),
    MetricSpec("lbtui_conntrack_entries", "gauge", "Conntrack map entries (both directions)."),
    MetricSpec("lbtui_conntrack_capacity", "gauge", "Conntrack map capacity."),
    MetricSpec("lbtui_conntrack_swept_total", "counter", "Conntrack entries removed by the idle sweep."),
    MetricSpec(
        "lbtui_events_dropped_total",
        "counter",
        "Flow events or access-log lines dropped because a consumer was too slow (memory stays bounded).",
    ),
)
SPEC: dict[str, MetricSpec] = {m.name: m for m in METRICS}
_SNAPSHOT_HISTOGRAMS = ("lbtui_backend_handshake_seconds", "lbtui_connection_duration_seconds")


def _family(name: str) -> Any:
    spec = SPEC[name]
    kind = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
    return kind[spec.type](spec.name, spec.help, labels=list(spec.labels))


# ---- monotonic counters -----------------------------------------------------------------------

SeriesKey = tuple[str, tuple[str, ...]]  # (metric name, label values)


@dataclass(slots=True)
class _SeriesState:
    raw: float  # last raw value seen
    offset: float  # sum of the final raw values of earlier lifetimes
    present: bool  # in the last snapshot processed
    seen_at: float  # snapshot time it was last present


class CounterTracker:
    """Makes counter series monotonic across resets of their source (see the module docstring)."""

    def __init__(self, forget_after_s: float = FORGET_AFTER_S, max_removed: int = MAX_REMOVED_SERIES) -> None:
        self._series: dict[SeriesKey, _SeriesState] = {}
        self._taken_at = float("-inf")
        self._lock = threading.Lock()
        self._forget_after_s = forget_after_s
        self._max_removed = max_removed

    def __len__(self) -> int:
        return len(self._series)

    def update(
        self, taken_at: float, samples: Iterable[tuple[str, tuple[str, ...], float]]
    ) -> list[tuple[str, tuple[str, ...], float]]:
        """Process one snapshot's raw samples; return (name, labels, exported value) for each.

        A snapshot older than one already processed (a scrape racing track()) changes nothing:
        its series are reported with their current exported values.
        """
        samples = list(samples)
        with self._lock:
            if taken_at >= self._taken_at:
                self._taken_at = taken_at
                self._advance(taken_at, samples)
            out = []
            for name, labels, raw in samples:
                state = self._series.get((name, labels))
                out.append((name, labels, raw if state is None else state.offset + state.raw))
            return out

    def _advance(self, taken_at: float, samples: list[tuple[str, tuple[str, ...], float]]) -> None:
        seen: set[SeriesKey] = set()
        for name, labels, raw in samples:
            key = (name, labels)
            seen.add(key)
            state = self._series.get(key)
            if state is None:
                self._series[key] = _SeriesState(raw=raw, offset=0.0, present=True, seen_at=taken_at)
                continue
            if raw < state.raw or not state.present:  # reset, or back after being removed
                state.offset += state.raw
            state.raw = raw
            state.present = True
            state.seen_at = taken_at
        removed = []
        for key, state in self._series.items():
            if key not in seen:
                state.present = False
                removed.append((state.seen_at, key))
        if not removed:
            return
        removed.sort()
        too_many = len(removed) - self._max_removed
        for n, (seen_at, key) in enumerate(removed):
            if n < too_many or taken_at - seen_at > self._forget_after_s:
                del self._series[key]


def _counter_samples(snap: model.Snapshot) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """(metric name, label values, raw value) of every counter series in a snapshot."""
    for svc in snap.services:
        for b in svc.all_backends():
            c = b.counters
            labels = (svc.name, b.address)
            yield "lbtui_connections_total", labels, c.new_flows
            yield "lbtui_handshakes_total", labels, c.handshakes
            yield "lbtui_connection_failures_total", labels, c.conn_failures
            yield "lbtui_bytes_total", (*labels, "in"), c.bytes_in
            yield "lbtui_bytes_total", (*labels, "out"), c.bytes_out
            yield "lbtui_packets_total", (*labels, "in"), c.packets_in
            yield "lbtui_packets_total", (*labels, "out"), c.packets_out
        for reason, count in sorted(svc.drops.items()):
            yield "lbtui_drops_total", (svc.name, reason), count
            scope = rate_limit_scope(reason)
            if scope is not None:
                yield "lbtui_rate_limited_total", (svc.name, scope), count
    for view in snap.latency:  # the data path's histograms: buckets are counters too
        for name, hist in zip(_SNAPSHOT_HISTOGRAMS, (view.handshake, view.duration), strict=True):
            if hist is None:
                continue
            cumulative = 0
            for bound, count in zip((*hist.bounds_ms, math.inf), hist.counts, strict=True):
                cumulative += count
                yield f"{name}_bucket", (view.proxy, view.backend, _le(bound)), cumulative
            yield f"{name}_sum", (view.proxy, view.backend), hist.sum_ms / 1000
    if snap.fast_path is not None:
        for direction, count in sorted(snap.fast_path.forwarded.items()):
            yield "lbtui_fast_path_packets_total", (direction,), count
        for reason, count in sorted(snap.fast_path.fallbacks.items()):
            yield "lbtui_fast_path_fallbacks_total", (reason,), count
        watch = snap.fast_path.watch
        yield "lbtui_fast_path_netlink_messages_total", ("changes",), watch.messages - watch.skipped
        yield "lbtui_fast_path_netlink_messages_total", ("none",), watch.skipped
        yield "lbtui_fast_path_next_hop_forgets_total", (), watch.forgets
        yield "lbtui_fast_path_netlink_lost_total", (), watch.lost
        yield "lbtui_fast_path_neighbours_evicted_total", (), watch.evicted
    yield "lbtui_conntrack_swept_total", (), snap.conntrack.swept_total
    yield "lbtui_events_dropped_total", (), snap.events_dropped


def _le(bound_ms: float) -> str:
    return "+Inf" if math.isinf(bound_ms) else repr(bound_ms / 1000)


# ---- the collector ----------------------------------------------------------------------------


class SnapshotCollector:
    """Reads the latest snapshot at scrape time and yields counter, histogram and gauge families."""

    def __init__(
        self, get_snapshot: Callable[[], model.Snapshot | None], tracker: CounterTracker, version: str
    ) -> None:
        self._get_snapshot = get_snapshot
        self._tracker = tracker
        self._version = version

    def describe(self) -> Iterable[Metric]:
        return ()  # do not call get_snapshot at registration time

    def collect(self) -> Iterable[Metric]:
        info = _family("lbtui_build_info")
        info.add_metric([self._version], 1)
        yield info
        try:
            snap = self._get_snapshot()
        except Exception:
            log.exception("metrics: could not get a snapshot")
            return
        if snap is None:
            return
        started = _family("lbtui_start_time_seconds")
        started.add_metric([], snap.started_at)
        yield started
        yield from self._counters(snap)
        yield from self._gauges(snap)

    def _counters(self, snap: model.Snapshot) -> Iterator[Metric]:
        families = {m.name: _family(m.name) for m in METRICS if m.type == "counter"}
        hist: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {name: {} for name in _SNAPSHOT_HISTOGRAMS}
        for name, labels, exported in self._tracker.update(snap.taken_at, _counter_samples(snap)):
            if name in families:
                families[name].add_metric(list(labels), exported)
                continue
            base, _, part = name.rpartition("_")
            series = hist[base].setdefault(labels[:2], {"buckets": [], "sum": 0.0})
            if part == "bucket":
                series["buckets"].append((labels[2], exported))
            else:
                series["sum"] = exported
        yield from families.values()
        for base in _SNAPSHOT_HISTOGRAMS:
            family = _family(base)
            for labels, series in hist[base].items():
                family.add_metric(list(labels), series["buckets"], series["sum"])
            yield family

    def _gauges(self, snap: model.Snapshot) -> Iterator[Metric]:
        active = _family("lbtui_connections_active")
        health = _family("lbtui_backend_health")
        weight = _family("lbtui_backend_effective_weight")
        circuit = _family("lbtui_circuit_breaker_state")
        draining = _family("lbtui_backend_draining")
        for svc in snap.services:
            for b in svc.all_backends():
                labels = [svc.name, b.address]
                active.add_metric(labels, b.active_flows)
                weight.add_metric(labels, b.effective_weight)
                draining.add_metric(labels, 0 if b.drain is model.DrainState.ACTIVE else 1)
                if b.health in HEALTH_VALUE:
                    health.add_metric(labels, HEALTH_VALUE[b.health])
                if b.circuit is not None:
                    circuit.add_metric(labels, CIRCUIT_VALUE[b.circuit])
        dns = _family("lbtui_dns_resolution_status")
        for status in snap.dns:
            ok = status.consecutive_failures == 0 and status.last_success is not None
            dns.add_metric([status.proxy, status.hostname], 1 if ok else 0)
        entries = _family("lbtui_conntrack_entries")
        entries.add_metric([], snap.conntrack.entries)
        capacity = _family("lbtui_conntrack_capacity")
        capacity.add_metric([], snap.conntrack.capacity)
        yield from (active, health, weight, circuit, draining, dns, entries, capacity)


# ---- the endpoint -----------------------------------------------------------------------------


class Metrics:
    """The engine's Prometheus endpoint. get_snapshot must be safe to call from any thread."""

    def __init__(self, get_snapshot: Callable[[], model.Snapshot | None], version: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self._tracker = CounterTracker()
        self._get_snapshot = get_snapshot
        self.registry.register(SnapshotCollector(get_snapshot, self._tracker, version or __version__))
        spec = SPEC["lbtui_health_check_latency_seconds"]
        self._health_check = Histogram(
            spec.name, spec.help, spec.labels, registry=self.registry, buckets=BUCKETS_S
        )
        self._health_labels: set[tuple[str, str]] = set()
        self._labels_lock = threading.Lock()
        self._server: ScrapeServer | None = None

    # ---- feeding ----------------------------------------------------------------------------

    def observe_health_check(self, proxy: str, backend: str, seconds: float) -> None:
        with self._labels_lock:
            self._health_labels.add((proxy, backend))
            self._health_check.labels(proxy, backend).observe(max(seconds, 0.0))

    def track(self, snap: model.Snapshot) -> None:
        """Note a snapshot's counters (resets between scrapes are noticed) and forget removed backends."""
        self._tracker.update(snap.taken_at, _counter_samples(snap))
        live = {(svc.name, b.address) for svc in snap.services for b in svc.all_backends()}
        with self._labels_lock:
            for proxy, backend in self._health_labels - live:
                self._health_check.remove(proxy, backend)
            self._health_labels &= live

    @property
    def tracked_series(self) -> int:
        """Counter series whose state is kept (live ones and recently removed ones)."""
        return len(self._tracker)

    def render(self, accept: str | None = None) -> bytes:
        return self.render_for(accept)[0]

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        """The page in the format the Accept header asks for (text or OpenMetrics), and its type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # ---- serving ----------------------------------------------------------------------------

    @property
    def server_address(self) -> tuple[str, int] | None:
        """(host, port) actually bound, or None when not serving (port 0 picks a free port)."""
        return None if self._server is None else self._server.address

    @property
    def server(self) -> ScrapeServer | None:
        return self._server

    def start(self, listen: str, path: str = "/metrics") -> None:
        """Serve on listen ("host:port"); a busy port raises OSError (EADDRINUSE) here."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        host, port = parse_listen(listen)
        if not path.startswith("/"):
            path = "/" + path
        server = ScrapeServer(self.render_for, path)
        server.start(host, port)
        self._server = server
        log.info("metrics: serving http://%s%s", listen, path)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()


def parse_listen(listen: str) -> tuple[str, int]:
    """ "127.0.0.1:17100", "[::1]:17100", ":17100" (all IPv4 addresses) -> (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address must be host:port, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)
