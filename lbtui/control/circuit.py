# SPDX-License-Identifier: Apache-2.0
"""Circuit breaker per backend, fed by data-path counter deltas (docs/architecture.md#who-gets-traffic).

CLOSED -> OPEN when, over a sliding window of window_s seconds (one bucket per second),
failures / (successes + failures) >= error_rate with at least min_requests requests;
OPEN -> HALF_OPEN after open_s (checked by tick());
HALF_OPEN -> CLOSED after half_open_successes successes, -> OPEN on any failure.
force_open() holds the circuit open and force_close() holds it closed (failures are not counted),
until reset() (back to automatic, starting closed) or release() (back to automatic from where it
is held: a circuit held closed stays closed, one held open starts closed).

Pure: the clock is injected and nothing here does I/O. The engine calls record() with the counter
deltas of each poll, then tick(), and turns the returned transitions into events.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lbtui.model import Circuit

log = logging.getLogger(__name__)

HALF_OPEN_FACTOR = 0.05  # share of the weight a half-open backend keeps: a trickle of probe flows


class CircuitConfig(Protocol):
    @property
    def error_rate(self) -> float: ...
    @property
    def min_requests(self) -> int: ...
    @property
    def window_s(self) -> float: ...
    @property
    def open_s(self) -> float: ...
    @property
    def half_open_successes(self) -> int: ...


@dataclass(frozen=True)
class Transition:
    ts: float  # clock() at the transition
    old: Circuit
    new: Circuit
    reason: str


class CircuitBreaker:
    def __init__(self, cfg: CircuitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._clock = clock
        self._state = Circuit.CLOSED
        self._held: Circuit | None = None
        self._opened_at = 0.0
        self._half_open_ok = 0
        # (second, successes, failures), oldest first
        self._buckets: deque[tuple[int, int, int]] = deque()

    # ---- read side ------------------------------------------------------------------------------

    @property
    def state(self) -> Circuit:
        return self._state

    @property
    def forced(self) -> bool:
        """True while held open by force_open()."""
        return self._held is Circuit.OPEN

    @property
    def held(self) -> Circuit | None:
        """OPEN or CLOSED while an operator holds it there; None: automatic."""
        return self._held

    @property
    def factor(self) -> float:
        if self._state is Circuit.CLOSED:
            return 1.0
        if self._state is Circuit.HALF_OPEN:
            return HALF_OPEN_FACTOR
        return 0.0

    def window_totals(self) -> tuple[int, int]:
        """(successes, failures) inside the sliding window now."""
        self._expire(self._second(self._clock()))
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    # ---- inputs ---------------------------------------------------------------------------------

    def record(self, successes: int, failures: int) -> list[Transition]:
        """Counts since the last call. Ignored while OPEN (the backend is not meant to get flows) and
        while held closed (it gets flows whatever fails)."""
        if successes < 0 or failures < 0:
            raise ValueError(f"negative counts: {successes} successes, {failures} failures")
        if self._held is not None:
            return []
        now = self._clock()
        if self._state is Circuit.CLOSED:
            return self._record_closed(now, successes, failures)
        if self._state is Circuit.HALF_OPEN:
            return self._record_half_open(now, successes, failures)
        return []

    def tick(self) -> list[Transition]:
        """Time-driven transitions: OPEN -> HALF_OPEN once open_s has passed (not when forced)."""
        now = self._clock()
        if self._state is Circuit.OPEN and self._held is None and now - self._opened_at >= self._cfg.open_s:
            self._half_open_ok = 0
            return [self._move(now, Circuit.HALF_OPEN, f"open for {_num(self._cfg.open_s)}s, probing")]
        return []

    def force_open(self) -> list[Transition]:
        now = self._clock()
        self._held = Circuit.OPEN
        self._opened_at = now
        if self._state is Circuit.OPEN:
            return []
        return [self._move(now, Circuit.OPEN, "forced open by operator")]

    def force_close(self) -> list[Transition]:
        transitions = self._close("forced closed by operator")
        self._held = Circuit.CLOSED
        return transitions

    def reset(self) -> list[Transition]:
        return self._close("reset by operator")

    def release(self) -> list[Transition]:
        """End a hold: automatic again, with a fresh window (one held open starts closed)."""
        if self._held is Circuit.OPEN:
            return self._close("released by operator")
        self._held = None
        self._buckets.clear()
        return []

    # ---- internals ------------------------------------------------------------------------------

    def _record_closed(self, now: float, successes: int, failures: int) -> list[Transition]:
        second = self._second(now)
        self._expire(second)
        if successes or failures:
            if self._buckets and self._buckets[-1][0] == second:
                _, s, f = self._buckets[-1]
                self._buckets[-1] = (second, s + successes, f + failures)
            else:
                self._buckets.append((second, successes, failures))
        ok = sum(b[1] for b in self._buckets)
        failed = sum(b[2] for b in self._buckets)
        total = ok + failed
        if total == 0 or total < self._cfg.min_requests:
            return []
        rate = failed / total
        if rate < self._cfg.error_rate:
            return []
        self._opened_at = now
        self._buckets.clear()
        reason = f"error rate {rate:.2f} over {total} requests in {_num(self._cfg.window_s)}s"
        return [self._move(now, Circuit.OPEN, reason)]

    def _record_half_open(self, now: float, successes: int, failures: int) -> list[Transition]:
        if failures:
            self._opened_at = now
            return [self._move(now, Circuit.OPEN, f"{failures} failure(s) while half-open")]
        self._half_open_ok += successes
        if self._half_open_ok >= self._cfg.half_open_successes:
            self._buckets.clear()
            reason = f"{self._half_open_ok} successes while half-open"
            return [self._move(now, Circuit.CLOSED, reason)]
        return []

    def _close(self, reason: str) -> list[Transition]:
        now = self._clock()
        self._held = None
        self._buckets.clear()
        self._half_open_ok = 0
        if self._state is Circuit.CLOSED:
            return []
        return [self._move(now, Circuit.CLOSED, reason)]

    def _move(self, now: float, new: Circuit, reason: str) -> Transition:
        transition = Transition(ts=now, old=self._state, new=new, reason=reason)
        self._state = new
        log.debug("circuit %s -> %s: %s", transition.old, new, reason)
        return transition

    def _second(self, now: float) -> int:
        return math.floor(now)

    def _expire(self, second: int) -> None:
        # The window holds the buckets of the last window_s whole seconds, the current one included.
        oldest = second - math.ceil(self._cfg.window_s) + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()


def _num(value: float) -> str:
    """10.0 -> "10", 2.5 -> "2.5"."""
    return f"{value:g}"
