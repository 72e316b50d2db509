# SPDX-License-Identifier: Apache-2.0
"""Prometheus metrics: a collector over the latest snapshot, histograms fed by events, an HTTP server.

Everything lives in the instance's own CollectorRegistry (never prometheus_client's global one), so two
engines or two tests in one process do not clash.

Counter rule (why exported counters never go down): the data path's counters are monotonic per
backend while the backend exists, but start again from zero when a backend is removed and re-added,
or when maps are recreated. For every exported counter series the collector keeps the last raw value
it saw and an offset (the sum of earlier lifetimes); the exported value is offset + raw. A new
lifetime starts, adding the last raw value to the offset, when a raw value is below the last one
(reset) or when the series comes back after missing from a snapshot (a snapshot lists every existing
backend and drop reason, so a missing series means its source was removed). State outlives removed
series, so a backend that comes back continues from where it stopped. Snapshots older than one
already processed are not used to update. Only snapshots the collector sees count: call track() on
every snapshot the engine builds (not only at scrape time) so a remove/re-add between two scrapes
is noticed and traffic between the last sample and a reset stays within one snapshot period.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from lbtui import model
from lbtui.observe.histogram import DEFAULT_BOUNDS_MS

log = logging.getLogger(__name__)

BUCKETS_S: tuple[float, ...] = tuple(round(b / 1000.0, 9) for b in DEFAULT_BOUNDS_MS)

CIRCUIT_VALUE = {model.Circuit.CLOSED: 0, model.Circuit.HALF_OPEN: 1, model.Circuit.OPEN: 2}
HEALTH_VALUE = {model.Health.UP: 1, model.Health.DOWN: 0}  # unknown: series not exported

# Drop reasons (ServiceView.drops keys) that mean "rate limited"; the rest of the name is the scope,
# e.g. "rate_limit_source" -> scope "source". Such drops are exported in both lb_drops_total and
# lb_rate_limited_total.
RATE_LIMIT_PREFIXES = ("rate_limited_", "rate_limit_", "rate_")


def rate_limit_scope(reason: str) -> str | None:
    for prefix in RATE_LIMIT_PREFIXES:
        if reason.startswith(prefix) and len(reason) > len(prefix):
            return reason[len(prefix) :]
    return None


def package_version() -> str:
    try:
        return metadata.version("lbtui")
    except metadata.PackageNotFoundError:
        return "unknown"


SeriesKey = tuple[str, tuple[str, ...]]  # (metric name, label values)


@dataclass(slots=True)
class _SeriesState:
    raw: float  # last raw value seen
    offset: float  # sum of the final raw values of earlier lifetimes
    present: bool  # in the last snapshot processed


class CounterTracker:
    """Makes counter series monotonic across resets of their source (see the module docstring)."""

    def __init__(self) -> None:
        self._series: dict[SeriesKey, _SeriesState] = {}
        self._taken_at = float("-inf")
        self._lock = threading.Lock()

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
                self._advance(samples)
            out = []
            for name, labels, raw in samples:
                state = self._series.get((name, labels))
                out.append((name, labels, raw if state is None else state.offset + state.raw))
            return out

    def _advance(self, samples: list[tuple[str, tuple[str, ...], float]]) -> None:
        seen: set[SeriesKey] = set()
        for name, labels, raw in samples:
            key = (name, labels)
            seen.add(key)
            state = self._series.get(key)
            if state is None:
                self._series[key] = _SeriesState(raw=raw, offset=0.0, present=True)
                continue
            if raw < state.raw or not state.present:  # reset, or back after being removed
                state.offset += state.raw
            state.raw = raw
            state.present = True
        for key, state in self._series.items():
            if key not in seen:
                state.present = False


def _counter_samples(snap: model.Snapshot) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """(metric name, label values, raw value) of every counter series in a snapshot."""
    for svc in snap.services:
        for b in svc.all_backends():
            c = b.counters
            labels = (svc.name, b.address)
            yield "lb_connections_total", labels, c.new_flows
            yield "lb_handshakes_total", labels, c.handshakes
            yield "lb_connection_failures_total", labels, c.conn_failures
            yield "lb_bytes_total", (*labels, "in"), c.bytes_in
            yield "lb_bytes_total", (*labels, "out"), c.bytes_out
            yield "lb_packets_total", (*labels, "in"), c.packets_in
            yield "lb_packets_total", (*labels, "out"), c.packets_out
        for reason, count in sorted(svc.drops.items()):
            yield "lb_drops_total", (svc.name, reason), count
            scope = rate_limit_scope(reason)
            if scope is not None:
                yield "lb_rate_limited_total", (svc.name, scope), count
    for view in snap.latency:  # the data path's histograms: buckets are counters too
        for name, hist in (
            ("lb_backend_handshake_seconds", view.handshake),
            ("lb_connection_duration_seconds", view.duration),
        ):
            if hist is None:
                continue
            cumulative = 0
            for bound, count in zip((*hist.bounds_ms, math.inf), hist.counts, strict=True):
                cumulative += count
                yield f"{name}_bucket", (view.proxy, view.backend, _le(bound)), cumulative
            yield f"{name}_sum", (view.proxy, view.backend), hist.sum_ms / 1000
    yield "lb_conntrack_swept_total", (), snap.conntrack.swept_total
    yield "lb_events_dropped_total", (), snap.events_dropped


HISTOGRAM_HELP = {
    "lb_backend_handshake_seconds": "TCP handshake time through the balancer (SYN to SYN-ACK), measured "
    "in the data path.",
    "lb_connection_duration_seconds": "Connection lifetime, first packet to close (FIN both ways, RST, "
    "or idle expiry).",
}


def _le(bound_ms: float) -> str:
    return "+Inf" if math.isinf(bound_ms) else repr(bound_ms / 1000)


COUNTER_HELP: dict[str, tuple[str, tuple[str, ...]]] = {
    "lb_connections_total": ("Connections sent to a backend.", ("proxy", "backend")),
    "lb_handshakes_total": ("TCP handshakes completed by a backend (SYN-ACK seen).", ("proxy", "backend")),
    "lb_connection_failures_total": (
        "Connection attempts refused (RST to SYN) or left unanswered.",
        ("proxy", "backend"),
    ),
    "lb_bytes_total": (
        "Bytes forwarded; direction in = client to backend, out = backend to client.",
        ("proxy", "backend", "direction"),
    ),
    "lb_packets_total": (
        "Packets forwarded; direction in = client to backend, out = backend to client.",
        ("proxy", "backend", "direction"),
    ),
    "lb_drops_total": ("Packets dropped by the data path, by reason.", ("proxy", "reason")),
    "lb_rate_limited_total": ("New connections refused by a rate limit.", ("proxy", "scope")),
    "lb_conntrack_swept_total": ("Conntrack entries removed by the idle sweep.", ()),
    "lb_events_dropped_total": (
        "Flow events or access-log lines dropped because a consumer was too slow (memory stays bounded).",
        (),
    ),
}


class SnapshotCollector:
    """Reads the latest snapshot at scrape time and yields counter and gauge families."""

    def __init__(
        self, get_snapshot: Callable[[], model.Snapshot | None], tracker: CounterTracker, version: str
    ) -> None:
        self._get_snapshot = get_snapshot
        self._tracker = tracker
        self._version = version

    def describe(self) -> Iterable[Metric]:
        return ()  # do not call get_snapshot at registration time

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("lb_info", "lbtui build information.", labels=["version"])
        info.add_metric([self._version], 1)
        yield info
        try:
            snap = self._get_snapshot()
        except Exception:
            log.exception("metrics: could not get a snapshot")
            return
        if snap is None:
            return
        yield from self._counters(snap)
        yield from self._gauges(snap)

    def _counters(self, snap: model.Snapshot) -> Iterator[Metric]:
        families = {
            name: CounterMetricFamily(name, text, labels=list(labels))
            for name, (text, labels) in COUNTER_HELP.items()
        }
        hist: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {name: {} for name in HISTOGRAM_HELP}
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
        for base, text in HISTOGRAM_HELP.items():
            family = HistogramMetricFamily(base, text, labels=["proxy", "backend"])
            for labels, series in hist[base].items():
                family.add_metric(list(labels), series["buckets"], series["sum"])
            yield family

    def _gauges(self, snap: model.Snapshot) -> Iterator[Metric]:
        pb = ["proxy", "backend"]
        active = GaugeMetricFamily("lb_connections_active", "Connections open to a backend.", labels=pb)
        health = GaugeMetricFamily(
            "lb_backend_health", "Health check result: 1 up, 0 down (absent: not checked).", labels=pb
        )
        weight = GaugeMetricFamily(
            "lb_backend_effective_weight", "Weight used for new connections right now.", labels=pb
        )
        circuit = GaugeMetricFamily(
            "lb_circuit_breaker_state", "Circuit breaker: 0 closed, 1 half_open, 2 open.", labels=pb
        )
        draining = GaugeMetricFamily(
            "lb_backend_draining", "1 while a backend is draining or drained, else 0.", labels=pb
        )
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
        dns = GaugeMetricFamily(
            "lb_dns_resolution_status",
            "1 if the last resolution of a backend hostname succeeded, 0 if failing or never resolved.",
            labels=["proxy", "hostname"],
        )
        for status in snap.dns:
            ok = status.consecutive_failures == 0 and status.last_success is not None
            dns.add_metric([status.proxy, status.hostname], 1 if ok else 0)
        entries = GaugeMetricFamily("lb_conntrack_entries", "Conntrack map entries (both directions).")
        entries.add_metric([], snap.conntrack.entries)
        capacity = GaugeMetricFamily("lb_conntrack_capacity", "Conntrack map capacity.")
        capacity.add_metric([], snap.conntrack.capacity)
        yield from (active, health, weight, circuit, draining, dns, entries, capacity)


class Metrics:
    """The engine's Prometheus endpoint. get_snapshot must be safe to call from any thread."""

    def __init__(self, get_snapshot: Callable[[], model.Snapshot | None], version: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self._tracker = CounterTracker()
        self._get_snapshot = get_snapshot
        self.registry.register(SnapshotCollector(get_snapshot, self._tracker, version or package_version()))
        pb = ("proxy", "backend")
        self._health_check = Histogram(
            "lb_health_check_latency_seconds",
            "Time a health check took (successful or not).",
            pb,
            registry=self.registry,
            buckets=BUCKETS_S,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ---- feeding ----------------------------------------------------------------------------

    def observe_health_check(self, proxy: str, backend: str, seconds: float) -> None:
        self._health_check.labels(proxy, backend).observe(max(seconds, 0.0))

    def track(self, snap: model.Snapshot) -> None:
        """Note the counters of a snapshot so resets between scrapes are noticed (optional)."""
        self._tracker.update(snap.taken_at, _counter_samples(snap))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # ---- serving ----------------------------------------------------------------------------

    @property
    def server_address(self) -> tuple[str, int] | None:
        """(host, port) actually bound, or None when not serving (port 0 picks a free port)."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self, listen: str, path: str = "/metrics") -> None:
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        host, port = parse_listen(listen)
        if not path.startswith("/"):
            path = "/" + path
        server_class = _MetricsServer6 if ":" in host else _MetricsServer
        server = make_server(
            host, port, _only_path(path, make_wsgi_app(self.registry)), server_class, _QuietHandler
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long stop() may wait for the loop to notice
            name="lbtui-metrics",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        log.info("metrics: serving http://%s%s", listen, path)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()  # waits for serve_forever to return
        server.server_close()  # frees the port
        if thread is not None:
            thread.join()


def parse_listen(listen: str) -> tuple[str, int]:
    """ "127.0.0.1:9100", "[::1]:9100", ":9100" (all IPv4 addresses) -> (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address must be host:port, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


def _only_path(path: str, app: Callable[..., Any]) -> Callable[..., Any]:
    def app_on_path(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO", "") != path:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"not found; metrics are at {path}\n".encode()]
        return app(environ, start_response)

    return app_on_path


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never keeps the process alive


class _MetricsServer6(_MetricsServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # "format": the base class signature
        log.debug("metrics: " + format, *args)
