# SPDX-License-Identifier: Apache-2.0
"""The engine's clocks, injectable so tests step time instead of sleeping through it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock unix seconds (event and snapshot times)."""

    def monotonic(self) -> float:
        """Seconds for deadlines and intervals."""

    def monotonic_ns(self) -> int:
        """The data path's clock (bpf_ktime_get_ns is CLOCK_MONOTONIC): conntrack times."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


SYSTEM_CLOCK = SystemClock()
