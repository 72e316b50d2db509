# SPDX-License-Identifier: Apache-2.0
"""The one place where the console-time tests get their engine handle.

Today that is the in-memory FakeEngine with its synthetic history (tests/support/fake_history.py).
When the FakeEngine goes away, repoint `make_engine` at the real engine over an in-memory dataplane
(its history recorded by lbtui/observe/history.py); the tests ask only for what `model.EngineHandle`
offers, plus the knobs named below.
"""

from __future__ import annotations

from typing import Any

from tests.support.fake_engine import FakeEngine


def make_engine(**kwargs: Any) -> FakeEngine:
    """An engine handle showing two proxies (tcp "web" with a circuit breaker, udp "dns").

    Knobs the tests use: `grow` (counters and logs advance per snapshot), `access_log_target`
    (None: no access log configured), `history_kept_s` (0: keeps no history), `history_queries`.
    """
    return FakeEngine(**kwargs)
