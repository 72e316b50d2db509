# SPDX-License-Identifier: Apache-2.0
"""History for the console's charts: per-second series in ring buffers, and windowed latency.

Two pure parts (no engine, no maps, no threads) that an engine drives once per second:

- `HistoryStore` keeps one point per second of every series (model.HISTORY_SERIES) of every
  proxy and backend for the last `keep_s` seconds, in preallocated float32 rings: memory is
  `targets x series x keep_s x 4 bytes` plus a small constant per series, whatever runs for how long
  (bench/history_memory.py measures it). A target not recorded for `keep_s` is forgotten by itself,
  so backends that come and go (DNS) cannot grow it either.
- `LatencyWindows` turns the data path's cumulative histograms (counts since the maps began) into
  percentiles over the last 10 s, 1 min and 5 min by subtracting an older sample of the same
  histogram: one sample per second for the shortest window, one per 10 s beyond it.

How an engine uses them, once per second in its control loop (target = (proxy, address), or
(proxy, None) for the proxy as a whole):
  1. `windows.observe(now, target, (handshake counts, sum ms) or None for UDP, (duration counts, sum))`
     with the cumulative histograms it read from the data path;
  2. `store.record(int(now), {target: {series: value}})` with model.HISTORY_SERIES per backend and
     proxy (rates over the last second; `*_p99_ms` from `windows.p99(target, kind)`; per proxy also
     "drops.<reason>");
  3. in snapshots: `LatencyView.windows = windows.windows(target)`, `Snapshot.history_s = store.keep_s`;
  4. `EngineHandle.history(query)` is `answer(store, query, events, now)`.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from lbtui import model
from lbtui.observe.histogram import PERCENTILES

Target = tuple[str, str | None]  # (proxy, backend); backend None: the proxy as a whole

DEFAULT_KEEP_S = 3600
_NAN = math.nan


def _rounded(value: float) -> float | None:
    """A stored float32 back as a short float (6 significant digits), NaN as None."""
    if math.isnan(value):
        return None
    return float(f"{value:.6g}")


class _Track:
    """The rings of one target: series name -> float32 ring of keep_s slots (NaN: no point)."""

    __slots__ = ("last_seen", "rings")

    def __init__(self) -> None:
        self.rings: dict[str, array[float]] = {}
        self.last_seen = 0


class HistoryStore:
    """Per-second series of proxies and backends for the last `keep_s` seconds.

    `record(second, points)` is called once per second (whole unix seconds) with every target's
    point; a target or series left out of a second gets no point then (None when queried).
    """

    def __init__(self, keep_s: int = DEFAULT_KEEP_S) -> None:
        if keep_s < 2:
            raise ValueError("keep_s must be at least 2 seconds")
        self.keep_s = keep_s
        self._tracks: dict[Target, _Track] = {}
        self._first: int | None = None  # oldest second recorded since the last reset
        self._last: int | None = None  # newest second recorded

    # ---- writing ------------------------------------------------------------------------------

    def record(self, second: int, points: Mapping[Target, Mapping[str, float | None]]) -> None:
        unknown = {n for values in points.values() for n in values if model.series_unit(n) is None}
        if unknown:
            raise ValueError(f"unknown history series {sorted(unknown)[0]!r}")
        if self._last is not None and second < self._last:
            self.clear()  # the clock went back: what was recorded "later" cannot be placed
        if self._last is not None and second > self._last:
            self._blank(range(self._last + 1, second))
        if self._first is None:
            self._first = second
        self._last = second
        slot = second % self.keep_s
        for kept in self._tracks.values():  # points missing this second: none
            for old in kept.rings.values():
                old[slot] = _NAN
        for target, values in points.items():
            track = self._tracks.get(target)
            if track is None:
                track = self._tracks[target] = _Track()
            track.last_seen = second
            for name, value in values.items():
                ring = track.rings.get(name)
                if ring is None:
                    ring = track.rings[name] = array("f", [_NAN]) * self.keep_s
                ring[slot] = _NAN if value is None else value
        self._expire(second)

    def forget(self, target: Target) -> None:
        self._tracks.pop(target, None)

    def resize(self, keep_s: int) -> None:
        """Keep `keep_s` seconds from now on; the newest points recorded so far stay."""
        if keep_s < 2:
            raise ValueError("keep_s must be at least 2 seconds")
        if keep_s == self.keep_s:
            return
        kept = self.span()[-keep_s:]
        lo = kept.start % keep_s if kept else 0
        first = min(len(kept), keep_s - lo)  # slots lo.. of the new ring, then 0.. for the rest
        for track in self._tracks.values():
            for name, ring in track.rings.items():
                points = self._read(ring, kept) if kept else array("f")
                resized = array("f", [_NAN]) * keep_s
                resized[lo : lo + first] = points[:first]
                resized[: len(kept) - first] = points[first:]
                track.rings[name] = resized
        self.keep_s = keep_s
        if kept:
            self._first = kept.start

    def clear(self) -> None:
        self._tracks.clear()
        self._first = self._last = None

    def _blank(self, seconds: range) -> None:
        """No points for seconds skipped (the engine's loop was late)."""
        if len(seconds) >= self.keep_s:
            seconds = range(seconds.stop - self.keep_s, seconds.stop)
        for track in self._tracks.values():
            for ring in track.rings.values():
                for s in seconds:
                    ring[s % self.keep_s] = _NAN

    def _expire(self, now: int) -> None:
        gone = [t for t, track in self._tracks.items() if track.last_seen <= now - self.keep_s]
        for target in gone:
            del self._tracks[target]

    # ---- reading ------------------------------------------------------------------------------

    @property
    def targets(self) -> list[Target]:
        return list(self._tracks)

    def span(self, since: float | None = None) -> range:
        """The seconds a query with `since` covers (points strictly after `since`)."""
        if self._last is None or self._first is None:
            return range(0)
        first = max(self._first, self._last - self.keep_s + 1)
        if since is not None:
            first = max(first, math.floor(since) + 1)
        return range(first, self._last + 1)

    def history(self, target: Target, since: float | None = None, names: Iterable[str] = ()) -> model.History:
        """The target's series over span(since); every series when `names` is empty."""
        return self.read(target, since, names).history()

    def read(self, target: Target, since: float | None = None, names: Iterable[str] = ()) -> Read:
        """A copy of the target's rings over span(since) (cheap: the writer may wait for it), to be
        turned into a model.History without holding up the writer."""
        seconds = self.span(since)
        track = self._tracks.get(target)
        if track is None or not seconds:
            return Read(target, seconds, ())
        wanted = list(names) or list(track.rings)
        copies = []
        for name in wanted:
            ring = track.rings.get(name)
            copies.append((name, None if ring is None else self._read(ring, seconds)))
        return Read(target, seconds, tuple(copies))

    def _read(self, ring: array[float], seconds: range) -> array[float]:
        lo = seconds.start % self.keep_s
        hi = lo + len(seconds)
        if hi <= self.keep_s:
            return ring[lo:hi]
        return ring[lo:] + ring[: hi - self.keep_s]

    def nbytes(self) -> int:
        """Bytes held by the rings' buffers (the bound; Python object overheads come on top)."""
        return sum(ring.itemsize * len(ring) for t in self._tracks.values() for ring in t.rings.values())


@dataclass(frozen=True)
class Read:
    """Points copied out of a store: (series name, float32 points or None: never recorded)."""

    target: Target
    seconds: range
    copies: tuple[tuple[str, array[float] | None], ...]

    def history(self) -> model.History:
        proxy, backend = self.target
        series = []
        for name, points in self.copies:
            if points is None:
                values: tuple[float | None, ...] = (None,) * len(self.seconds)
            else:
                values = tuple(_rounded(v) for v in points)
            series.append(model.Series(name=name, values=values))
        start = float(self.seconds.start)
        return model.History(proxy=proxy, backend=backend, start=start, series=tuple(series))


# ---- windowed latency ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sample:
    ts: float
    counts: array[int]
    sum_ms: float


class WindowedHistogram:
    """Samples of one cumulative histogram, enough to subtract the one from `seconds` ago.

    Samples newer than `fine_s` are kept every second; older ones every `coarse_s` up to the longest
    window, so a window is exact to the second up to `fine_s` and to `coarse_s` beyond it. Memory:
    (fine_s + 2 + longest / coarse_s + 2) samples of len(counts) 8-byte integers.
    """

    def __init__(self, longest_s: int = max(model.LATENCY_WINDOWS_S), fine_s: int = 10, coarse_s: int = 10):
        self._fine: deque[_Sample] = deque(maxlen=fine_s + 2)
        self._coarse: deque[_Sample] = deque(maxlen=longest_s // coarse_s + 2)
        self._coarse_s = coarse_s

    def add(self, ts: float, counts: Sequence[int], sum_ms: float) -> None:
        sample = _Sample(ts, array("q", counts), sum_ms)
        newest = self._fine[-1] if self._fine else None
        if newest is not None and (
            len(newest.counts) != len(sample.counts)
            or any(n < o for n, o in zip(sample.counts, newest.counts, strict=True))
        ):
            # the counters restarted (new maps): what came before is no baseline any more, zero is
            zero = _Sample(newest.ts, array("q", [0]) * len(sample.counts), 0.0)
            self._fine.clear()
            self._coarse.clear()
            self._fine.append(zero)
            self._coarse.append(zero)
        self._fine.append(sample)
        if not self._coarse or ts // self._coarse_s != self._coarse[-1].ts // self._coarse_s:
            self._coarse.append(sample)

    def over(self, seconds: float) -> tuple[tuple[int, ...], float, float] | None:
        """(counts, sum_ms, covered_s) observed in the last `seconds` (or since the first sample).

        None before there are two samples, and when no sample is near enough to `seconds` ago (the
        sampling paused for longer than the window: the difference would not be that window's)."""
        if len(self._fine) < 2 and len(self._coarse) < 2:
            return None
        newest = self._fine[-1]
        cutoff = newest.ts - seconds
        base = None
        for ring in (self._fine, self._coarse):
            # the newest sample at least `seconds` old; else the oldest there is
            for sample in reversed(ring):
                if sample.ts <= cutoff:
                    if base is None or sample.ts > base.ts:
                        base = sample
                    break
        if base is None:
            oldest = [r[0] for r in (self._fine, self._coarse) if r]
            base = min(oldest, key=lambda s: s.ts)
        if base is newest or base.ts < cutoff - max(seconds, self._coarse_s):
            return None
        if newest.counts == base.counts:  # nothing observed: the common case of an idle backend
            counts: tuple[int, ...] = (0,) * len(newest.counts)
        else:
            counts = tuple(map(operator.sub, newest.counts, base.counts))
        return counts, newest.sum_ms - base.sum_ms, newest.ts - base.ts


def percentiles(bounds_ms: tuple[float, ...], counts: Sequence[int], sum_ms: float) -> model.Percentiles:
    """p50, p95, p99 as observe.histogram.histogram_from_counts estimates them (the same rule, so a
    window and lifetime compare), in one pass over the buckets: the engine computes six per backend
    every second."""
    total = sum(counts)
    if not total:
        return model.Percentiles()
    n = len(bounds_ms)
    used = [i for i, c in enumerate(counts) if c]
    # the smallest and largest values are not known: the edges of the first and last used buckets
    low = bounds_ms[used[0] - 1] if used[0] > 0 else 0.0
    high = bounds_ms[used[-1]] if used[-1] < n else bounds_ms[-1] * 2
    ranks = [q * total for q in PERCENTILES]
    out: list[float] = []
    cumulative = 0
    for i in used:
        c = counts[i]
        while len(out) < len(ranks) and cumulative + c >= ranks[len(out)]:
            lower = max(bounds_ms[i - 1] if i > 0 else 0.0, low)
            upper = min(bounds_ms[i] if i < n else high, high)
            fraction = (ranks[len(out)] - cumulative) / c
            out.append(min(lower + (upper - lower) * fraction, upper))
        cumulative += c
    out += [high] * (len(ranks) - len(out))
    return model.Percentiles(count=total, p50_ms=out[0], p95_ms=out[1], p99_ms=out[2])


class LatencyWindows:
    """Windowed percentiles of every backend's handshake and duration histograms.

    The engine calls `observe` with the cumulative counts it read from the data path, then builds
    LatencyView.windows with `windows`. UDP backends pass handshake=None: no handshake windows.
    """

    def __init__(self, bounds_ms: tuple[float, ...], windows_s: tuple[int, ...] = model.LATENCY_WINDOWS_S):
        self.bounds_ms = bounds_ms
        self.windows_s = windows_s
        self._handshake: dict[Target, WindowedHistogram] = {}
        self._duration: dict[Target, WindowedHistogram] = {}

    def observe(
        self,
        ts: float,
        target: Target,
        handshake: tuple[Sequence[int], float] | None,
        duration: tuple[Sequence[int], float] | None,
    ) -> None:
        for kept, value in ((self._handshake, handshake), (self._duration, duration)):
            if value is None:
                kept.pop(target, None)
                continue
            hist = kept.get(target)
            if hist is None:
                hist = kept[target] = WindowedHistogram(longest_s=max(self.windows_s))
            hist.add(ts, value[0], value[1])

    def forget(self, target: Target) -> None:
        self._handshake.pop(target, None)
        self._duration.pop(target, None)

    def windows(self, target: Target) -> tuple[model.WindowLatency, ...]:
        out = []
        for seconds in self.windows_s:
            out.append(
                model.WindowLatency(
                    seconds=seconds,
                    handshake=self._over(self._handshake.get(target), seconds),
                    duration=self._over(self._duration.get(target), seconds),
                )
            )
        return tuple(out)

    def p99(self, target: Target, kind: str = "handshake", seconds: int | None = None) -> float | None:
        """The p99 over the shortest window (the history's *_p99_ms points)."""
        kept = self._handshake if kind == "handshake" else self._duration
        window = self._over(kept.get(target), seconds or min(self.windows_s))
        return window.p99_ms if window else None

    def _over(self, hist: WindowedHistogram | None, seconds: int) -> model.Percentiles | None:
        """None: not known (not measured, one sample only, or sampling paused for longer than the
        window); count 0: known to be empty."""
        got = hist.over(seconds) if hist is not None else None
        if got is None:
            return None
        counts, sum_ms, _covered = got
        return percentiles(self.bounds_ms, counts, sum_ms)


# ---- answering EngineHandle.history --------------------------------------------------------------


def chosen_targets(query: model.HistoryQuery, targets: Iterable[Target]) -> list[Target]:
    """The targets a query asks for: one backend, one proxy as a whole, or every target."""
    if query.proxy is None:
        return list(targets)
    return [t for t in targets if t == (query.proxy, query.backend)]


def marks_for(
    query: model.HistoryQuery, events: Iterable[model.Event], first: float, last: float
) -> tuple[model.Event, ...]:
    """The events to mark on the asked target's time axis: kinds model.HISTORY_MARK_KINDS between
    first and last (inclusive, whole seconds), of that backend, of its proxy as a whole (no backend),
    or of everything (no proxy); a proxy's chart gets its backends' events too."""
    out = []
    for event in events:
        if event.kind not in model.HISTORY_MARK_KINDS or not first <= event.ts < last + 1:
            continue
        if query.proxy is not None and event.proxy is not None:
            if event.proxy != query.proxy:
                continue
            if query.backend is not None and event.backend not in (None, query.backend):
                continue
        out.append(event)
    return tuple(out)


def answer(
    store: HistoryStore,
    query: model.HistoryQuery,
    events: Iterable[model.Event],
    now: float,
    lock: AbstractContextManager[object] | None = None,
) -> model.HistoryAnswer:
    """EngineHandle.history from a store and the engine's recent events; ValueError on a bad query.

    `lock`, when the store is written on another thread, is held only while the points are copied."""
    problem = query.problem()
    if problem:
        raise ValueError(problem)
    with lock or nullcontext():
        targets = chosen_targets(query, store.targets)
        reads = [store.read(t, query.since, query.series) for t in targets]
        span = store.span(query.since)
        kept_s = store.keep_s
    histories = tuple(r.history() for r in reads)
    marks = marks_for(query, events, span.start, span.stop - 1) if span else ()
    return model.HistoryAnswer(taken_at=now, kept_s=kept_s, histories=histories, marks=marks)
