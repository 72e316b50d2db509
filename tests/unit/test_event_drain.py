# SPDX-License-Identifier: Apache-2.0
"""The event reader's pace: every 50 ms while events come, backing off to 200 ms while none do."""

from __future__ import annotations

import pytest

pytest.importorskip("bcc")

from lbtui.dataplane.kernel import EVENT_DRAIN_IDLE_S, EVENT_DRAIN_INTERVAL_S, next_drain_interval  # noqa: E402


def test_the_reader_backs_off_while_idle_and_comes_back_with_the_first_events() -> None:
    waits = [EVENT_DRAIN_INTERVAL_S]
    for _ in range(6):  # nothing in the ring
        waits.append(next_drain_interval(waits[-1], 0))
    assert waits == [0.05, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2]
    assert max(waits) == EVENT_DRAIN_IDLE_S  # a quiet spell delays the first events 0.2 s at most
    assert next_drain_interval(EVENT_DRAIN_IDLE_S, 3) == EVENT_DRAIN_INTERVAL_S  # events: short again
