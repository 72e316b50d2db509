# SPDX-License-Identifier: Apache-2.0
"""History: per-second series of a proxy or backend, fetched on demand (the console's charts and
trends, `lbtui ctl` and the control protocol's `history`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lbtui.model.views import Event

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
