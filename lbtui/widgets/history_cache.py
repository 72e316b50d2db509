# SPDX-License-Identifier: Apache-2.0
"""The console's copy of the engine's history: full span once, then only what is new.

A console asks `history(since=None or a start)` once and then `history(since=cache.since)` on every
refresh, so over the control socket it moves a few points per second, not the whole span. Every
series of a target has the same length and ends at the target's newest second; skipped seconds are
None, so position i of a series is always the second `end - len + 1 + i`.
"""

from __future__ import annotations

from collections import deque

from lbtui.model import Event, HistoryAnswer

Target = tuple[str, str | None]  # (proxy, backend); backend None: the proxy as a whole


class SeriesCache:
    """At most `keep` points per series, per target; the marks (events) inside the kept span."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.kept_s = 0  # what the engine keeps, from its last answer (0: no history)
        self._series: dict[Target, dict[str, deque[float | None]]] = {}
        self._end: dict[Target, int] = {}
        self._marks: dict[int, Event] = {}

    @property
    def since(self) -> float | None:
        """The time to ask for new points after (None: nothing cached yet)."""
        return float(max(self._end.values())) if self._end else None

    def clear(self) -> None:
        self._series.clear()
        self._end.clear()
        self._marks.clear()

    def merge(self, answer: HistoryAnswer) -> None:
        self.kept_s = answer.kept_s
        for history in answer.histories:
            target = (history.proxy, history.backend)
            count = max((len(s.values) for s in history.series), default=0)
            if not count:
                continue
            step_first = int(history.start)
            step_last = step_first + count - 1
            end = self._end.get(target)
            kept = self._series.setdefault(target, {})
            if end is not None and step_last <= end:
                continue  # nothing newer than what we hold
            first_new = step_first if end is None else max(step_first, end + 1)
            gap = 0 if end is None else min(first_new - end - 1, self.keep)
            names = list(kept) + [s.name for s in history.series if s.name not in kept]
            length = len(next(iter(kept.values()))) if kept else 0
            for name in names:
                ring = kept.get(name)
                if ring is None:
                    ring = kept[name] = deque([None] * length, maxlen=self.keep)
                ring.extend([None] * gap)
                series = history.get(name)
                if series is None:
                    ring.extend([None] * (step_last - first_new + 1))
                else:
                    ring.extend(series.values[first_new - step_first :])
            self._end[target] = step_last
        for mark in answer.marks:
            self._marks[mark.seq] = mark
        self._forget_old_marks()

    def _forget_old_marks(self) -> None:
        newest = self.since
        if newest is None:
            return
        for seq in [s for s, m in self._marks.items() if m.ts < newest - self.keep]:
            del self._marks[seq]

    def values(self, target: Target, name: str, last: int | None = None) -> list[float | None]:
        """The newest `last` points (all kept when None), oldest first."""
        ring = self._series.get(target, {}).get(name)
        if ring is None:
            return []
        points = list(ring)
        return points if last is None else points[-last:]

    def names(self, target: Target) -> list[str]:
        return list(self._series.get(target, {}))

    def end(self, target: Target) -> int | None:
        return self._end.get(target)

    def marks(self) -> list[Event]:
        return sorted(self._marks.values(), key=lambda m: m.ts)
