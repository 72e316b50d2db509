# SPDX-License-Identifier: Apache-2.0
"""Latency histograms: bucket bounds, percentile estimates, the per-backend book."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbtui import model
from lbtui.observe.histogram import DEFAULT_BOUNDS_MS, LatencyHistogram


def closed(
    backend_ip: str = "10.0.2.11",
    duration_s: float | None = 1.0,
    handshake_s: float | None = 0.001,
    proxy: str = "web",
    kind: str = "closed",
    protocol: str = "tcp",
) -> model.FlowEvent:
    return model.FlowEvent(
        kind=kind,
        ts=1_700_000_000.0,
        proxy=proxy,
        protocol=protocol,
        client_ip="10.0.1.5",
        client_port=40000,
        vip_ip="10.0.0.1",
        vip_port=80,
        backend_ip=backend_ip,
        backend_port=8080,
        duration_s=duration_s,
        handshake_s=handshake_s,
        close_reason="fin" if kind == "closed" else None,
    )


def test_default_bounds_are_log_spaced_from_sub_millisecond_to_minutes() -> None:
    assert len(DEFAULT_BOUNDS_MS) == 30
    assert DEFAULT_BOUNDS_MS[0] == 0.05
    assert DEFAULT_BOUNDS_MS[-1] == 600_000.0
    assert all(b > a for a, b in zip(DEFAULT_BOUNDS_MS, DEFAULT_BOUNDS_MS[1:], strict=False))
    ratios = [b / a for a, b in zip(DEFAULT_BOUNDS_MS, DEFAULT_BOUNDS_MS[1:], strict=False)]
    assert max(ratios) <= 2.5  # resolution never worse than a factor 2.5 per bucket
    assert 0.3 in DEFAULT_BOUNDS_MS  # printed as written, no float noise


def test_empty_histogram_has_no_percentiles() -> None:
    view = LatencyHistogram().view()
    assert view.count == 0
    assert view.p50_ms is None and view.p95_ms is None and view.p99_ms is None
    assert view.counts == (0,) * (len(DEFAULT_BOUNDS_MS) + 1)


def test_percentiles_of_1_to_100_ms() -> None:
    hist = LatencyHistogram()
    for ms in range(1, 101):
        hist.observe(ms)
    view = hist.view()
    assert view.count == 100
    assert view.sum_ms == 5050
    assert sum(view.counts) == 100
    assert view.p50_ms == pytest.approx(50.0)
    assert view.p95_ms == pytest.approx(95.0)
    assert view.p99_ms == pytest.approx(99.0)


def test_linear_interpolation_inside_one_bucket() -> None:
    bounds = (10.0, 20.0, 30.0)
    hist = LatencyHistogram(bounds)
    # 10 observations in (10, 20], 10 in (20, 30]; observed range 10.5 .. 29.5
    for ms in [10.5] + [15.0] * 9 + [25.0] * 9 + [29.5]:
        hist.observe(ms)
    assert hist.view().counts == (0, 10, 10, 0)
    # p50: rank 10 = the whole first bucket -> its top edge
    assert hist.percentile(0.5) == pytest.approx(20.0)
    # p25: rank 5, half-way through (10.5, 20]
    assert hist.percentile(0.25) == pytest.approx(10.5 + 9.5 * 0.5)
    # p95: rank 19 -> 9/10 of (20, 29.5]
    assert hist.percentile(0.95) == pytest.approx(20 + 9.5 * 0.9)


def test_bounds_are_inclusive_upper_edges() -> None:
    hist = LatencyHistogram((1.0, 2.0))
    for ms in (1.0, 2.0, 2.0001):
        hist.observe(ms)
    assert hist.view().counts == (1, 1, 1)


def test_overflow_bucket_tops_out_at_the_largest_value_seen() -> None:
    hist = LatencyHistogram()
    hist.observe(700_000.0)  # 11 minutes: past the last bound
    hist.observe(900_000.0)
    view = hist.view()
    assert view.counts[-1] == 2
    assert view.p99_ms is not None and 700_000.0 <= view.p99_ms <= 900_000.0


def test_single_value_gives_that_value() -> None:
    hist = LatencyHistogram()
    hist.observe(0.42)
    view = hist.view()
    assert view.p50_ms == pytest.approx(0.42)
    assert view.p99_ms == pytest.approx(0.42)


def test_negative_becomes_zero_and_nan_is_ignored() -> None:
    hist = LatencyHistogram()
    hist.observe(-0.01)
    hist.observe(math.nan)
    view = hist.view()
    assert view.count == 1
    assert view.counts[0] == 1
    assert view.p50_ms == 0.0


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError):
        LatencyHistogram((1.0, 1.0))
    with pytest.raises(ValueError):
        LatencyHistogram(())


@given(st.lists(st.floats(min_value=0.0, max_value=2_000_000.0), min_size=1, max_size=300))
def test_estimate_lies_in_the_bucket_of_the_true_percentile(values: list[float]) -> None:
    hist = LatencyHistogram()
    for v in values:
        hist.observe(v)
    view = hist.view()
    ordered = sorted(values)
    estimates = [view.p50_ms, view.p95_ms, view.p99_ms]
    assert all(e is not None for e in estimates)
    assert estimates == sorted(estimates)  # type: ignore[type-var]
    for q, estimate in zip((0.50, 0.95, 0.99), estimates, strict=True):
        assert estimate is not None
        true_value = ordered[math.ceil(q * len(ordered)) - 1]  # nearest-rank percentile
        index = next((i for i, b in enumerate(DEFAULT_BOUNDS_MS) if true_value <= b), len(DEFAULT_BOUNDS_MS))
        lower = DEFAULT_BOUNDS_MS[index - 1] if index > 0 else 0.0
        upper = DEFAULT_BOUNDS_MS[index] if index < len(DEFAULT_BOUNDS_MS) else math.inf
        assert lower <= estimate <= upper
        assert ordered[0] <= estimate <= ordered[-1]
