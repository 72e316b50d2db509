# SPDX-License-Identifier: Apache-2.0
"""The control socket's limits on its clients, and the count of what they refused
(docs/control-protocol.md#limits).

Every client is root (the socket is root-only), but a runaway script or a wedged tool must not take
the engine's attention from the traffic: at most `max_clients` at once, requests of at most
`max_line` bytes, and per connection at most `rate` requests per second (a token bucket of `burst`).
A request over the rate is answered with an error after a pause until the next token, so a client
that pipelines a flood is slowed to the rate instead of spinning the server. Each refusal is counted
by reason (`hello` reports the counts) and logged once per connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

REQUESTS_PER_S = 100.0  # per connection: a console polls a few times a second
BURST = 200
REFUSAL_REASONS = ("too_many_clients", "permission", "request_too_long", "rate_limited", "idle")


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self.refused = 0  # requests refused so far

    def take(self) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is (nothing taken)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        self.refused += 1
        return (1.0 - self._tokens) / self.rate


class Refusals:
    """Refusals by reason, since the server started. Counted on the server's loop only."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys(REFUSAL_REASONS, 0)

    def count(self, reason: str, message: str, first_of_connection: bool = True) -> None:
        self._counts[reason] += 1
        if first_of_connection:
            log.warning("control socket: refused (%s): %s", reason, message)

    def counts(self) -> dict[str, int]:
        return dict(self._counts)
