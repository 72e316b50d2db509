# SPDX-License-Identifier: Apache-2.0
"""lbtui/observe/history.py: the per-second ring store and the windowed latency."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from lbtui import model
from lbtui.observe.history import HistoryStore, LatencyWindows, Target, WindowedHistogram

WEB = ("web", None)
B1 = ("web", "10.0.2.11:8080")
T0 = 1_700_000_000


def values(store: HistoryStore, target: Target, name: str, since: float | None = None) -> list:
    series = store.history(target, since, (name,)).get(name)
    assert series is not None
    return list(series.values)


def test_points_come_back_oldest_first_with_their_start() -> None:
    store = HistoryStore(keep_s=10)
    for i in range(5):
        store.record(T0 + i, {B1: {"new_flows": float(i), "active_flows": 10.0 + i}})
    h = store.history(B1)
    assert h.start == T0 and h.end == T0 + 4 and h.step_s == 1.0
    assert h.get("new_flows") == model.Series("new_flows", (0.0, 1.0, 2.0, 3.0, 4.0))
    assert values(store, B1, "active_flows", since=T0 + 2) == [13.0, 14.0]  # strictly after since
    assert store.history(B1, since=T0 + 2).start == T0 + 3


def test_ring_keeps_only_the_last_keep_s_seconds() -> None:
    store = HistoryStore(keep_s=10)
    for i in range(25):
        store.record(T0 + i, {B1: {"new_flows": float(i)}})
    h = store.history(B1)
    assert h.start == T0 + 15
    assert h.get("new_flows") == model.Series("new_flows", tuple(float(i) for i in range(15, 25)))


def test_missing_points_and_skipped_seconds_are_none() -> None:
    store = HistoryStore(keep_s=10)
    store.record(T0, {B1: {"new_flows": 1.0}, WEB: {"new_flows": 1.0}})
    store.record(T0 + 1, {WEB: {"new_flows": 2.0}})  # B1 left out this second
    store.record(T0 + 4, {B1: {"new_flows": 4.0, "handshake_p99_ms": None}})  # 2 and 3 skipped
    assert values(store, B1, "new_flows") == [1.0, None, None, None, 4.0]
    assert values(store, B1, "handshake_p99_ms") == [None] * 5
    assert values(store, WEB, "new_flows") == [1.0, 2.0, None, None, None]
    # a gap longer than the ring leaves only the newest point
    store.record(T0 + 100, {B1: {"new_flows": 9.0}})
    assert values(store, B1, "new_flows")[-1] == 9.0
    assert set(values(store, B1, "new_flows")[:-1]) == {None}


def test_float32_points_read_back_short() -> None:
    store = HistoryStore(keep_s=4)
    store.record(T0, {B1: {"bytes_in": 0.1, "bytes_out": 123456789.0}})
    h = store.history(B1)
    assert h.get("bytes_in") == model.Series("bytes_in", (0.1,))  # not 0.10000000149011612
    assert h.get("bytes_out") == model.Series("bytes_out", (123457000.0,))  # 6 significant digits


def test_targets_not_seen_for_keep_s_are_forgotten() -> None:
    store = HistoryStore(keep_s=10)
    store.record(T0, {B1: {"new_flows": 1.0}, WEB: {"new_flows": 1.0}})
    for i in range(1, 12):
        store.record(T0 + i, {WEB: {"new_flows": 1.0}})
    assert store.targets == [WEB]
    assert store.history(B1).series == ()


def test_clock_going_back_starts_over_and_unknown_series_are_refused() -> None:
    store = HistoryStore(keep_s=10)
    store.record(T0 + 5, {B1: {"new_flows": 5.0}})
    store.record(T0, {B1: {"new_flows": 1.0}})
    assert store.history(B1).start == T0 and values(store, B1, "new_flows") == [1.0]
    with pytest.raises(ValueError, match="unknown history series"):
        store.record(T0 + 1, {B1: {"nonsense": 1.0}})
    store.record(T0 + 2, {WEB: {"drops.rate_limit": 3.0}})  # per-reason drop series are known
    assert values(store, WEB, "drops.rate_limit") == [None, None, 3.0]


def test_memory_is_bounded_by_targets_series_and_keep_s() -> None:
    """Twice the retention of traffic: the store holds no more after 2x than after 1x."""
    keep, backends = 120, 20
    names = list(model.HISTORY_SERIES)
    targets = [("web", None)] + [("web", f"10.0.{i // 250}.{i % 250}:80") for i in range(backends)]
    store = HistoryStore(keep_s=keep)

    def run(seconds: range) -> int:
        for s in seconds:
            store.record(T0 + s, {t: {n: float(s) for n in names} for t in targets})
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        after_one = run(range(keep)) - base
        after_two = run(range(keep, 2 * keep)) - base
    finally:
        tracemalloc.stop()
    buffers = len(targets) * len(names) * keep * 4
    assert store.nbytes() == buffers
    assert after_two <= after_one * 1.05 + 4096  # flat once the rings are full
    assert after_two < buffers * 1.5  # float32 rings plus small per-series overhead


# ---- windowed latency --------------------------------------------------------------------------


BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # + Inf: 8 buckets


def counts_at(n_fast: int, n_slow: int) -> list[int]:
    """Cumulative counts: n_fast observations in (0.5, 1] ms, n_slow in (32, 64] ms."""
    return [n_fast, 0, 0, 0, 0, 0, n_slow, 0]


def test_window_is_the_difference_from_the_sample_that_old() -> None:
    hist = WindowedHistogram(longest_s=300)
    assert hist.over(10) is None
    for s in range(0, 401):
        hist.add(T0 + s, counts_at(100 * s, 0), 0.0)
    counts, _, covered = hist.over(10) or ((), 0.0, 0.0)
    assert covered == 10 and counts[0] == 1000
    for window in (60, 300):
        counts, _, covered = hist.over(window) or ((), 0.0, 0.0)
        assert window <= covered < window + 10, covered  # beyond the fine samples, 10 s steps
        assert counts[0] == 100 * covered


def test_windows_follow_a_backend_that_turns_slow_and_lifetime_lags() -> None:
    windows = LatencyWindows(BOUNDS)
    fast = slow = 0
    for s in range(600):
        if s < 590:
            fast += 50
        else:  # the last 10 s: every handshake takes ~50 ms
            slow += 50
        windows.observe(T0 + s, B1, (counts_at(fast, slow), 0.0), None)
    by_window = {w.seconds: w for w in windows.windows(B1)}
    assert by_window[10].handshake is not None and by_window[10].handshake.p99_ms is not None
    assert by_window[10].handshake.p50_ms is not None and by_window[10].handshake.p50_ms > 32
    assert by_window[300].handshake is not None and by_window[300].handshake.p50_ms is not None
    assert by_window[300].handshake.p50_ms <= 1.0  # mostly fast over 5 minutes
    assert by_window[10].duration is None  # not given: not measured
    assert windows.p99(B1) == by_window[10].handshake.p99_ms


def test_counter_reset_uses_zero_as_the_baseline() -> None:
    hist = WindowedHistogram()
    hist.add(T0, counts_at(1000, 0), 0.0)
    hist.add(T0 + 1, counts_at(1010, 0), 0.0)
    hist.add(T0 + 2, counts_at(5, 0), 0.0)  # maps recreated: counts start again
    counts, _, _ = hist.over(10) or ((), 0.0, 0.0)
    assert counts[0] == 5


def test_udp_backends_have_no_handshake_windows() -> None:
    windows = LatencyWindows(BOUNDS)
    windows.observe(T0, ("dns", "10.0.4.10:53"), None, (counts_at(1, 0), 1.0))
    windows.observe(T0 + 1, ("dns", "10.0.4.10:53"), None, (counts_at(3, 0), 3.0))
    for w in windows.windows(("dns", "10.0.4.10:53")):
        assert w.handshake is None
        assert w.duration is not None and w.duration.count == 2


def test_answer_picks_targets_and_the_marks_of_their_span() -> None:
    from lbtui.observe.history import answer

    store = HistoryStore(keep_s=60)
    b2 = ("web", "10.0.2.12:8080")
    for i in range(30):
        store.record(T0 + i, {B1: {"new_flows": 1.0}, b2: {"new_flows": 2.0}, WEB: {"new_flows": 3.0}})

    def event(seq: int, ts: float, kind: str, proxy: str | None, backend: str | None) -> model.Event:
        return model.Event(seq=seq, ts=ts, kind=kind, message=kind, proxy=proxy, backend=backend)

    events = [
        event(1, T0 + 5, "drain", "web", B1[1]),
        event(2, T0 + 6, "circuit", "web", b2[1]),
        event(3, T0 + 7, "reload", None, None),
        event(4, T0 + 8, "ratelimit", "web", None),  # not a kind the chart marks
        event(5, T0 - 100, "health", "web", B1[1]),  # before the span
    ]
    got = answer(store, model.HistoryQuery("web", B1[1], since=T0 + 2), events, T0 + 30.5)
    assert [(h.proxy, h.backend, h.start) for h in got.histories] == [("web", B1[1], T0 + 3)]
    assert [m.seq for m in got.marks] == [1, 3] and got.kept_s == 60 and got.taken_at == T0 + 30.5
    proxy = answer(store, model.HistoryQuery("web"), events, T0 + 30)
    assert [h.backend for h in proxy.histories] == [None] and [m.seq for m in proxy.marks] == [1, 2, 3]
    everything = answer(store, model.HistoryQuery(series=("new_flows",)), events, T0 + 30)
    assert len(everything.histories) == 3
    with pytest.raises(ValueError, match="a backend needs its proxy"):
        answer(store, model.HistoryQuery(backend="x"), events, T0)


def test_window_percentiles_are_those_of_the_lifetime_histograms() -> None:
    """The one-pass estimate of a window equals observe.histogram's for the same counts."""
    import random

    from lbtui.observe.histogram import histogram_from_counts
    from lbtui.observe.history import percentiles

    rng = random.Random(15)
    bounds = tuple(2**k / 1000 for k in range(31))
    for _ in range(500):
        counts = [0] * 32
        for _ in range(rng.choice((1, 2, 5, 100, 3000))):
            counts[min(31, int(rng.expovariate(1 / rng.choice((2, 9, 20)))))] += rng.choice((1, 1, 7))
        hist = histogram_from_counts(bounds, tuple(counts), 0.0)
        got = percentiles(bounds, counts, 0.0)
        assert (got.count, got.p50_ms, got.p95_ms, got.p99_ms) == (
            hist.count,
            hist.p50_ms,
            hist.p95_ms,
            hist.p99_ms,
        )
    assert percentiles(bounds, [0] * 32, 0.0) == model.Percentiles()
