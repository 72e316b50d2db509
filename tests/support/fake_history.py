# SPDX-License-Identifier: Apache-2.0
"""Synthetic history for the FakeEngine: deterministic series with a story an operator would read.

Every value is a function of (target, series, second), so a frozen clock gives the same pictures on
every run. The story, relative to `now`: 10.0.2.12 is slow (p99 ~50 ms) from -500 s to -380 s;
10.0.2.13 fails from -700 s (failed handshakes, its circuit opens at -640 s, health down at -625 s)
and gets no new connections after; a reload at -300 s; 10.0.2.12 was drained from -820 s to -760 s.
"""

from __future__ import annotations

import math

from lbtui.model import (
    DROPS_SERIES_PREFIX,
    HISTORY_SERIES,
    Event,
    History,
    HistoryAnswer,
    HistoryQuery,
    Level,
    Series,
)
from lbtui.observe.history import chosen_targets, marks_for

KEPT_S = 3600
WEB = {"10.0.2.11:8080": 31.5, "10.0.2.12:8080": 20.9, "10.0.2.13:8080": 12.0, "10.0.3.10:8080": 2.2}
DNS = {"10.0.4.10:53": 8.0, "10.0.4.11:53": 7.5}
PROXY_DROPS = {"web": ("rate_limit",), "dns": ()}

# (seconds before now, kind, message, level, proxy, backend)
MARKS = (
    (820, "drain", "10.0.2.12:8080 draining: 27 flows continue", Level.INFO, "web", "10.0.2.12:8080"),
    (760, "drain", "10.0.2.12:8080 back in rotation", Level.INFO, "web", "10.0.2.12:8080"),
    (
        640,
        "circuit",
        "10.0.2.13:8080 circuit closed -> open: error rate 0.62",
        Level.ERROR,
        "web",
        "10.0.2.13:8080",
    ),
    (625, "health", "10.0.2.13:8080 down: connection refused", Level.WARNING, "web", "10.0.2.13:8080"),
    (300, "reload", "reloaded configs/demo.toml: 1 weight changed", Level.INFO, None, None),
)


def targets() -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = [("web", None), ("dns", None)]
    out += [("web", b) for b in WEB] + [("dns", b) for b in DNS]
    return out


def series_names(target: tuple[str, str | None]) -> list[str]:
    proxy, backend = target
    names = list(HISTORY_SERIES)
    if backend is None:
        names += [DROPS_SERIES_PREFIX + reason for reason in PROXY_DROPS[proxy]]
    return names


def _wave(second: int, period: float, phase: float) -> float:
    return math.sin(2 * math.pi * second / period + phase)


def backend_value(proxy: str, backend: str, name: str, ago: int, second: int) -> float | None:
    udp = proxy == "dns"
    base = (DNS if udp else WEB)[backend]
    phase = (sum(map(ord, backend)) % 17) / 3
    rate = base * (1 + 0.35 * _wave(second, 300, phase) + 0.1 * _wave(second, 7, phase))
    failing = backend == "10.0.2.13:8080" and ago <= 700
    slow = backend == "10.0.2.12:8080" and 380 <= ago <= 500
    drained = backend == "10.0.2.12:8080" and 760 <= ago <= 820
    if failing and ago <= 640 or drained:
        rate = 0.0
    if name == "new_flows":
        return round(rate, 2)
    if name in ("bytes_in", "bytes_out", "packets_in", "packets_out"):
        per_flow = {"bytes_in": 180, "bytes_out": 1500, "packets_in": 5, "packets_out": 4}[name]
        return round(rate * per_flow, 1)
    if name == "active_flows":
        return round(rate * (4.0 if slow else 1.3))
    if name == "failed_handshakes":
        if udp:
            return None
        return round(base * 0.6, 2) if failing and ago > 640 else 0.0
    if name == "handshake_p99_ms":
        if udp or rate == 0:
            return None
        return (
            round(48.0 + 4 * _wave(second, 11, phase), 2)
            if slow
            else round(2.5 + _wave(second, 60, phase), 2)
        )
    if name == "duration_p99_ms":
        if rate == 0:
            return None
        typical = 1.2 if udp else 12.0
        return round(typical * (6 if slow else 1) * (1 + 0.2 * _wave(second, 45, phase)), 2)
    return None


def value(target: tuple[str, str | None], name: str, now: int, second: int) -> float | None:
    proxy, backend = target
    ago = now - second
    if backend is not None:
        return backend_value(proxy, backend, name, ago, second)
    if name.startswith(DROPS_SERIES_PREFIX):
        return 3.0 if 400 <= ago <= 430 else 0.0
    members = WEB if proxy == "web" else DNS
    points = [backend_value(proxy, b, name, ago, second) for b in members]
    known = [p for p in points if p is not None]
    if not known:
        return None
    return max(known) if name.endswith("_p99_ms") else round(sum(known), 2)


def answer(query: HistoryQuery, now: float, kept_s: int = KEPT_S) -> HistoryAnswer:
    """What an engine that kept `kept_s` seconds of this story would answer at `now`."""
    problem = query.problem()
    if problem:
        raise ValueError(problem)
    last = int(now)
    first = last - kept_s + 1
    if query.since is not None:
        first = max(first, math.floor(query.since) + 1)
    chosen = chosen_targets(query, targets())
    histories = []
    for target in chosen:
        names = [n for n in (query.series or series_names(target)) if n in series_names(target)]
        series = tuple(
            Series(name=n, values=tuple(value(target, n, last, s) for s in range(first, last + 1)))
            for n in names
        )
        histories.append(History(proxy=target[0], backend=target[1], start=float(first), series=series))
    marks = marks_between(first, last, query)
    return HistoryAnswer(taken_at=now, kept_s=kept_s, histories=tuple(histories), marks=marks)


def marks_between(first: int, last: int, query: HistoryQuery) -> tuple[Event, ...]:
    """The story's marks inside [first, last] that concern the asked target."""
    events = [
        Event(
            seq=1000 + n,
            ts=float(last - ago),
            kind=kind,
            message=message,
            level=level,
            proxy=proxy,
            backend=backend,
        )
        for n, (ago, kind, message, level, proxy, backend) in enumerate(MARKS, start=1)
    ]
    return marks_for(query, events, first, last)
