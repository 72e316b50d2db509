"""Per-second rates from monotonic counters sampled at arbitrary times (new conns/s, bytes/s)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class _Sample:
    value: float
    at: float
    rate: float | None


class RateMeter:
    """Turns counter samples into rates, one series per key.

    tau_s > 0: exponentially weighted moving average with that time constant, weighted by the real
    time between samples (so an irregular snapshot period does not skew it). tau_s == 0: the rate over
    the last interval only. The first sample of a key, and the first after a counter reset (value
    went down: backend removed and re-added, maps recreated), only set the baseline and return None.
    """

    def __init__(self, tau_s: float = 3.0) -> None:
        if tau_s < 0:
            raise ValueError("tau_s must be >= 0")
        self.tau_s = tau_s
        self._last: dict[Hashable, _Sample] = {}

    def rate(self, key: Hashable, value: float, now: float) -> float | None:
        previous = self._last.get(key)
        if previous is None or value < previous.value:
            self._last[key] = _Sample(value, now, None)
            return None
        elapsed = now - previous.at
        if elapsed <= 0:
            return previous.rate  # same instant (or clock went back): nothing new to say
        instant = (value - previous.value) / elapsed
        if previous.rate is None or self.tau_s == 0:
            smoothed = instant
        else:
            alpha = 1.0 - math.exp(-elapsed / self.tau_s)
            smoothed = previous.rate + alpha * (instant - previous.rate)
        self._last[key] = _Sample(value, now, smoothed)
        return smoothed

    def forget(self, key: Hashable) -> None:
        self._last.pop(key, None)

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Forget every key not in keys (call with the keys of the current snapshot)."""
        keep = set(keys)
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]
