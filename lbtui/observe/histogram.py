# SPDX-License-Identifier: Apache-2.0
"""Latency histograms: percentile estimates from bucket counts, and an in-memory histogram.

The data path counts handshake times and connection durations per backend in log2 microsecond
buckets (lbtui/dataplane/structs.py HIST_BOUNDS_MS); `histogram_from_counts` turns such counts into
the snapshot's model.Histogram with p50/p95/p99. `LatencyHistogram` keeps its own 1-2-3-5 series of
bounds (0.05 ms to 600,000 ms), used for the health-check latency histogram's buckets (metrics.py).
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
