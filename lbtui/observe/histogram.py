"""Latency histograms with fixed log-spaced buckets, and a per-backend book of them.

The bounds follow a 1-2-3-5 series from 0.05 ms to 600,000 ms (10 minutes): 30 finite buckets that
cover a sub-millisecond handshake on a local network as well as a connection that lives for minutes,
with every bound a round number an operator can read. The Prometheus histograms in metrics.py use the
same bounds (in seconds), so the console and Grafana agree on what a bucket is.
"""

from __future__ import annotations

import math
import threading

from lbtui import model


def _log_bounds_ms() -> tuple[float, ...]:
    """0.05, then 1-2-3-5 per decade from 0.1 ms to 500,000 ms, then 600,000 ms: 30 bounds."""
    raw = [0.05, *(m * 10.0**e for e in range(-1, 6) for m in (1, 2, 3, 5)), 600_000.0]
    # Round away float noise (0.30000000000000004 -> 0.3) so bounds print as written.
    return tuple(float(f"{b:.6g}") for b in raw)


DEFAULT_BOUNDS_MS: tuple[float, ...] = _log_bounds_ms()

PERCENTILES = (0.50, 0.95, 0.99)


class LatencyHistogram:
    """Counts observations (milliseconds) into fixed buckets; estimates percentiles from them.

    counts[i] holds observations in (bounds[i-1], bounds[i]]; the extra last bucket is +Inf.
    Thread-safe: the data-path reader may observe while a snapshot is being built elsewhere.
    """

    def __init__(self, bounds_ms: tuple[float, ...] = DEFAULT_BOUNDS_MS) -> None:
        if not bounds_ms or any(b <= a for a, b in zip(bounds_ms, bounds_ms[1:], strict=False)):
            raise ValueError("bounds must be non-empty and strictly increasing")
        self.bounds_ms = bounds_ms
        self._counts = [0] * (len(bounds_ms) + 1)
        self._count = 0
        self._sum_ms = 0.0
        self._min_ms = math.inf
        self._max_ms = -math.inf
        self._lock = threading.Lock()

    def observe(self, ms: float) -> None:
        if math.isnan(ms):
            return
        ms = max(ms, 0.0)  # clock skew between data path and userspace can give tiny negatives
        index = _bucket_index(self.bounds_ms, ms)
        with self._lock:
            self._counts[index] += 1
            self._count += 1
            self._sum_ms += ms
            self._min_ms = min(self._min_ms, ms)
            self._max_ms = max(self._max_ms, ms)

    @property
    def count(self) -> int:
        return self._count

    def percentile(self, q: float) -> float | None:
        with self._lock:
            return _percentile(self.bounds_ms, self._counts, self._count, self._min_ms, self._max_ms, q)

    def view(self) -> model.Histogram:
        with self._lock:
            counts = tuple(self._counts)
            count, sum_ms, lo, hi = self._count, self._sum_ms, self._min_ms, self._max_ms
        p50, p95, p99 = (_percentile(self.bounds_ms, counts, count, lo, hi, q) for q in PERCENTILES)
        return model.Histogram(
            bounds_ms=self.bounds_ms,
            counts=counts,
            count=count,
            sum_ms=sum_ms,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
        )


def _bucket_index(bounds: tuple[float, ...], value: float) -> int:
    """Index of the first bound >= value (upper bounds are inclusive); len(bounds) for +Inf."""
    lo, hi = 0, len(bounds)
    while lo < hi:
        mid = (lo + hi) // 2
        if bounds[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _percentile(
    bounds: tuple[float, ...],
    counts: tuple[int, ...] | list[int],
    count: int,
    min_seen: float,
    max_seen: float,
    q: float,
) -> float | None:
    """Estimate the q-quantile by linear interpolation inside the bucket that holds it.

    Same rule as Prometheus' histogram_quantile (rank = q * count, uniform spread inside the bucket),
    except that each bucket's edges are narrowed to the smallest and largest value actually seen:
    that keeps the estimate inside the observed range and gives the +Inf bucket a finite top.
    """
    if count == 0:
        return None
    rank = q * count
    cumulative = 0
    for index, bucket_count in enumerate(counts):
        if bucket_count == 0 or cumulative + bucket_count < rank:
            cumulative += bucket_count
            continue
        lower = bounds[index - 1] if index > 0 else 0.0
        upper = bounds[index] if index < len(bounds) else max_seen
        lower = max(lower, min_seen)
        upper = min(upper, max_seen)
        fraction = (rank - cumulative) / bucket_count
        return min(lower + (upper - lower) * fraction, upper)  # min: rounding may overshoot by an ulp
    return max_seen


def histogram_from_counts(
    bounds_ms: tuple[float, ...], counts: tuple[int, ...] | list[int], sum_ms: float
) -> model.Histogram:
    """A model.Histogram (with percentiles) from bucket counts kept elsewhere, e.g. in the data path.

    counts has len(bounds_ms) + 1 entries, the last one for +Inf.
    """
    count = sum(counts)
    counts = tuple(counts)
    # the smallest and largest values are not known: use the edges of the first and last used buckets
    used = [i for i, c in enumerate(counts) if c]
    lo = bounds_ms[used[0] - 1] if used and used[0] > 0 else 0.0
    hi = (bounds_ms[used[-1]] if used and used[-1] < len(bounds_ms) else bounds_ms[-1] * 2) if used else 0.0
    p50, p95, p99 = (_percentile(bounds_ms, counts, count, lo, hi, q) for q in PERCENTILES)
    return model.Histogram(
        bounds_ms=bounds_ms, counts=counts, count=count, sum_ms=sum_ms, p50_ms=p50, p95_ms=p95, p99_ms=p99
    )


class LatencyBook:
    """Handshake and connection-duration histograms per (proxy, backend), fed by flow events.

    Each flow counts once: the duration and the handshake both come from its "closed" event (the
    data path repeats the handshake time there), so "new" events are ignored and a flow whose new
    event carried a handshake is not counted twice.
    """

    def __init__(self, bounds_ms: tuple[float, ...] = DEFAULT_BOUNDS_MS) -> None:
        self.bounds_ms = bounds_ms
        self._handshake: dict[tuple[str, str], LatencyHistogram] = {}
        self._duration: dict[tuple[str, str], LatencyHistogram] = {}
        self._lock = threading.Lock()

    def observe_event(self, ev: model.FlowEvent) -> None:
        if ev.kind != "closed":
            return
        key = (ev.proxy, ev.backend)
        if ev.duration_s is not None:
            self._histogram(self._duration, key).observe(ev.duration_s * 1000.0)
        if ev.handshake_s is not None:
            self._histogram(self._handshake, key).observe(ev.handshake_s * 1000.0)

    def _histogram(
        self, table: dict[tuple[str, str], LatencyHistogram], key: tuple[str, str]
    ) -> LatencyHistogram:
        with self._lock:
            hist = table.get(key)
            if hist is None:
                hist = table[key] = LatencyHistogram(self.bounds_ms)
            return hist

    def forget(self, proxy: str, backend: str | None = None) -> None:
        """Drop the histograms of a removed backend (or of every backend of a removed proxy)."""
        with self._lock:
            for table in (self._handshake, self._duration):
                for key in [k for k in table if k[0] == proxy and backend in (None, k[1])]:
                    del table[key]

    def view(self, proxy: str, backend: str) -> model.LatencyView | None:
        """One backend's histograms; None if it has no observations yet."""
        key = (proxy, backend)
        with self._lock:
            handshake, duration = self._handshake.get(key), self._duration.get(key)
        if handshake is None and duration is None:
            return None
        return model.LatencyView(
            proxy=proxy,
            backend=backend,
            handshake=handshake.view() if handshake is not None else None,
            duration=duration.view() if duration is not None else None,
        )

    def views(self) -> tuple[model.LatencyView, ...]:
        """Every backend with at least one observation, sorted by (proxy, backend).

        A histogram with no observations (e.g. the handshake of a UDP backend) is None.
        """
        with self._lock:
            keys = sorted(set(self._handshake) | set(self._duration))
        views = (self.view(proxy, backend) for proxy, backend in keys)
        return tuple(v for v in views if v is not None)
